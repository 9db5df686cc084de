"""The dialogs engine: the seed's rules on SQLite + in-process cache and PostgreSQL + Redis."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from sqlalchemy import func, select

from tests.support.players import adult
from vitte.catalog.cards import default_fixtures_dir, read_cards
from vitte.catalog.seed import seed_cards
from vitte.config import Settings
from vitte.core import Core
from vitte.errors import MessageTooLong, NoActiveDialog, NothingToRegenerate, StaleDialog
from vitte.llm.demo import DemoWriter
from vitte.models import ACTIVE, ASSISTANT, MSG_INTERRUPTED, USER, Dialog, Message, User

USER_ID = 1001


async def open_core(settings: Settings, llm=None) -> Core:
    core = await Core.open(settings, llm=llm or DemoWriter(delay=0))
    if not await core.catalog.personas():
        await seed_cards(core.db, read_cards(default_fixtures_dir()))
        core.catalog.invalidate()
    await adult(core, USER_ID)  # the engine lets in only players who confirmed being 18+
    return core


@pytest.fixture
async def core(backend_settings: Settings, redis_cleanup_if_any: None) -> AsyncIterator[Core]:
    c = await open_core(backend_settings)
    try:
        yield c
    finally:
        await c.close()


async def first_persona_story(core: Core, index: int = 0) -> tuple[str, str]:
    p = (await core.catalog.personas())[index]
    return p.id, p.stories[0].id


async def count(core: Core, stmt) -> int:
    async with core.db.session() as s:
        return int((await s.execute(stmt)).scalar_one())


async def test_choose_opens_one_active_dialog_with_opening(core: Core) -> None:
    persona_id, story_id = await first_persona_story(core)
    assert await core.dialogs.current(USER_ID) is None
    opening = await core.dialogs.choose(USER_ID, persona_id, story_id)
    assert opening.text
    view = await core.dialogs.current(USER_ID)
    assert view is not None and view.id == opening.dialog.id
    assert (view.persona_id, view.story_id, view.status) == (persona_id, story_id, ACTIVE)
    async with core.db.session() as s:
        user = await s.get(User, USER_ID)
        msgs = list((await s.execute(select(Message).where(Message.dialog_id == view.id))).scalars())
    assert user is not None and user.active_persona_id == persona_id  # the seed: users.active_persona_id
    assert [(m.role, m.text) for m in msgs] == [(ASSISTANT, opening.text)]


async def test_choosing_another_persona_ends_the_previous_dialog(core: Core) -> None:
    p1, s1 = await first_persona_story(core, 0)
    p2, s2 = await first_persona_story(core, 1)
    first = await core.dialogs.choose(USER_ID, p1, s1)
    second = await core.dialogs.choose(USER_ID, p2, s2)
    assert first.dialog.id != second.dialog.id
    assert await count(core, select(func.count()).select_from(Dialog).where(Dialog.status == ACTIVE)) == 1
    ended = await core.dialogs.dialog(first.dialog.id)
    assert ended is not None and ended.status == "ended"


async def test_double_click_returns_the_same_dialog(core: Core) -> None:
    p, s = await first_persona_story(core)
    a, b = await asyncio.gather(core.dialogs.choose(USER_ID, p, s), core.dialogs.choose(USER_ID, p, s))
    assert a.dialog.id == b.dialog.id
    assert a.reused or b.reused
    assert await count(core, select(func.count()).select_from(Dialog)) == 1


async def test_reply_stores_message_and_reply_and_continue_shows_last_line(core: Core) -> None:
    p, s = await first_persona_story(core)
    await core.dialogs.choose(USER_ID, p, s)
    seen: list[str] = []

    async def on_text(text: str) -> None:
        seen.append(text)

    out = await core.dialogs.reply(USER_ID, "Привет! Как ты?", telegram_message_id=55, on_text=on_text)
    assert out.text and out.status == "ok"
    assert len(seen) >= 2 and seen[-1].strip() == out.text  # streamed in pieces
    msgs = await core.dialogs.messages(out.dialog_id)
    assert [m.role for m in msgs] == [ASSISTANT, USER, ASSISTANT]
    assert msgs[1].text == "Привет! Как ты?"
    assert msgs[2].text == out.text
    view, last = await core.dialogs.continue_dialog(USER_ID, out.dialog_id)
    assert last == out.text and view.id == out.dialog_id


async def test_start_over_clears_memory_and_opens_new_dialog(core: Core) -> None:
    p, s = await first_persona_story(core)
    first = await core.dialogs.choose(USER_ID, p, s)
    await core.dialogs.reply(USER_ID, "Запомни: меня зовут Аня.")
    async with core.db.session() as sess:
        d = await sess.get(Dialog, first.dialog.id)
        assert d is not None
        d.summary = "Её зовут Аня."
        await sess.commit()
    again = await core.dialogs.start_over(USER_ID, first.dialog.id)
    assert again.dialog.id != first.dialog.id
    assert (again.dialog.persona_id, again.dialog.story_id) == (p, s)
    assert again.dialog.summary == ""
    assert [m.role for m in await core.dialogs.messages(again.dialog.id)] == [ASSISTANT]
    assert await core.cache.recent_get(first.dialog.id) is None  # dropped from the cache
    # a button from the earlier dialog must not act on the new one
    with pytest.raises(StaleDialog):
        await core.dialogs.start_over(USER_ID, first.dialog.id)
    with pytest.raises(StaleDialog):
        await core.dialogs.regenerate(USER_ID, first.dialog.id)


async def test_reset_leaves_no_active_dialog_nor_persona(core: Core) -> None:
    p, s = await first_persona_story(core)
    await core.dialogs.choose(USER_ID, p, s)
    ended = await core.dialogs.reset(USER_ID)
    assert ended is not None
    assert await core.dialogs.current(USER_ID) is None
    player = await core.players.get(USER_ID)
    assert player.active_persona_id is None
    with pytest.raises(NoActiveDialog):
        await core.dialogs.reply(USER_ID, "эй")


async def test_regenerate_replaces_last_reply_only(core: Core) -> None:
    p, s = await first_persona_story(core)
    opening = await core.dialogs.choose(USER_ID, p, s)
    with pytest.raises(NothingToRegenerate):
        await core.dialogs.regenerate(USER_ID, opening.dialog.id)  # the opening is not a reply
    first = await core.dialogs.reply(USER_ID, "Что ты любишь?")
    again = await core.dialogs.regenerate(USER_ID, first.dialog_id)
    assert again.replaced and again.message_id == first.message_id
    msgs = await core.dialogs.messages(first.dialog_id)
    assert [m.role for m in msgs] == [ASSISTANT, USER, ASSISTANT]
    assert msgs[-1].text == again.text


async def test_too_long_message_refused_before_anything_is_stored(core: Core) -> None:
    p, s = await first_persona_story(core)
    await core.dialogs.choose(USER_ID, p, s)
    with pytest.raises(MessageTooLong) as err:
        await core.dialogs.reply(USER_ID, "а" * (core.settings.max_message_chars + 1))
    assert err.value.limit == core.settings.max_message_chars
    assert await count(core, select(func.count()).select_from(Message).where(Message.role == USER)) == 0


class SlowWriter(DemoWriter):
    """The demo writer, slowed down so a reply can be cut mid-stream."""

    def __init__(self) -> None:
        super().__init__(delay=0.05)


async def test_cancelled_reply_is_stored_as_interrupted(backend_settings: Settings, redis_cleanup_if_any: None) -> None:
    core = await open_core(backend_settings, llm=SlowWriter())
    try:
        p, s = await first_persona_story(core)
        await core.dialogs.choose(USER_ID, p, s)
        got_text = asyncio.Event()

        async def on_text(text: str) -> None:
            got_text.set()

        task = asyncio.create_task(core.dialogs.reply(USER_ID, "Расскажи длинную историю", on_text=on_text))
        await asyncio.wait_for(got_text.wait(), 5)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        view = await core.dialogs.current(USER_ID)
        assert view is not None
        msgs = await core.dialogs.messages(view.id)
        assert msgs[-2].role == USER
        assert msgs[-1].role == ASSISTANT and msgs[-1].status == MSG_INTERRUPTED and msgs[-1].text
    finally:
        await core.close()


async def test_stop_keeps_what_was_written(backend_settings: Settings, redis_cleanup_if_any: None) -> None:
    core = await open_core(backend_settings, llm=SlowWriter())
    try:
        p, s = await first_persona_story(core)
        await core.dialogs.choose(USER_ID, p, s)
        stop = asyncio.Event()

        async def on_text(text: str) -> None:
            stop.set()

        out = await core.dialogs.reply(USER_ID, "Расскажи историю", on_text=on_text, stop=stop)
        assert out.status == "stopped" and out.text
        msgs = await core.dialogs.messages(out.dialog_id)
        assert msgs[-1].text == out.text and msgs[-1].status == "stopped"
    finally:
        await core.close()


async def test_recover_interrupted_marks_streaming_rows(core: Core) -> None:
    p, s = await first_persona_story(core)
    opening = await core.dialogs.choose(USER_ID, p, s)
    async with core.db.session() as sess:
        sess.add(Message(dialog_id=opening.dialog.id, role=USER, text="hi"))
        sess.add(Message(dialog_id=opening.dialog.id, role=ASSISTANT, text="half a rep", status="streaming"))
        sess.add(Message(dialog_id=opening.dialog.id, role=ASSISTANT, text="", status="streaming"))
        await sess.commit()
    assert (await core.dialogs.recover_interrupted()).marked == 1
    msgs = await core.dialogs.messages(opening.dialog.id)
    assert [m.status for m in msgs] == ["ok", "ok", MSG_INTERRUPTED]


async def test_memory_folds_older_turns_and_start_over_clears_it(backend_settings: Settings, redis_cleanup_if_any: None) -> None:
    settings = backend_settings.model_copy(update={"llm_context_tokens": 300})
    core = await open_core(settings)
    try:
        p, s = await first_persona_story(core)
        await core.dialogs.choose(USER_ID, p, s)
        for i in range(12):
            await core.dialogs.reply(USER_ID, f"Сообщение номер {i}: я люблю море и старые книги, правда.")
        await core.dialogs.drain()
        view = await core.dialogs.current(USER_ID)
        assert view is not None and view.summary.strip()
        async with core.db.session() as sess:
            d = await sess.get(Dialog, view.id)
            assert d is not None and d.summary_upto > 0
        again = await core.dialogs.start_over(USER_ID)
        assert again.dialog.summary == ""
    finally:
        await core.close()


async def test_concurrent_start_overs_leave_exactly_one_active_dialog_on_postgres(
    pg_url: str,
) -> None:
    """Two processes (separate engines and caches, so no shared lock) race; the database decides."""
    from vitte.config import load_settings

    settings = load_settings(database_url=pg_url)
    a = await open_core(settings)
    b = await open_core(settings)
    try:
        p1, s1 = await first_persona_story(a, 0)
        p2, s2 = await first_persona_story(a, 1)
        await a.dialogs.choose(USER_ID, p1, s1)
        jobs = []
        for i in range(12):
            core = a if i % 2 else b
            jobs.append(core.dialogs.start_over(USER_ID))
            jobs.append(core.dialogs.choose(USER_ID, p2, s2) if i % 3 == 0 else core.dialogs.choose(USER_ID, p1, s1))
        results = await asyncio.gather(*jobs, return_exceptions=True)
        assert not [r for r in results if isinstance(r, Exception) and not isinstance(r, NoActiveDialog)]
        active = await count(a, select(func.count()).select_from(Dialog).where(Dialog.user_id == USER_ID, Dialog.status == ACTIVE))
        assert active == 1
    finally:
        await a.close()
        await b.close()


async def test_a_turn_is_explicit_and_operations_take_it(core: Core) -> None:
    """Operations in a turn take the turn; asking for a second turn of the same player in the
    same task is a programming error said at once (not a deadlock)."""
    persona_id, story_id = await first_persona_story(core)
    async with core.dialogs.turn(USER_ID) as turn:
        assert turn.user_id == USER_ID
        opening = await core.dialogs.choose(turn, persona_id, story_id)
        out = await core.dialogs.reply(turn, "Привет")
        assert out.dialog_id == opening.dialog.id and out.text
        with pytest.raises(RuntimeError, match="open in this task"):
            await core.dialogs.reply(USER_ID, "ещё")
    # another task waits for the turn to end, then has its own
    async with core.dialogs.turn(USER_ID) as turn:
        other = asyncio.create_task(core.dialogs.reply(USER_ID, "после"))
        await asyncio.sleep(0.05)
        assert not other.done()
    assert (await other).text


async def test_regenerate_refuses_a_button_made_for_an_older_message(core: Core) -> None:
    persona_id, story_id = await first_persona_story(core)
    await core.dialogs.choose(USER_ID, persona_id, story_id)
    first = await core.dialogs.reply(USER_ID, "раз")
    second = await core.dialogs.reply(USER_ID, "два")
    view = await core.dialogs.current(USER_ID)
    assert view is not None
    assert await core.dialogs.pressed(USER_ID, view.id, first.message_id, ASSISTANT) is None
    assert await core.dialogs.pressed(USER_ID, view.id, second.message_id, USER) is None
    assert await core.dialogs.pressed(USER_ID, view.id, second.message_id, ASSISTANT) == view
    with pytest.raises(StaleDialog):
        await core.dialogs.regenerate(USER_ID, view.id, expected_message_id=first.message_id)
    out = await core.dialogs.regenerate(USER_ID, view.id, expected_message_id=second.message_id)
    assert out.replaced and out.message_id == second.message_id


async def test_restart_with_the_same_story_starts_over_and_a_delivered_opening_is_not_reused_twice(
    core: Core,
) -> None:
    """The Web App's rules, in the engine: `restart` with the active persona and story starts
    over; a double click's reused opening says whether the first click delivered it (stored,
    so any process knows)."""
    persona_id, story_id = await first_persona_story(core)
    first = await core.dialogs.choose(USER_ID, persona_id, story_id)
    again = await core.dialogs.choose(USER_ID, persona_id, story_id)
    assert again.reused and not again.delivered and again.dialog.id == first.dialog.id
    await core.dialogs.opening_sent(first, 4242)
    again = await core.dialogs.choose(USER_ID, persona_id, story_id)
    assert again.reused and again.delivered
    restarted = await core.dialogs.choose(USER_ID, persona_id, story_id, restart=True)
    assert restarted.restarted and not restarted.reused and restarted.dialog.id != first.dialog.id
    other_persona, other_story = await first_persona_story(core, 1)
    chosen = await core.dialogs.choose(USER_ID, other_persona, other_story, restart=True)
    assert not chosen.restarted and chosen.dialog.persona_id == other_persona
