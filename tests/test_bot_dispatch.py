"""The dispatcher's shortcut for messages that cannot be commands (vitte.bot.factory
`skip_non_commands`) picks the very handler aiogram's own path picks, for every kind of message."""

from __future__ import annotations

import itertools
from typing import Any
from unittest.mock import MagicMock

import pytest
from aiogram import Dispatcher
from aiogram.dispatcher.event.bases import UNHANDLED
from aiogram.types import Update

from vitte.bot import factory
from vitte.config import Settings
from vitte.localapi import make_local_bot

ADMIN = 900
TEXTS = [
    "Hello",
    "hello /start",
    "/start",
    "/start payload",
    "  /help",
    "\u2003/settings",  # a Unicode space before the command
    "/settings@vitte_test_bot",
    "/stats",
    "/premium",
    "/terms",
    "/paysupport",
    "/mydata",
    "/block 5",
    "/unblock 5",
    "/chat",
    "/unknown",
    "/",
    "//",
    "   ",
    "\n/start",
    "!start",
    "💕 Начать общение",
]


def _dispatcher(core: Any, *, shortcut: bool, monkeypatch: pytest.MonkeyPatch) -> Dispatcher:
    with monkeypatch.context() as m:
        if not shortcut:
            m.setattr(factory, "skip_non_commands", lambda _root: 0)
        dp = factory.build_dispatcher(core)
    for mw in list(dp.update.outer_middleware):  # the handlers alone, no store behind them
        dp.update.outer_middleware.unregister(mw)
    for router in dp.chain_tail:
        for name, observer in router.observers.items():
            if router is dp and name == "update":
                continue  # the dispatcher's own: it propagates the update to the routers
            for handler in observer.handlers:
                label = f"{router.name}:{name}:{handler.callback.__name__}"

                async def picked(*_a: Any, _label: str = label, **_k: Any) -> str:
                    return _label

                handler.callback = picked
                handler.awaitable, handler.params, handler.varkw = True, set(), False
    return dp


def _updates() -> list[dict[str, Any]]:
    ids = itertools.count(1)
    out: list[dict[str, Any]] = []
    for user_id, chat in (
        (1, {"id": 1, "type": "private"}),
        (ADMIN, {"id": ADMIN, "type": "private"}),
        (1, {"id": -5, "type": "group", "title": "g"}),
    ):
        sender = {"id": user_id, "is_bot": False, "first_name": "P"}
        for text in TEXTS:
            message: dict[str, Any] = {
                "message_id": next(ids),
                "date": 0,
                "chat": chat,
                "from": sender,
                "text": text,
            }
            if text.lstrip().startswith("/"):
                length = len(text.lstrip().split()[0]) if text.strip() else 1
                message["entities"] = [
                    {"type": "bot_command", "offset": len(text) - len(text.lstrip()), "length": length}
                ]
            out.append({"update_id": next(ids), "message": message})
            out.append({"update_id": next(ids), "edited_message": {**message, "edit_date": 1}})
            photo = {"file_id": "f", "file_unique_id": "u", "width": 1, "height": 1}
            out.append(
                {
                    "update_id": next(ids),
                    "message": {
                        **{k: v for k, v in message.items() if k not in ("text", "entities")},
                        "photo": [photo],
                        "caption": text,
                    },
                }
            )
        base = {"message_id": next(ids), "date": 0, "chat": chat, "from": sender}
        out.append(
            {
                "update_id": next(ids),
                "message": {
                    **base,
                    "sticker": {
                        "file_id": "s",
                        "file_unique_id": "s",
                        "type": "regular",
                        "width": 1,
                        "height": 1,
                        "is_animated": False,
                        "is_video": False,
                    },
                },
            }
        )
        out.append(
            {
                "update_id": next(ids),
                "message": {
                    **base,
                    "successful_payment": {
                        "currency": "XTR",
                        "total_amount": 1,
                        "invoice_payload": "p",
                        "telegram_payment_charge_id": "c",
                        "provider_payment_charge_id": "",
                    },
                },
            }
        )
    return out


async def test_the_shortcut_picks_the_handler_aiogram_picks(monkeypatch: pytest.MonkeyPatch) -> None:
    core = MagicMock()
    core.settings = Settings(admin_ids=frozenset({ADMIN}))
    fast = _dispatcher(core, shortcut=True, monkeypatch=monkeypatch)
    slow = _dispatcher(core, shortcut=False, monkeypatch=monkeypatch)
    assert any("propagate_event" in r.__dict__ for r in fast.chain_tail)  # the shortcut is in place
    assert not any("propagate_event" in r.__dict__ for r in slow.chain_tail)
    bot = make_local_bot()
    picked: set[str] = set()
    for data in _updates():
        update = Update.model_validate(data, context={"bot": bot})
        expected = await slow.feed_update(bot, update)
        got = await fast.feed_update(bot, update)
        assert got == expected, data
        picked.add(str(got) if got is not UNHANDLED else "UNHANDLED")
    # the cases reach commands, the chat, the other-messages router and the group router
    assert {"start:message:start", "chat:message:text_message", "chat:message:unknown_command"} <= picked
    assert any(p.startswith("other:") for p in picked) and any(p.startswith("groups:") for p in picked)
    assert "admin:message:stats_command" in picked and "safety-admin:message:block_command" in picked
