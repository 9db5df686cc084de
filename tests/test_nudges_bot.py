"""The persona writes first through the real bot (issue 18): `run_bot` (polling) runs the
scheduler beside the updates; with a short VITTE_NUDGE_AFTER the player who fell silent gets a
message they did not ask for, sent with sendMessage to their chat; a player who blocked the
bot (403 from the local Bot API) is marked unreachable and gets nothing. /settings' switch
"Пусть персонаж пишет первым" / "Let the persona write first" (default on)."""

from __future__ import annotations

import asyncio
from typing import Any

from pydantic import SecretStr
from sqlalchemy import select
from sqlmodel import col

from tests.support.bot_harness import PERSONA, STORY, BotEnv, cards, drop_redis_keys, env  # noqa: F401
from tests.support.llm_server import FakeLLMServer
from vitte.bot.runner import run_bot
from vitte.bot.runtime import Runtime
from vitte.catalog.seed import seed_cards
from vitte.config import Settings
from vitte.core import Core
from vitte.localapi import LocalBotSession, LocalPlayer, make_local_bot
from vitte.models import KIND_NUDGE, Message, User

TOKEN = "42:LOCAL-TEST-TOKEN-0123456789abcdef"
NUDGE = "I was thinking about you. How did the interview go?"


def answer(body: dict[str, Any]) -> str:
    """The nudge for the nudge's instruction (the last system message), else a plain reply."""
    last = body["messages"][-1]
    return NUDGE if last["role"] == "system" and "silent" in last["content"] else "Good luck!"


async def test_run_bot_sends_a_nudge_after_silence_and_marks_a_blocked_player(backend_settings: Settings) -> None:
    async with FakeLLMServer(replies=answer) as llm:
        settings = backend_settings.model_copy(
            update={
                "bot_token": SecretStr(TOKEN),
                "llm_base_url": llm.base_url,
                "nudge_after": 2,
                "nudge_poll": 0.2,
                "nudge_quiet_hours": "",
                "rate_limit_per_minute": 0,
            }
        )
        core = await Core.open(settings)
        try:
            await seed_cards(core.db, cards())
            for uid, lang in ((1001, "en"), (1002, "ru")):
                await core.players.seen(uid, language_code=lang)
                await core.players.confirm_adult(uid)
                await core.dialogs.choose(uid, PERSONA, STORY)
        finally:
            await core.close()

        session = LocalBotSession()
        session.block(1002)
        bot = make_local_bot(session, token=TOKEN)
        stop = asyncio.Event()
        running = asyncio.create_task(run_bot(settings, bot=bot, stop=stop, runtime=Runtime()))
        try:
            await session.wait_for("getUpdates", timeout=10)
            p = LocalPlayer(None, bot, session, deliver="queue", user_id=1001)  # type: ignore[arg-type]
            await p.send("I have a job interview tomorrow")
            await session.wait_for("sendMessage", lambda c: c.params.get("text") == "Good luck!", timeout=10)
            # then silence: the persona writes first, to this chat, unasked
            nudge = await session.wait_for(
                "sendMessage", lambda c: c.params.get("chat_id") == 1001 and c.params.get("text") == NUDGE, timeout=15
            )
            assert nudge is not None
        finally:
            stop.set()
            await asyncio.wait_for(running, 15)

        core = await Core.open(settings)
        try:
            async with core.db.session() as s:
                kinds = list((await s.execute(select(col(Message.kind), col(Message.telegram_message_id))
                                              .where(col(Message.kind) == KIND_NUDGE))).all())
                blocked = await s.get(User, 1002)
            assert len(kinds) >= 1 and all(tid is not None for _, tid in kinds)
            assert blocked is not None and blocked.unreachable_at is not None
            # the blocked player was never sent anything that went through
            assert not any(c.params.get("chat_id") == 1002 and c.error is None
                           for c in session.calls_of("sendMessage"))
        finally:
            await core.close()
    await drop_redis_keys(settings)


