"""The bot's flows through the real Dispatcher (LocalBotSession + LocalPlayer), on
PostgreSQL + Redis and on SQLite + the in-process cache."""

from __future__ import annotations

import asyncio
import logging
from itertools import pairwise

import pytest

from tests.support.bot_harness import (
    ADMIN_ID,
    PERSONA,
    STORY,
    WEBAPP_URL,
    BotEnv,
    env,
    press,
    wait_until,
)
from vitte.bot.callbacks import DialogCb, RegenCb
from vitte.errors import StoreUnavailable, UnknownUser
from vitte.models import ACTIVE, ASSISTANT, ENDED, MSG_INTERRUPTED, MSG_OK, MSG_STOPPED, USER

__all__ = ["env"]  # the fixture, imported

GREETING_RU = "Привет, Player! 💕"
GREETING_EN = "Hi, Player! 💕"


def _sentences(n: int, start: int = 0) -> str:
    return " ".join(f"Sentence number {i} is here and it goes on." for i in range(start, start + n))


# ---------------------------------------------------------------------- /start


async def test_start_greets_in_the_players_language(env: BotEnv) -> None:
    p = env.player(language_code=None)
    await p.send("/start")
    assert p.last_bot_text().startswith(GREETING_RU)
    assert p.buttons() == ["💕 Начать общение"]
    assert (await env.core.players.get(p.user_id)).language == "ru"

    en = env.player(2002, language_code="en-GB")
    await en.send("/start")
    assert en.last_bot_text().startswith(GREETING_EN)
    assert en.buttons() == ["💕 Start chatting"]
    assert (await env.core.players.get(en.user_id)).language == "en"


async def test_deep_link_opens_the_persona_in_the_web_app(env: BotEnv) -> None:
    p = env.player()
    await p.send(f"/start persona_{PERSONA}")
    message = p.last_bot_message()
    assert message is not None and message.text is not None
    assert message.text.startswith("Кира")
    (button,) = message.iter_buttons()
    assert button.web_app is not None
    assert button.web_app.url == f"{WEBAPP_URL}/#/persona/{PERSONA}"

    en = env.player(2002, language_code="en")
    await en.send(f"/start persona_{PERSONA}")
    (button,) = en.last_bot_message().iter_buttons()
    assert button.text == "Open Kira"
    assert button.web_app.url == f"{WEBAPP_URL}/#/persona/{PERSONA}"

    # without a Web App: a plain explanation and the personas by name
    env.core.settings.webapp_url = None
    await p.send(f"/start persona_{PERSONA}")
    text = p.last_bot_text()
    assert "не подключено" in text
    for name in ("Кира", "Лев", "Мила", "Вера", "Марк"):
        assert name in text
    assert p.buttons() == []

    await p.send("/start persona_nobody")
    assert "Такого персонажа у нас нет" in p.last_bot_text()


# ---------------------------------------------------------------------- "💕 Начать общение"


async def test_start_chatting_without_a_dialog_offers_the_web_app(env: BotEnv) -> None:
    p = env.player()
    await p.send("/start")
    await p.click("💕 Начать общение")
    message = p.last_bot_message()
    (button,) = message.iter_buttons()
    assert button.text == "Выбрать персонажа"
    assert button.web_app is not None and button.web_app.url == WEBAPP_URL

    en = env.player(2002, language_code="en")
    await en.send("/chat")
    (button,) = en.last_bot_message().iter_buttons()
    assert button.text == "Choose a character"

    await p.send("Привет!")  # plain text without a dialog: the same answer, not silence
    assert p.buttons() == ["Выбрать персонажа"]
    assert env.llm.completions == []

    env.core.settings.webapp_url = None
    await p.send("/chat")
    assert "не подключено" in p.last_bot_text()
    assert p.buttons() == []


