"""The persona writes first (issue 18, items 1-4): the scheduler on PostgreSQL + Redis and on
SQLite, with a real OpenAI-compatible server on loopback and a recording sender: a nudge after
silence (ru and en), none in quiet hours (the player's zone), none while online, the unanswered
limit and its doubling, the switch off, a blocked bot → unreachable, a crash between the mark
and Telegram's answer → never sent twice, two processes → each nudge once."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import sqlalchemy as sa

from tests.support.llm_server import FakeLLMServer
from tests.support.players import chatting
from vitte.catalog.cards import default_fixtures_dir, read_cards
from vitte.catalog.seed import seed_cards
from vitte.config import Settings, load_settings
from vitte.core import Core
from vitte.initiative import rules as r
from vitte.initiative.clock import Clock
from vitte.initiative.nudger import Nudger, Unreachable
from vitte.initiative.writer import INSTRUCTION
from vitte.models import KIND_NUDGE, Message, Nudge, User, table_of

AFTER = 600  # seconds of silence before a nudge in these tests
PAST_JITTER = AFTER * 1.25


class Outbox:
    """A sender that records (user id, text) and answers like Telegram, or fails on demand."""

    def __init__(self) -> None:
        self.sent: list[tuple[int, str]] = []
        self.blocked: set[int] = set()
        self.crash = False

    async def __call__(self, user_id: int, text: str) -> int | None:
        if self.crash:
            raise Crash()
        if user_id in self.blocked:
            raise Unreachable()
        self.sent.append((user_id, text))
        return 1000 + len(self.sent)


class Crash(BaseException):
    """The process dies between the mark and Telegram's answer."""


@pytest.fixture
async def server() -> AsyncIterator[FakeLLMServer]:
    async with FakeLLMServer(default_reply="Доброе утро! Как прошло собеседование?") as srv:
        yield srv


def nudge_settings(backend_settings: Settings, server: FakeLLMServer, **kw: Any) -> Settings:
    return load_settings(
        **{
            **backend_settings.model_dump(include={"database_url", "redis_url", "redis_prefix"}),
            "llm_base_url": server.base_url,
            "llm_api_key": "sk-test",
            "llm_retries": 0,
            "llm_timeout": 2.0,
            "rate_limit_per_minute": 0,
            "memory_facts_every": 0,
            "nudge_after": AFTER,
            "nudge_quiet_hours": "",
            "nudge_rate": 0,
            **kw,
        }
    )


async def open_core(settings: Settings) -> Core:
    c = await Core.open(settings)
    if not await c.catalog.personas():
        await seed_cards(c.db, read_cards(default_fixtures_dir()))
        c.catalog.invalidate()
    return c


@pytest.fixture
async def core(server: FakeLLMServer, backend_settings: Settings, redis_cleanup_if_any: None) -> AsyncIterator[Core]:
    c = await open_core(nudge_settings(backend_settings, server))
    try:
        yield c
    finally:
        await c.close()


async def nudges_of(core: Core, user_id: int) -> list[Message]:
    async with core.db.session() as s:
        rows = await s.execute(
            sa.select(Message)
            .join(table_of(Nudge).metadata.tables["dialogs"], sa.text("dialogs.id = messages.dialog_id"))
            .where(sa.text("dialogs.user_id = :u"), Message.kind == KIND_NUDGE)  # type: ignore[arg-type]
            .params(u=user_id)
        )
        return list(rows.scalars())


async def set_user(core: Core, user_id: int, **values: Any) -> None:
    async with core.db.engine.begin() as conn:
        await conn.execute(sa.update(table_of(User)).where(table_of(User).c.id == user_id).values(**values))


async def row(core: Core, user_id: int) -> Nudge:
    async with core.db.session() as s:
        return (await s.execute(sa.select(Nudge).where(Nudge.user_id == user_id))).scalar_one()  # type: ignore[arg-type]


