"""Two real OS processes (`vitte run-scheduler`) claim and send the same due nudges on one
PostgreSQL schedule: every nudge sent exactly once, none lost (issue 18, items 3 and 7)."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections import Counter
from datetime import timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa

from tests.support.bot_api_server import FakeBotAPI
from tests.support.bot_harness import cards
from tests.support.llm_server import FakeLLMServer
from vitte.bench_nudges import _populate
from vitte.catalog.seed import seed_cards
from vitte.config import load_settings
from vitte.core import Core
from vitte.models import KIND_NUDGE, Message, Nudge, table_of, utcnow

TOKEN = "42:LOCAL-TEST-TOKEN-0123456789abcdef"
PLAYERS = 300
FIRST = 7_000
NUDGES, MESSAGES = table_of(Nudge), table_of(Message)


async def _scheduler(env: dict[str, str], cwd: Path) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "cli", "run-scheduler", cwd=str(cwd), env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip


async def _running(proc: asyncio.subprocess.Process) -> None:
    """Until the process logs that its scheduler runs."""
    assert proc.stderr is not None
    while True:
        line = await asyncio.wait_for(proc.stderr.readline(), 60)
        assert line, "the scheduler exited before running"
        if b"nudge scheduler running" in line:
            return


async def _stop(proc: asyncio.subprocess.Process) -> str:
    if proc.returncode is None:
        proc.send_signal(signal.SIGTERM)
    _out, err = await asyncio.wait_for(proc.communicate(), 30)
    return err.decode()


@pytest.mark.slow
async def test_two_scheduler_processes_send_each_due_nudge_exactly_once(pg_url: str, tmp_path: Path) -> None:
    settings = load_settings(database_url=pg_url)
    core = await Core.open(settings)
    try:
        await seed_cards(core.db, cards())
        persona = next(p for p in await core.catalog.personas())
        await _populate(core, FIRST, PLAYERS, persona.id, lambda _m: None)
        async with core.db.engine.begin() as conn:  # not due until both processes run
            await conn.execute(sa.update(NUDGES).values(due_at=utcnow() + timedelta(days=1)))
    finally:
        await core.close()

    # each process has its own Bot API server (same token): what each sent is known apart
    async with FakeBotAPI(token=TOKEN) as api_a, FakeBotAPI(token=TOKEN) as api_b, FakeLLMServer(tps=0) as llm:
        base = {k: v for k, v in os.environ.items() if not k.startswith("VITTE_")}
        base.update(
            VITTE_BOT_TOKEN=TOKEN, VITTE_DATABASE_URL=pg_url, VITTE_LLM_BASE_URL=llm.base_url,
            VITTE_NUDGE_AFTER="72000", VITTE_NUDGE_QUIET_HOURS="", VITTE_NUDGE_RATE="0",
            VITTE_NUDGE_BATCH="20", VITTE_NUDGE_POLL="0.1", PYTHONUNBUFFERED="1",
        )  # fmt: skip
        procs = [
            await _scheduler({**base, "VITTE_TELEGRAM_API_URL": api.base_url}, tmp_path) for api in (api_a, api_b)
        ]
        errors: list[str] = []
        try:
            await asyncio.gather(*(_running(p) for p in procs))
            core = await Core.open(settings)
            try:
                async with core.db.engine.begin() as conn:  # all due at once, for both
                    await conn.execute(sa.update(NUDGES).values(due_at=utcnow() - timedelta(minutes=1)))

                async def settled() -> bool:
                    async with core.db.engine.connect() as conn:
                        stored = (
                            await conn.execute(
                                sa.select(sa.func.count()).select_from(MESSAGES).where(MESSAGES.c.kind == KIND_NUDGE)
                            )
                        ).scalar_one()
                        held = (
                            await conn.execute(
                                sa.select(sa.func.count())
                                .select_from(NUDGES)
                                .where(sa.or_(NUDGES.c.claim_token.is_not(None), NUDGES.c.unanswered == 0))
                            )
                        ).scalar_one()
                    return stored >= PLAYERS and held == 0

                loop = asyncio.get_running_loop()
                deadline = loop.time() + 20
                while not await settled():
                    assert loop.time() < deadline, "the nudges were not all sent"
                    await asyncio.sleep(0.2)
                async with core.db.engine.connect() as conn:
                    stored_per_dialog = Counter(
                        d for (d,) in (
                            await conn.execute(sa.select(MESSAGES.c.dialog_id).where(MESSAGES.c.kind == KIND_NUDGE))
                        ).all()
                    )  # fmt: skip
                    delivered = (
                        await conn.execute(
                            sa.select(sa.func.count())
                            .select_from(MESSAGES)
                            .where(MESSAGES.c.kind == KIND_NUDGE, MESSAGES.c.telegram_message_id.is_not(None))
                        )
                    ).scalar_one()
            finally:
                await core.close()
        finally:
            for p in procs:
                errors.append(await _stop(p))
            print("stderr:", *(e[-3000:] for e in errors), sep="\n")  # shown on failure

    sent_a = [c.params["chat_id"] for c in api_a.calls_of("sendMessage")]
    sent_b = [c.params["chat_id"] for c in api_b.calls_of("sendMessage")]
    per_player = Counter(sent_a + sent_b)
    assert set(per_player) == set(range(FIRST, FIRST + PLAYERS))  # none lost
    assert max(per_player.values()) == 1  # none twice
    assert sent_a and sent_b  # both processes took part
    assert len(stored_per_dialog) == PLAYERS and max(stored_per_dialog.values()) == 1
    assert delivered == PLAYERS  # each stored nudge has its Telegram message id
    for p, err in zip(procs, errors, strict=True):
        assert p.returncode == 0, err[-3000:]
        assert "Traceback" not in err
