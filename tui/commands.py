"""The command palette (Ctrl+P): one entry for every console action, and the buttons of the
newest inline keyboard. The entries are the app's (`tui.app.console_commands`); this provider
asks the app it runs in for them (`PaletteSource`), so it does not import the app."""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol, runtime_checkable

from textual.command import DiscoveryHit, Hit, Hits, Provider

Command = tuple[str, str, Callable[[], object]]  # title, help, what it does


@runtime_checkable
class PaletteSource(Protocol):
    """An app with palette entries (the console: `VitteConsole.palette_commands`)."""

    def palette_commands(self) -> list[Command]: ...


class ConsoleCommands(Provider):
    def _commands(self) -> list[Command]:
        app = self.app
        return app.palette_commands() if isinstance(app, PaletteSource) else []

    async def discover(self) -> Hits:
        for name, help_text, callback in self._commands():
            yield DiscoveryHit(name, callback, help=help_text)

    async def search(self, query: str) -> Hits:
        matcher = self.matcher(query)
        for name, help_text, callback in self._commands():
            score = matcher.match(name)
            if score > 0:
                yield Hit(score, matcher.highlight(name), callback, help=help_text)