async def test_continue_and_start_over_follow_the_seed(env: BotEnv) -> None:
    p = env.player()
    opening = await env.choose(p)
    await p.send("/chat")
    assert p.last_bot_text() == "Продолжить с Кира?"
    assert p.buttons() == ["Продолжить общение", "Начать заново"]
    question = p.last_bot_message()

    await p.click("Продолжить общение")
    reminder = p.chat.message(question.message_id)
    assert reminder is not None and reminder.text is not None
    assert f"«{opening.text.strip()}»" in reminder.text
    assert reminder.button_texts() == []

    await p.send("/chat")
    await p.click("Начать заново")
    first, second = await env.dialogs(p.user_id)
    assert (first.status, second.status) == (ENDED, ACTIVE)
    assert (second.persona_id, second.story_id) == (PERSONA, STORY)
    assert p.last_bot_text() == opening.text.strip()
    assert any(m.text == "Начинаем заново с Кира: память очищена." for m in p.bot_messages())
    rows = await env.rows(p.user_id)
    assert [r.text for r in rows if r.dialog_id == second.id] == [opening.text]

    en = env.player(2002, language_code="en")
    await en.send("/start")
    await env.choose(en)
    await en.click("💕 Start chatting")
    assert en.last_bot_text() == "Continue with Kira?"
    assert en.buttons() == ["Continue chatting", "Start over"]
    await en.click("Continue chatting")
    assert en.last_bot_text().startswith("Back with Kira.")
    await en.send("/chat")
    await en.click("Start over")
    assert any(m.text == "Starting over with Kira: memory cleared." for m in en.bot_messages())


async def test_stale_buttons_change_nothing(env: BotEnv) -> None:
    p = env.player()
    await env.choose(p)
    await p.send("/chat")
    old_question = p.last_bot_message()
    await p.click("Начать заново")
    dialogs = await env.dialogs(p.user_id)
    assert len(dialogs) == 2

    # the first question's buttons belong to the ended dialog
    for action in ("over", "cont"):
        update = await press(p, old_question, DialogCb(action=action, dialog_id=dialogs[0].id).pack())
        assert p.callback_answer(update)["text"] == "Эта кнопка устарела."
    assert [d.status for d in await env.dialogs(p.user_id)] == [ENDED, ACTIVE]

    # 🔄 from the earlier dialog
    update = await press(p, old_question, RegenCb(dialog_id=dialogs[0].id, message_id=1).pack())
    assert p.callback_answer(update)["text"] == "Эта кнопка устарела."
    assert env.llm.completions == []

    en = env.player(2002, language_code="en")
    await env.choose(en)
    await en.send("/chat")
    q = en.last_bot_message()
    await en.click("Start over")
    update = await press(en, q, DialogCb(action="over", dialog_id=(await env.dialogs(en.user_id))[0].id).pack())
    assert en.callback_answer(update)["text"] == "This button is out of date."


# ---------------------------------------------------------------------- chat


async def test_reply_streams_as_throttled_drafts_then_one_message(env: BotEnv) -> None:
    env.runtime.draft_interval = 0.15
    env.llm.default_reply = _sentences(12)
    env.llm.tps = 150  # ~0.7 s of streaming
    p = env.player()
    await env.choose(p)
    await p.send("Привет, как ты?")
    final = p.last_bot_message()
    assert final.text == _sentences(12)
    assert final.button_texts() == ["🔄"]

    drafts = env.sent("sendMessageDraft", p.user_id)
    assert len(drafts) >= 3, "the reply was not streamed"
    assert len({d.params["draft_id"] for d in drafts}) == 1
    # the first words came within FIRST_SHOW_DELAY: no "Thinking…" placeholder before them
    assert drafts[0].params.get("text", "") != ""
    assert all(d.params.get("can_stop") for d in drafts)
    texts = [d.params.get("text", "") for d in drafts]
    assert all(len(b) > len(a) for a, b in pairwise(texts))  # only when the text grew
    assert min(b.ts - a.ts for a, b in pairwise(drafts)) >= 0.14  # throttled
    assert env.sent("sendChatAction", p.user_id) == []  # the first words came at once: no typing

    rows = await env.rows(p.user_id)
    assert [(r.role, r.status) for r in rows][-2:] == [(USER, MSG_OK), (ASSISTANT, MSG_OK)]
    assert rows[-2].text == "Привет, как ты?"
    assert rows[-1].text == _sentences(12)


