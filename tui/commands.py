"""The command palette (Ctrl+P): one entry for every console action, and the buttons of the
newest inline keyboard."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import TYPE_CHECKING, cast

from textual.command import DiscoveryHit, Hit, Hits, Provider

if TYPE_CHECKING:
    from tui.app import VitteConsole

Command = tuple[str, str, Callable[[], object]]


def console_commands(app: VitteConsole) -> list[Command]:
    BOT_COMMANDS: tuple[str, ...]
    try:
        from vitte.bot.factory import COMMANDS as BOT_COMMANDS
    except ImportError:  # pragma: no cover - the bot always ships its commands
        BOT_COMMANDS = ("start", "chat", "settings", "help")
    commands: list[Command] = [
        (f"Send /{c}", f"Type /{c} in the chat, as the player", partial(app.send_text, f"/{c}"))
        for c in BOT_COMMANDS
    ]
    commands += [
        (
            "Open the Web App",
            "Personas and stories, as the Web App button opens it (F4)",
            app.action_open_webapp,
        ),
        (
            "Web App: settings",
            "Language, reply style, deleting the player's data",
            partial(app.open_webapp, "#/settings"),
        ),
        ("Web App: premium", "Plans and the paywall", partial(app.open_webapp, "#/premium")),
        ("Stop the reply", "Press the draft's stop button (Esc)", app.action_stop),
        ("Pay the newest invoice", "Telegram Stars: pre-checkout, then payment", app.action_pay_invoice),
        ("Toggle the operator panel", "Player, dialog, memory, reset (F2)", app.action_toggle_operator),
        ("Toggle the Bot API log", "Raw calls the bot made (F3)", app.action_toggle_log),
        ("Switch the simulated player", "Type an id in the operator panel", app.action_switch_player),
        ("New simulated player", "A fresh random Telegram id", app.action_new_player),
        (
            "Reset the dialog",
            "End the player's dialog and clear memory (as `vitte dialog reset`)",
            app.action_reset_dialog,
        ),
        ("Refresh the operator panel", "Read the dialog from the store again", app.action_refresh_operator),
        ("Copy the Web App browser URL", "The real page, signed for this player", app.action_copy_webapp_url),
        ("Send a sticker", "The bot's answer to non-text messages", partial(app.send_media, "sticker")),
        ("Send a photo", "The bot's answer to non-text messages", partial(app.send_media, "photo")),
        ("Send a voice message", "The bot's answer to non-text messages", partial(app.send_media, "voice")),
        ("Send a document", "The bot's answer to non-text messages", partial(app.send_media, "document")),
        ("Edit my last message", "An edited_message update with the text in the input", app.action_edit_last),
        ("Load older messages", "Mount the previous page of the chat (Home)", app.action_load_older),
        ("Jump to the latest message", "Back to the live end of the chat (End)", app.action_latest),
        ("Toggle light/dark theme", "Ctrl+T", app.action_toggle_theme),
        ("Help", "Keys and what the console does (F1)", app.action_help),
        ("Quit", "Leave the console (Ctrl+Q)", app.action_quit),
    ]
    for i, button in enumerate(app.chat_view.active_buttons(), 1):
        commands.append(
            (
                f"Press: {button.spec.label}",
                f"Inline button {i} of the newest message (Alt+{i})",
                partial(app.press, button),
            )
        )
    return commands


class ConsoleCommands(Provider):
    def _commands(self) -> list[Command]:
        from tui.app import VitteConsole

        app = self.app
        if not isinstance(app, VitteConsole) or app.backend.player is None:
            return []
        return console_commands(cast("VitteConsole", app))

    async def discover(self) -> Hits:
        for name, help_text, callback in self._commands():
            yield DiscoveryHit(name, callback, help=help_text)

    async def search(self, query: str) -> Hits:
        matcher = self.matcher(query)
        for name, help_text, callback in self._commands():
            score = matcher.match(name)
            if score > 0:
                yield Hit(score, matcher.highlight(name), callback, help=help_text)