async def test_settings_toggle_in_both_languages(env: BotEnv) -> None:  # noqa: F811 (the fixture)
    from vitte.initiative.prefs import prefs_of

    for uid, lang, title, label, on_line, off_line in (
        (1101, "ru", "⚙️ Настройки", "Пусть персонаж пишет первым", "Пусть персонаж пишет первым: да",
         "Пусть персонаж пишет первым: нет"),
        (1102, "en", "⚙️ Settings", "Let the persona write first", "Let the persona write first: on",
         "Let the persona write first: off"),
    ):
        p = env.player(uid, language_code=lang)
        await p.send("/settings")
        text = p.last_bot_text() or ""
        assert text.startswith(title) and on_line in text  # default on
        assert f"✓ {label}" in p.buttons()
        await p.click(f"✓ {label}")
        assert off_line in (p.last_bot_text() or "") and label in p.buttons()
        assert (await prefs_of(env.core.db, env.core.settings, uid)).on is False
        await p.click(label)
        assert on_line in (p.last_bot_text() or "")
        assert (await prefs_of(env.core.db, env.core.settings, uid)).on is True


async def test_the_sender_waits_out_429_and_turns_403_into_unreachable() -> None:
    from vitte.initiative.nudger import Unreachable
    from vitte.telegram.nudges import nudge_sender

    session = LocalBotSession()
    send = nudge_sender(make_local_bot(session, token=TOKEN))
    session.fail_next("sendMessage", 429, retry_after=1)
    message_id = await send(2001, "Привет, это я")
    sent = [c for c in session.calls_of("sendMessage") if c.error is None]
    assert len(sent) == 1 and message_id == sent[0].result["message_id"]  # once, after the 429
    assert len([c for c in session.calls_of("sendMessage") if c.error]) == 1
    session.block(2002)
    try:
        await send(2002, "Привет")
    except Unreachable as exc:
        assert "blocked" in str(exc)
    else:
        raise AssertionError("a blocked player must be Unreachable")
    long = await send(2003, "слово " * 1500)  # 9,000 characters: cut at 4096
    pieces = [c for c in session.calls_of("sendMessage") if c.params.get("chat_id") == 2003]
    assert len(pieces) == 3 and long == pieces[-1].result["message_id"]


async def test_any_send_answered_403_marks_the_player_unreachable(backend_settings: Settings) -> None:
    from aiogram.exceptions import TelegramForbiddenError

    from vitte.telegram.nudges import mark_unreachable_in

    core = await Core.open(backend_settings)
    try:
        await core.players.seen(3001, language_code="ru")
        session = LocalBotSession()
        bot = make_local_bot(session, token=TOKEN)
        bot.session.middleware(mark_unreachable_in(core.db))  # as run_bot installs it
        await bot.send_message(chat_id=3001, text="ok")  # reachable: nothing marked
        async with core.db.session() as s:
            assert (await s.get(User, 3001)).unreachable_at is None  # type: ignore[union-attr]
        session.block(3001)
        try:
            await bot.send_message(chat_id=3001, text="a restart notice")
        except TelegramForbiddenError:
            pass
        else:
            raise AssertionError("403 expected")
        async with core.db.session() as s:
            assert (await s.get(User, 3001)).unreachable_at is not None  # type: ignore[union-attr]
    finally:
        await core.close()
    await drop_redis_keys(backend_settings)


async def test_webhook_mode_runs_the_scheduler_too(sqlite_url: str) -> None:
    import socket

    from pydantic import SecretStr as Secret

    from vitte.config import load_settings

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    async with FakeLLMServer(replies=answer) as llm:
        settings = load_settings(
            database_url=sqlite_url, webhook_url="https://bot.vitte.test/tg/hook", webhook_secret="s3cret",
            webhook_port=port, llm_base_url=llm.base_url, nudge_after=2, nudge_poll=0.2, nudge_quiet_hours="",
        ).model_copy(update={"bot_token": Secret(TOKEN)})
        core = await Core.open(settings)
        try:
            await seed_cards(core.db, cards())
            await core.players.seen(4001, language_code="en")
            await core.players.confirm_adult(4001)
            await core.dialogs.choose(4001, PERSONA, STORY)
        finally:
            await core.close()
        session = LocalBotSession()
        bot = make_local_bot(session, token=TOKEN)
        stop = asyncio.Event()
        running = asyncio.create_task(run_bot(settings, bot=bot, stop=stop, runtime=Runtime()))
        try:
            await session.wait_for("setWebhook", timeout=10)
            await session.wait_for(
                "sendMessage", lambda c: c.params.get("chat_id") == 4001 and c.params.get("text") == NUDGE, timeout=15
            )
        finally:
            stop.set()
            await asyncio.wait_for(running, 15)


