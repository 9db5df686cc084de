"""A simulated Telegram player that drives a real aiogram Dispatcher.

:class:`LocalPlayer` builds real ``aiogram.types.Update`` objects (as Telegram would
deliver them to the bot) and feeds them to ``dispatcher.feed_update`` — the same entry
point polling and webhooks use. What the bot answers is read back from the
:class:`~vitte.localapi.session.LocalBotSession` the bot talks to.
"""

from __future__ import annotations

import itertools
import secrets
import time
from collections import deque
from typing import TYPE_CHECKING, Any, Literal

from aiogram.types import InlineKeyboardButton, Update

from .session import STARS, LocalBotSession, LocalMessage, utf16_len

if TYPE_CHECKING:
    from aiogram import Bot, Dispatcher

    from .session import ChatLog, LocalDraft


class LocalPlayerError(Exception):
    """The simulated player cannot do what was asked (no such button, no invoice ...)."""


class ButtonNotFound(LocalPlayerError, LookupError):
    pass


class ButtonNotClickable(LocalPlayerError):
    """The button exists but pressing it sends the bot no update (URL, Web App, pay ...)."""

    def __init__(self, button: InlineKeyboardButton, kind: str, target: str | None) -> None:
        self.button = button
        self.kind = kind
        self.target = target
        where = f" ({target})" if target else ""
        super().__init__(
            f"button {button.text!r} is a {kind} button{where}: pressing it sends no "
            "callback_query to the bot"
        )


class PaymentDeclined(LocalPlayerError):
    def __init__(self, answer: dict[str, Any] | None) -> None:
        self.answer = answer
        reason = "the bot did not answer the pre_checkout_query"
        if answer is not None:
            reason = f"the bot declined: {answer.get('error_message')!r}"
        super().__init__(reason)


_ids = itertools.count(1)


