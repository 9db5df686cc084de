"""Splitting long replies, waiting out TelegramRetryAfter, the progress stream's fallbacks."""

from __future__ import annotations

import asyncio

import pytest
from aiogram.exceptions import TelegramRetryAfter
from aiogram.methods import SendMessage
from hypothesis import given, settings
from hypothesis import strategies as st

from vitte.bot import streaming
from vitte.bot.streaming import ReplyStream, TypingLoop
from vitte.localapi import LocalBotSession, make_local_bot
from vitte.telegram.calls import call_with_retry, split_text


def test_short_text_is_one_piece() -> None:
    assert split_text("  Привет.  ") == ["Привет."]
    assert split_text("") == []


def test_splits_on_sentence_ends() -> None:
    text = " ".join(f"Предложение {i} заканчивается здесь." for i in range(400))
    parts = split_text(text, 1000)
    assert all(len(p) <= 1000 for p in parts)
    assert all(p.endswith("здесь.") for p in parts)
    assert " ".join(parts) == text


def test_prefers_paragraphs_then_lines() -> None:
    para = "А" * 600 + ". " + "Б" * 300
    text = para + "\n\n" + para
    assert split_text(text, 1000) == [para, para]
    text = para + "\n" + para
    assert split_text(text, 1000) == [para, para]


def test_a_text_without_boundaries_is_cut_hard() -> None:
    parts = split_text("x" * 2500, 1000)
    assert [len(p) for p in parts] == [1000, 1000, 500]


@settings(max_examples=200, deadline=None)
@given(st.text(alphabet=st.sampled_from("ab .!?\n,"), max_size=3000), st.integers(20, 500))
def test_split_keeps_every_character_and_the_limit(text: str, limit: int) -> None:
    parts = split_text(text, limit)
    assert all(0 < len(p) <= limit for p in parts)
    assert "".join(parts).replace(" ", "").replace("\n", "") == text.replace(" ", "").replace("\n", "")


async def test_retry_after_is_waited_out_then_the_call_succeeds() -> None:
    waits: list[float] = []
    calls = 0

    async def sleep(seconds: float) -> None:
        waits.append(seconds)

    async def call() -> str:
        nonlocal calls
        calls += 1
        if calls < 3:
            raise TelegramRetryAfter(SendMessage(chat_id=1, text="x"), "Too Many Requests", 7)
        return "sent"

    assert await call_with_retry(call, sleep=sleep) == "sent"
    assert waits == [7.0, 7.0]


async def test_retry_after_gives_up_after_the_attempts() -> None:
    async def sleep(seconds: float) -> None:
        return None

    async def call() -> str:
        raise TelegramRetryAfter(SendMessage(chat_id=1, text="x"), "Too Many Requests", 1)

    with pytest.raises(TelegramRetryAfter):
        await call_with_retry(call, attempts=3, sleep=sleep)


async def test_refused_empty_placeholder_becomes_an_ellipsis() -> None:
    session = LocalBotSession()
    bot = make_local_bot(session)
    session.register_user({"id": 7, "is_bot": False, "first_name": "P"})
    session.fail_next("sendMessageDraft", 400, "Bad Request: text must be non-empty")
    stream = ReplyStream(bot, 7, draft_id=5, draft_interval=0.01, first_show_delay=0).start()
    await stream.on_text("Привет")
    await asyncio.sleep(0.1)
    message_id = await stream.finish("Привет, как дела?")
    drafts = [c for c in session.calls_of("sendMessageDraft") if c.ok]
    assert drafts[0].params["text"] == "…"
    assert stream.mode == "draft"
    assert session.chat(7).message(message_id).text == "Привет, как дела?"


async def test_drafts_refused_fall_back_to_an_edited_message() -> None:
    session = LocalBotSession()
    session.drafts_supported = False
    bot = make_local_bot(session)
    session.register_user({"id": 7, "is_bot": False, "first_name": "P"})
    stream = ReplyStream(
        bot, 7, draft_id=5, draft_interval=0.01, edit_interval=0.05, first_show_delay=0
    ).start()
    for i in range(1, 6):
        await stream.on_text("слово " * i)
        await asyncio.sleep(0.03)
    message_id = await stream.finish("слово " * 6)
    assert stream.mode == "edit"
    chat = session.chat(7)
    assert [m.message_id for m in chat.bot_messages()] == [message_id]
    assert chat.message(message_id).text == ("слово " * 6).strip()