async def test_a_nudge_after_silence_in_character_with_memory(core: Core, server: FakeLLMServer) -> None:
    out = Outbox()
    clock = Clock()
    nudger = Nudger(core, out, clock=clock)
    await chatting(core, 101, language_code="ru", first_name="Аня")
    await chatting(core, 102, language_code="en", first_name="Ann")
    await core.dialogs.reply(101, "Завтра у меня собеседование, волнуюсь")
    await core.dialogs.reply(102, "I have a job interview tomorrow")
    # the dialogs have their rows as they open, due after the silence (jitter within ±20 %)
    for uid in (101, 102):
        n = await row(core, uid)
        assert n.unanswered == 0 and n.message_id is None
        assert AFTER * 0.8 <= (n.due_at - n.created_at).total_seconds() <= AFTER * 1.2
    assert (await nudger.run_due()).sent == 0 and out.sent == []  # not yet

    server.requests.clear()
    clock.advance(PAST_JITTER)
    report = await nudger.run_due()
    assert report.sent == 2 and sorted(u for u, _ in out.sent) == [101, 102]
    # the instruction, in the player's language, after the dialog's turns (the player's words in it)
    by_lang = {}
    for req in server.completions:
        messages = req.json["messages"]
        assert messages[-1]["role"] == "system"
        by_lang["ru" if "Собеседник молчит" in messages[-1]["content"] else "en"] = messages
    assert set(by_lang) == {"ru", "en"}
    assert INSTRUCTION["en"].split("{hours}")[0] in by_lang["en"][-1]["content"]
    assert any("собеседование" in m["content"] for m in by_lang["ru"] if m["role"] == "user")
    # stored in the dialog like a reply, marked as the persona's initiative, with its Telegram id
    (stored,) = await nudges_of(core, 101)
    assert stored.role == "assistant" and stored.status == "ok" and stored.telegram_message_id is not None
    assert stored.text == "Доброе утро! Как прошло собеседование?"
    n = await row(core, 101)
    assert n.unanswered == 1 and n.message_id is None and n.last_nudge_at is not None
    # the next one waits twice as long
    assert AFTER * 2 * 0.8 <= (n.due_at - n.last_nudge_at).total_seconds() <= AFTER * 2 * 1.2
    # the player's answer continues the dialog normally (the nudge is in the history)
    server.requests.clear()
    answer = await core.dialogs.reply(101, "Прошло отлично!")
    assert answer.text
    history = server.completions[-1].json["messages"]
    assert any(m["role"] == "assistant" and "собеседование?" in m["content"] for m in history)


async def test_the_unanswered_limit_doubling_and_the_reset(core: Core) -> None:
    out = Outbox()
    clock = Clock()
    nudger = Nudger(core, out, clock=clock)
    await chatting(core, 201, language_code="en")
    clock.advance(PAST_JITTER)
    assert (await nudger.run_due()).sent == 1
    clock.advance(PAST_JITTER)  # the second waits twice as long: not yet
    assert (await nudger.run_due()).sent == 0
    clock.advance(PAST_JITTER)
    assert (await nudger.run_due()).sent == 1
    assert (await row(core, 201)).unanswered == 2
    clock.advance(AFTER * 10)  # the limit (2): silence until the player writes
    report = await nudger.run_due()
    assert report.sent == 0 and report.reasons[r.UNANSWERED] == 1
    assert len(out.sent) == 2
    await core.dialogs.reply(201, "Sorry, I was busy")
    clock.advance(AFTER * 10)
    report = await nudger.run_due()
    assert report.sent == 1 and (await row(core, 201)).unanswered == 1