class LocalPlayer:
    """One Telegram user in a private chat with the bot.

    Every action records the player's side in the session's :class:`ChatLog` (message ids
    are shared with the bot's messages, as in a Telegram private chat), builds an
    ``Update`` with the next update_id of the session's shared counter and delivers it:
    ``deliver="feed"`` awaits ``dispatcher.feed_update`` (handler exceptions propagate),
    ``deliver="queue"`` puts it in the session's ``getUpdates`` queue for real polling.
    Every action returns the built ``Update``; ``resend(update)`` delivers it again,
    same update_id, to exercise de-duplication.
    """

    def __init__(
        self,
        dispatcher: Dispatcher,
        bot: Bot,
        session: LocalBotSession,
        *,
        user_id: int = 1001,
        first_name: str = "Player",
        last_name: str | None = None,
        username: str | None = None,
        language_code: str | None = "ru",
        is_premium: bool | None = None,
        deliver: Literal["feed", "queue"] = "feed",
        feed_kwargs: dict[str, Any] | None = None,
    ) -> None:
        self.dispatcher = dispatcher
        self.bot = bot
        self.session = session
        self.user_id = user_id
        self.deliver = deliver
        self.feed_kwargs = dict(feed_kwargs or {})
        user: dict[str, Any] = {"id": user_id, "is_bot": False, "first_name": first_name}
        for key, value in (
            ("last_name", last_name),
            ("username", username),
            ("language_code", language_code),
            ("is_premium", is_premium),
        ):
            if value is not None:
                user[key] = value
        self.user = user
        session.register_user(user)
        self.updates: deque[Update] = deque(maxlen=100)
        self.last_result: Any = None

    # ------------------------------------------------------------------ transcript

    @property
    def chat_id(self) -> int:
        return self.user_id

    @property
    def chat(self) -> ChatLog:
        return self.session.chat(self.user_id)

    @property
    def last_update(self) -> Update | None:
        return self.updates[-1] if self.updates else None

    def bot_messages(self) -> list[LocalMessage]:
        return self.chat.bot_messages()

    def last_bot_message(self) -> LocalMessage | None:
        return self.chat.last_bot_message()

    def last_bot_text(self) -> str | None:
        message = self.chat.last_bot_message()
        return message.text if message is not None else None

    def buttons(self, message: LocalMessage | int | None = None) -> list[str]:
        """Texts of the inline buttons of ``message`` (default: the newest bot message)."""
        target = self._message(message) if message is not None else self.last_bot_message()
        return target.button_texts() if target is not None else []

    @property
    def current_draft(self) -> LocalDraft | None:
        return self.chat.current_draft

    # ------------------------------------------------------------------ delivery

    async def feed(self, update: Update | dict[str, Any]) -> Update:
        """Deliver an update (a built ``Update`` or Telegram JSON) to the bot."""
        if isinstance(update, dict):
            update = Update.model_validate(update, context={"bot": self.bot})
        self.updates.append(update)
        if self.deliver == "queue":
            self.session.push_update(update)
        else:
            self.last_result = await self.dispatcher.feed_update(self.bot, update, **self.feed_kwargs)
        return update

    async def resend(self, update: Update) -> Update:
        """Deliver the same update again (same update_id), as Telegram may do."""
        return await self.feed(update)

    async def _emit(self, **event: Any) -> Update:
        data = {"update_id": self.session.next_update_id(), **event}
        return await self.feed(Update.model_validate(data, context={"bot": self.bot}))

    def _new_message(self, **content: Any) -> dict[str, Any]:
        chat = self.chat
        message = LocalMessage(
            message_id=chat.next_message_id(),
            chat_id=self.user_id,
            text=content.pop("text", None),
            reply_markup=None,
            from_bot=False,
            date=int(time.time()),
            kind=content.pop("kind", "text"),
            entities=content.pop("entities", None),
            file=content.pop("file", None),
            reply_to=content.pop("reply_to", None),
            extra=content,
        )
        chat.add(message)
        return self.session.message_json(self.bot, message)

    # ------------------------------------------------------------------ messages

    async def send(self, text: str, *, reply_to: int | None = None) -> Update:
        """A text message; a leading ``/command`` gets its ``bot_command`` entity."""
        entities = None
        if text.startswith("/"):
            command = text.split(maxsplit=1)[0]
            entities = [{"type": "bot_command", "offset": 0, "length": utf16_len(command)}]
        if reply_to is not None and self.chat.message(reply_to) is None:
            raise LocalPlayerError(f"no message {reply_to} to reply to")
        message = self._new_message(text=text, entities=entities, reply_to=reply_to)
        return await self._emit(message=message)

    async def send_sticker(self, emoji: str = "❤️") -> Update:
        file = self.session.store_file("sticker", b"RIFF-local-sticker", mime_type="image/webp")
        sticker = self.session.file_json(file, "sticker", emoji=emoji)
        return await self._emit(message=self._new_message(kind="sticker", file=file, sticker=sticker))

    async def send_photo(self, data: bytes = b"\x89PNG local photo", caption: str | None = None) -> Update:
        file = self.session.store_file("photo", data, mime_type="image/jpeg")
        photo = self.session.file_json(file, "photo")
        message = self._new_message(kind="photo", file=file, text=caption, photo=photo)
        return await self._emit(message=message)

    async def send_voice(
        self,
        data: bytes = b"OggS local voice",
        duration: int = 3,
        mime_type: str = "audio/ogg",
        *,
        size_known: bool = True,
    ) -> Update:
        """A voice note; `size_known=False`: its size is told neither in the message nor by
        getFile (Telegram may leave it out)."""
        file = self.session.store_file("voice", data, mime_type=mime_type, size_known=size_known)
        voice = self.session.file_json(file, "voice", duration=duration)
        return await self._emit(message=self._new_message(kind="voice", file=file, voice=voice))

    async def send_audio(
        self, data: bytes, duration: int = 3, mime_type: str = "audio/mpeg", filename: str = "audio.mp3"
    ) -> Update:
        """An audio file (a music-player attachment, not a voice note)."""
        file = self.session.store_file("audio", data, filename=filename, mime_type=mime_type)
        audio = self.session.file_json(file, "audio", duration=duration, file_name=filename)
        return await self._emit(message=self._new_message(kind="audio", file=file, audio=audio))

    async def send_video_note(self, data: bytes, duration: int = 3) -> Update:
        """A round video message."""
        file = self.session.store_file("video_note", data, mime_type="video/mp4")
        note = self.session.file_json(file, "video_note", duration=duration, length=240)
        return await self._emit(message=self._new_message(kind="video_note", file=file, video_note=note))

    async def send_document(
        self,
        data: bytes = b"local document",
        filename: str = "document.txt",
        mime_type: str = "text/plain",
        caption: str | None = None,
    ) -> Update:
        file = self.session.store_file("document", data, filename=filename, mime_type=mime_type)
        document = self.session.file_json(file, "document")
        message = self._new_message(kind="document", file=file, text=caption, document=document)
        return await self._emit(message=message)

    async def edit(self, message_id: int, text: str) -> Update:
        """Edit one of the player's own text messages (an ``edited_message`` update)."""
        message = self.chat.message(message_id)
        if message is None or message.from_bot or message.deleted:
            raise LocalPlayerError(f"message {message_id} is not the player's message")
        if message.kind != "text":
            raise LocalPlayerError(f"message {message_id} has no text to edit")
        message.text = text
        message.edited = True
        message.edit_date = int(time.time())
        return await self._emit(edited_message=self.session.message_json(self.bot, message))

    # ------------------------------------------------------------------ buttons

    def button(
        self, button_text: str, message: LocalMessage | int | None = None
    ) -> tuple[LocalMessage, InlineKeyboardButton]:
        """Find an inline button by its text: exact, else a unique substring.

        Looks at ``message`` if given, else at the bot's messages from the newest back,
        taking the first that has a matching button.
        """
        if message is not None:
            candidates = [self._message(message)]
        else:
            candidates = [m for m in reversed(self.chat.bot_messages()) if m.reply_markup]
        for candidate in candidates:
            found = _match_button(candidate, button_text)
            if found is not None:
                return candidate, found
        where = f"message {candidates[0].message_id}" if message is not None else "the chat"
        raise ButtonNotFound(f"no inline button {button_text!r} in {where}")

    async def click(self, button_text: str, message: LocalMessage | int | None = None) -> Update:
        """Press an inline callback button: a ``callback_query`` update with its data."""
        target, button = self.button(button_text, message)
        if button.callback_data is None:
            kind, where = _button_kind(button)
            raise ButtonNotClickable(button, kind, where)
        query_id = f"{self.user_id}{next(_ids):08d}{secrets.randbelow(10**6):06d}"
        self.session.expect_callback(
            query_id, chat_id=self.user_id, message_id=target.message_id, data=button.callback_data
        )
        query = {
            "id": query_id,
            "from": self.user,
            "chat_instance": f"local-{self.user_id}",
            "message": self.session.message_json(self.bot, target),
            "data": button.callback_data,
        }
        return await self._emit(callback_query=query)

    def callback_answer(self, update: Update) -> dict[str, Any] | None:
        """How the bot answered the callback query of ``update`` (None: not answered)."""
        if update.callback_query is None:
            raise LocalPlayerError("not a callback_query update")
        return self.session.callback_answers.get(update.callback_query.id)

    # ------------------------------------------------------------------ drafts

    async def stop_generation(self, draft_id: int | None = None) -> Update:
        """Press the stop button of a streamed draft (``stopped_message_generation``)."""
        chat = self.chat
        draft = chat.drafts.get(draft_id) if draft_id is not None else chat.current_draft
        if draft is None and draft_id is None:
            raise LocalPlayerError("there is no draft to stop")
        if draft is not None:
            if not draft.can_stop:
                raise LocalPlayerError(f"draft {draft.draft_id} has no stop button (can_stop)")
            draft_id = draft.draft_id
            chat.stop_draft(draft.draft_id)
        event = {"chat": chat.chat_json(), "draft_id": draft_id}
        return await self._emit(stopped_message_generation=event)

    # ------------------------------------------------------------------ payments

    async def pre_checkout(self, invoice_payload: str, total_amount: int, currency: str = STARS) -> Update:
        """The player confirmed a payment: a ``pre_checkout_query`` the bot must answer."""
        query_id = f"pcq{self.user_id}{next(_ids):08d}{secrets.randbelow(10**6):06d}"
        self.session.expect_pre_checkout(
            query_id, user_id=self.user_id, payload=invoice_payload, total_amount=total_amount
        )
        query = {
            "id": query_id,
            "from": self.user,
            "currency": currency,
            "total_amount": total_amount,
            "invoice_payload": invoice_payload,
        }
        return await self._emit(pre_checkout_query=query)

    def pre_checkout_answer(self, update: Update) -> dict[str, Any] | None:
        if update.pre_checkout_query is None:
            raise LocalPlayerError("not a pre_checkout_query update")
        return self.session.pre_checkout_answers.get(update.pre_checkout_query.id)

    async def pay(
        self,
        invoice_payload: str,
        total_amount: int,
        charge_id: str | None = None,
        is_recurring: bool = False,
        is_first_recurring: bool = False,
        subscription_expiration_date: int | None = None,
        currency: str = STARS,
    ) -> Update:
        """A ``successful_payment`` service message (the same charge_id may be re-sent)."""
        charge_id = charge_id or f"local-charge-{self.user_id}-{secrets.token_hex(6)}"
        payment: dict[str, Any] = {
            "currency": currency,
            "total_amount": total_amount,
            "invoice_payload": invoice_payload,
            "telegram_payment_charge_id": charge_id,
            "provider_payment_charge_id": "",
        }
        if is_recurring:
            payment["is_recurring"] = True
        if is_first_recurring:
            payment["is_first_recurring"] = True
        if subscription_expiration_date is not None:
            payment["subscription_expiration_date"] = subscription_expiration_date
        self.session.register_payment(
            charge_id,
            user_id=self.user_id,
            total_amount=total_amount,
            invoice_payload=invoice_payload,
            currency=currency,
            is_recurring=is_recurring,
            subscription_expiration_date=subscription_expiration_date,
        )
        message = self._new_message(kind="successful_payment", successful_payment=payment)
        return await self._emit(message=message)

    async def buy(
        self,
        message: LocalMessage | int | None = None,
        *,
        link: str | None = None,
        charge_id: str | None = None,
    ) -> Update:
        """Pay an invoice the way Telegram does: pre_checkout_query, then, if the bot
        answered ok, successful_payment. Pays ``link`` (createInvoiceLink) if given, else
        ``message`` or the newest invoice message. Raises :class:`PaymentDeclined`."""
        if link is not None:
            invoice = self.session.invoice_links.get(link)
            if invoice is None:
                raise LocalPlayerError(f"unknown invoice link {link}")
        else:
            if message is not None:
                target: LocalMessage | None = self._message(message)
            else:
                target = next((m for m in reversed(self.chat.bot_messages()) if m.kind == "invoice"), None)
            if target is None or target.invoice is None:
                raise LocalPlayerError("no invoice to pay")
            invoice = target.invoice
        payload, total = invoice["payload"], invoice["total_amount"]
        currency = invoice.get("currency", STARS)
        update = await self.pre_checkout(payload, total, currency)
        answer = self.pre_checkout_answer(update)
        if answer is None or not answer["ok"]:
            raise PaymentDeclined(answer)
        period = invoice.get("subscription_period")
        return await self.pay(
            payload,
            total,
            charge_id=charge_id,
            is_recurring=bool(period),
            is_first_recurring=bool(period),
            subscription_expiration_date=int(time.time()) + int(period) if period else None,
            currency=currency,
        )

    async def subscription_update(self, state: str, invoice_payload: str) -> Update:
        """A ``subscription`` update: state is 'canceled', 'active' or 'failed'."""
        event = {"user": self.user, "invoice_payload": invoice_payload, "state": state}
        return await self._emit(subscription=event)

    # ------------------------------------------------------------------ helpers

    def _message(self, message: LocalMessage | int) -> LocalMessage:
        if isinstance(message, LocalMessage):
            return message
        found = self.chat.message(message)
        if found is None:
            raise LocalPlayerError(f"no message {message} in chat {self.user_id}")
        return found


def _match_button(message: LocalMessage, text: str) -> InlineKeyboardButton | None:
    buttons = [b for b in message.iter_buttons() if not message.deleted]
    exact = [b for b in buttons if b.text == text]
    if exact:
        return exact[0]
    partial = [b for b in buttons if text.casefold() in b.text.casefold()]
    if len(partial) > 1:
        names = ", ".join(repr(b.text) for b in partial)
        raise ButtonNotFound(f"{text!r} is ambiguous in message {message.message_id}: {names}")
    return partial[0] if partial else None


def _button_kind(button: InlineKeyboardButton) -> tuple[str, str | None]:
    if button.web_app is not None:
        return "web_app", button.web_app.url
    if button.url is not None:
        return "url", button.url
    if button.login_url is not None:
        return "login_url", button.login_url.url
    if button.pay:
        return "pay", None
    if button.copy_text is not None:
        return "copy_text", button.copy_text.text
    return "inline", None