async def test_abort_in_edit_mode_removes_the_half_written_message() -> None:
    session = LocalBotSession()
    session.drafts_supported = False
    bot = make_local_bot(session)
    session.register_user({"id": 7, "is_bot": False, "first_name": "P"})
    stream = ReplyStream(bot, 7, draft_id=5, draft_interval=0.01, edit_interval=0.05).start()
    await stream.on_text("Половина ответа")
    await asyncio.sleep(0.1)
    await stream.abort()
    assert session.chat(7).bot_messages() == []


async def test_a_burst_of_deltas_makes_no_call_and_starts_no_task() -> None:
    session = LocalBotSession()
    bot = make_local_bot(session)
    session.register_user({"id": 7, "is_bot": False, "first_name": "P"})
    stream = ReplyStream(bot, 7, draft_id=5, draft_interval=0.5).start()
    await asyncio.sleep(0.05)  # the "Thinking…" placeholder
    calls, tasks = len(session.calls), len(asyncio.all_tasks())
    for i in range(1, 301):  # an instant LLM: every delta at once
        await stream.on_text("слово " * i)
    assert len(session.calls) == calls and len(asyncio.all_tasks()) == tasks
    await stream.finish("слово " * 300)
    assert session.calls_of("sendMessageDraft") == []  # written within FIRST_SHOW_DELAY: no draft at all
    last = session.chat(7).last_bot_message()
    assert last is not None and last.text == ("слово " * 300).strip()


async def test_words_that_come_at_once_show_no_typing() -> None:
    session = LocalBotSession()
    bot = make_local_bot(session)
    session.register_user({"id": 7, "is_bot": False, "first_name": "P"})
    stream = ReplyStream(bot, 7, draft_id=5).start()
    await asyncio.sleep(0.01)
    await stream.on_text("Сразу")
    await asyncio.sleep(streaming.TYPING_DELAY + 0.1)  # past the delay: still nothing
    await stream.finish("Сразу ответ.")
    assert session.calls_of("sendChatAction") == []
    assert session.chat(7).last_bot_message().text == "Сразу ответ."  # type: ignore[union-attr]


async def test_a_slow_first_word_shows_typing_and_repeats_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(streaming, "TYPING_DELAY", 0.05)
    monkeypatch.setattr(streaming, "TYPING_EVERY", 0.1)
    session = LocalBotSession()
    bot = make_local_bot(session)
    session.register_user({"id": 7, "is_bot": False, "first_name": "P"})
    stream = ReplyStream(bot, 7, draft_id=5).start()
    await asyncio.sleep(0.02)
    assert session.calls_of("sendChatAction") == []  # not yet: the words may still come at once
    await asyncio.sleep(0.28)  # typing at 0.05 s, 0.15 s, 0.25 s
    await stream.on_text("Наконец")
    actions = session.calls_of("sendChatAction")
    assert len(actions) >= 2 and {c.params["action"] for c in actions} == {"typing"}  # repeated
    await asyncio.sleep(0.25)
    await stream.finish("Наконец.")
    assert len(session.calls_of("sendChatAction")) == len(actions)  # none after the first words


async def test_typing_loop_stopped_early_makes_no_call_and_leaves_no_task() -> None:
    session = LocalBotSession()
    bot = make_local_bot(session)
    tasks = len(asyncio.all_tasks())
    typing = TypingLoop(bot, 7).start()
    assert len(asyncio.all_tasks()) == tasks
    await typing.stop()
    await asyncio.sleep(streaming.TYPING_DELAY + 0.05)
    assert session.calls_of("sendChatAction") == [] and len(asyncio.all_tasks()) == tasks


async def test_nothing_shows_before_the_first_show_delay_then_the_placeholder() -> None:
    from vitte.bot.streaming import FIRST_SHOW_DELAY

    session = LocalBotSession()
    bot = make_local_bot(session)
    session.register_user({"id": 7, "is_bot": False, "first_name": "P"})
    stream = ReplyStream(bot, 7, draft_id=5, draft_interval=0.05).start()
    await asyncio.sleep(FIRST_SHOW_DELAY / 3)
    assert session.calls_of("sendMessageDraft") == []  # a fast reply would show no draft at all
    await asyncio.sleep(FIRST_SHOW_DELAY)
    # no word yet: Telegram's "Thinking…" placeholder (an empty draft), with the stop button
    assert [
        (c.params.get("text") or "", c.params.get("can_stop")) for c in session.calls_of("sendMessageDraft")
    ] == [("", True)]
    await stream.on_text("Привет")
    await asyncio.sleep(0.1)
    assert session.calls_of("sendMessageDraft")[-1].params["text"] == "Привет"
    await stream.finish("Привет!")