async def test_a_slow_first_token_shows_typing_until_the_words_come(env: BotEnv) -> None:
    env.llm.ttft = 0.6  # twice TYPING_DELAY
    env.llm.default_reply = "Дай подумать. Вот."
    p = env.player()
    await env.choose(p)
    await p.send("Сложный вопрос")
    assert p.last_bot_message().text == "Дай подумать. Вот."
    actions = env.sent("sendChatAction", p.user_id)
    assert [a.params["action"] for a in actions] == ["typing"]
    drafts = [d for d in env.sent("sendMessageDraft", p.user_id) if d.params.get("text")]
    assert not drafts or actions[0].ts < drafts[0].ts  # while nothing but "Thinking…" was shown


async def test_regenerate_replaces_the_last_reply(env: BotEnv) -> None:
    env.llm.replies = ["Первый ответ.", "Второй ответ.", "Второй ответ, вариант два."]
    p = env.player()
    await env.choose(p)
    await p.send("раз")
    first = p.last_bot_message()
    stale_data = first.iter_buttons()[0].callback_data
    await p.send("два")
    reply = p.last_bot_message()
    assert p.chat.message(first.message_id).button_texts() == []  # older replies lose 🔄
    assert reply.text == "Второй ответ." and reply.button_texts() == ["🔄"]

    count = len(p.bot_messages())
    await p.click("🔄")
    edited = p.chat.message(reply.message_id)
    assert edited.text == "Второй ответ, вариант два." and edited.edited
    assert edited.button_texts() == ["🔄"]
    assert len(p.bot_messages()) == count  # replaced, not added
    rows = await env.rows(p.user_id)
    assert [r.text for r in rows if r.role == ASSISTANT][-2:] == ["Первый ответ.", "Второй ответ, вариант два."]
    assert "Второй ответ." not in [r.text for r in rows]

    update = await press(p, first, stale_data)  # 🔄 of an older reply
    assert p.callback_answer(update)["text"] == "Эта кнопка устарела."
    assert len(env.llm.completions) == 3


async def test_long_reply_is_split_on_sentence_boundaries(env: BotEnv) -> None:
    long = _sentences(250)  # ~11 000 characters
    env.llm.default_reply = long
    p = env.player()
    await env.choose(p)
    await p.send("Расскажи длинную историю")
    parts = [m for m in p.bot_messages() if m.text and m.text.startswith("Sentence")]
    assert len(parts) == 3
    assert all(len(m.text) <= 4096 for m in parts)
    assert all(m.text.endswith(".") for m in parts)
    assert " ".join(m.text for m in parts) == long
    assert [m.button_texts() for m in parts] == [[], [], ["🔄"]]
    assert all(len(d.params.get("text", "")) <= 4096 for d in env.sent("sendMessageDraft"))


async def test_stop_button_keeps_what_was_written(env: BotEnv) -> None:
    full = _sentences(40)
    env.llm.default_reply = full
    env.llm.tps = 100  # ~4 s to write it all
    p = env.player()
    await env.choose(p)
    sending = asyncio.create_task(p.send("Рассказывай"))
    await wait_until(lambda: p.current_draft is not None and len(p.current_draft.text) > 20)
    await p.stop_generation()
    await asyncio.wait_for(sending, 5)
    final = p.last_bot_message()
    assert final.text and full.startswith(final.text.rstrip("."))
    assert len(final.text) < len(full) // 2
    rows = await env.rows(p.user_id)
    assert rows[-1].role == ASSISTANT and rows[-1].status == MSG_STOPPED
    assert rows[-1].text == final.text
    assert final.button_texts() == ["🔄"]


async def test_two_messages_in_quick_succession_both_answered_in_order(env: BotEnv) -> None:
    env.llm.tps = 100
    p = env.player()
    await env.choose(p)
    first = asyncio.create_task(p.send("один"))
    await asyncio.sleep(0)  # the first update reaches the dispatcher first, as Telegram orders them
    second = asyncio.create_task(p.send("два"))
    await asyncio.wait_for(asyncio.gather(first, second), 10)
    rows = await env.rows(p.user_id)
    assert [(r.role, r.text) for r in rows[1:]] == [
        (USER, "один"),
        (ASSISTANT, "You said: один"),
        (USER, "два"),
        (ASSISTANT, "You said: два"),
    ]
    finals = [m.text for m in p.bot_messages() if m.text and m.text.startswith("You said")]
    assert finals == ["You said: один", "You said: два"]


