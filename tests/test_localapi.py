"""The local Bot API session and the simulated player, against a small bot written here."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from aiogram import Bot, Dispatcher, F, Router
from aiogram.client.default import DefaultBotProperties
from aiogram.exceptions import (
    TelegramBadRequest,
    TelegramForbiddenError,
    TelegramNetworkError,
    TelegramNotFound,
    TelegramRetryAfter,
    TelegramServerError,
)
from aiogram.filters import Command, CommandObject, CommandStart
from aiogram.methods import SendPoll
from aiogram.types import (
    BufferedInputFile,
    CallbackQuery,
    FSInputFile,
    InlineKeyboardButton,
    InlineKeyboardMarkup,
    LabeledPrice,
    Message,
    MessageGenerationStopped,
    PreCheckoutQuery,
    TelegramObject,
    Update,
    WebAppInfo,
)
from aiogram.types.bot_subscription_updated import BotSubscriptionUpdated

from vitte.localapi import (
    ApiCall,
    ButtonNotClickable,
    ButtonNotFound,
    LocalBotSession,
    LocalPlayer,
    PaymentDeclined,
    make_local_bot,
    parse_html,
)

# --------------------------------------------------------------------------- the bot


def keyboard() -> InlineKeyboardMarkup:
    return InlineKeyboardMarkup(
        inline_keyboard=[
            [
                InlineKeyboardButton(text="❤️ Yes", callback_data="yes"),
                InlineKeyboardButton(text="Later", callback_data="later"),
                InlineKeyboardButton(text="Same again", callback_data="same"),
            ],
            [InlineKeyboardButton(text="Open app", web_app=WebAppInfo(url="https://example.org/app"))],
            [InlineKeyboardButton(text="Site", url="https://example.org")],
        ]
    )


def build_router() -> Router:
    router = Router()

    @router.message(CommandStart())
    async def start(message: Message, seen: dict[str, Any]) -> None:
        sent = await message.answer("<b>Hi</b>, it's me", reply_markup=keyboard())
        seen["start_reply"] = sent

    @router.callback_query(F.data == "yes")
    async def yes(query: CallbackQuery) -> None:
        assert isinstance(query.message, Message)
        await query.message.edit_text("You chose: yes")
        await query.answer("saved")

    @router.callback_query(F.data == "same")
    async def same(query: CallbackQuery, seen: dict[str, Any]) -> None:
        assert isinstance(query.message, Message)
        try:
            await query.message.edit_text(query.message.html_text, reply_markup=keyboard())
        except TelegramBadRequest as e:
            seen.setdefault("errors", []).append(e)
        await query.answer()

    @router.message(Command("stream"))
    async def stream(message: Message, bot: Bot) -> None:
        for part in ("Hel", "Hello", "Hello wor"):
            await bot.send_message_draft(chat_id=message.chat.id, draft_id=7, text=part, can_stop=True)
        await message.answer("Hello world")

    @router.message(Command("fallback"))
    async def fallback(message: Message, bot: Bot) -> None:
        try:
            await bot.send_message_draft(chat_id=message.chat.id, draft_id=1, text="...")
        except TelegramBadRequest:
            await message.answer("typing instead")

    @router.message(Command("buy"))
    async def buy(message: Message) -> None:
        await message.answer_invoice(
            title="Premium",
            description="A month of premium",
            payload="premium:30",
            currency="XTR",
            prices=[LabeledPrice(label="Premium", amount=50)],
        )

    @router.message(Command("sub"))
    async def sub(message: Message, bot: Bot) -> None:
        link = await bot.create_invoice_link(
            title="Subscription",
            description="Monthly",
            payload="sub:monthly",
            currency="XTR",
            prices=[LabeledPrice(label="Month", amount=100)],
            subscription_period=2592000,
        )
        await message.answer(link)

    @router.message(Command("refund"))
    async def refund(message: Message, bot: Bot, command: CommandObject) -> None:
        assert message.from_user is not None
        try:
            await bot.refund_star_payment(message.from_user.id, command.args or "")
            await message.answer("refunded")
        except TelegramBadRequest as e:
            await message.answer(f"refund failed: {e.message}")

    @router.pre_checkout_query()
    async def pre_checkout(query: PreCheckoutQuery) -> None:
        if query.invoice_payload == "bad":
            await query.answer(ok=False, error_message="Sold out")
        else:
            await query.answer(ok=True)

    @router.message(F.successful_payment)
    async def paid(message: Message, seen: dict[str, Any]) -> None:
        seen.setdefault("payments", []).append(message.successful_payment)
        await message.answer("Thank you!")

    @router.message(Command("doc"))
    async def doc(message: Message) -> None:
        await message.answer_document(BufferedInputFile(b"memory dump", filename="memory.txt"))

    @router.message(F.document)
    async def got_document(message: Message, bot: Bot, seen: dict[str, Any]) -> None:
        assert message.document is not None
        buffer = await bot.download(message.document.file_id)
        assert buffer is not None
        seen["downloaded"] = buffer.read()

    @router.message(F.text)
    async def echo(message: Message) -> None:
        await message.answer(message.text or "")

    @router.edited_message()
    async def edited(message: Message, seen: dict[str, Any]) -> None:
        seen["edited"] = message.text

    @router.stopped_message_generation()
    async def stopped(event: MessageGenerationStopped, seen: dict[str, Any]) -> None:
        seen["stopped"] = event.draft_id

    @router.subscription()
    async def subscription(event: BotSubscriptionUpdated, seen: dict[str, Any]) -> None:
        seen["subscription"] = (event.state, event.invoice_payload)

    return router


@pytest.fixture
def seen() -> dict[str, Any]:
    return {}


@pytest.fixture
def session() -> LocalBotSession:
    return LocalBotSession()


@pytest.fixture
def bot(session: LocalBotSession) -> Bot:
    return make_local_bot(session, default=DefaultBotProperties(parse_mode="HTML"))


@pytest.fixture
def dp(seen: dict[str, Any]) -> Dispatcher:
    dispatcher = Dispatcher(seen=seen)
    dispatcher.include_router(build_router())
    return dispatcher


@pytest.fixture
def player(dp: Dispatcher, bot: Bot, session: LocalBotSession) -> LocalPlayer:
    return LocalPlayer(dp, bot, session, user_id=1001, first_name="Анна")


# --------------------------------------------------------------------------- basics


async def test_make_local_bot_and_get_me(session: LocalBotSession) -> None:
    bot = make_local_bot(session, bot_id=777, username="local_bot")
    me = await bot.get_me()
    assert (me.id, me.is_bot, me.username) == (777, True, "local_bot")
    assert session.last("getMe") is not None
    with pytest.raises(ValueError):
        make_local_bot(session, token="1:abc", bot_id=2)


async def test_echo_transcript(player: LocalPlayer, session: LocalBotSession) -> None:
    update = await player.send("привет")
    assert isinstance(update, Update) and update.message is not None
    assert player.last_bot_text() == "привет"
    call = session.last("sendMessage")
    assert call is not None and call.ok
    assert call.params["chat_id"] == 1001 and call.params["parse_mode"] == "HTML"
    assert call.result["from"]["id"] == 42 and call.result["chat"]["type"] == "private"
    # message ids are per chat and shared by both sides, as in a private chat
    chat = session.chat(1001)
    assert [(m.message_id, m.from_bot) for m in chat.messages] == [(1, False), (2, True)]
    assert chat.messages[0].text == "привет"


async def test_returned_message_is_a_real_message(
    player: LocalPlayer, seen: dict[str, Any], session: LocalBotSession
) -> None:
    await player.send("/start")
    sent = seen["start_reply"]
    assert isinstance(sent, Message)
    assert sent.text == "Hi, it's me"  # HTML parsed as Telegram does
    assert sent.entities is not None and sent.entities[0].type == "bold"
    assert sent.from_user is not None and sent.from_user.id == 42
    assert sent.chat.id == 1001 and sent.chat.first_name == "Анна"
    assert sent.reply_markup is not None and sent.bot is not None
    local = session.chat(1001).message(sent.message_id)
    assert local is not None and local.raw_text == "<b>Hi</b>, it's me"


async def test_command_entity_and_args(player: LocalPlayer) -> None:
    update = await player.send("/refund nothing")
    assert update.message is not None and update.message.entities is not None
    assert update.message.entities[0].type == "bot_command"
    assert update.message.entities[0].length == len("/refund")
    assert player.last_bot_text() == "refund failed: Bad Request: CHARGE_NOT_FOUND"


# --------------------------------------------------------------------------- buttons


async def test_click_edits_message_in_place(player: LocalPlayer, session: LocalBotSession) -> None:
    await player.send("/start")
    message = player.last_bot_message()
    assert message is not None
    assert player.buttons() == ["❤️ Yes", "Later", "Same again", "Open app", "Site"]

    update = await player.click("Yes")  # unique substring
    assert update.callback_query is not None and update.callback_query.data == "yes"
    assert message.text == "You chose: yes" and message.edited
    assert message.reply_markup is None  # editMessageText without markup removes it
    assert player.callback_answer(update) == {
        "text": "saved",
        "show_alert": False,
        "url": None,
        "ts": session.callback_answers[update.callback_query.id]["ts"],
    }
    assert [c.method for c in session.calls] == [
        "sendMessage",
        "editMessageText",
        "answerCallbackQuery",
    ]


async def test_click_errors(player: LocalPlayer) -> None:
    await player.send("/start")
    with pytest.raises(ButtonNotFound):
        await player.click("Nope")
    with pytest.raises(ButtonNotFound, match="ambiguous"):
        await player.click("e")  # Yes, Later, Same again, Open app, Site
    with pytest.raises(ButtonNotClickable) as info:
        await player.click("Open app")
    assert info.value.kind == "web_app" and info.value.target == "https://example.org/app"
    with pytest.raises(ButtonNotClickable, match="url"):
        await player.click("Site")
    _, button = player.button("Open app")
    assert button.web_app is not None


async def test_edit_to_identical_text_raises_bad_request(
    player: LocalPlayer, seen: dict[str, Any], session: LocalBotSession
) -> None:
    await player.send("/start")
    update = await player.click("Same again")
    [error] = seen["errors"]
    assert isinstance(error, TelegramBadRequest)
    assert "message is not modified" in error.message
    assert session.last("editMessageText").error_code == 400  # type: ignore[union-attr]
    assert player.callback_answer(update) is not None  # handler went on and answered


async def test_edit_unknown_and_deleted_messages(bot: Bot, session: LocalBotSession) -> None:
    with pytest.raises(TelegramBadRequest, match="message to edit not found"):
        await bot.edit_message_text(chat_id=5, message_id=99, text="x")
    sent = await bot.send_message(5, "hello")
    assert await bot.delete_message(5, sent.message_id)
    assert session.chat(5).message(sent.message_id).deleted  # type: ignore[union-attr]
    with pytest.raises(TelegramBadRequest, match="message to edit not found"):
        await bot.edit_message_text(chat_id=5, message_id=sent.message_id, text="x")
    with pytest.raises(TelegramBadRequest, match="message to delete not found"):
        await bot.delete_message(5, sent.message_id)


async def test_edit_reply_markup_not_modified(bot: Bot) -> None:
    sent = await bot.send_message(5, "pick", reply_markup=keyboard())
    with pytest.raises(TelegramBadRequest, match="not modified"):
        await bot.edit_message_reply_markup(chat_id=5, message_id=sent.message_id, reply_markup=keyboard())
    edited = await bot.edit_message_reply_markup(chat_id=5, message_id=sent.message_id)
    assert isinstance(edited, Message) and edited.reply_markup is None


async def test_telegram_validations(bot: Bot) -> None:
    with pytest.raises(TelegramBadRequest, match="can't parse entities"):
        await bot.send_message(5, "I <3 you")  # parse_mode HTML by default
    with pytest.raises(TelegramBadRequest, match="message text is empty"):
        await bot.send_message(5, "   ")
    with pytest.raises(TelegramBadRequest, match="message is too long"):
        await bot.send_message(5, "x" * 4097)
    long_data = InlineKeyboardButton(text="x", callback_data="d" * 65)
    with pytest.raises(TelegramBadRequest, match="BUTTON_DATA_INVALID"):
        await bot.send_message(5, "x", reply_markup=InlineKeyboardMarkup(inline_keyboard=[[long_data]]))
    insecure = InlineKeyboardButton(text="app", web_app=WebAppInfo(url="http://example.org"))
    with pytest.raises(TelegramBadRequest, match="Only HTTPS"):
        await bot.send_message(5, "x", reply_markup=InlineKeyboardMarkup(inline_keyboard=[[insecure]]))
    with pytest.raises(TelegramBadRequest, match="wrong parameter action"):
        await bot.send_chat_action(5, "dancing")


def test_parse_html() -> None:
    text, entities = parse_html('<b>жир</b> &amp; <a href="https://x.org">ссылка</a> 😀<i>i</i>')
    assert text == "жир & ссылка 😀i"
    assert entities == [
        {"type": "bold", "offset": 0, "length": 3},
        {"type": "text_link", "offset": 6, "length": 6, "url": "https://x.org"},
        {"type": "italic", "offset": 15, "length": 1},  # the emoji is 2 UTF-16 units
    ]
    text, entities = parse_html('<pre><code class="language-python">x = 1</code></pre>')
    assert entities == [{"type": "pre", "offset": 0, "length": 5, "language": "python"}]


# --------------------------------------------------------------------------- drafts


async def test_drafts_then_message(player: LocalPlayer, session: LocalBotSession) -> None:
    await player.send("/stream")
    chat = session.chat(1001)
    assert [d.text for d in chat.draft_history] == ["Hel", "Hello", "Hello wor"]
    assert {d.draft_id for d in chat.draft_history} == {7}
    assert chat.current_draft is None  # the final sendMessage dismissed it
    assert player.last_bot_text() == "Hello world"
    assert [c.method for c in session.calls] == ["sendMessageDraft"] * 3 + ["sendMessage"]
    assert all(c.result is True for c in session.calls_of("sendMessageDraft"))


async def test_stop_generation(
    bot: Bot, player: LocalPlayer, session: LocalBotSession, seen: dict[str, Any]
) -> None:
    await bot.send_message_draft(chat_id=1001, draft_id=3, text="thinking", can_stop=True)
    assert player.current_draft is not None and player.current_draft.draft_id == 3
    update = await player.stop_generation()
    assert update.stopped_message_generation is not None
    assert seen["stopped"] == 3
    assert player.current_draft is None and session.chat(1001).draft_history[-1].stopped
    # a bot that ignores the stop keeps streaming: those drafts are marked, tests can see it
    await bot.send_message_draft(chat_id=1001, draft_id=3, text="thinking more", can_stop=True)
    assert session.chat(1001).draft_history[-1].stopped


async def test_drafts_unsupported_fallback(player: LocalPlayer, session: LocalBotSession) -> None:
    session.drafts_supported = False
    await player.send("/fallback")
    assert session.last("sendMessageDraft").error == "Bad Request: method is not available"  # type: ignore[union-attr]
    assert player.last_bot_text() == "typing instead"
    session.drafts_unsupported_error = (404, "Not Found: method not found")  # an older server
    with pytest.raises(TelegramNotFound):
        await player.bot.send_message_draft(chat_id=1001, draft_id=1, text="x")


# --------------------------------------------------------------------------- failures


async def test_unknown_method_fails_loudly(bot: Bot, session: LocalBotSession) -> None:
    with pytest.raises(TelegramNotFound, match="sendPoll"):
        await bot(SendPoll(chat_id=5, question="?", options=["a", "b"]))
    call = session.last()
    assert call is not None and call.method == "sendPoll" and call.error_code == 404


async def test_fail_next_retry_after(bot: Bot, session: LocalBotSession) -> None:
    session.fail_next("sendMessage", retry_after=3)
    with pytest.raises(TelegramRetryAfter) as info:
        await bot.send_message(5, "hi")
    assert info.value.retry_after == 3
    assert session.last("sendMessage").error == "Too Many Requests: retry after 3"  # type: ignore[union-attr]
    assert session.chat(5).messages == []  # a failed call changes nothing
    sent = await bot.send_message(5, "hi")  # only the next call failed
    assert sent.message_id == 1


async def test_fail_next_other_codes(bot: Bot, session: LocalBotSession) -> None:
    session.fail_next("sendMessage", 403)
    with pytest.raises(TelegramForbiddenError, match="blocked"):
        await bot.send_message(5, "hi")
    session.fail_next(None, 500, times=2)
    for _ in range(2):
        with pytest.raises(TelegramServerError):
            await bot.get_me()
    session.fail_next("sendMessage", network=True)
    with pytest.raises(TelegramNetworkError):
        await bot.send_message(5, "hi")
    session.fail_next("sendMessage", 400, "Bad Request: chat not found")
    with pytest.raises(TelegramBadRequest, match="chat not found"):
        await bot.send_message(5, "hi")
    await bot.send_message(5, "hi")


async def test_blocked_user(bot: Bot, session: LocalBotSession) -> None:
    session.block(9)
    with pytest.raises(TelegramForbiddenError):
        await bot.send_message(9, "hi")
    session.unblock(9)
    await bot.send_message(9, "hi")


async def test_flood_limit(bot: Bot, session: LocalBotSession) -> None:
    session.set_flood_limit(per_chat_rate=1.0, burst=2)
    await bot.send_message(5, "1")
    await bot.send_message(5, "2")
    with pytest.raises(TelegramRetryAfter) as info:
        await bot.send_message(5, "3")
    assert info.value.retry_after >= 1
    await bot.send_message(6, "other chat has its own budget")
    await bot.send_message_draft(chat_id=5, draft_id=1, text="drafts are not throttled")


async def test_handler_exception_propagates_from_feed(bot: Bot, session: LocalBotSession) -> None:
    router = Router()

    @router.message()
    async def boom(message: Message) -> None:
        await message.edit_text("bots cannot edit the user's message")

    dp = Dispatcher()
    dp.include_router(router)
    player = LocalPlayer(dp, bot, session, user_id=5)
    with pytest.raises(TelegramBadRequest, match="message can't be edited"):
        await player.send("hi")


# --------------------------------------------------------------------------- updates


async def test_duplicate_update_ids(dp: Dispatcher) -> None:
    session = LocalBotSession(update_id_start=500)
    bot = make_local_bot(session)
    ids: list[int] = []

    async def remember(handler: Any, event: TelegramObject, data: dict[str, Any]) -> Any:
        assert isinstance(event, Update)
        ids.append(event.update_id)
        return await handler(event, data)

    dp.update.outer_middleware(remember)

    anna = LocalPlayer(dp, bot, session, user_id=1)
    boris = LocalPlayer(dp, bot, session, user_id=2, first_name="Борис")
    first = await anna.send("one")
    await boris.send("two")
    again = await anna.resend(first)
    assert again.update_id == first.update_id == 500
    assert ids == [500, 501, 500]
    assert [m.text for m in session.chat(1).bot_messages()] == ["one", "one"]


async def test_edited_subscription_and_photo_updates(player: LocalPlayer, seen: dict[str, Any]) -> None:
    sent = await player.send("first")
    assert sent.message is not None
    await player.edit(sent.message.message_id, "second")
    assert seen["edited"] == "second"
    await player.subscription_update("canceled", "sub:monthly")
    assert seen["subscription"] == ("canceled", "sub:monthly")
    for action in (player.send_photo, player.send_sticker, player.send_voice):
        update = await action()
        assert update.message is not None
    assert [m.kind for m in player.chat.user_messages()][-3:] == ["photo", "sticker", "voice"]


# --------------------------------------------------------------------------- files


async def test_send_document_records_bytes(
    player: LocalPlayer, session: LocalBotSession, bot: Bot, tmp_path: Any
) -> None:
    await player.send("/doc")
    message = player.last_bot_message()
    assert message is not None and message.kind == "document"
    assert message.document == ("memory.txt", b"memory dump")
    call = session.last("sendDocument")
    assert call is not None and call.params["document"].startswith("attach://")
    assert list(call.files.values()) == [("memory.txt", len(b"memory dump"))]

    path = tmp_path / "notes.md"
    path.write_bytes(b"# notes")
    sent = await bot.send_document(1001, FSInputFile(path), caption="<i>yours</i>")
    assert sent.caption == "yours" and sent.document is not None
    assert player.last_bot_message().document == ("notes.md", b"# notes")  # type: ignore[union-attr]


async def test_player_document_download(player: LocalPlayer, seen: dict[str, Any]) -> None:
    await player.send_document(b"card json", filename="card.json", mime_type="application/json")
    assert seen["downloaded"] == b"card json"


# --------------------------------------------------------------------------- payments


async def test_invoice_payment_and_refund(
    player: LocalPlayer, session: LocalBotSession, seen: dict[str, Any]
) -> None:
    await player.send("/buy")
    invoice_message = player.last_bot_message()
    assert invoice_message is not None and invoice_message.kind == "invoice"
    assert invoice_message.invoice is not None
    assert invoice_message.invoice["payload"] == "premium:30"
    assert invoice_message.invoice["total_amount"] == 50

    update = await player.buy(charge_id="ch-1")
    assert update.message is not None and update.message.successful_payment is not None
    assert session.last("answerPreCheckoutQuery").params["ok"] is True  # type: ignore[union-attr]
    [payment] = seen["payments"]
    assert (payment.total_amount, payment.currency, payment.telegram_payment_charge_id) == (
        50,
        "XTR",
        "ch-1",
    )
    assert player.last_bot_text() == "Thank you!"

    await player.send("/refund ch-1")
    assert player.last_bot_text() == "refunded"
    await player.send("/refund ch-1")
    assert player.last_bot_text() == "refund failed: Bad Request: CHARGE_ALREADY_REFUNDED"


async def test_declined_pre_checkout(player: LocalPlayer, session: LocalBotSession) -> None:
    update = await player.pre_checkout("bad", 10)
    assert player.pre_checkout_answer(update) == {
        "ok": False,
        "error_message": "Sold out",
        "ts": session.pre_checkout_answers[update.pre_checkout_query.id]["ts"],  # type: ignore[union-attr]
    }
    with pytest.raises(TelegramBadRequest, match="query is too old"):
        await player.bot.answer_pre_checkout_query("never-issued", ok=True)


async def test_subscription_link(player: LocalPlayer, session: LocalBotSession, bot: Bot) -> None:
    await player.send("/sub")
    link = player.last_bot_text()
    assert link is not None and link.startswith("https://t.me/$")
    assert session.invoice_links[link]["subscription_period"] == 2592000
    update = await player.buy(link=link, charge_id="sub-1")
    payment = update.message.successful_payment  # type: ignore[union-attr]
    assert payment is not None and payment.is_recurring and payment.is_first_recurring
    assert payment.subscription_expiration_date is not None
    assert await bot.edit_user_star_subscription(1001, "sub-1", is_canceled=True)
    assert session.payments["sub-1"]["canceled"]


async def test_star_invoice_rules(bot: Bot) -> None:
    two_prices = [LabeledPrice(label="a", amount=1), LabeledPrice(label="b", amount=1)]
    with pytest.raises(TelegramBadRequest, match="exactly one price"):
        await bot.send_invoice(5, "t", "d", "p", currency="XTR", prices=two_prices)
    with pytest.raises(TelegramBadRequest, match="SUBSCRIPTION_PERIOD_INVALID"):
        await bot.create_invoice_link(
            "t", "d", "p", currency="XTR", prices=two_prices[:1], subscription_period=3600
        )


async def test_declined_buy_raises(player: LocalPlayer, bot: Bot) -> None:
    await bot.send_invoice(1001, "t", "d", "bad", currency="XTR", prices=[LabeledPrice(label="x", amount=5)])
    with pytest.raises(PaymentDeclined, match="Sold out"):
        await player.buy()


# --------------------------------------------------------------------------- observers & memory


async def test_observers(bot: Bot, session: LocalBotSession) -> None:
    seen_calls: list[ApiCall] = []
    session.on_call.append(seen_calls.append)
    queue = session.listen()
    waiter = asyncio.create_task(session.wait_for("sendMessage", lambda c: c.params["text"] == "b"))
    await asyncio.sleep(0)
    await bot.send_message(5, "a")
    await bot.send_message(5, "b")
    call = await waiter
    assert call.params["text"] == "b" and call.seq == seen_calls[-1].seq
    assert [c.params["text"] for c in seen_calls] == ["a", "b"]
    assert queue.qsize() == 2
    session.unlisten(queue)

    def broken(call: ApiCall) -> None:
        raise RuntimeError("a broken UI must not break the bot")

    session.on_call.append(broken)
    await bot.send_message(5, "c")


async def test_bounded_memory() -> None:
    session = LocalBotSession(max_calls=5, max_messages_per_chat=3, max_drafts_per_chat=2)
    bot = make_local_bot(session)
    for i in range(20):
        await bot.send_message(5, f"m{i}")
        await bot.send_message_draft(chat_id=5, draft_id=1, text=f"d{i}")
    assert len(session.calls) == 5 and session.calls[-1].seq == 40
    assert session.counts["sendMessage"] == 20
    chat = session.chat(5)
    assert [m.text for m in chat.messages] == ["m17", "m18", "m19"]
    assert [d.text for d in chat.draft_history] == ["d18", "d19"]


# --------------------------------------------------------------------------- polling


async def test_long_polling_through_get_updates(seen: dict[str, Any]) -> None:
    session = LocalBotSession(max_poll_wait=0.05)
    bot = make_local_bot(session)
    dp = Dispatcher(seen=seen)
    dp.include_router(build_router())
    player = LocalPlayer(dp, bot, session, user_id=3, deliver="queue")
    polling = asyncio.create_task(dp.start_polling(bot, handle_signals=False))
    try:
        await player.send("over polling")
        call = await session.wait_for("sendMessage", timeout=5)
        assert call.params["text"] == "over polling"
    finally:
        await dp.stop_polling()
        await polling
    assert session.calls_of("getUpdates")


async def test_webhook_blocks_get_updates(bot: Bot) -> None:
    with pytest.raises(TelegramBadRequest, match="HTTPS"):
        await bot.set_webhook("http://example.org/hook")
    await bot.set_webhook("https://example.org/hook", secret_token="s3cret")
    assert (await bot.get_webhook_info()).url == "https://example.org/hook"
    with pytest.raises(Exception, match="webhook is active"):
        await bot.get_updates()
    await bot.delete_webhook()
    assert await bot.get_updates() == []


async def test_bot_setup_calls(bot: Bot, session: LocalBotSession) -> None:
    from aiogram.types import BotCommand, MenuButtonWebApp

    await bot.set_my_commands([BotCommand(command="start", description="Start")])
    assert [c.command for c in await bot.get_my_commands()] == ["start"]
    await bot.set_chat_menu_button(
        menu_button=MenuButtonWebApp(text="App", web_app=WebAppInfo(url="https://example.org"))
    )
    assert session.default_menu_button is not None
    assert await bot.send_chat_action(5, "typing")
    assert session.chat(5).last_action == "typing"
