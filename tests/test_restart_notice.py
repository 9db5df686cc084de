"""After a crash mid-reply (SIGKILL: nothing ran on the way down) the next start recovers the
cut replies and tells each player still waiting, once, in their language, with [Повторить];
the button answers through `DialogEngine.regenerate`. The real process: tests/test_faults.py.

The crash is staged the way it leaves the database: the turn's two rows as `reply` stores
them (the player's message, the reply's placeholder still 'streaming'), nothing else, and the
cached recent messages (Redis) without the player's message, which reaches the cache only
with the reply.
"""

from __future__ import annotations

import asyncio
import logging

import pytest

from tests.support.bot_harness import BotEnv, env
from vitte.bot.callbacks import RegenCb, RetryCb
from vitte.bot.runner import _startup
from vitte.bot.texts import t
from vitte.dialogs import InterruptedReply
from vitte.localapi import LocalPlayer
from vitte.models import ASSISTANT, MSG_INTERRUPTED, MSG_OK, MSG_STREAMING, USER, Message, User

__all__ = ["env"]  # the fixture, imported

NOTICE_RU = "⏸ Ответ прервался: бот перезапускался. Нажмите «Повторить» — я отвечу заново."
NOTICE_EN = "⏸ The reply was cut off by a restart. Tap Retry and I'll answer again."


async def _crash_mid_reply(env: BotEnv, p: LocalPlayer, text: str, partial: str = "") -> tuple[int, int]:
    """The rows a SIGKILL leaves mid-reply: the player's message and the placeholder, still
    'streaming' (`partial`: words stored before the crash). Returns their ids."""
    view = await env.core.dialogs.current(p.user_id)
    assert view is not None
    await env.core.dialogs.messages(view.id)  # the recent messages cached, as in a running bot
    async with env.core.db.session() as s:
        said = Message(dialog_id=view.id, role=USER, text=text, status=MSG_OK)
        s.add(said)
        await s.flush()
        cut = Message(dialog_id=view.id, role=ASSISTANT, text=partial, status=MSG_STREAMING)
        s.add(cut)
        await s.commit()
        return int(said.id or 0), int(cut.id or 0)


async def _chatting(env: BotEnv, user_id: int, language: str) -> LocalPlayer:
    p = env.player(user_id, language_code=language)
    await env.choose(p)
    await p.send("hello")  # a turn done: the dialog's recent messages are cached
    assert p.last_bot_text() == "You said: hello"
    return p


def test_the_notice_texts() -> None:
    assert t("ru", "restart_interrupted") == NOTICE_RU
    assert t("en", "restart_interrupted") == NOTICE_EN


async def test_recover_interrupted_reports_who_still_waits(env: BotEnv) -> None:
    ru = await _chatting(env, 5101, "ru")
    en = await _chatting(env, 5102, "en")
    moved_on = await _chatting(env, 5103, "ru")  # the cut reply's dialog ended since
    blocked = await _chatting(env, 5104, "ru")  # blocked by an operator
    ru_said, _ = await _crash_mid_reply(env, ru, "Ты здесь?")
    _, en_cut = await _crash_mid_reply(env, en, "Are you there?", partial="Of course I")
    await _crash_mid_reply(env, moved_on, "и ещё")
    await env.core.dialogs.start_over(moved_on.user_id)
    await _crash_mid_reply(env, blocked, "эй")
    await env.core.players.block(blocked.user_id, "test")

    recovered = await env.core.dialogs.recover_interrupted()
    assert recovered.marked == 1  # replies marked interrupted (the empty placeholders are deleted)
    ru_view = await env.core.dialogs.current(ru.user_id)
    en_view = await env.core.dialogs.current(en.user_id)
    assert ru_view is not None and en_view is not None
    assert sorted(recovered.notices, key=lambda n: n.user_id) == [
        InterruptedReply(ru.user_id, ru_view.id, "ru", ru_said, partial=False),
        InterruptedReply(en.user_id, en_view.id, "en", en_cut, partial=True),
    ]
    rows = await env.rows(en.user_id)
    assert (rows[-1].id, rows[-1].text, rows[-1].status) == (en_cut, "Of course I", MSG_INTERRUPTED)
    assert (await env.rows(ru.user_id))[-1].text == "Ты здесь?"  # the empty placeholder is gone
    # the cached recent messages are dropped (they lacked the player's message): rebuilt on read
    assert await env.core.cache.recent_get(ru_view.id) is None
    assert await env.core.cache.recent_get(en_view.id) is None

    again = await env.core.dialogs.recover_interrupted()  # a second start: nothing to tell
    assert again.marked == 0 and again.notices == ()


