"""A small fake Telegram Bot API HTTP server on loopback (aiohttp), for running the real
`vitte run-bot` process against it (VITTE_TELEGRAM_API_URL=http://127.0.0.1:PORT).

In the test's event loop::

    async with FakeBotAPI(token="123:...") as api:
        env["VITTE_TELEGRAM_API_URL"] = api.base_url
        ...
        api.push_update({"message": api.user_message(1001, "/start")})
        call = await api.wait_for("sendMessage", lambda c: "Привет" in c.params["text"])

Answers getMe, getUpdates (long poll from a queue, offsets confirm), sendMessage,
sendMessageDraft, editMessageText, editMessageReplyMarkup, deleteMessage,
answerCallbackQuery, sendChatAction, setMyCommands, setChatMenuButton, deleteWebhook,
setWebhook, getWebhookInfo; an unknown method gets 404 "Not Found: method not found", an
unknown token 401 "Unauthorized". Every call is recorded (`calls`).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

# form fields aiogram sends JSON-encoded (or as numbers/booleans in text)
_JSON_FIELDS = frozenset(
    {
        "reply_markup",
        "allowed_updates",
        "commands",
        "menu_button",
        "scope",
        "chat_id",
        "message_id",
        "draft_id",
        "offset",
        "timeout",
        "limit",
        "can_stop",
        "keep_on_stop",
        "show_alert",
        "drop_pending_updates",
        "link_preview_options",
        "entities",
    }
)


@dataclass
class Call:
    method: str
    params: dict[str, Any]
    ts: float = field(default_factory=time.monotonic)
    result: Any = None


@dataclass
class FakeBotAPI:
    token: str
    host: str = "127.0.0.1"
    port: int = 0
    bot_id: int = 0
    username: str = "vitte_fake_bot"
    calls: list[Call] = field(default_factory=list)
    # getWebhookInfo answers these fields over the defaults (url "", the queue's pending count),
    # e.g. {"url": …, "pending_update_count": 42, "last_error_date": …, "last_error_message": …}
    webhook_info: dict[str, Any] = field(default_factory=dict)
    # method -> (status, body) answered instead of JSON (a proxy's HTML error page, a cut body)
    not_json: dict[str, tuple[int, str]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.bot_id = self.bot_id or int(self.token.partition(":")[0])
        self._updates: deque[dict[str, Any]] = deque()
        self._update_ids = itertools.count(1)
        self._message_ids = itertools.count(1)
        self._added = asyncio.Event()
        self._called = asyncio.Event()
        self._runner: web.AppRunner | None = None
        self.messages: dict[tuple[int, int], dict[str, Any]] = {}
        self.commands: dict[str, list[dict[str, Any]]] = {}
        self.menu_button: dict[str, Any] | None = None

    # ------------------------------------------------------------------ lifecycle
    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    async def start(self) -> FakeBotAPI:
        app = web.Application()
        app.router.add_post("/bot{token}/{method}", self._handle)
        app.router.add_get("/bot{token}/{method}", self._handle)
        self._runner = web.AppRunner(app, handler_cancellation=True, shutdown_timeout=0.2, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port)
        await site.start()
        self.port = int(self._runner.addresses[0][1])
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            runner, self._runner = self._runner, None
            await runner.cleanup()

    async def __aenter__(self) -> FakeBotAPI:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # ------------------------------------------------------------------ the player's side
    def user(self, user_id: int, language_code: str = "ru", first_name: str = "Player") -> dict[str, Any]:
        return {"id": user_id, "is_bot": False, "first_name": first_name, "language_code": language_code}

    def user_message(self, user_id: int, text: str, **user: Any) -> dict[str, Any]:
        message: dict[str, Any] = {
            "message_id": next(self._message_ids),
            "date": int(time.time()),
            "chat": {"id": user_id, "type": "private"},
            "from": self.user(user_id, **user),
            "text": text,
        }
        if text.startswith("/"):
            message["entities"] = [{"type": "bot_command", "offset": 0, "length": len(text.split()[0])}]
        return message

    def callback_query(self, user_id: int, message: dict[str, Any], data: str) -> dict[str, Any]:
        return {
            "id": f"cq{next(self._update_ids)}",
            "from": self.user(user_id),
            "chat_instance": "fake",
            "message": message,
            "data": data,
        }

    def push_update(self, update: dict[str, Any]) -> int:
        update_id = next(self._update_ids)
        self._updates.append({"update_id": update_id, **update})
        self._added.set()
        return update_id

    @property
    def pending_updates(self) -> int:
        return len(self._updates)

    # ------------------------------------------------------------------ observing the bot
    def calls_of(self, method: str) -> list[Call]:
        return [c for c in self.calls if c.method == method]

    async def wait_for(
        self,
        method: str,
        predicate: Callable[[Call], bool] | None = None,
        timeout: float = 10.0,  # noqa: ASYNC109
        after: int = 0,
    ) -> Call:
        """The first call of `method` (from index `after` of `calls`) matching `predicate`."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            for call in self.calls[after:]:
                if call.method == method and (predicate is None or predicate(call)):
                    return call
            remaining = deadline - loop.time()
            if remaining <= 0:
                seen = [c.method for c in self.calls[after:]]
                raise AssertionError(f"no {method} call within {timeout} s; calls: {seen}")
            self._called.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._called.wait(), min(remaining, 0.2))

    # ------------------------------------------------------------------ the server
    @staticmethod
    def _params(raw: dict[str, Any]) -> dict[str, Any]:
        params: dict[str, Any] = {}
        for key, value in raw.items():
            if key in _JSON_FIELDS and isinstance(value, str):
                try:
                    params[key] = json.loads(value)
                    continue
                except ValueError:
                    pass
            params[key] = value
        return params

    async def _handle(self, request: web.Request) -> web.Response:
        if request.match_info["token"] != self.token:
            return web.json_response({"ok": False, "error_code": 401, "description": "Unauthorized"}, status=401)
        method = request.match_info["method"]
        if request.content_type == "application/json":
            raw = await request.json()
        else:
            raw = {k: v for k, v in (await request.post()).items() if isinstance(v, str)}
        params = self._params(dict(raw))
        call = Call(method, params)
        if (page := self.not_json.get(method)) is not None:
            self._record(call)
            return web.Response(status=page[0], text=page[1], content_type="text/html")
        handler = getattr(self, f"_m_{method}", None)
        if handler is None:
            body = {"ok": False, "error_code": 404, "description": "Not Found: method not found"}
            self._record(call)
            return web.json_response(body, status=404)
        if method == "getUpdates":  # a long poll: visible as soon as it arrives
            self._record(call)
            call.result = await handler(params)
            return web.json_response({"ok": True, "result": call.result})
        try:
            call.result = await handler(params)
        except _Error as exc:
            self._record(call)
            body = {"ok": False, "error_code": exc.code, "description": exc.description}
            return web.json_response(body, status=exc.code)
        self._record(call)
        return web.json_response({"ok": True, "result": call.result})

    def _record(self, call: Call) -> None:
        self.calls.append(call)
        self._called.set()

    def _bot_user(self) -> dict[str, Any]:
        return {"id": self.bot_id, "is_bot": True, "first_name": "Vitte", "username": self.username}

    def _message_json(self, chat_id: int, message_id: int) -> dict[str, Any]:
        stored = self.messages[(chat_id, message_id)]
        data: dict[str, Any] = {
            "message_id": message_id,
            "date": stored["date"],
            "chat": {"id": chat_id, "type": "private"},
            "from": self._bot_user(),
            "text": stored["text"],
        }
        if stored.get("reply_markup"):
            data["reply_markup"] = stored["reply_markup"]
        return data

    # methods ------------------------------------------------------------
    async def _m_getMe(self, p: dict[str, Any]) -> Any:
        return {**self._bot_user(), "can_join_groups": False, "can_read_all_group_messages": False}

    async def _m_getUpdates(self, p: dict[str, Any]) -> Any:
        offset = p.get("offset")
        if isinstance(offset, int) and offset > 0:
            while self._updates and self._updates[0]["update_id"] < offset:
                self._updates.popleft()
        if not self._updates:
            self._added.clear()
            timeout = float(p.get("timeout") or 0)
            if timeout > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._added.wait(), timeout)
        limit = int(p.get("limit") or 100)
        return list(itertools.islice(self._updates, limit))

    async def _m_sendMessage(self, p: dict[str, Any]) -> Any:
        text = str(p.get("text") or "")
        if not text.strip():
            raise _Error(400, "Bad Request: message text is empty")
        if len(text) > 4096:
            raise _Error(400, "Bad Request: message is too long")
        chat_id = int(p["chat_id"])
        message_id = next(self._message_ids)
        self.messages[(chat_id, message_id)] = {
            "text": text,
            "reply_markup": p.get("reply_markup"),
            "date": int(time.time()),
        }
        return self._message_json(chat_id, message_id)

    async def _m_sendMessageDraft(self, p: dict[str, Any]) -> Any:
        if not p.get("draft_id"):
            raise _Error(400, "Bad Request: draft_id must be non-zero")
        return True

    async def _m_editMessageText(self, p: dict[str, Any]) -> Any:
        key = (int(p["chat_id"]), int(p["message_id"]))
        stored = self.messages.get(key)
        if stored is None:
            raise _Error(400, "Bad Request: message to edit not found")
        text, markup = str(p.get("text") or ""), p.get("reply_markup")
        if stored["text"] == text and stored.get("reply_markup") == markup:
            raise _Error(400, "Bad Request: message is not modified")
        stored.update(text=text, reply_markup=markup)
        return self._message_json(*key)

    async def _m_editMessageReplyMarkup(self, p: dict[str, Any]) -> Any:
        key = (int(p["chat_id"]), int(p["message_id"]))
        stored = self.messages.get(key)
        if stored is None:
            raise _Error(400, "Bad Request: message to edit not found")
        stored["reply_markup"] = p.get("reply_markup")
        return self._message_json(*key)

    async def _m_deleteMessage(self, p: dict[str, Any]) -> Any:
        if self.messages.pop((int(p["chat_id"]), int(p["message_id"])), None) is None:
            raise _Error(400, "Bad Request: message to delete not found")
        return True

    async def _m_answerCallbackQuery(self, p: dict[str, Any]) -> Any:
        return True

    async def _m_sendChatAction(self, p: dict[str, Any]) -> Any:
        return True

    async def _m_setMyCommands(self, p: dict[str, Any]) -> Any:
        self.commands[str(p.get("language_code", ""))] = list(p.get("commands") or [])
        return True

    async def _m_setChatMenuButton(self, p: dict[str, Any]) -> Any:
        self.menu_button = p.get("menu_button")
        return True

    async def _m_deleteWebhook(self, p: dict[str, Any]) -> Any:
        return True

    async def _m_setWebhook(self, p: dict[str, Any]) -> Any:
        return True

    async def _m_getWebhookInfo(self, p: dict[str, Any]) -> Any:
        info = {"url": "", "has_custom_certificate": False, "pending_update_count": len(self._updates)}
        return {**info, **self.webhook_info}


class _Error(Exception):
    def __init__(self, code: int, description: str) -> None:
        super().__init__(description)
        self.code = code
        self.description = description
