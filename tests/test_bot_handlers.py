"""The faces' seams: a bot handler is a plain function that can be imported and called alone
(a real Core on embedded SQLite, the local Bot API session, no Dispatcher), and the import
graph keeps its promises (the Web App does not import the bot, billing does not import aiogram,
the core imports neither the CLI nor the console; each checked in a fresh interpreter)."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from aiogram import Bot
from aiogram.filters import CommandObject
from aiogram.types import Message

from tests.support.bot_harness import PERSONA, STORY, WEBAPP_URL, cards
from tests.support.players import chatting
from vitte.bot.callbacks import DialogCb
from vitte.bot.handlers import chat, other, start
from vitte.bot.runtime import Runtime
from vitte.bot.texts import t
from vitte.catalog.cards import parse_card
from vitte.catalog.seed import seed_cards
from vitte.config import load_settings
from vitte.core import Core
from vitte.localapi import LocalBotSession, make_local_bot
from vitte.player_names import set_name

ROOT = Path(__file__).resolve().parents[1]
USER_ID = 7001


@dataclass
class Alone:
    core: Core
    session: LocalBotSession
    bot: Bot
    runtime: Runtime


@pytest.fixture
async def alone(sqlite_url: str) -> AsyncIterator[Alone]:
    core = await Core.open(load_settings(database_url=sqlite_url, webapp_url=WEBAPP_URL))
    await seed_cards(core.db, cards())
    core.catalog.invalidate()
    session = LocalBotSession()
    bot = make_local_bot(session)
    try:
        yield Alone(core, session, bot, Runtime())
    finally:
        await bot.session.close()
        await core.close()


def _message(bot: Bot, text: str, *, chat_type: str = "private") -> Message:
    """A player's message as aiogram hands it to a handler (bound to `bot`, so it can answer)."""
    chat_id = USER_ID if chat_type == "private" else -USER_ID
    data = {
        "message_id": 1,
        "date": 0,
        "chat": {"id": chat_id, "type": chat_type, **({"title": "g"} if chat_type != "private" else {})},
        "from": {"id": USER_ID, "is_bot": False, "first_name": "Ann", "language_code": "en"},
        "text": text,
    }
    if text.startswith("/"):
        data["entities"] = [{"type": "bot_command", "offset": 0, "length": len(text.split()[0])}]
    return Message.model_validate(data, context={"bot": bot})


async def test_chat_command_called_alone(alone: Alone) -> None:
    # a player the bot has never seen: recorded, and offered the Web App's persona choice
    await chat.chat_command(_message(alone.bot, "/chat"), alone.core, alone.runtime)
    (sent,) = alone.session.calls_of("sendMessage")
    assert sent.params["chat_id"] == USER_ID and sent.params["text"] == t("en", "choose_prompt")
    (button,) = sent.params["reply_markup"]["inline_keyboard"][0]
    assert button["text"] == t("en", "btn_choose") and button["web_app"]["url"] == WEBAPP_URL
    assert (await alone.core.players.get(USER_ID)).language == "en"
    assert alone.runtime.lang_hint[USER_ID] == "en"

    # with a dialog open: "Continue with …?" and the dialog's two buttons
    await chatting(alone.core, USER_ID, persona_id=PERSONA, story_id=STORY)
    view = await alone.core.dialogs.current(USER_ID)
    assert view is not None
    await chat.chat_command(_message(alone.bot, "/chat"), alone.core, alone.runtime)
    last = alone.session.calls_of("sendMessage")[-1]
    assert last.params["text"] == t("en", "continue_q", persona=view.persona_name)
    buttons = last.params["reply_markup"]["inline_keyboard"][0]
    assert [b["callback_data"] for b in buttons] == [
        DialogCb(action="cont", dialog_id=view.id).pack(),
        DialogCb(action="over", dialog_id=view.id).pack(),
    ]