async def test_duplicate_update_is_handled_once(env: BotEnv) -> None:
    p = env.player()
    await env.choose(p)
    update = await p.send("привет")
    await p.resend(update)
    await p.resend(update)
    assert len(env.llm.completions) == 1
    rows = await env.rows(p.user_id)
    assert [r.text for r in rows if r.role == USER] == ["привет"]
    assert len([m for m in p.bot_messages() if m.text == "You said: привет"]) == 1

    click = await p.click("🔄")
    await p.resend(click)
    assert len(env.llm.completions) == 2


async def test_llm_failure_then_retry(env: BotEnv, caplog: pytest.LogCaptureFixture) -> None:
    p = env.player()
    await env.choose(p)
    env.llm.modes.append("500")
    with caplog.at_level(logging.WARNING, logger="vitte"):
        await p.send("ты здесь?")
    assert p.last_bot_text().startswith("Не получилось ответить")
    assert p.buttons() == ["Повторить"]
    assert any(str(p.user_id) in r.getMessage() and r.levelno == logging.WARNING for r in caplog.records)
    rows = await env.rows(p.user_id)
    assert (rows[-1].role, rows[-1].text) == (USER, "ты здесь?")  # the message stays stored
    error = p.last_bot_message()

    await p.click("Повторить")
    assert p.chat.message(error.message_id).deleted
    assert p.last_bot_text() == "You said: ты здесь?"
    assert p.buttons() == ["🔄"]
    rows = await env.rows(p.user_id)
    assert [(r.role, r.text) for r in rows[-2:]] == [(USER, "ты здесь?"), (ASSISTANT, "You said: ты здесь?")]

    # the same [Повторить] again is stale: the message is answered
    update = await press(p, error.message_id, error.iter_buttons()[0].callback_data)
    assert p.callback_answer(update)["text"] == "Эта кнопка устарела."
    assert len(env.llm.completions) == 2

    en = env.player(2002, language_code="en")
    await env.choose(en)
    env.llm.modes.extend(["500", "500"])
    await en.send("hello?")
    assert en.buttons() == ["Retry"]
    await en.click("Retry")
    assert en.buttons() == ["Retry"]  # failed again: a new notice; the message is still stored
    await en.click("Retry")
    assert en.last_bot_text() == "You said: hello?"




async def test_retry_after_is_waited_out(env: BotEnv) -> None:
    p = env.player()
    await env.choose(p)
    env.session.fail_next("sendMessage", 429, retry_after=1)
    env.session.fail_next("sendMessageDraft", 429, retry_after=1)
    loop = asyncio.get_running_loop()
    started = loop.time()
    await p.send("привет")
    assert loop.time() - started >= 1.0
    assert p.last_bot_text() == "You said: привет"
    failed = [c for c in env.session.calls_of("sendMessage") if c.error_code == 429]
    assert len(failed) == 1


async def test_drafts_unavailable_fall_back_to_one_edited_message(env: BotEnv) -> None:
    env.session.drafts_supported = False
    env.llm.default_reply = _sentences(8)
    env.llm.tps = 100
    p = env.player()
    await env.choose(p)
    before = len(p.bot_messages())
    await p.send("привет")
    assert len(p.bot_messages()) == before + 1  # one message, edited as the reply grew
    final = p.last_bot_message()
    assert final.text == _sentences(8) and final.button_texts() == ["🔄"]
    edits = env.sent("editMessageText", p.user_id)
    assert len(edits) >= 2
    stamps = [c.ts for c in edits[:-1]]
    assert all(b - a >= env.runtime.edit_interval * 0.9 for a, b in pairwise(stamps))