async def test_restart_tells_the_player_once_and_retry_answers_the_kept_message(
    env: BotEnv, caplog: pytest.LogCaptureFixture
) -> None:
    p = await _chatting(env, 5201, "ru")
    said, _ = await _crash_mid_reply(env, p, "Не уходи")
    before = len(p.bot_messages())

    with caplog.at_level(logging.INFO, logger="vitte.bot"):
        await _startup(env.bot, env.core, env.settings)
    assert "told 1 of 1 player(s) that a restart cut their reply" in caplog.text
    notices = p.bot_messages()[before:]
    assert [m.text for m in notices] == [NOTICE_RU]
    (button,) = notices[0].iter_buttons()
    assert button.text == "Повторить"
    view = await env.core.dialogs.current(p.user_id)
    assert view is not None
    assert button.callback_data == RetryCb(dialog_id=view.id, message_id=said).pack()

    await _startup(env.bot, env.core, env.settings)  # a second restart: no second notice
    assert [m.text for m in p.bot_messages()[before:]] == [NOTICE_RU]

    await p.click("Повторить", notices[0])
    # the notice gives way to the answer, which answers the kept message (not the turn before)
    assert [m.text for m in p.bot_messages()[before:]] == ["You said: Не уходи"]
    rows = await env.rows(p.user_id)
    assert [(r.role, r.text, r.status) for r in rows[-2:]] == [
        (USER, "Не уходи", MSG_OK),
        (ASSISTANT, "You said: Не уходи", MSG_OK),
    ]
    assert not [r for r in rows if r.status == MSG_STREAMING]
    assert len(env.llm.completions) == 2  # "hello" and the retry: nothing written twice


async def test_a_kept_half_reply_is_rewritten_in_place_by_the_notices_button(env: BotEnv) -> None:
    p = await _chatting(env, 5301, "en")
    _, cut = await _crash_mid_reply(env, p, "Tell me", partial="Once upon a")
    before = len(p.bot_messages())
    await _startup(env.bot, env.core, env.settings)
    (notice,) = p.bot_messages()[before:]
    assert notice.text == NOTICE_EN
    (button,) = notice.iter_buttons()
    view = await env.core.dialogs.current(p.user_id)
    assert view is not None
    assert (button.text, button.callback_data) == ("Retry", RegenCb(dialog_id=view.id, message_id=cut).pack())

    await p.click("Retry", notice)
    assert [m.text for m in p.bot_messages()[before:]] == ["You said: Tell me"]
    rows = await env.rows(p.user_id)
    # `regenerate` replaced the interrupted reply: the same row, now complete
    assert [(r.id, r.role, r.text, r.status) for r in rows[-2:]][1] == (cut, ASSISTANT, "You said: Tell me", MSG_OK)
    assert rows[-2].text == "Tell me"


async def test_blocked_players_and_telegram_limits_do_not_stop_the_start(env: BotEnv) -> None:
    players = [await _chatting(env, 5400 + i, "ru") for i in range(12)]
    for p in players:
        await _crash_mid_reply(env, p, "ну?")
    env.session.block(players[0].user_id)  # blocked the bot: skipped quietly
    env.session.fail_next("sendMessage", 429, retry_after=1)  # Telegram asks to slow down once
    marks = [len(p.bot_messages()) for p in players]

    await _startup(env.bot, env.core, env.settings)

    assert [m.text for m in players[0].bot_messages()[marks[0] :]] == []
    for p, mark in zip(players[1:], marks[1:], strict=True):
        assert [m.text for m in p.bot_messages()[mark:]] == [NOTICE_RU]


