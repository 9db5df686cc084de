"""A tiny fake Telegram Bot API server on loopback: records calls, answers like Telegram.

aiogram talks to it over real HTTP (`TelegramAPIServer.from_base(server.url)`), so the web
app's Bot is exactly the one production builds, only pointed elsewhere.
"""

from __future__ import annotations

import asyncio
import itertools
import secrets
import time
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestServer


@dataclass
class BotApiCall:
    token: str
    method: str
    params: dict[str, Any]
    result: Any = None  # what the server answered (createInvoiceLink: the link)


@dataclass
class FakeBotApi:
    calls: list[BotApiCall] = field(default_factory=list)
    # chat_id -> (error_code, description) for the next sendMessage (or sendDocument) to that chat
    fail_next: dict[int, tuple[int, str]] = field(default_factory=dict)
    # method (lower case) -> (status, body) answered instead of JSON, as a proxy's error page is
    not_json: dict[str, tuple[int, str]] = field(default_factory=dict)
    _ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1))
    _server: TestServer | None = None
    _event: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def url(self) -> str:
        assert self._server is not None
        return str(self._server.make_url("")).rstrip("/")

    def sent_messages(self, chat_id: int | None = None) -> list[dict[str, Any]]:
        return [
            c.params
            for c in self.calls
            if c.method.lower() == "sendmessage" and (chat_id is None or int(c.params["chat_id"]) == chat_id)
        ]

    def sent_documents(self, chat_id: int | None = None) -> list[tuple[str, bytes, str]]:
        """sendDocument calls: (filename, the file's bytes, caption)."""
        return [
            (*c.params["document"], c.params.get("caption", ""))
            for c in self.calls
            if c.method.lower() == "senddocument" and (chat_id is None or int(c.params["chat_id"]) == chat_id)
        ]

    async def wait_for_messages(self, chat_id: int, count: int = 1, within: float = 5.0) -> list[dict[str, Any]]:
        deadline = time.monotonic() + within
        while len(self.sent_messages(chat_id)) < count:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            self._event.clear()
            try:
                await asyncio.wait_for(self._event.wait(), remaining)
            except TimeoutError:
                break
        return self.sent_messages(chat_id)

    def _failure(self, chat_id: int) -> web.Response | None:
        """The error set up in `fail_next` for this chat (once), as Telegram answers it."""
        failure = self.fail_next.pop(chat_id, None)
        if failure is None:
            return None
        code, description = failure
        return web.json_response({"ok": False, "error_code": code, "description": description}, status=code)

    async def _handle(self, request: web.Request) -> web.Response:
        token = request.match_info["token"]
        method = request.match_info["method"]
        params: dict[str, Any] = dict(await request.post())
        for key, value in list(params.items()):  # an upload ("attach://<field>"): keep (filename, bytes)
            if isinstance(value, str) and value.startswith("attach://"):
                upload = params.pop(value.removeprefix("attach://"), None)
                if isinstance(upload, web.FileField):
                    params[key] = (upload.filename, upload.file.read())
        call = BotApiCall(token, method, params)
        self.calls.append(call)
        self._event.set()
        if (page := self.not_json.get(method.lower())) is not None:
            return web.Response(status=page[0], text=page[1], content_type="text/html")
        if method.lower() == "sendmessage":
            chat_id = int(params["chat_id"])
            if (failed := self._failure(chat_id)) is not None:
                return failed
            return web.json_response(
                {
                    "ok": True,
                    "result": {
                        "message_id": next(self._ids),
                        "date": int(time.time()),
                        "chat": {"id": chat_id, "type": "private"},
                        "text": params.get("text", ""),
                    },
                }
            )
        if method.lower() == "senddocument":
            filename, data = params["document"]
            if (failed := self._failure(int(params["chat_id"]))) is not None:
                return failed
            return web.json_response(
                {
                    "ok": True,
                    "result": {
                        "message_id": next(self._ids),
                        "date": int(time.time()),
                        "chat": {"id": int(params["chat_id"]), "type": "private"},
                        "document": {
                            "file_id": f"fake-doc-{len(self.calls)}",
                            "file_unique_id": f"fd{len(self.calls)}",
                            "file_name": filename,
                            "file_size": len(data),
                        },
                    },
                }
            )
        if method.lower() == "createinvoicelink":
            call.result = f"https://t.me/$test-invoice-{len(self.calls)}-{secrets.token_urlsafe(6)}"
            return web.json_response({"ok": True, "result": call.result})
        if method.lower() == "getme":
            return web.json_response(
                {"ok": True, "result": {"id": 123456789, "is_bot": True, "first_name": "Vitte", "username": "vitte_bot"}}
            )
        return web.json_response({"ok": True, "result": True})

    async def start(self) -> FakeBotApi:
        app = web.Application()
        app.router.add_post("/bot{token}/{method}", self._handle)
        self._server = TestServer(app, host="127.0.0.1")
        await self._server.start_server()
        return self

    async def close(self) -> None:
        if self._server is not None:
            await self._server.close()
