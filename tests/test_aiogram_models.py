"""aiogram's models built on first use (vitte.aiogram_models): same behaviour, less memory.

Each check runs in a fresh interpreter, once with the deferral (as every Vitte process runs)
and once with aiogram's own eager build (VITTE_AIOGRAM_EAGER=1), and compares the two.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

pytestmark = pytest.mark.slow

PROBE = textwrap.dedent(
    r'''
    import json, sys

    def rss_mb():
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * 4096 / 1e6

    from vitte import aiogram_models
    lazy = aiogram_models.install()
    import aiogram
    import vitte.bot.factory  # what `vitte run-bot` imports
    rss_import = rss_mb()

    from aiogram.methods import AnswerCallbackQuery, EditMessageText, SendInvoice, SendMessage
    from aiogram.types import (
        ForceReply, InlineKeyboardButton, InlineKeyboardMarkup, LabeledPrice, Update, WebAppInfo,
    )

    chat = {"id": 42, "type": "private", "first_name": "Аня"}
    user = {"id": 42, "is_bot": False, "first_name": "Аня", "language_code": "ru"}
    message = {
        "message_id": 7, "date": 1700000000, "chat": chat, "from": user, "text": "привет 💕",
        "entities": [{"type": "bold", "offset": 0, "length": 6}],
        "reply_to_message": {"message_id": 6, "date": 1699999999, "chat": chat, "text": "ещё",
                             "sticker": {"file_id": "s", "file_unique_id": "u", "type": "regular",
                                         "width": 1, "height": 1, "is_animated": False,
                                         "is_video": False}},
        "web_app_data": {"data": "{}", "button_text": "b"},
        "successful_payment": {"currency": "XTR", "total_amount": 50, "invoice_payload": "p",
                               "telegram_payment_charge_id": "c", "provider_payment_charge_id": "",
                               "is_recurring": True, "subscription_expiration_date": 1800000000},
        "photo": [{"file_id": "f", "file_unique_id": "g", "width": 10, "height": 10}],
        "unknown_future_field": {"x": 1},
    }
    updates = [
        {"update_id": 1, "message": message},
        {"update_id": 2, "callback_query": {"id": "q", "from": user, "chat_instance": "i",
                                            "data": "regen:1", "message": message}},
        {"update_id": 3, "pre_checkout_query": {"id": "p", "from": user, "currency": "XTR",
                                                "total_amount": 50, "invoice_payload": "x"}},
        {"update_id": 4, "edited_message": message},
    ]
    out = {"lazy": lazy, "installed": aiogram_models.installed(), "updates": [], "methods": []}
    for raw in updates:
        out["updates"].append(Update.model_validate(raw).model_dump(mode="json", exclude_unset=True))
    try:
        Update.model_validate({"update_id": "not a number"})
        out["invalid"] = "accepted"
    except Exception as exc:
        out["invalid"] = type(exc).__name__
    markup = InlineKeyboardMarkup(inline_keyboard=[[
        InlineKeyboardButton(text="Продолжить", callback_data="chat:continue"),
        InlineKeyboardButton(text="Web", web_app=WebAppInfo(url="https://example.org/app")),
    ]])
    methods = [
        SendMessage(chat_id=42, text="<b>x</b>", reply_markup=markup),
        SendMessage(chat_id=42, text="y", reply_markup=ForceReply()),
        EditMessageText(chat_id=42, message_id=7, text="z"),
        AnswerCallbackQuery(callback_query_id="q", text="ok"),
        SendInvoice(chat_id=42, title="t", description="d", payload="p", currency="XTR",
                    prices=[LabeledPrice(label="l", amount=50)]),
    ]
    for method in methods:
        dumped = method.model_dump(exclude_none=True, warnings=False)  # Default(...) stays a marker
        out["methods"].append(json.loads(json.dumps(dumped, default=repr, ensure_ascii=False)))
    response = SendMessage.__returning__
    from aiogram.methods.base import Response
    parsed = Response[response].model_validate({"ok": True, "result": message})
    out["response"] = parsed.result.model_dump(mode="json", exclude_unset=True)
    out["rss_import_mb"] = rss_import

    def privates(obj):  # every aiogram object inside `obj`, with its private attributes
        from aiogram.client.context_controller import BotContextController
        found = []
        if isinstance(obj, BotContextController):
            found.append([type(obj).__name__, repr(obj.__pydantic_private__)])
            for name in type(obj).model_fields:
                found += privates(getattr(obj, name))
        elif isinstance(obj, (list, tuple)):
            for item in obj:
                found += privates(item)
        return found

    bound = Update.model_validate(updates[1], context={"bot": "BOT"})
    out["bound"] = privates(bound)
    out["unbound"] = privates(Update.model_validate(updates[0]))
    out["answer_bot"] = bound.callback_query.message.answer("x").bot
    out["markup_private"] = privates(markup)
    if "--all" in sys.argv:
        import pydantic, aiogram.types, aiogram.methods
        built = 0
        for module in (aiogram.types, aiogram.methods):
            for name in module.__all__:
                cls = getattr(module, name)
                if isinstance(cls, type) and issubclass(cls, pydantic.BaseModel):
                    cls.__pydantic_validator__.validate_python  # builds it, or raises
                    built += 1
        out["built"] = built
    print(json.dumps(out, ensure_ascii=False, sort_keys=True))
    '''
)


def _probe(eager: bool, *args: str) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "VITTE_AIOGRAM_EAGER"}
    if eager:
        env["VITTE_AIOGRAM_EAGER"] = "1"
    done = subprocess.run(
        [sys.executable, "-c", PROBE, *args], capture_output=True, text=True, env=env, timeout=120
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def both() -> tuple[dict, dict]:
    return _probe(False), _probe(True)


def test_the_deferral_is_in_effect_and_can_be_turned_off(both: tuple[dict, dict]) -> None:
    lazy, eager = both
    assert lazy["lazy"] is True and lazy["installed"] is True
    assert eager["lazy"] is False and eager["installed"] is False


def test_updates_methods_and_responses_are_the_same_either_way(both: tuple[dict, dict]) -> None:
    lazy, eager = both
    assert lazy["updates"] == eager["updates"]
    assert lazy["methods"] == eager["methods"]
    assert lazy["response"] == eager["response"]
    assert lazy["invalid"] == eager["invalid"] == "ValidationError"
    # and they carry what was sent
    first = lazy["updates"][0]["message"]
    assert first["text"] == "привет 💕"
    assert first["reply_to_message"]["sticker"]["file_id"] == "s"
    assert first["successful_payment"]["total_amount"] == 50
    assert lazy["methods"][0]["reply_markup"]["inline_keyboard"][0][1]["web_app"]["url"].endswith("/app")


def test_objects_carry_their_bot_the_same_either_way(both: tuple[dict, dict]) -> None:
    lazy, eager = both
    for key in ("bound", "unbound", "answer_bot", "markup_private"):
        assert lazy[key] == eager[key], key
    assert len(lazy["bound"]) > 5
    assert {p for _, p in lazy["bound"]} == {"{'_bot': 'BOT'}"}
    assert {p for _, p in lazy["unbound"] + lazy["markup_private"]} == {"{'_bot': None}"}
    assert lazy["answer_bot"] == "BOT"  # message.answer(...) is bound to the message's bot


def test_the_bot_is_bound_in_one_step() -> None:
    from aiogram.client.context_controller import BotContextController
    from aiogram.types import Message, TelegramObject, User

    from vitte import aiogram_models

    if not aiogram_models.installed():
        pytest.skip("VITTE_AIOGRAM_EAGER: aiogram's own post-init")

    import aiogram.methods
    import aiogram.types

    everyone = [
        cls
        for module in (aiogram.types, aiogram.methods)
        for cls in (getattr(module, name) for name in module.__all__)
        if isinstance(cls, type) and issubclass(cls, BotContextController)
    ]
    assert len(everyone) > 500  # every type and method of the Bot API
    assert [c for c in everyone if c.model_post_init is not aiogram_models._bind_bot] == []
    user = {"id": 1, "is_bot": False, "first_name": "A"}
    raw = {"message_id": 1, "date": 1, "chat": {"id": 1, "type": "private"}, "from": user}
    bot = object()
    message = Message.model_validate(raw, context={"bot": bot})
    assert message.bot is bot and message.from_user is not None and message.from_user.bot is bot
    assert Message.model_validate(raw).bot is None
    assert User(id=1, is_bot=False, first_name="A").bot is None
    assert User.model_construct(id=1).__pydantic_private__ == {"_bot": None}
    assert message.model_copy().bot is bot
    assert User(id=1, is_bot=False, first_name="A").as_(bot).bot is bot  # type: ignore[arg-type]

    class Later(TelegramObject):  # a model made after install(): pydantic's own wrapper, still right
        x: int

    assert Later.model_validate({"x": 1}, context={"bot": bot}).bot is bot
    assert Later(x=1).__pydantic_private__ == {"_bot": None}


def test_a_bot_process_imports_in_far_less_memory(both: tuple[dict, dict]) -> None:
    lazy, eager = both
    saved = eager["rss_import_mb"] - lazy["rss_import_mb"]
    assert saved > 60, f"lazy {lazy['rss_import_mb']:.0f} MB, eager {eager['rss_import_mb']:.0f} MB"


def test_every_aiogram_model_still_builds_on_first_use() -> None:
    lazy = _probe(False, "--all")
    assert lazy["lazy"] is True
    assert lazy["built"] > 500  # every type and method of the Bot API


def test_install_after_aiogram_is_imported_does_nothing() -> None:
    code = (
        "import aiogram\n"
        "from vitte import aiogram_models\n"
        "print(aiogram_models.install(), aiogram_models.installed())\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "VITTE_AIOGRAM_EAGER"}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["False", "False"]