async def test_none_while_online_off_or_blocked(core: Core) -> None:
    out = Outbox()
    clock = Clock()
    nudger = Nudger(core, out, clock=clock)
    for uid in (301, 302, 303):
        await chatting(core, uid, language_code="ru")
    await core.cache.touch_online(301, 60)
    await set_user(core, 302, settings={"nudges": False})
    await core.players.block(303, "spam")
    clock.advance(PAST_JITTER)
    report = await nudger.run_due()
    assert report.sent == 0 and out.sent == []
    assert (report.reasons[r.ONLINE], report.reasons[r.OFF], report.reasons[r.BLOCKED]) == (1, 1, 1)
    # the switch back on: sent at the next look
    await set_user(core, 302, settings={"nudges": True})
    clock.advance(AFTER * 1.1)
    assert (await nudger.run_due()).sent >= 1 and 302 in {u for u, _ in out.sent}


async def test_the_switch_default_off_is_opt_in(server: FakeLLMServer, backend_settings: Settings,
                                               redis_cleanup_if_any: None) -> None:
    c = await open_core(nudge_settings(backend_settings, server, nudge_default=False))
    try:
        out, clock = Outbox(), Clock()
        nudger = Nudger(c, out, clock=clock)
        await chatting(c, 351, language_code="en")
        await chatting(c, 352, language_code="en")
        await set_user(c, 352, settings={"nudges": True})
        clock.advance(PAST_JITTER)
        report = await nudger.run_due()
        assert [u for u, _ in out.sent] == [352] and report.reasons[r.OFF] == 1
    finally:
        await c.close()


async def test_quiet_hours_in_the_players_zone(server: FakeLLMServer, backend_settings: Settings,
                                              redis_cleanup_if_any: None) -> None:
    clock = Clock()
    moment = clock.now() + timedelta(seconds=PAST_JITTER)
    hour = moment.astimezone(ZoneInfo("Europe/Moscow")).hour
    quiet = f"{hour}-{(hour + 1) % 24}"  # the Moscow hour the nudges fall due in
    c = await open_core(nudge_settings(backend_settings, server, nudge_quiet_hours=quiet))
    try:
        out = Outbox()
        nudger = Nudger(c, out, clock=clock)
        await chatting(c, 401, language_code="ru")  # default zone by language: Europe/Moscow
        await chatting(c, 402, language_code="ru")
        await set_user(c, 402, settings={"timezone": "Asia/Tokyo"})  # set in the Web App: awake there
        clock.advance(PAST_JITTER)
        report = await nudger.run_due()
        assert [u for u, _ in out.sent] == [402] and report.reasons[r.QUIET] == 1
        n = await row(c, 401)  # looked at again after the quiet hour, within the hour after it
        assert n.due_at.astimezone(ZoneInfo("Europe/Moscow")).hour == (hour + 1) % 24
    finally:
        await c.close()


async def test_a_blocked_bot_marks_the_player_unreachable_until_they_write(core: Core) -> None:
    out = Outbox()
    clock = Clock()
    nudger = Nudger(core, out, clock=clock)
    await chatting(core, 501, language_code="en")
    out.blocked.add(501)
    clock.advance(PAST_JITTER)
    report = await nudger.run_due()
    assert report.sent == 0 and report.reasons[r.UNREACHABLE] == 1
    async with core.db.session() as s:
        assert (await s.get(User, 501)).unreachable_at is not None  # type: ignore[union-attr]
    assert await nudges_of(core, 501) == []  # the refused nudge is not left in the dialog
    out.blocked.clear()
    clock.advance(AFTER * 3)
    report = await nudger.run_due()
    assert report.sent == 0 and report.reasons[r.UNREACHABLE] == 1  # no sends until they write
    await core.dialogs.reply(501, "I'm back")
    clock.advance(AFTER * 3)
    assert (await nudger.run_due()).sent == 1 and [u for u, _ in out.sent] == [501]
    async with core.db.session() as s:
        assert (await s.get(User, 501)).unreachable_at is None  # type: ignore[union-attr]