async def test_what_is_not_a_conversation_gets_a_short_answer(env: BotEnv) -> None:
    env.core.settings.max_message_chars = 50
    p = env.player()
    await env.choose(p)
    for send in (p.send_sticker, p.send_photo, p.send_voice, p.send_document):
        await send()
        assert p.last_bot_text() == "Я пока понимаю только текст 🙂 Напишите словами — и я отвечу."
    update = await p.send("привет")
    await p.edit(update.message.message_id, "привет!!!")
    assert p.last_bot_text().startswith("Исправленное сообщение")
    await p.send("а" * 51)
    assert p.last_bot_text().startswith("Слишком длинное сообщение: можно до 50 символов.")
    assert len(env.llm.completions) == 1
    assert [r.role for r in await env.rows(p.user_id)] == [ASSISTANT, USER, ASSISTANT]

    en = env.player(2002, language_code="en")
    await env.choose(en)
    await en.send_sticker()
    assert en.last_bot_text().startswith("I only understand text")
    await en.send("b" * 51)
    assert "the limit is 50 characters" in en.last_bot_text()
    assert len(env.llm.completions) == 1


async def test_commands_help_and_admin_stats(env: BotEnv) -> None:
    p = env.player()
    await p.send("/nonsense")
    assert p.last_bot_text() == "Не знаю такой команды. Список команд — /help."
    await p.send("/help")
    assert "/settings" in p.last_bot_text()

    # /stats: admins only; for anybody else an unknown command
    await env.choose(p)
    await p.send("привет")
    await p.send("/stats")
    assert p.last_bot_text() == "Не знаю такой команды. Список команд — /help."
    admin = env.player(ADMIN_ID, language_code="en")
    await admin.send("/stats")
    text = admin.last_bot_text()
    assert text.startswith("📊 Statistics")
    assert "Players: 2" in text
    assert "Active dialogs: 1" in text
    assert "Messages today (UTC): 3" in text
    assert "Online now: 2" in text
    # issue 18: the nudges' counts (the active dialog's row in the schedule, nothing sent yet)
    assert "Nudges: 0 sent, 0 due now, 1 scheduled; players unreachable (blocked the bot): 0" in text




# ---------------------------------------------------------------------- settings


async def test_settings_language_style_and_deleting_data(env: BotEnv) -> None:
    p = env.player()
    await p.send("/settings")
    assert p.last_bot_text().startswith("⚙️ Настройки")
    await p.click("English")
    assert p.last_bot_text().startswith("⚙️ Settings")
    assert "✓ English" in p.buttons()
    await p.click("Long")
    player = await env.core.players.get(p.user_id)
    assert (player.language, player.style) == ("en", "long")
    assert "Reply style: Long" in p.last_bot_text()
    await p.send("/start")
    assert p.last_bot_text().startswith(GREETING_EN)

    # deleting the data needs a confirmation
    await p.send("/settings")
    await p.click("Русский")
    await env.choose(p)
    await p.send("привет")
    await p.send("/settings")
    await p.click("Удалить мои данные")
    assert p.last_bot_text().startswith("Удалить все ваши диалоги")
    await p.click("Отмена")
    assert p.last_bot_text().startswith("⚙️ Настройки")
    assert await env.rows(p.user_id)
    await p.click("Удалить мои данные")
    await p.click("Да, удалить")
    assert p.last_bot_text().startswith("Готово: ваши данные удалены.")
    with pytest.raises(UnknownUser):
        await env.core.players.get(p.user_id)
    assert await env.dialogs(p.user_id) == []




# ---------------------------------------------------------------------- failures


async def test_store_trouble_never_shows_a_traceback(env: BotEnv, monkeypatch: pytest.MonkeyPatch) -> None:
    p = env.player()
    await env.choose(p)

    async def down(*_a: object, **_k: object) -> None:
        raise StoreUnavailable("connection refused")

    monkeypatch.setattr(env.core.dialogs, "current", down)
    await p.send("привет")
    assert p.last_bot_text() == "Секунду… Сервис на мгновение недоступен. Попробуйте ещё раз через минуту."

    async def broken(*_a: object, **_k: object) -> None:
        raise RuntimeError("boom")

    monkeypatch.setattr(env.core.dialogs, "current", broken)
    await p.send("привет")
    assert p.last_bot_text() == "Что-то пошло не так. Попробуйте ещё раз."
    for m in p.bot_messages():
        assert "Traceback" not in (m.text or "") and "boom" not in (m.text or "")


