"""An in-process fake Telegram Bot API server for aiogram.

:class:`LocalBotSession` is an aiogram session (``Bot(token, session=...)``) that answers
Bot API calls locally instead of over HTTP. Each answer is a JSON body shaped like
Telegram's (``{"ok": true, "result": ...}`` or ``{"ok": false, "error_code": 400,
"description": "Bad Request: ..."}``) and goes through aiogram's own
``BaseSession.check_response``, so results are real aiogram objects and errors are the
same exceptions aiogram raises against Telegram (``TelegramBadRequest``,
``TelegramRetryAfter``, ``TelegramForbiddenError`` ...).

The session keeps a bounded transcript of every call (:class:`ApiCall`) and per-chat
state (:class:`ChatLog`: messages with their current text and inline keyboard, drafts,
chat actions). Tests assert on it; the console renders it live through ``on_call``.

Error descriptions follow Telegram's where they are known (not modified, message to edit
not found, can't parse entities, BUTTON_DATA_INVALID, query is too old,
CHARGE_ALREADY_REFUNDED ...); a few payment validations have no documented text and
use a plain, clearly worded ``Bad Request: ...`` instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import html
import inspect
import itertools
import logging
import math
import re
import secrets
import time
from collections import Counter, OrderedDict, deque
from collections.abc import AsyncGenerator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, cast

from aiogram import Bot
from aiogram.client.default import DefaultBotProperties
from aiogram.client.session.base import BaseSession
from aiogram.exceptions import ClientDecodeError, TelegramNetworkError
from aiogram.methods import Response, TelegramMethod
from aiogram.methods.base import TelegramType
from aiogram.types import InlineKeyboardMarkup, InputFile, Update, URLInputFile
from pydantic import ValidationError

from vitte.perf import pin_response_type

if TYPE_CHECKING:
    from aiogram.types import InlineKeyboardButton

log = logging.getLogger(__name__)

# Response[<the method's result type>] per method class: aiogram's `Response[...]` costs a
# pydantic generic lookup per call (and see vitte.perf for why it must be held strongly)
_RESPONSE_TYPES: dict[type, Any] = {}

MAX_TEXT = 4096
MAX_CAPTION = 1024
MAX_CALLBACK_DATA = 64
STARS = "XTR"
SUBSCRIPTION_PERIOD = 2_592_000
MAX_SUBSCRIPTION_STARS = 10_000

NOT_MODIFIED = (
    "Bad Request: message is not modified: specified new message content and reply markup "
    "are exactly the same as a current content and reply markup of the message"
)
QUERY_TOO_OLD = "Bad Request: query is too old and response timeout expired or query ID is invalid"
BLOCKED = "Forbidden: bot was blocked by the user"

CHAT_ACTIONS = frozenset(
    {
        "typing",
        "upload_photo",
        "record_video",
        "upload_video",
        "record_voice",
        "upload_voice",
        "upload_document",
        "choose_sticker",
        "find_location",
        "record_video_note",
        "upload_video_note",
    }
)
_BUTTON_ACTIONS = (
    "url",
    "callback_data",
    "web_app",
    "login_url",
    "switch_inline_query",
    "switch_inline_query_current_chat",
    "switch_inline_query_chosen_chat",
    "copy_text",
    "callback_game",
    "pay",
)
_MEDIA_METHODS = {
    "sendPhoto": "photo",
    "sendDocument": "document",
    "sendSticker": "sticker",
    "sendVoice": "voice",
    "sendAudio": "audio",
    "sendVideo": "video",
    "sendAnimation": "animation",
}


# --------------------------------------------------------------------------- records


@dataclass(slots=True)
class ApiCall:
    """One Bot API call as the local server saw it.

    ``params`` is JSON-able: the method's fields after aiogram's own ``prepare_value``
    (bot defaults such as ``parse_mode`` resolved, ``None`` dropped, uploads replaced by
    ``attach://<key>`` as on the wire; ``files`` maps those keys to (filename, size)).
    ``result`` is the JSON ``result`` Telegram would return; ``error`` its description.
    """

    seq: int
    method: str
    params: dict[str, Any]
    result: Any = None
    error: str | None = None
    ts: float = 0.0
    error_code: int | None = None
    chat_id: int | None = None
    files: dict[str, tuple[str | None, int]] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.error is None


@dataclass(slots=True)
class LocalFile:
    """A file the local server knows: uploaded by the bot or sent by a player."""

    file_id: str
    file_unique_id: str
    kind: str
    filename: str | None = None
    data: bytes | None = None
    mime_type: str | None = None
    url: str | None = None
    # Telegram may leave a file's size out (file_size is optional in Voice, Audio and File):
    # False keeps it out of the message and of getFile
    size_known: bool = True

    @property
    def size(self) -> int:
        return len(self.data) if self.data is not None else 0

    @property
    def file_path(self) -> str:
        return f"{self.kind}s/{self.file_unique_id}"


@dataclass(slots=True)
class LocalMessage:
    """A message in a chat (sent by the bot or by a player), with its current state.

    ``text`` is what the player sees: the text (after HTML entity parsing) or the caption.
    ``raw_text`` is the text as sent. ``extra`` holds the kind-specific Telegram JSON
    (``{"document": {...}}``, ``{"successful_payment": {...}}`` ...).
    """

    message_id: int
    chat_id: int
    text: str | None
    reply_markup: InlineKeyboardMarkup | None
    from_bot: bool
    date: int
    edited: bool = False
    deleted: bool = False
    kind: str = "text"
    invoice: dict[str, Any] | None = None
    file: LocalFile | None = None
    entities: list[dict[str, Any]] | None = None
    raw_text: str | None = None
    parse_mode: str | None = None
    reply_to: int | None = None
    edit_date: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    markup_json: dict[str, Any] | None = None

    @property
    def document(self) -> tuple[str | None, bytes | None] | None:
        if self.kind != "document" or self.file is None:
            return None
        return self.file.filename, self.file.data

    def button_texts(self) -> list[str]:
        if self.reply_markup is None:
            return []
        return [b.text for row in self.reply_markup.inline_keyboard for b in row]

    def iter_buttons(self) -> list[InlineKeyboardButton]:
        if self.reply_markup is None:
            return []
        return [b for row in self.reply_markup.inline_keyboard for b in row]


@dataclass(slots=True)
class LocalDraft:
    """One state of a streamed draft (sendMessageDraft)."""

    chat_id: int
    draft_id: int
    text: str
    entities: list[dict[str, Any]] | None
    can_stop: bool
    keep_on_stop: bool
    ts: float
    seq: int
    stopped: bool = False


class ChatLog:
    """What one chat looks like: messages in order, drafts, last chat action."""

    def __init__(self, chat_id: int, *, max_messages: int, max_drafts: int) -> None:
        self.chat_id = chat_id
        self.user: dict[str, Any] | None = None
        self._messages: OrderedDict[int, LocalMessage] = OrderedDict()
        self._max_messages = max_messages
        self._last_message_id = 0
        self.drafts: dict[int, LocalDraft] = {}
        self.draft_history: deque[LocalDraft] = deque(maxlen=max_drafts)
        self._current_draft_id: int | None = None
        self.stopped_draft_ids: set[int] = set()
        self.last_action: str | None = None
        self.last_action_ts: float | None = None
        self.reply_keyboard: dict[str, Any] | None = None
        self.menu_button: dict[str, Any] | None = None

    # messages
    def next_message_id(self) -> int:
        self._last_message_id += 1
        return self._last_message_id

    def add(self, message: LocalMessage) -> LocalMessage:
        self._messages[message.message_id] = message
        while len(self._messages) > self._max_messages:
            self._messages.popitem(last=False)
        return message

    @property
    def messages(self) -> list[LocalMessage]:
        return list(self._messages.values())

    def message(self, message_id: int) -> LocalMessage | None:
        return self._messages.get(message_id)

    def bot_messages(self, *, include_deleted: bool = False) -> list[LocalMessage]:
        return [m for m in self._messages.values() if m.from_bot and (include_deleted or not m.deleted)]

    def user_messages(self) -> list[LocalMessage]:
        return [m for m in self._messages.values() if not m.from_bot]

    def last_bot_message(self) -> LocalMessage | None:
        for m in reversed(self._messages.values()):
            if m.from_bot and not m.deleted:
                return m
        return None

    # drafts
    @property
    def current_draft(self) -> LocalDraft | None:
        """The draft the player sees now (the last one updated), if any."""
        if self._current_draft_id is None:
            return None
        return self.drafts.get(self._current_draft_id)

    def set_draft(self, draft: LocalDraft) -> None:
        self.drafts[draft.draft_id] = draft
        self.draft_history.append(draft)
        self._current_draft_id = draft.draft_id

    def stop_draft(self, draft_id: int) -> LocalDraft | None:
        self.stopped_draft_ids.add(draft_id)
        draft = self.drafts.get(draft_id)
        if draft is None:
            return None
        draft.stopped = True
        if not draft.keep_on_stop:
            self._drop_draft(draft_id)
        return draft

    def clear_drafts(self) -> None:
        """A real message from the bot dismisses any visible draft."""
        self.drafts.clear()
        self._current_draft_id = None

    def _drop_draft(self, draft_id: int) -> None:
        self.drafts.pop(draft_id, None)
        if self._current_draft_id == draft_id:
            self._current_draft_id = next(reversed(self.drafts), None) if self.drafts else None

    def chat_json(self) -> dict[str, Any]:
        if self.chat_id < 0:
            return {"id": self.chat_id, "type": "group", "title": f"Local group {self.chat_id}"}
        chat: dict[str, Any] = {"id": self.chat_id, "type": "private"}
        user = self.user or {"first_name": f"User {self.chat_id}"}
        for key in ("first_name", "last_name", "username"):
            if user.get(key):
                chat[key] = user[key]
        return chat

    def __repr__(self) -> str:
        return f"<ChatLog {self.chat_id}: {len(self._messages)} messages>"


# --------------------------------------------------------------------------- errors


class _Reply(Exception):
    """A Telegram error answer raised inside a method handler."""

    def __init__(self, code: int, description: str, parameters: dict[str, Any] | None = None) -> None:
        super().__init__(description)
        self.code = code
        self.description = description
        self.parameters = parameters


def _bad(description: str) -> _Reply:
    return _Reply(400, f"Bad Request: {description}")


@dataclass(slots=True)
class _Fault:
    method: str | None
    error_code: int
    description: str
    retry_after: int | None
    migrate_to_chat_id: int | None
    times: int
    network: bool


@dataclass(slots=True)
class _FloodLimit:
    rate: float
    burst: int
    retry_after: int | None


_FLOOD_METHODS = frozenset(
    {
        "sendMessage",
        "editMessageText",
        "editMessageCaption",
        "editMessageReplyMarkup",
        "sendInvoice",
        *_MEDIA_METHODS,
    }
)


# Where a method carries a text (or caption) and what Telegram allows there: (text key,
# entities key, length limit, the error for a blank text (None: allowed), the error for a
# long one). A plain tuple: unpacking it costs nothing on the send path.
_Field = tuple[str, str, int, str | None, str]
_MESSAGE_TEXT: _Field = ("text", "entities", MAX_TEXT, "message text is empty", "message is too long")
_DRAFT_TEXT: _Field = ("text", "entities", MAX_TEXT, None, "message is too long")
_EDITED_TEXT: _Field = ("text", "entities", MAX_TEXT, "message text is empty", "MESSAGE_TOO_LONG")
_CAPTION: _Field = ("caption", "caption_entities", MAX_CAPTION, None, "message caption is too long")

_DEFAULT_DESCRIPTIONS = {
    400: "Bad Request: injected failure",
    401: "Unauthorized",
    403: BLOCKED,
    404: "Not Found",
    409: "Conflict: terminated by other getUpdates request",
    413: "Request Entity Too Large",
    500: "Internal Server Error",
    502: "Bad Gateway",
}


# --------------------------------------------------------------------------- HTML

_HTML_TAGS = {
    "b": "bold",
    "strong": "bold",
    "i": "italic",
    "em": "italic",
    "u": "underline",
    "ins": "underline",
    "s": "strikethrough",
    "strike": "strikethrough",
    "del": "strikethrough",
    "tg-spoiler": "spoiler",
    "span": "spoiler",
    "a": "text_link",
    "code": "code",
    "pre": "pre",
    "blockquote": "blockquote",
    "tg-emoji": "custom_emoji",
}
_TAG_NAME_RE = re.compile(r"[a-zA-Z][a-zA-Z0-9-]*")
_ATTR_RE = re.compile(r"""([a-zA-Z_][\w-]*)(?:\s*=\s*(?:"([^"]*)"|'([^']*)'|([^\s"'>]+)))?""")
_HTML_ENTITY_RE = re.compile(r"&(#[0-9]{1,7}|#[xX][0-9a-fA-F]{1,6}|lt|gt|amp|quot);")


def utf16_len(text: str) -> int:
    return len(text.encode("utf-16-le")) // 2


def parse_html(source: str) -> tuple[str, list[dict[str, Any]]]:
    """Parse Telegram-flavoured HTML into (plain text, entities) like the Bot API does.

    Offsets are in UTF-16 code units. Malformed markup raises a 400
    ``can't parse entities`` answer, as Telegram does for e.g. an unescaped ``<``.
    """

    def fail(what: str) -> _Reply:
        return _bad(f"can't parse entities: {what}")

    def byte_offset(index: int) -> int:
        return len(source[:index].encode())

    out: list[str] = []
    pos = 0
    stack: list[tuple[str, int, dict[str, str]]] = []
    entities: list[dict[str, Any]] = []
    i, n = 0, len(source)
    while i < n:
        lt, amp = source.find("<", i), source.find("&", i)
        special = min((x for x in (lt, amp) if x >= 0), default=n)
        if special > i:
            chunk = source[i:special]
            out.append(chunk)
            pos += utf16_len(chunk)
            i = special
            continue
        if source[i] == "&":
            m = _HTML_ENTITY_RE.match(source, i)
            chunk = html.unescape(m.group()) if m else "&"
            out.append(chunk)
            pos += utf16_len(chunk)
            i = m.end() if m else i + 1
            continue
        end = source.find(">", i)
        if end < 0:
            raise fail(f"Unclosed start tag at byte offset {byte_offset(i)}")
        inner = source[i + 1 : end]
        if inner.startswith("/"):
            name = inner[1:].strip().lower()
            if not stack:
                raise fail(f"Unexpected end tag at byte offset {byte_offset(i)}")
            open_name, start, attrs = stack.pop()
            if open_name != name:
                raise fail(
                    f'Unmatched end tag at byte offset {byte_offset(i)}, expected "</{open_name}>", '
                    f'found "</{name}>"'
                )
            _close_entity(open_name, start, pos, attrs, stack, entities)
        else:
            m = _TAG_NAME_RE.match(inner)
            name = m.group().lower() if m else inner.split(" ", 1)[0]
            tag_attrs: dict[str, str] = {}
            if m:
                for am in _ATTR_RE.finditer(inner, m.end()):
                    value = next((g for g in am.groups()[1:] if g is not None), "")
                    tag_attrs[am.group(1).lower()] = html.unescape(value)
            supported = m is not None and name in _HTML_TAGS
            if name == "span" and tag_attrs.get("class") != "tg-spoiler":
                supported = False
            if not supported:
                raise fail(f'Unsupported start tag "{name}" at byte offset {byte_offset(i)}')
            stack.append((name, pos, tag_attrs))
        i = end + 1
    if stack:
        raise fail(f'Can\'t find end tag corresponding to start tag "{stack[-1][0]}"')
    entities.sort(key=lambda e: (e["offset"], -e["length"]))
    return "".join(out), entities


def _close_entity(
    name: str,
    start: int,
    pos: int,
    attrs: dict[str, str],
    stack: list[tuple[str, int, dict[str, str]]],
    entities: list[dict[str, Any]],
) -> None:
    language = attrs.get("class", "")
    if name == "code" and stack and stack[-1][0] == "pre" and language.startswith("language-"):
        stack[-1][2]["_language"] = language.removeprefix("language-")
        return
    if pos == start:
        return
    entity: dict[str, Any] = {"type": _HTML_TAGS[name], "offset": start, "length": pos - start}
    if name == "a":
        if not attrs.get("href"):
            return
        entity["url"] = attrs["href"]
    elif name == "pre" and attrs.get("_language"):
        entity["language"] = attrs["_language"]
    elif name == "blockquote" and "expandable" in attrs:
        entity["type"] = "expandable_blockquote"
    elif name == "tg-emoji":
        entity["custom_emoji_id"] = attrs.get("emoji-id", "")
    entities.append(entity)


# --------------------------------------------------------------------------- session

Handler = Callable[[Bot, dict[str, Any], dict[str, InputFile], ApiCall], Awaitable[Any]]


class LocalBotSession(BaseSession):
    """A fake Telegram Bot API server living inside the process.

    Use with :func:`make_local_bot`. State is per session: chats (:meth:`chat`), the call
    transcript (:attr:`calls`, bounded), invoices, payments, webhook and commands.
    ``strict`` (default) makes it refuse what Telegram refuses for ids it never issued
    (answering an unknown callback or pre-checkout query, refunding an unknown charge).
    """

    def __init__(
        self,
        *,
        bot_first_name: str = "Vitte",
        bot_username: str = "vitte_test_bot",
        max_calls: int = 10_000,
        max_messages_per_chat: int = 5_000,
        max_drafts_per_chat: int = 1_000,
        max_tracked_ids: int = 10_000,
        latency: float = 0.0,
        strict: bool = True,
        update_id_start: int = 1,
        max_poll_wait: float = 0.5,
        pre_checkout_timeout: float = 10.0,
    ) -> None:
        super().__init__()
        self.bot_first_name = bot_first_name
        self.bot_username = bot_username
        self.latency = latency
        self.strict = strict
        self.drafts_supported = True
        # the answer when drafts_supported is False; an older Bot API server answers
        # (404, "Not Found: method not found") instead
        self.drafts_unsupported_error: tuple[int, str] = (
            400,
            "Bad Request: method is not available",
        )
        self.max_poll_wait = max_poll_wait
        self.pre_checkout_timeout = pre_checkout_timeout
        self._max_messages = max_messages_per_chat
        self._max_drafts = max_drafts_per_chat
        self._max_ids = max_tracked_ids

        self.calls: deque[ApiCall] = deque(maxlen=max_calls)
        self.counts: Counter[str] = Counter()
        self.on_call: list[Callable[[ApiCall], object]] = []
        self.chats: dict[int, ChatLog] = {}
        self.blocked: set[int] = set()

        self.files: OrderedDict[str, LocalFile] = OrderedDict()
        self.invoice_links: OrderedDict[str, dict[str, Any]] = OrderedDict()
        self.callback_queries: OrderedDict[str, dict[str, Any]] = OrderedDict()
        self.callback_answers: OrderedDict[str, dict[str, Any]] = OrderedDict()
        self.pre_checkout_queries: OrderedDict[str, dict[str, Any]] = OrderedDict()
        self.pre_checkout_answers: OrderedDict[str, dict[str, Any]] = OrderedDict()
        self.payments: OrderedDict[str, dict[str, Any]] = OrderedDict()
        self.commands: dict[tuple[str, str], list[dict[str, Any]]] = {}
        self.default_menu_button: dict[str, Any] | None = None
        self.bot_settings: dict[str, Any] = {}
        self.webhook: dict[str, Any] | None = None

        self._seq = itertools.count(1)
        self._update_ids = itertools.count(update_id_start)
        self._file_ids = itertools.count(1)
        self._faults: list[_Fault] = []
        self._waiters: list[tuple[Callable[[ApiCall], bool], asyncio.Future[ApiCall]]] = []
        self._listeners: list[asyncio.Queue[ApiCall]] = []
        self._tasks: set[asyncio.Task[Any]] = set()
        self._update_queue: deque[dict[str, Any]] = deque(maxlen=max_tracked_ids)
        self._update_added: asyncio.Event | None = None
        self._update_added_loop: asyncio.AbstractEventLoop | None = None
        self._flood: _FloodLimit | None = None
        self._flood_buckets: dict[int, tuple[float, float]] = {}
        self._answering: dict[int, TelegramMethod[Any]] = {}  # call seq -> the aiogram method object

        self._handlers: dict[str, Handler] = {
            "getMe": self._get_me,
            "sendMessage": self._send_message,
            "sendMessageDraft": self._send_message_draft,
            "editMessageText": self._edit_message_text,
            "editMessageCaption": self._edit_message_caption,
            "editMessageReplyMarkup": self._edit_message_reply_markup,
            "deleteMessage": self._delete_message,
            "deleteMessages": self._delete_messages,
            "answerCallbackQuery": self._answer_callback_query,
            "sendChatAction": self._send_chat_action,
            "sendInvoice": self._send_invoice,
            "createInvoiceLink": self._create_invoice_link,
            "answerPreCheckoutQuery": self._answer_pre_checkout_query,
            "refundStarPayment": self._refund_star_payment,
            "editUserStarSubscription": self._edit_user_star_subscription,
            "setMyCommands": self._set_my_commands,
            "getMyCommands": self._get_my_commands,
            "deleteMyCommands": self._delete_my_commands,
            "setChatMenuButton": self._set_chat_menu_button,
            "getChatMenuButton": self._get_chat_menu_button,
            "setMyDescription": self._set_bot_setting,
            "setMyShortDescription": self._set_bot_setting,
            "setMyName": self._set_bot_setting,
            "setWebhook": self._set_webhook,
            "deleteWebhook": self._delete_webhook,
            "getWebhookInfo": self._get_webhook_info,
            "getUpdates": self._get_updates,
            "getFile": self._get_file,
        }
        for api_method, kind in _MEDIA_METHODS.items():
            self._handlers[api_method] = self._media_handler(kind)

    # ------------------------------------------------------------------ public API

    @property
    def supported_methods(self) -> list[str]:
        return sorted(self._handlers)

    def register_method(self, name: str, handler: Handler) -> None:
        """Teach the server one more method: ``async handler(bot, params, files, call)``.

        Raise ``LocalBotSession.error(code, description)`` from it to answer an error.
        """
        self._handlers[name] = handler

    @staticmethod
    def error(code: int, description: str, **parameters: Any) -> Exception:
        return _Reply(code, description, parameters or None)

    def fail_next(
        self,
        method: str | None,
        error_code: int = 429,
        description: str | None = None,
        retry_after: int | None = None,
        times: int = 1,
        *,
        migrate_to_chat_id: int | None = None,
        network: bool = False,
    ) -> None:
        """Make the next ``times`` calls of ``method`` (``None``: any method) fail.

        429 carries ``parameters.retry_after`` (default 1) so aiogram raises
        ``TelegramRetryAfter``; other codes map as in ``check_response`` (400
        ``TelegramBadRequest``, 403 ``TelegramForbiddenError``, 5xx
        ``TelegramServerError`` ...). ``network=True`` raises ``TelegramNetworkError``
        as aiohttp's session does on a timeout. A failed call changes no state.
        """
        if error_code == 429 and retry_after is None:
            retry_after = 1
        if description is None:
            if retry_after is not None:
                description = f"Too Many Requests: retry after {retry_after}"
            else:
                description = _DEFAULT_DESCRIPTIONS.get(error_code, f"Error {error_code}")
        self._faults.append(
            _Fault(
                method=method,
                error_code=error_code,
                description=description,
                retry_after=retry_after,
                migrate_to_chat_id=migrate_to_chat_id,
                times=times,
                network=network,
            )
        )

    def clear_faults(self) -> None:
        self._faults.clear()

    def set_flood_limit(
        self, per_chat_rate: float | None, burst: int = 3, retry_after: int | None = None
    ) -> None:
        """Opt-in flood control: each chat gets ``per_chat_rate`` messages per second
        (sends and edits; drafts, chat actions and answers are free) with bursts of
        ``burst``; beyond that a 429 with ``retry_after`` (default: seconds until the
        next slot, at least 1). ``None`` turns it off."""
        self._flood = None if per_chat_rate is None else _FloodLimit(per_chat_rate, burst, retry_after)
        self._flood_buckets.clear()

    def chat(self, chat_id: int) -> ChatLog:
        log_ = self.chats.get(chat_id)
        if log_ is None:
            log_ = ChatLog(chat_id, max_messages=self._max_messages, max_drafts=self._max_drafts)
            self.chats[chat_id] = log_
        return log_

    def register_user(self, user: dict[str, Any]) -> ChatLog:
        """Remember a player (Telegram ``User`` JSON); its private chat has the same id."""
        chat = self.chat(int(user["id"]))
        chat.user = dict(user)
        return chat

    def block(self, user_id: int) -> None:
        """The player blocked the bot: sending to them answers 403."""
        self.blocked.add(user_id)

    def unblock(self, user_id: int) -> None:
        self.blocked.discard(user_id)

    def calls_of(self, method: str) -> list[ApiCall]:
        return [c for c in self.calls if c.method == method]

    def last(self, method: str | None = None) -> ApiCall | None:
        for call in reversed(self.calls):
            if method is None or call.method == method:
                return call
        return None

    def clear_calls(self) -> None:
        self.calls.clear()
        self.counts.clear()

    def next_update_id(self) -> int:
        return next(self._update_ids)

    def bot_user_json(self, bot: Bot) -> dict[str, Any]:
        return {
            "id": bot.id,
            "is_bot": True,
            "first_name": self.bot_first_name,
            "username": self.bot_username,
        }

    def message_json(self, bot: Bot, message: LocalMessage, *, nested: bool = False) -> dict[str, Any]:
        """The Telegram ``Message`` JSON of a message in its current state."""
        chat = self.chat(message.chat_id)
        sender = self.bot_user_json(bot) if message.from_bot else self._user_json(chat)
        data: dict[str, Any] = {
            "message_id": message.message_id,
            "date": message.date,
            "chat": chat.chat_json(),
            "from": sender,
        }
        if message.edit_date is not None:
            data["edit_date"] = message.edit_date
        data.update(message.extra)
        if message.text is not None:
            if message.kind == "text":
                data["text"] = message.text
                if message.entities:
                    data["entities"] = message.entities
            else:
                data["caption"] = message.text
                if message.entities:
                    data["caption_entities"] = message.entities
        if message.markup_json is not None:
            data["reply_markup"] = message.markup_json
        if message.reply_to is not None and not nested:
            target = chat.message(message.reply_to)
            if target is not None:
                data["reply_to_message"] = self.message_json(bot, target, nested=True)
        return data

    def store_file(
        self,
        kind: str,
        data: bytes | None,
        *,
        filename: str | None = None,
        mime_type: str | None = None,
        url: str | None = None,
        size_known: bool = True,
    ) -> LocalFile:
        n = next(self._file_ids)
        file = LocalFile(
            file_id=f"local-{kind}-{n}-{secrets.token_hex(4)}",
            file_unique_id=f"lu{n}",
            kind=kind,
            filename=filename,
            data=data,
            mime_type=mime_type,
            url=url,
            size_known=size_known,
        )
        self._remember(self.files, file.file_id, file)
        return file

    def file_json(self, file: LocalFile, kind: str, **extra: Any) -> Any:
        base: dict[str, Any] = {"file_id": file.file_id, "file_unique_id": file.file_unique_id}
        if file.data is not None and file.size_known:
            base["file_size"] = file.size
        if kind == "photo":
            return [{**base, "width": 1280, "height": 1280, **extra}]
        if kind == "document":
            if file.filename:
                base["file_name"] = file.filename
            if file.mime_type:
                base["mime_type"] = file.mime_type
        elif kind == "sticker":
            base.update(type="regular", width=512, height=512, is_animated=False, is_video=False)
        elif kind in {"voice", "audio"}:
            base["duration"] = 1
            if file.mime_type:
                base["mime_type"] = file.mime_type
        elif kind in {"video", "animation"}:
            base.update(width=640, height=360, duration=1)
        base.update(extra)
        return base

    # tracking of ids the local server issued (used by LocalPlayer)
    def expect_callback(self, query_id: str, **info: Any) -> None:
        self._remember(self.callback_queries, query_id, {**info, "ts": time.time()})

    def expect_pre_checkout(self, query_id: str, **info: Any) -> None:
        self._remember(self.pre_checkout_queries, query_id, {**info, "ts": time.time()})

    def register_payment(
        self,
        charge_id: str,
        *,
        user_id: int,
        total_amount: int,
        invoice_payload: str,
        currency: str = STARS,
        is_recurring: bool = False,
        subscription_expiration_date: int | None = None,
    ) -> dict[str, Any]:
        payment = self.payments.get(charge_id)
        if payment is None:
            payment = {
                "charge_id": charge_id,
                "user_id": user_id,
                "total_amount": total_amount,
                "invoice_payload": invoice_payload,
                "currency": currency,
                "is_recurring": is_recurring,
                "subscription_expiration_date": subscription_expiration_date,
                "refunded": False,
                "canceled": False,
            }
            self._remember(self.payments, charge_id, payment)
        return payment

    def stop_draft(self, chat_id: int, draft_id: int) -> LocalDraft | None:
        return self.chat(chat_id).stop_draft(draft_id)

    # updates for long polling (dp.start_polling against this session)
    def push_update(self, update: Update | dict[str, Any]) -> None:
        """Queue an update for ``getUpdates`` (long polling through the real dispatcher)."""
        if isinstance(update, Update):
            data = update.model_dump(mode="json", by_alias=True, exclude_none=True)
        else:
            data = update
        self._update_queue.append(data)
        if self._update_added is not None:
            self._update_added.set()

    @property
    def pending_updates(self) -> int:
        return len(self._update_queue)

    # observers
    async def wait_for(
        self,
        method: str | None = None,
        predicate: Callable[[ApiCall], bool] | None = None,
        timeout: float | None = 5.0,  # noqa: ASYNC109
    ) -> ApiCall:
        """Wait for the next recorded call of ``method`` matching ``predicate``."""

        def match(call: ApiCall) -> bool:
            return (method is None or call.method == method) and (predicate is None or predicate(call))

        future: asyncio.Future[ApiCall] = asyncio.get_running_loop().create_future()
        entry = (match, future)
        self._waiters.append(entry)
        try:
            return await asyncio.wait_for(future, timeout)
        finally:
            with contextlib.suppress(ValueError):
                self._waiters.remove(entry)

    def listen(self, maxsize: int = 1000) -> asyncio.Queue[ApiCall]:
        """A queue receiving every new call (dropped when full); see :meth:`unlisten`."""
        queue: asyncio.Queue[ApiCall] = asyncio.Queue(maxsize)
        self._listeners.append(queue)
        return queue

    def unlisten(self, queue: asyncio.Queue[ApiCall]) -> None:
        with contextlib.suppress(ValueError):
            self._listeners.remove(queue)

    # ------------------------------------------------------------------ BaseSession

    async def close(self) -> None:
        return None

    async def stream_content(
        self,
        url: str,
        headers: dict[str, Any] | None = None,
        timeout: int = 30,  # noqa: ASYNC109 - BaseSession's signature
        chunk_size: int = 65536,
        raise_for_status: bool = True,
    ) -> AsyncGenerator[bytes, None]:
        """Serve the bytes of a known file (``bot.download`` after ``getFile``)."""
        for file in reversed(self.files.values()):
            if url.endswith("/" + file.file_path) and file.data is not None:
                for start in range(0, len(file.data), chunk_size):
                    yield file.data[start : start + chunk_size]
                return
        raise LookupError(f"LocalBotSession has no file at {url} (it makes no network requests)")

    async def make_request(
        self,
        bot: Bot,
        method: TelegramMethod[TelegramType],
        timeout: int | None = None,  # noqa: ASYNC109 - BaseSession's signature
    ) -> TelegramType:
        name = method.__api_method__
        files: dict[str, InputFile] = {}
        params = self._prepare_params(bot, method, files)
        if self.latency:
            await asyncio.sleep(self.latency)
        call = ApiCall(
            seq=next(self._seq),
            method=name,
            params=params,
            ts=time.time(),
            chat_id=_maybe_int(params.get("chat_id")),
            files={k: (f.filename, len(f.data) if hasattr(f, "data") else -1) for k, f in files.items()}
            if files
            else {},
        )
        fault = self._take_fault(name) if self._faults else None
        if fault is not None and fault.network:
            call.error = "network error: Request timeout error"
            self._record(call)
            raise TelegramNetworkError(method=method, message="Request timeout error")
        reply: _Reply | None = None
        try:
            if fault is not None:
                parameters: dict[str, Any] = {}
                if fault.retry_after is not None:
                    parameters["retry_after"] = fault.retry_after
                if fault.migrate_to_chat_id is not None:
                    parameters["migrate_to_chat_id"] = fault.migrate_to_chat_id
                raise _Reply(fault.error_code, fault.description, parameters or None)
            if self._flood is not None and name in _FLOOD_METHODS and call.chat_id is not None:
                self._check_flood(call.chat_id, call.ts)
            handler = self._handlers.get(name)
            if handler is None:
                raise _Reply(404, f"Not Found: method {name} is not supported by LocalBotSession")
            self._answering[call.seq] = method
            try:
                result = await handler(bot, params, files, call)
            finally:
                del self._answering[call.seq]
        except _Reply as e:
            reply = e
        except Exception as e:
            call.error = f"local server error: {type(e).__name__}: {e}"
            self._record(call)
            raise
        if reply is None:
            call.result = result
            self._record(call)
            return cast(TelegramType, self._parse_result(bot, method, result))
        call.error, call.error_code = reply.description, reply.code
        self._record(call)
        body: dict[str, Any] = {"ok": False, "error_code": reply.code, "description": reply.description}
        if reply.parameters:
            body["parameters"] = reply.parameters
        # an error answer takes aiogram's own path: the exception Telegram's answer would raise
        self.check_response(bot=bot, method=method, status_code=reply.code, content=self.json_dumps(body))
        raise AssertionError("check_response accepted an error answer")  # pragma: no cover

    @staticmethod
    def _parse_result(bot: Bot, method: TelegramMethod[Any], result: Any) -> Any:
        """What aiogram's ``check_response`` makes of ``{"ok": true, "result": ...}``.

        The same model (``Response[method.__returning__]``) validates the same data, with the
        bot in its context; only the JSON text round trip is skipped (the answers are built
        from JSON-typed values: dicts, lists, str, int, float, bool, None).
        """
        cls = type(method)
        response_type = _RESPONSE_TYPES.get(cls)
        if response_type is None:
            pin_response_type(method)  # see vitte.perf: else a GC makes aiogram rebuild it
            response_type = _RESPONSE_TYPES[cls] = Response[cls.__returning__]  # type: ignore[name-defined]
        data = {"ok": True, "result": result}
        try:
            return response_type.model_validate(data, context={"bot": bot}).result
        except ValidationError as e:
            raise ClientDecodeError("Failed to deserialize object", e, data) from e

    # ------------------------------------------------------------------ internals

    def _prepare_params(
        self, bot: Bot, method: TelegramMethod[Any], files: dict[str, InputFile]
    ) -> dict[str, Any]:
        """The method's fields as aiogram's sessions send them (``prepare_value`` of
        ``model_dump``), without dumping the fields that are plain values already."""
        params: dict[str, Any] = {}
        values: dict[str, Any] = method.__dict__
        extra = method.__pydantic_extra__
        if extra:
            values = {**values, **extra}
        for key, value in values.items():
            if value is None:
                continue
            kind = type(value)
            if kind is str:
                if value == "":
                    continue  # aiohttp's session drops empty form fields too
                params[key] = value
                continue
            if kind is not int and kind is not bool and kind is not float:
                # objects, lists, defaults, enums, files, dates: aiogram's own conversion
                value = self.prepare_value(value, bot=bot, files=files, _dumps_json=False)
                if value is None or value == "":
                    continue
            params[key] = value
        return params

    def _check_flood(self, chat_id: int, now: float) -> None:
        flood = cast(_FloodLimit, self._flood)
        tokens, last = self._flood_buckets.get(chat_id, (float(flood.burst), now))
        tokens = min(float(flood.burst), tokens + (now - last) * flood.rate)
        if tokens < 1.0:
            self._flood_buckets[chat_id] = (tokens, now)
            wait = flood.retry_after or max(1, math.ceil((1.0 - tokens) / flood.rate))
            raise _Reply(429, f"Too Many Requests: retry after {wait}", {"retry_after": wait})
        self._flood_buckets[chat_id] = (tokens - 1.0, now)

    def _take_fault(self, method: str) -> _Fault | None:
        for fault in self._faults:
            if fault.method is None or fault.method == method:
                fault.times -= 1
                if fault.times <= 0:
                    self._faults.remove(fault)
                return fault
        return None

    def _record(self, call: ApiCall) -> None:
        self.calls.append(call)
        self.counts[call.method] += 1
        if not (self.on_call or self._waiters or self._listeners):
            return
        for callback in list(self.on_call):
            try:
                outcome = callback(call)
                if inspect.isawaitable(outcome):
                    task = asyncio.ensure_future(outcome)
                    self._tasks.add(task)
                    task.add_done_callback(self._tasks.discard)
            except Exception:
                log.exception("on_call observer failed for %s", call.method)
        for match, future in list(self._waiters):
            if not future.done() and match(call):
                future.set_result(call)
        for queue in self._listeners:
            with contextlib.suppress(asyncio.QueueFull):
                queue.put_nowait(call)

    def _remember(self, store: OrderedDict[str, Any], key: str, value: Any) -> None:
        store[key] = value
        while len(store) > self._max_ids:
            store.popitem(last=False)

    def _user_json(self, chat: ChatLog) -> dict[str, Any]:
        if chat.user is not None:
            return chat.user
        return {"id": chat.chat_id, "is_bot": False, "first_name": f"User {chat.chat_id}"}

    def _target_chat(self, params: dict[str, Any], *, sending: bool = True) -> ChatLog:
        raw = params.get("chat_id")
        chat_id = _maybe_int(raw)
        if chat_id is None:
            raise _bad("chat not found")
        if sending and chat_id in self.blocked:
            raise _Reply(403, BLOCKED)
        return self.chat(chat_id)

    @staticmethod
    def _format(p: dict[str, Any], field: _Field) -> tuple[str, list[dict[str, Any]] | None]:
        """The text (or caption) a call sets, as the player sees it, and its entities."""
        text_key, entities_key, limit, empty, too_long = field
        text = p.get(text_key)
        text = "" if text is None else str(text)
        entities = p.get(entities_key)
        parse_mode = p.get("parse_mode")
        if entities:
            plain, ents = text, list(entities)
        elif isinstance(parse_mode, str) and parse_mode.lower() == "html":
            plain, ents = parse_html(text)
        else:
            plain, ents = text, None
        if empty is not None and not plain.strip():
            raise _bad(empty)
        if len(plain) > limit:
            raise _bad(too_long)
        return plain, ents or None

    def _markup(
        self, raw: Any, chat: ChatLog, call: ApiCall | None = None
    ) -> tuple[InlineKeyboardMarkup | None, dict[str, Any] | None, Callable[[], None]]:
        """Validate reply_markup; returns (inline markup, its JSON, apply-side-effects)."""
        if raw is None:
            return None, None, _nothing
        if not isinstance(raw, dict):
            raise _bad("can't parse reply keyboard markup JSON object")
        if "inline_keyboard" in raw:
            rows = raw["inline_keyboard"]
            for row in rows:
                for button in row:
                    self._check_button(button, chat)
            # the bot's own keyboard object (immutable) is what `raw` was dumped from
            request = self._answering.get(call.seq) if call is not None else None
            markup = getattr(request, "reply_markup", None)
            if type(markup) is not InlineKeyboardMarkup:
                markup = InlineKeyboardMarkup.model_validate(raw)
            return markup, raw, _nothing
        if "keyboard" in raw:

            def set_keyboard() -> None:
                chat.reply_keyboard = raw

            return None, None, set_keyboard
        if raw.get("remove_keyboard"):

            def remove_keyboard() -> None:
                chat.reply_keyboard = None

            return None, None, remove_keyboard
        return None, None, _nothing

    @staticmethod
    def _check_button(button: dict[str, Any], chat: ChatLog) -> None:
        if not button.get("text"):
            raise _bad("BUTTON_TEXT_INVALID")
        actions = [a for a in _BUTTON_ACTIONS if a in button]
        if not actions:
            raise _bad("text buttons are unallowed in the inline keyboard")
        if "callback_data" in button:
            size = len(str(button["callback_data"]).encode())
            if size == 0 or size > MAX_CALLBACK_DATA:
                raise _bad("BUTTON_DATA_INVALID")
        if "web_app" in button:
            url = str((button["web_app"] or {}).get("url", ""))
            if not url.startswith("https://"):
                raise _bad(
                    f"inline keyboard button Web App URL '{url}' is invalid: Only HTTPS links are allowed"
                )
            if chat.chat_id < 0:
                raise _bad("BUTTON_TYPE_INVALID")
        if "url" in button:
            url = str(button["url"])
            if not re.match(r"^(https?|tg)://\S+$", url):
                raise _bad(f"inline keyboard button URL '{url}' is invalid")

    def _reply_to(self, chat: ChatLog, params: dict[str, Any]) -> int | None:
        reply = params.get("reply_parameters")
        target = _maybe_int(reply.get("message_id")) if isinstance(reply, dict) else None
        if target is None:
            target = _maybe_int(params.get("reply_to_message_id"))
        if target is None:
            return None
        msg = chat.message(target)
        if msg is None or msg.deleted:
            allow = (isinstance(reply, dict) and reply.get("allow_sending_without_reply")) or (
                params.get("allow_sending_without_reply")
            )
            if allow:
                return None
            raise _bad("message to be replied not found")
        return target

    def _editable(self, params: dict[str, Any]) -> tuple[ChatLog, LocalMessage]:
        if params.get("inline_message_id"):
            raise _bad("inline messages are not supported by LocalBotSession")
        chat = self._target_chat(params)
        message_id = _maybe_int(params.get("message_id"))
        msg = chat.message(message_id) if message_id is not None else None
        if msg is None or msg.deleted:
            raise _bad("message to edit not found")
        if not msg.from_bot:
            raise _bad("message can't be edited")
        return chat, msg

    def _new_message(self, chat: ChatLog, **fields: Any) -> LocalMessage:
        return chat.add(
            LocalMessage(
                message_id=chat.next_message_id(),
                chat_id=chat.chat_id,
                date=int(time.time()),
                from_bot=True,
                **fields,
            )
        )

    async def _read_file(
        self, bot: Bot, kind: str, ref: Any, files: dict[str, InputFile], mime_type: Any
    ) -> LocalFile:
        if isinstance(ref, str) and ref.startswith("attach://"):
            upload = files.get(ref.removeprefix("attach://"))
            if upload is None:
                raise _bad(f"there is no {kind} in the request")
            if isinstance(upload, URLInputFile):
                return self.store_file(kind, None, filename=upload.filename, url=upload.url)
            chunks = [chunk async for chunk in upload.read(bot)]
            return self.store_file(
                kind,
                b"".join(chunks),
                filename=upload.filename or ref.removeprefix("attach://"),
                mime_type=mime_type if isinstance(mime_type, str) else None,
            )
        if isinstance(ref, str) and ref in self.files:
            return self.files[ref]
        if isinstance(ref, str) and ref.startswith(("http://", "https://")):
            return self.store_file(kind, None, url=ref)
        if isinstance(ref, str) and ref:
            # A file_id issued by the real Telegram: opaque here, but valid in production.
            return LocalFile(file_id=ref, file_unique_id=ref[-16:], kind=kind)
        raise _bad(f"there is no {kind} in the request")

    # ------------------------------------------------------------------ method handlers

    async def _get_me(self, bot: Bot, p: dict[str, Any], files: Any, call: ApiCall) -> Any:
        return {
            **self.bot_user_json(bot),
            "can_join_groups": False,
            "can_read_all_group_messages": False,
            "supports_inline_queries": False,
        }

    async def _send_message(self, bot: Bot, p: dict[str, Any], files: Any, call: ApiCall) -> Any:
        chat = self._target_chat(p)
        text, entities = self._format(p, _MESSAGE_TEXT)
        markup, markup_json, apply = self._markup(p.get("reply_markup"), chat, call)
        reply_to = self._reply_to(chat, p)
        apply()
        msg = self._new_message(
            chat,
            text=text,
            entities=entities,
            raw_text=p.get("text"),
            parse_mode=p.get("parse_mode"),
            reply_markup=markup,
            markup_json=markup_json,
            reply_to=reply_to,
        )
        chat.clear_drafts()
        return self.message_json(bot, msg)

    async def _send_message_draft(self, bot: Bot, p: dict[str, Any], files: Any, call: ApiCall) -> Any:
        if not self.drafts_supported:
            raise _Reply(*self.drafts_unsupported_error)
        chat = self._target_chat(p)
        if chat.chat_id < 0:
            raise _bad("TEXTDRAFT_PEER_INVALID")
        draft_id = _maybe_int(p.get("draft_id"))
        if not draft_id:
            raise _bad("draft_id must be non-zero")
        text, entities = self._format(p, _DRAFT_TEXT)
        chat.set_draft(
            LocalDraft(
                chat_id=chat.chat_id,
                draft_id=draft_id,
                text=text,
                entities=entities,
                can_stop=bool(p.get("can_stop")),
                keep_on_stop=bool(p.get("keep_on_stop")),
                ts=call.ts,
                seq=call.seq,
                stopped=draft_id in chat.stopped_draft_ids,  # the player pressed stop
            )
        )
        return True

    async def _edit_message_text(self, bot: Bot, p: dict[str, Any], files: Any, call: ApiCall) -> Any:
        chat, msg = self._editable(p)
        if msg.kind != "text":
            raise _bad("there is no text in the message to edit")
        text, entities = self._format(p, _EDITED_TEXT)
        markup, markup_json, _ = self._markup(p.get("reply_markup"), chat, call)
        if text == msg.text and entities == msg.entities and markup_json == msg.markup_json:
            raise _Reply(400, NOT_MODIFIED)
        msg.text, msg.entities, msg.raw_text = text, entities, p.get("text")
        msg.parse_mode = p.get("parse_mode")
        msg.reply_markup, msg.markup_json = markup, markup_json
        self._touch(msg)
        return self.message_json(bot, msg)

    async def _edit_message_caption(self, bot: Bot, p: dict[str, Any], files: Any, call: ApiCall) -> Any:
        chat, msg = self._editable(p)
        if msg.kind in {"text", "invoice", "sticker"}:
            raise _bad("there is no caption in the message to edit")
        text, entities = self._format(p, _CAPTION)
        markup, markup_json, _ = self._markup(p.get("reply_markup"), chat, call)
        new_text = text or None
        if new_text == msg.text and entities == msg.entities and markup_json == msg.markup_json:
            raise _Reply(400, NOT_MODIFIED)
        msg.text, msg.entities = new_text, entities
        msg.reply_markup, msg.markup_json = markup, markup_json
        self._touch(msg)
        return self.message_json(bot, msg)

    async def _edit_message_reply_markup(self, bot: Bot, p: dict[str, Any], files: Any, call: ApiCall) -> Any:
        chat, msg = self._editable(p)
        markup, markup_json, _ = self._markup(p.get("reply_markup"), chat, call)
        if markup_json == msg.markup_json:
            raise _Reply(400, NOT_MODIFIED)
        msg.reply_markup, msg.markup_json = markup, markup_json
        self._touch(msg)
        return self.message_json(bot, msg)

    @staticmethod
    def _touch(msg: LocalMessage) -> None:
        msg.edited = True
        msg.edit_date = int(time.time())

    async def _delete_message(self, bot: Bot, p: dict[str, Any], files: Any, call: ApiCall) -> Any:
        chat = self._target_chat(p, sending=False)
        message_id = _maybe_int(p.get("message_id"))
        msg = chat.message(message_id) if message_id is not None else None
        if msg is None or msg.deleted:
            raise _bad("message to delete not found")
        msg.deleted = True
        return True

    async def _delete_messages(self, bot: Bot, p: dict[str, Any], files: Any, call: ApiCall) -> Any:
        chat = self._target_chat(p, sending=False)
        for message_id in p.get("message_ids") or []:
            msg = chat.message(int(message_id))
            if msg is not None:
                msg.deleted = True
        return True

    async def _answer_callback_query(self, bot: Bot, p: dict[str, Any], files: Any, call: ApiCall) -> Any:
        query_id = str(p.get("callback_query_id", ""))
        known = query_id in self.callback_queries
        if self.strict and (not known or query_id in self.callback_answers):
            raise _Reply(400, QUERY_TOO_OLD)
        if len(str(p.get("text", ""))) > 200:
            raise _bad("MESSAGE_TOO_LONG")
        self._remember(
            self.callback_answers,
            query_id,
            {
                "text": p.get("text"),
                "show_alert": bool(p.get("show_alert")),
                "url": p.get("url"),
                "ts": call.ts,
            },
        )
        return True

    async def _send_chat_action(self, bot: Bot, p: dict[str, Any], files: Any, call: ApiCall) -> Any:
        chat = self._target_chat(p)
        action = p.get("action")
        if action not in CHAT_ACTIONS:
            raise _bad("wrong parameter action in request")
        chat.last_action, chat.last_action_ts = action, call.ts
        return True

    def _invoice(self, p: dict[str, Any], *, link: bool) -> dict[str, Any]:
        title, description = str(p.get("title", "")), str(p.get("description", ""))
        payload, currency = str(p.get("payload", "")), str(p.get("currency", ""))
        prices = p.get("prices") or []
        if not 1 <= len(title) <= 32:
            raise _bad("TITLE_INVALID" if title else "title is empty")
        if not 1 <= len(description) <= 255:
            raise _bad("DESCRIPTION_INVALID" if description else "description is empty")
        if not 1 <= len(payload.encode()) <= 128:
            raise _bad("INVOICE_PAYLOAD_INVALID")
        if not currency:
            raise _bad("CURRENCY_INVALID")
        if not prices:
            raise _bad("prices must be non-empty")
        amounts = [int(price.get("amount", 0)) for price in prices]
        total = sum(amounts)
        if total <= 0 or any(a <= 0 for a in amounts):
            raise _bad("CURRENCY_TOTAL_AMOUNT_INVALID")
        period = p.get("subscription_period")
        if currency == STARS:
            if p.get("provider_token"):
                raise _bad("provider_token must be empty for payments in Telegram Stars")
            if len(prices) != 1:
                raise _bad("exactly one price item is allowed for payments in Telegram Stars")
        if period is not None:
            if not link:
                raise _bad("subscription_period is allowed only in createInvoiceLink")
            if int(period) != SUBSCRIPTION_PERIOD:
                raise _bad("SUBSCRIPTION_PERIOD_INVALID")
            if currency != STARS:
                raise _bad("subscriptions are available only in Telegram Stars (XTR)")
            if total > MAX_SUBSCRIPTION_STARS:
                raise _bad("CURRENCY_TOTAL_AMOUNT_INVALID")
        keep = (
            "title",
            "description",
            "payload",
            "currency",
            "prices",
            "subscription_period",
            "start_parameter",
            "photo_url",
            "provider_data",
            "is_flexible",
        )
        invoice = {k: p[k] for k in keep if k in p}
        invoice["total_amount"] = total
        return invoice

    async def _send_invoice(self, bot: Bot, p: dict[str, Any], files: Any, call: ApiCall) -> Any:
        chat = self._target_chat(p)
        invoice = self._invoice(p, link=False)
        markup, markup_json, _ = self._markup(p.get("reply_markup"), chat, call)
        if markup is not None:
            first = markup.inline_keyboard[0][0] if markup.inline_keyboard else None
            if first is None or not first.pay:
                raise _bad("REPLY_MARKUP_BUY_EMPTY")
        msg = self._new_message(
            chat,
            text=None,
            kind="invoice",
            invoice=invoice,
            reply_markup=markup,
            markup_json=markup_json,
            extra={
                "invoice": {
                    "title": invoice["title"],
                    "description": invoice["description"],
                    "start_parameter": invoice.get("start_parameter", ""),
                    "currency": invoice["currency"],
                    "total_amount": invoice["total_amount"],
                }
            },
        )
        chat.clear_drafts()
        return self.message_json(bot, msg)

    async def _create_invoice_link(self, bot: Bot, p: dict[str, Any], files: Any, call: ApiCall) -> Any:
        invoice = self._invoice(p, link=True)
        link = f"https://t.me/${secrets.token_urlsafe(12)}"
        self._remember(self.invoice_links, link, invoice)
        return link

    async def _answer_pre_checkout_query(self, bot: Bot, p: dict[str, Any], files: Any, call: ApiCall) -> Any:
        query_id = str(p.get("pre_checkout_query_id", ""))
        query = self.pre_checkout_queries.get(query_id)
        if self.strict:
            if query is None or query_id in self.pre_checkout_answers:
                raise _Reply(400, QUERY_TOO_OLD)
            if call.ts - query["ts"] > self.pre_checkout_timeout:
                raise _Reply(400, QUERY_TOO_OLD)
        ok = bool(p.get("ok"))
        if not ok and not p.get("error_message"):
            raise _bad("ERROR_MESSAGE_EMPTY")
        self._remember(
            self.pre_checkout_answers,
            query_id,
            {"ok": ok, "error_message": p.get("error_message"), "ts": call.ts},
        )
        return True

    def _payment(self, p: dict[str, Any]) -> dict[str, Any] | None:
        charge_id = str(p.get("telegram_payment_charge_id", ""))
        payment = self.payments.get(charge_id)
        if payment is not None and payment["user_id"] != _maybe_int(p.get("user_id")):
            payment = None
        if payment is None and self.strict:
            raise _bad("CHARGE_NOT_FOUND")
        return payment

    async def _refund_star_payment(self, bot: Bot, p: dict[str, Any], files: Any, call: ApiCall) -> Any:
        payment = self._payment(p)
        if payment is not None:
            if payment["refunded"]:
                raise _bad("CHARGE_ALREADY_REFUNDED")
            payment["refunded"] = True
        return True

    async def _edit_user_star_subscription(
        self, bot: Bot, p: dict[str, Any], files: Any, call: ApiCall
    ) -> Any:
        payment = self._payment(p)
        if payment is not None:
            if not payment["is_recurring"]:
                raise _bad("SUBSCRIPTION_NOT_FOUND")
            canceled = bool(p.get("is_canceled"))
            if payment["canceled"] == canceled:
                raise _bad("SUBSCRIPTION_NOT_MODIFIED")
            payment["canceled"] = canceled
        return True

    @staticmethod
    def _scope_key(p: dict[str, Any]) -> tuple[str, str]:
        scope = p.get("scope") or {"type": "default"}
        key = ",".join(f"{k}={scope[k]}" for k in sorted(scope))
        return key, str(p.get("language_code", ""))

    async def _set_my_commands(self, bot: Bot, p: dict[str, Any], files: Any, call: ApiCall) -> Any:
        commands = list(p.get("commands") or [])
        for command in commands:
            if not re.fullmatch(r"[a-z0-9_]{1,32}", str(command.get("command", ""))):
                raise _bad("BOT_COMMAND_INVALID")
            if not 1 <= len(str(command.get("description", ""))) <= 256:
                raise _bad("BOT_COMMAND_DESCRIPTION_INVALID")
        self.commands[self._scope_key(p)] = commands
        return True

    async def _get_my_commands(self, bot: Bot, p: dict[str, Any], files: Any, call: ApiCall) -> Any:
        return self.commands.get(self._scope_key(p), [])

    async def _delete_my_commands(self, bot: Bot, p: dict[str, Any], files: Any, call: ApiCall) -> Any:
        self.commands.pop(self._scope_key(p), None)
        return True

    async def _set_chat_menu_button(self, bot: Bot, p: dict[str, Any], files: Any, call: ApiCall) -> Any:
        button = p.get("menu_button") or {"type": "default"}
        if button.get("type") == "web_app":
            url = str((button.get("web_app") or {}).get("url", ""))
            if not url.startswith("https://"):
                raise _bad(f"menu button Web App URL '{url}' is invalid: Only HTTPS links are allowed")
        chat_id = _maybe_int(p.get("chat_id"))
        if chat_id is None:
            self.default_menu_button = button
        else:
            self.chat(chat_id).menu_button = button
        return True

    async def _get_chat_menu_button(self, bot: Bot, p: dict[str, Any], files: Any, call: ApiCall) -> Any:
        chat_id = _maybe_int(p.get("chat_id"))
        button = self.chat(chat_id).menu_button if chat_id is not None else None
        return button or self.default_menu_button or {"type": "default"}

    async def _set_bot_setting(self, bot: Bot, p: dict[str, Any], files: Any, call: ApiCall) -> Any:
        self.bot_settings[f"{call.method}:{p.get('language_code', '')}"] = p
        return True

    async def _set_webhook(self, bot: Bot, p: dict[str, Any], files: Any, call: ApiCall) -> Any:
        url = str(p.get("url", ""))
        if not url:
            self.webhook = None
            return True
        if not url.startswith("https://"):
            raise _bad("bad webhook: An HTTPS URL must be provided for webhook")
        secret = p.get("secret_token")
        if secret is not None and not re.fullmatch(r"[A-Za-z0-9_-]{1,256}", str(secret)):
            raise _bad("secret token contains unallowed characters")
        self.webhook = dict(p)
        if p.get("drop_pending_updates"):
            self._update_queue.clear()
        return True

    async def _delete_webhook(self, bot: Bot, p: dict[str, Any], files: Any, call: ApiCall) -> Any:
        self.webhook = None
        if p.get("drop_pending_updates"):
            self._update_queue.clear()
        return True

    async def _get_webhook_info(self, bot: Bot, p: dict[str, Any], files: Any, call: ApiCall) -> Any:
        info: dict[str, Any] = {
            "url": (self.webhook or {}).get("url", ""),
            "has_custom_certificate": False,
            "pending_update_count": len(self._update_queue),
        }
        if self.webhook and self.webhook.get("allowed_updates"):
            info["allowed_updates"] = self.webhook["allowed_updates"]
        return info

    async def _get_updates(self, bot: Bot, p: dict[str, Any], files: Any, call: ApiCall) -> Any:
        if self.webhook:
            raise _Reply(
                409,
                "Conflict: can't use getUpdates method while webhook is active; "
                "use deleteWebhook to delete the webhook first",
            )
        offset = _maybe_int(p.get("offset"))
        if offset is not None and offset > 0:
            while self._update_queue and self._update_queue[0]["update_id"] < offset:
                self._update_queue.popleft()
        if not self._update_queue:
            wait = min(float(p.get("timeout") or 0), self.max_poll_wait)
            if wait > 0:
                loop = asyncio.get_running_loop()
                if self._update_added is None or self._update_added_loop is not loop:
                    self._update_added, self._update_added_loop = asyncio.Event(), loop
                self._update_added.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._update_added.wait(), wait)
        limit = _maybe_int(p.get("limit")) or 100
        allowed = p.get("allowed_updates")
        if allowed:  # Telegram drops the update types the bot did not ask for
            kept = [d for d in self._update_queue if any(key in d for key in allowed)]
            self._update_queue.clear()
            self._update_queue.extend(kept)
        return list(itertools.islice(self._update_queue, limit))

    async def _get_file(self, bot: Bot, p: dict[str, Any], files: Any, call: ApiCall) -> Any:
        file = self.files.get(str(p.get("file_id", "")))
        if file is None:
            raise _bad("invalid file_id")
        answer: dict[str, Any] = {"file_id": file.file_id, "file_unique_id": file.file_unique_id, "file_path": file.file_path}
        if file.size_known:
            answer["file_size"] = file.size
        return answer

    def _media_handler(self, kind: str) -> Handler:
        async def handler(bot: Bot, p: dict[str, Any], files: Any, call: ApiCall) -> Any:
            chat = self._target_chat(p)
            ref = p.get(kind)
            if not ref:
                raise _bad(f"there is no {kind} in the request")
            caption: str | None = None
            entities = None
            if kind != "sticker":
                caption, entities = self._format(p, _CAPTION)
            markup, markup_json, apply = self._markup(p.get("reply_markup"), chat, call)
            reply_to = self._reply_to(chat, p)
            file = await self._read_file(bot, kind, ref, files, p.get("mime_type"))
            if kind == "document" and file.mime_type is None and file.filename:
                file.mime_type = _guess_mime(file.filename)
            apply()
            extra = {"emoji": p["emoji"]} if kind == "sticker" and p.get("emoji") else {}
            if kind in ("voice", "audio", "video") and isinstance(p.get("duration"), int):
                extra["duration"] = p["duration"]  # as the bot said (sendVoice's duration)
            msg = self._new_message(
                chat,
                text=caption or None,
                entities=entities,
                kind=kind,
                file=file,
                reply_markup=markup,
                markup_json=markup_json,
                reply_to=reply_to,
                extra={kind: self.file_json(file, kind, **extra)},
            )
            chat.clear_drafts()
            call.files.update({k: (f.filename, file.size) for k, f in files.items()})
            return self.message_json(bot, msg)

        return handler


def _nothing() -> None:
    return None


def _maybe_int(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str):
        with contextlib.suppress(ValueError):
            return int(value)
    return None


def _guess_mime(filename: str) -> str | None:
    import mimetypes

    return mimetypes.guess_type(filename)[0]


def make_local_bot(
    session: LocalBotSession | None = None,
    token: str | None = None,
    bot_id: int | None = None,
    username: str | None = None,
    *,
    default: DefaultBotProperties | None = None,
) -> Bot:
    """A real aiogram ``Bot`` wired to a :class:`LocalBotSession` (created if not given).

    The token defaults to ``"<bot_id>:LOCAL-TEST-TOKEN"`` with bot id 42 (aiogram checks
    the token's shape and takes ``bot.id`` from it); given both, they must agree.
    ``username`` sets what getMe reports (default ``vitte_test_bot``).
    """
    if session is None:
        session = LocalBotSession()
    if username is not None:
        session.bot_username = username
    if token is None:
        token = f"{bot_id if bot_id is not None else 42}:LOCAL-TEST-TOKEN"
    elif bot_id is not None and token.partition(":")[0] != str(bot_id):
        raise ValueError(f"token {token!r} does not belong to bot id {bot_id}")
    return Bot(token=token, session=session, default=default)