async def without_cascades(core: Core) -> None:
    """The database no longer deletes a dialog's nudge row with the dialog: SQLite with foreign
    keys off, PostgreSQL without the constraint (what `delete_data` promises not to rely on)."""
    if core.settings.is_sqlite:

        def off(dbapi_conn: Any, _record: Any) -> None:
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA foreign_keys=OFF")
            cur.close()

        sa.event.listen(core.db.engine.sync_engine, "connect", off)  # after vitte.db's ON
        await core.db.engine.dispose()
        async with core.db.engine.connect() as conn:
            assert (await conn.exec_driver_sql("PRAGMA foreign_keys")).scalar() == 0
        return
    async with core.db.engine.begin() as conn:
        names = (
            await conn.exec_driver_sql(
                "SELECT conname FROM pg_constraint WHERE conrelid = 'nudges'::regclass AND contype = 'f'"
            )
        ).scalars().all()
        assert names
        for name in names:
            await conn.exec_driver_sql(f'ALTER TABLE nudges DROP CONSTRAINT "{name}"')


async def test_delete_my_data_leaves_no_nudge_row_and_no_nudge(core: Core) -> None:
    """'Delete my data' takes the player's nudge rows itself (no foreign-key cascade needed):
    none left, and no nudge goes to them afterwards; another player's is untouched."""
    out = Outbox()
    clock = Clock()
    nudger = Nudger(core, out, clock=clock)
    await without_cascades(core)
    for uid, lang in ((701, "ru"), (702, "en")):
        await chatting(core, uid, language_code=lang)
    assert (await row(core, 701)).user_id == 701
    await core.players.delete_data(701)
    async with core.db.session() as s:
        left = sorted((await s.execute(sa.select(Nudge.user_id))).scalars())  # type: ignore[call-overload]
    assert left == [702]
    clock.advance(PAST_JITTER)
    await nudger.backfill()
    report = await nudger.run_due()
    assert [u for u, _ in out.sent] == [702] and report.sent == 1
    assert await nudges_of(core, 701) == []


async def test_a_crash_between_the_mark_and_telegram_never_sends_twice(core: Core) -> None:
    out = Outbox()
    clock = Clock()
    nudger = Nudger(core, out, clock=clock)
    await chatting(core, 601, language_code="ru")
    clock.advance(PAST_JITTER)
    out.crash = True
    with pytest.raises(Crash):
        await nudger.run_due()
    (marked,) = await nudges_of(core, 601)  # stored and marked before the call
    assert (await row(core, 601)).message_id == marked.id
    out.crash = False
    # another run: the lease still holds the row; then it runs out
    assert (await nudger.run_due()).claimed == 0
    clock.advance(core.settings.nudge_lease + 1)
    report = await nudger.run_due()
    assert report.unconfirmed == 1 and report.sent == 0 and out.sent == []
    assert len(await nudges_of(core, 601)) == 1
    n = await row(core, 601)
    assert n.message_id is None and n.unanswered == 1 and n.claim_token is None


async def test_two_processes_send_each_nudge_once(server: FakeLLMServer, pg_url: str, redis_url: str,
                                                 redis_prefix: str, redis_cleanup: None) -> None:
    settings = nudge_settings(
        load_settings(database_url=pg_url, redis_url=redis_url, redis_prefix=redis_prefix), server, nudge_batch=7
    )
    a, b = await open_core(settings), await open_core(settings)
    try:
        players = list(range(700, 740))
        for uid in players:
            await chatting(a, uid, language_code="en")
        out = Outbox()
        clock = Clock(timedelta(seconds=PAST_JITTER))
        one, two = Nudger(a, out, clock=clock), Nudger(b, out, clock=clock)
        reports = await asyncio.gather(one.run_due(), two.run_due(), one.run_due())
        assert sorted(u for u, _ in out.sent) == players  # each exactly once
        assert sum(rep.sent for rep in reports) == len(players)
        for uid in players[:3]:
            assert len(await nudges_of(a, uid)) == 1
    finally:
        await a.close()
        await b.close()