async def test_group_handler_called_alone(alone: Alone) -> None:
    """A handler that needs no core: only what it names is passed."""
    await other.group_message(_message(alone.bot, "hello", chat_type="group"), alone.runtime)
    assert alone.session.calls_of("sendMessage") == []  # chatter in a group is not for us
    await other.group_message(_message(alone.bot, "/start", chat_type="group"), alone.runtime)
    (sent,) = alone.session.calls_of("sendMessage")
    assert sent.params == {"chat_id": -USER_ID, "text": t("en", "private_only")}


async def test_start_addresses_the_player_by_the_name_they_set(alone: Alone) -> None:
    """/start greets the player (and a deep link's tagline names them) by the name they set in
    Settings, else by Telegram's first name; the Telegram first name itself is kept."""
    note = {"spec": "chara_card_v2", "spec_version": "2.0",
            "data": {"name": "Rika", "description": "A neighbour.", "first_mes": "Hi",
                     "extensions": {"vitte": {"id": "rika", "tagline": "Waiting for {{user}} in the rain"}}}}  # fmt: skip
    await seed_cards(alone.core.db, [parse_card(note, "rika.json")])
    alone.core.catalog.invalidate()

    async def started(args: str | None = None) -> str:
        text = "/start" + (f" {args}" if args else "")
        command = CommandObject(prefix="/", command="start", args=args)
        await start.start(_message(alone.bot, text), command, alone.core, alone.runtime, alone.bot)
        return str(alone.session.calls_of("sendMessage")[-1].params["text"])

    assert (await started()).startswith(t("en", "greet_named", name="Ann"))  # not set yet: Telegram's
    assert "Waiting for Ann in the rain" in await started("persona_rika")
    await set_name(alone.core.db, USER_ID, "Annie")
    greeting = await started()
    assert greeting.startswith(t("en", "greet_named", name="Annie")) and "Ann!" not in greeting
    assert "Waiting for Annie in the rain" in await started("persona_rika")
    assert (await alone.core.players.get(USER_ID)).first_name == "Ann"  # the Telegram identity stays
    await set_name(alone.core.db, USER_ID, "")  # forgotten: Telegram's first name again
    assert (await started()).startswith(t("en", "greet_named", name="Ann"))


def test_routers_are_fresh_for_each_dispatcher() -> None:
    """Many Dispatchers in one process (tests, console, bench): each gets its own routers."""
    assert chat.router() is not chat.router()
    assert chat.router().message.handlers[0].callback is chat.chat_command


# ---------------------------------------------------------------------- the import graph
def _modules_after(statement: str) -> set[str]:
    """The modules a fresh interpreter has loaded after `statement`."""
    code = f"import sys\n{statement}\nprint('\\n'.join(sorted(sys.modules)))"
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True, timeout=120
    )
    return set(out.stdout.split())


@pytest.mark.parametrize(
    ("statement", "forbidden"),
    [
        ("import vitte.webapp.app, vitte.webapp.api", "vitte.bot"),  # the Web App does not need the bot
        ("import vitte.bot.factory, vitte.bot.runner", "vitte.webapp"),  # nor the bot the Web App
        ("import vitte.billing, vitte.billing_texts", "aiogram"),  # billing computes, Telegram is called elsewhere
        ("import vitte.core, vitte.bot.factory, vitte.webapp.app, vitte.serve, vitte.telegram.payments", "cli"),
        ("import vitte.core, vitte.bot.factory, vitte.webapp.app, vitte.serve, vitte.telegram.payments", "tui"),
        ("import tui.app, tui.commands, tui.backend", "cli"),  # the console does not need the CLI
    ],
)
def test_import_graph(statement: str, forbidden: str) -> None:
    loaded = _modules_after(statement)
    assert statement.split()[1].rstrip(",") in loaded  # the statement did import something
    offenders = sorted(m for m in loaded if m == forbidden or m.startswith(forbidden + "."))
    assert offenders == [], f"{statement!r} loads {offenders}"


def test_the_composition_loads_both_faces() -> None:
    """The check above can fail: `vitte.serve` (run-bot's composition) loads the bot and the Web App."""
    loaded = _modules_after("import vitte.serve")
    assert "vitte.bot.runner" in loaded and "vitte.webapp.app" in loaded