async def test_with_a_runtime_the_notices_do_not_hold_up_the_start(env: BotEnv) -> None:
    p = await _chatting(env, 5501, "en")
    await _crash_mid_reply(env, p, "still there?")
    env.session.fail_next("sendMessage", 429, retry_after=1)  # the notice waits a second
    before = len(p.bot_messages())

    await _startup(env.bot, env.core, env.settings, env.runtime)
    assert p.bot_messages()[before:] == []  # started; the notice is on its way
    assert len(env.runtime.tasks) == 1  # tracked: a shutdown drains it like an update
    await env.runtime.drain(10)
    assert [m.text for m in p.bot_messages()[before:]] == [NOTICE_EN]


async def test_a_reply_whose_player_is_locked_is_left_alone_until_the_lock_is_free(env: BotEnv) -> None:
    """Another process's live reply (it holds the player's lock from before its placeholder is
    stored until the reply is) is not touched; a crashed holder's lock lapses with its lease,
    and the next pass recovers that reply."""
    import asyncio

    live = await _chatting(env, 5301, "ru")
    crashed = await _chatting(env, 5302, "en")
    await _crash_mid_reply(env, live, "ты тут?", partial="Да, я")
    _, cut = await _crash_mid_reply(env, crashed, "still there?")

    holding = asyncio.Event()
    done = asyncio.Event()

    async def streaming_elsewhere() -> None:
        async with env.core.cache.user_lock(live.user_id):
            holding.set()
            await done.wait()

    holder = asyncio.create_task(streaming_elsewhere())
    await holding.wait()
    try:
        first = await env.core.dialogs.recover_interrupted()
        assert (first.marked, first.deferred) == (0, 1)  # the crashed one's empty placeholder: dropped
        assert [n.user_id for n in first.notices] == [crashed.user_id]
        live_rows = await env.rows(live.user_id)
        assert (live_rows[-1].text, live_rows[-1].status) == ("Да, я", MSG_STREAMING)  # untouched
        assert cut not in [r.id for r in await env.rows(crashed.user_id)]
    finally:
        done.set()
        await holder
    second = await env.core.dialogs.recover_interrupted()  # the lock is free now
    assert (second.marked, second.deferred) == (1, 0)
    assert [(n.user_id, n.partial) for n in second.notices] == [(live.user_id, True)]
    assert (await env.rows(live.user_id))[-1].status == MSG_INTERRUPTED


@pytest.mark.parametrize("backend", ["postgres"])
async def test_a_crash_after_the_reply_was_stored_does_not_leave_the_prompt_stale(env: BotEnv) -> None:
    """The turn reaches the cache with the lock's release. A process killed between storing a
    reply and releasing the lock leaves the cache without that turn: the next holder sees the
    dead holder's mark (`LockHold.suspect`) and builds the prompt from the database."""
    p = await _chatting(env, 5301, "en")
    view = await env.core.dialogs.current(p.user_id)
    assert view is not None
    # a turn the database has and the cache lacks, and a holder that never released
    async with env.core.db.session() as s:
        s.add(Message(dialog_id=view.id, role=USER, text="I got a puppy!", status=MSG_OK))
        await s.flush()
        s.add(Message(dialog_id=view.id, role=ASSISTANT, text="A puppy? Tell me everything.", status=MSG_OK))
        await s.commit()
    cached = await env.core.cache.recent_get(view.id)
    assert cached is not None and "I got a puppy!" not in [m.text for m in cached]
    cache = env.core.cache
    await cache._redis.set(cache._lock_keys(p.user_id)[4], "a-dead-process-token")  # type: ignore[attr-defined]

    await p.send("What was the news?")
    prompt = env.llm.completions[-1].json["messages"]
    said = [m["content"] for m in prompt]
    assert any("I got a puppy!" in c for c in said), said
    assert any("A puppy? Tell me everything." in c for c in said), said
    # the cache was rebuilt from the database and carries on from there
    cached = await env.core.cache.recent_get(view.id)
    assert cached is not None
    assert [m.text for m in cached[-4:]] == [
        "I got a puppy!",
        "A puppy? Tell me everything.",
        "What was the news?",
        p.last_bot_text(),
    ]