async def test_nudge_after_zero_turns_the_scheduler_off_in_run_bot(backend_settings: Settings) -> None:
    """VITTE_NUDGE_AFTER=0: `run_bot` sends no nudge, even to a player silent for days whose row
    is long due (never claimed: the row is as it was); the same data with the feature on gets
    its nudge at once (the control: what the first run would have done)."""
    from datetime import timedelta

    import sqlalchemy as sa

    from vitte.models import Dialog, Nudge, utcnow

    async with FakeLLMServer(replies=answer) as llm:
        on = backend_settings.model_copy(
            update={"bot_token": SecretStr(TOKEN), "llm_base_url": llm.base_url, "nudge_after": 2,
                    "nudge_poll": 0.2, "nudge_quiet_hours": "", "rate_limit_per_minute": 0}
        )  # fmt: skip
        off = on.model_copy(update={"nudge_after": 0})
        core = await Core.open(on)
        try:
            await seed_cards(core.db, cards())
            for uid in (1201, 1202):
                await core.players.seen(uid, language_code="en")
                await core.players.confirm_adult(uid)
                await core.dialogs.choose(uid, PERSONA, STORY)
            long_ago = utcnow() - timedelta(days=2)
            async with core.db.engine.begin() as conn:
                await conn.execute(sa.update(Dialog.__table__).values(created_at=long_ago))  # type: ignore[attr-defined]
                await conn.execute(sa.update(Nudge.__table__).values(due_at=long_ago))  # type: ignore[attr-defined]
            async with core.db.session() as s:
                before = (await s.execute(sa.select(Nudge).where(col(Nudge.user_id) == 1201))).scalar_one()
        finally:
            await core.close()

        async def run(settings: Settings, then: Any) -> LocalBotSession:
            session = LocalBotSession()
            bot = make_local_bot(session, token=TOKEN)
            stop = asyncio.Event()
            running = asyncio.create_task(run_bot(settings, bot=bot, stop=stop, runtime=Runtime()))
            try:
                await session.wait_for("getUpdates", timeout=10)
                await then(session, bot)
            finally:
                stop.set()
                await asyncio.wait_for(running, 15)
            return session

        async def talk(session: LocalBotSession, bot: Any) -> None:  # the other player: a full turn
            p = LocalPlayer(None, bot, session, deliver="queue", user_id=1202)  # type: ignore[arg-type]
            for n, said in enumerate(("hello", "still there?"), 1):
                await p.send(said)
                if len([c for c in session.calls_of("sendMessage") if c.params.get("text") == "Good luck!"]) < n:
                    await session.wait_for("sendMessage", lambda c: c.params.get("text") == "Good luck!", timeout=10)

        quiet = await run(off, talk)
        assert not [c for c in quiet.calls_of("sendMessage") if c.params.get("chat_id") == 1201]
        core = await Core.open(on)
        try:
            async with core.db.session() as s:
                after = (await s.execute(sa.select(Nudge).where(col(Nudge.user_id) == 1201))).scalar_one()
                nudges = (await s.execute(sa.select(Message).where(col(Message.kind) == KIND_NUDGE))).all()
        finally:
            await core.close()
        assert nudges == []
        assert (after.due_at, after.claim_token, after.unanswered) == (before.due_at, None, 0)

        async def nudged(session: LocalBotSession, _bot: Any) -> None:
            def is_nudge(c: Any) -> bool:
                return c.params.get("chat_id") == 1201 and c.params.get("text") == NUDGE

            if not any(is_nudge(c) for c in session.calls_of("sendMessage")):  # sent already, or wait
                await session.wait_for("sendMessage", is_nudge, timeout=15)

        await run(on, nudged)  # the control: the feature on, the same player is nudged
    await drop_redis_keys(on)