async def test_shutdown_mid_reply_stores_the_partial_as_interrupted(env: BotEnv) -> None:
    env.llm.default_reply = _sentences(40)
    env.llm.tps = 50
    p = env.player()
    await env.choose(p)
    sending = asyncio.create_task(p.send("Рассказывай"))
    await wait_until(lambda: p.current_draft is not None and len(p.current_draft.text) > 20)
    cancelled = await env.runtime.drain(0.05)
    assert cancelled == 1
    with pytest.raises(asyncio.CancelledError):
        await sending
    rows = await env.rows(p.user_id)
    assert rows[-2].role == USER and rows[-2].text == "Рассказывай"
    assert rows[-1].role == ASSISTANT and rows[-1].status == MSG_INTERRUPTED
    assert rows[-1].text and _sentences(40).startswith(rows[-1].text)
    assert "бот перезапускается" in p.last_bot_text()


# ---------------------------------------------------------------------- odds and ends


async def test_odds_and_ends(env: BotEnv) -> None:
    from vitte.telegram.messages import send_opening

    # the Web App sends the opening the same way "Начать заново" does
    p = env.player()
    opening = await env.choose(p)
    message_id = await send_opening(env.bot, p.user_id, opening)
    message = p.chat.message(message_id)
    assert message is not None and message.text == opening.text.strip()
    assert message.button_texts() == []

    # a button the bot does not know (an older version's): a notice, nothing else
    update = await press(p, message, "some:old:format")
    assert p.callback_answer(update)["text"] == "Эта кнопка устарела."

    # group chats: the companion talks in private only
    group = {"id": -100500, "type": "group", "title": "Friends"}
    for text in ("/start", "hello everyone"):
        group_message = {"message_id": 1, "date": 0, "chat": group, "from": p.user, "text": text}
        if text.startswith("/"):
            group_message["entities"] = [{"type": "bot_command", "offset": 0, "length": 6}]
        await p.feed({"update_id": env.session.next_update_id(), "message": group_message})
    sent = env.sent("sendMessage", -100500)
    assert [c.params["text"] for c in sent] == ["Я общаюсь только в личных сообщениях — напишите мне напрямую."]


async def test_regenerate_streams_like_a_reply_and_can_be_stopped(env: BotEnv) -> None:
    """🔄 and [Повторить] share one streaming path: the rewrite shows drafts with the stop
    button, and a stop before the first word leaves the reply as it was."""
    env.llm.replies = ["Первый ответ.", "Медленный новый ответ, слово за словом, до самого конца."]
    p = env.player()
    await env.choose(p)
    await p.send("раз")
    reply = p.last_bot_message()
    env.llm.ttft = 0.6  # the rewrite's first words come after the drafts begin
    drafts_before = len(env.sent("sendMessageDraft", p.user_id))
    await p.click("🔄")
    drafts = env.sent("sendMessageDraft", p.user_id)[drafts_before:]
    assert drafts and all(d.params.get("can_stop") for d in drafts)
    edited = p.chat.message(reply.message_id)
    assert edited.text == "Медленный новый ответ, слово за словом, до самого конца."
    assert edited.button_texts() == ["🔄"]

    env.llm.replies = ["Этого ответа не будет."]
    env.llm.ttft = 1.0
    count = len(p.bot_messages())
    click = asyncio.create_task(p.click("🔄"))
    for _ in range(200):  # the stop button reaches the running rewrite
        if env.sent("sendMessageDraft", p.user_id)[len(drafts) + drafts_before :]:
            break
        await asyncio.sleep(0.01)
    await p.stop_generation()
    await click
    assert p.chat.message(reply.message_id).text == edited.text  # the reply stays
    assert len(p.bot_messages()) == count
    rows = await env.rows(p.user_id)
    assert [r.text for r in rows if r.role == ASSISTANT][-1] == edited.text