async def test_retry_stores_its_reply_row_first_so_a_crash_mid_reply_is_recovered(env: BotEnv) -> None:
    """[Повторить] answers a message left without a reply: like `reply`, it stores the reply's
    row ('streaming') before the LLM writes, so a crash meanwhile leaves what
    `recover_interrupted` recovers and tells; the row is the reply once written."""
    p = await _chatting(env, 5401, "en")
    view = await env.core.dialogs.current(p.user_id)
    assert view is not None
    async with env.core.db.session() as s:  # a reply that failed leaves the player's message alone
        s.add(Message(dialog_id=view.id, role=USER, text="Are you there?", status=MSG_OK))
        await s.commit()
    await env.core.cache.recent_drop(view.id)  # the cache as it was: rebuilt from the database
    asked = len(env.llm.completions)
    env.llm.ttft = 0.5
    retry = asyncio.create_task(env.core.dialogs.regenerate(p.user_id, view.id))
    assert await env.llm.wait_requests(asked + 1)
    last = (await env.rows(p.user_id))[-1]
    assert (last.role, last.status, last.text) == (ASSISTANT, MSG_STREAMING, "")  # what a crash leaves
    outcome = await retry
    assert outcome.message_id == last.id and outcome.text == "You said: Are you there?"
    rows = await env.rows(p.user_id)
    assert [(r.role, r.status, r.text) for r in rows[-2:]] == [
        (USER, MSG_OK, "Are you there?"),
        (ASSISTANT, MSG_OK, "You said: Are you there?"),
    ]


async def test_a_player_the_nudges_marked_unreachable_gets_no_notice(env: BotEnv) -> None:
    """A player Telegram said blocked the bot (users.unreachable_at, recorded on any 403 by the
    middleware run_bot installs) is not told, as the nudges skip them; a player marked so who
    wrote since (the cut reply answered a later message) and everyone else still are."""
    from aiogram.exceptions import TelegramForbiddenError

    from vitte.telegram.nudges import mark_unreachable_in

    env.bot.session.middleware(mark_unreachable_in(env.core.db))  # as run_bot installs it

    async def blocked_once(p: LocalPlayer) -> None:
        env.session.block(p.user_id)
        with pytest.raises(TelegramForbiddenError):
            await env.bot.send_message(chat_id=p.user_id, text="a nudge")
        env.session.unblock(p.user_id)  # Telegram would deliver again; the bot does not know it

    gone = await _chatting(env, 5601, "ru")
    back = await _chatting(env, 5602, "ru")
    other = await _chatting(env, 5603, "en")
    await blocked_once(back)  # marked, then the player writes again: reachable
    for p, said in ((gone, "ты тут?"), (back, "я вернулся"), (other, "still there?")):
        await _crash_mid_reply(env, p, said)
    await blocked_once(gone)  # marked after their last message: unreachable
    async with env.core.db.session() as s:
        marked = {u: (await s.get(User, u)).unreachable_at for u in (5601, 5602, 5603)}  # type: ignore[union-attr]
    assert marked[5601] is not None and marked[5602] is not None and marked[5603] is None

    recovered = await env.core.dialogs.recover_interrupted()
    assert sorted(n.user_id for n in recovered.notices) == [back.user_id, other.user_id]
    assert recovered.marked == 0  # the empty placeholders were deleted, the gone player's too
    assert (await env.rows(gone.user_id))[-1].text == "ты тут?"


async def test_the_restart_sends_nothing_to_an_unreachable_player(env: BotEnv) -> None:
    from vitte.initiative.schedule import Schedule
    from vitte.models import utcnow

    gone = await _chatting(env, 5701, "ru")
    told = await _chatting(env, 5702, "ru")
    for p in (gone, told):
        await _crash_mid_reply(env, p, "ну?")
    await Schedule(env.core.db).mark_unreachable(gone.user_id, utcnow())  # the nudger's record of a 403
    marks = [len(p.bot_messages()) for p in (gone, told)]

    await _startup(env.bot, env.core, env.settings)

    assert gone.bot_messages()[marks[0] :] == []  # never tried: the local API would have delivered
    assert [m.text for m in told.bot_messages()[marks[1] :]] == [NOTICE_RU]
    assert not [
        c
        for c in env.session.calls_of("sendMessage")
        if c.params.get("chat_id") == gone.user_id and c.params.get("text") == NOTICE_RU
    ]