async def test_dialogs_without_a_row_are_backfilled_and_ended_ones_dropped(core: Core) -> None:
    out = Outbox()
    clock = Clock()
    nudger = Nudger(core, out, clock=clock)
    await chatting(core, 801, language_code="en")
    await chatting(core, 802, language_code="en")
    async with core.db.engine.begin() as conn:  # as before the schedule existed
        await conn.execute(sa.delete(table_of(Nudge)))
    assert await nudger.backfill() == 2
    await core.dialogs.reset(802)  # no active dialog any more
    first = await nudger.run_due()  # due now, but the claim reads the silence: not yet
    assert (first.sent, first.waiting, first.dropped) == (0, 1, 1)  # the ended dialog's row goes
    clock.advance(PAST_JITTER)
    report = await nudger.run_due()
    assert [u for u, _ in out.sent] == [801] and report.claimed == 1


async def test_no_quota_no_age_and_a_reply_in_flight(server: FakeLLMServer, backend_settings: Settings,
                                                      redis_cleanup_if_any: None) -> None:
    from vitte.metrics import render

    c = await open_core(nudge_settings(backend_settings, server, free_daily_replies=1))
    try:
        out, clock = Outbox(), Clock()
        nudger = Nudger(c, out, clock=clock)
        for uid in (901, 902, 903, 904):
            await chatting(c, uid, language_code="ru")
        await c.dialogs.reply(901, "привет")  # today's only free reply used: no nudge (it costs an LLM call)
        await c.players.decline_adult(902)  # the age confirmation withdrawn
        clock.advance(PAST_JITTER)
        async with c.dialogs.turn(903):  # a reply of 903's in flight: their lock is held
            report = await nudger.run_due()
        assert [u for u, _ in out.sent] == [904]
        assert (report.reasons[r.NO_QUOTA], report.reasons[r.NO_AGE], report.reasons[r.IN_FLIGHT]) == (1, 1, 1)
        # the nudge did not take a reply from 904's quota
        assert (await c.billing.entitlement(904)).used_today == 0
        metrics = render()[0].decode()
        assert 'vitte_nudges_total{outcome="sent"}' in metrics and 'vitte_nudges_total{outcome="no_quota"}' in metrics
    finally:
        await c.close()


async def test_an_llm_failure_stores_nothing_and_tries_later(core: Core, server: FakeLLMServer) -> None:
    out, clock = Outbox(), Clock()
    nudger = Nudger(core, out, clock=clock)
    await chatting(core, 1201, language_code="en")
    clock.advance(PAST_JITTER)
    server.modes.append("500")
    report = await nudger.run_due()
    assert (report.sent, report.failed) == (0, 1) and out.sent == []
    assert await nudges_of(core, 1201) == []  # nothing half-written in the dialog
    n = await row(core, 1201)
    assert n.claim_token is None and n.message_id is None and n.due_at > clock.now()  # released for later
    clock.advance(AFTER * 2)
    assert (await nudger.run_due()).sent == 1


async def test_a_batch_read_older_than_the_dialog_is_read_again(core: Core, server: FakeLLMServer) -> None:
    """The batch's recent turns are read before the player's turn; a message stored in between
    (here: the batch read made stale by hand) makes the nudge read the dialog again."""
    out = Outbox()
    clock = Clock()
    nudger = Nudger(core, out, clock=clock)
    await chatting(core, 111, language_code="ru", first_name="Аня")
    await core.dialogs.reply(111, "Я купила билеты в Рим")
    real = nudger.schedule.recent_many

    async def stale(dialog_ids: Any, limit: int) -> Any:
        return {d: turns[:-2] for d, turns in (await real(dialog_ids, limit)).items()}  # the last exchange missing

    nudger.schedule.recent_many = stale  # type: ignore[method-assign]
    server.requests.clear()
    clock.advance(PAST_JITTER)
    assert (await nudger.run_due()).sent == 1
    messages = server.completions[-1].json["messages"]
    assert any(m["role"] == "user" and "билеты в Рим" in m["content"] for m in messages)
