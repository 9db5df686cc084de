"""Small screens: help, confirmation, alert, a document's preview."""

from __future__ import annotations

import contextlib
from pathlib import Path

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Button, Input, Markdown, Static

from tui.strings import inert_text

HELP = """\
# Vitte console

A local Telegram over the **real bot**: what you type becomes a Telegram `Update` fed to the
same aiogram Dispatcher `vitte run-bot` runs, against the configured database; what the bot
sends arrives through an in-process Bot API.

## Chat

| Key | Action |
|---|---|
| `Enter` | send the message (commands like `/start`, `/chat`, `/settings`, `/help` too) |
| `↑` / `↓` | recall what you sent |
| `Esc` or `Ctrl+S` | stop the reply being written (stop button of the draft) |
| `Alt+1` … `Alt+9` | press a button of the newest inline keyboard (numbered `1·`, `2·` …) |
| `Tab` / `Shift+Tab`, then `Enter` | move to any button and press it; a click works too |
| `Ctrl+P`, “Press: …” | the newest keyboard's buttons, for terminals that send no Alt |
| `PgUp` / `PgDn` | scroll the chat |
| `Ctrl+Home` / `Ctrl+End` | older messages (a page at a time; scrolling to the top does it too) / back to the newest |
| `→` | accept the suggested command while typing `/…` |

Buttons marked ↗ open the **Web App** inside the console; 🔗 links are copied; invoices
show a *Pay* button that runs the Telegram Stars flow locally (pre-checkout, then payment).

## Panels and screens

| Key | Action |
|---|---|
| `F1` or `?` | this help |
| `F2` | operator panel: switch/create the simulated player, dialog and memory in the store, reset |
| `F3` | log of the raw Bot API calls the bot made |
| `F4` | open the Web App (personas, settings, premium) |
| `F6` | send a WAV or OGG file from disk as a voice message (a path prompt) |
| `Ctrl+T` | light / dark theme |
| `Ctrl+P` | command palette: every action, searchable |
| `Ctrl+Q` | quit |

In the Web App: `Esc` goes back (closes on the first page), `Tab` moves between cards and
buttons, `Enter` opens or presses.
"""


class HelpScreen(ModalScreen[None]):
    BINDINGS = [
        Binding("escape,f1,q,question_mark", "dismiss", "Close"),
    ]

    def compose(self) -> ComposeResult:
        with Vertical(id="help-box"):
            with VerticalScroll(id="help-scroll"):
                yield Markdown(HELP, id="help-text")
            yield Static(Text("Esc — close", style="dim"), id="help-foot")

    def action_dismiss(self, result: None = None) -> None:  # type: ignore[override]
        self.dismiss(None)


class ConfirmScreen(ModalScreen[bool | None]):
    """A yes/no question (the Web App's confirm dialog); Esc dismisses it with None."""

    BINDINGS = [
        Binding("escape", "answer(None)", "Cancel"),
        Binding("y", "answer(True)", "Yes"),
    ]

    def __init__(self, question: str, yes: str = "Да", no: str = "Отмена") -> None:
        super().__init__()
        self.question = question
        self.yes = yes
        self.no = no

    def compose(self) -> ComposeResult:
        with Vertical(id="confirm-box", classes="dialog"):
            yield Static(inert_text(self.question), id="confirm-text")
            with Horizontal(classes="dialog-buttons"):
                yield Button(self.no, id="confirm-no", compact=True)
                yield Button(self.yes, id="confirm-yes", variant="primary", compact=True)

    def on_mount(self) -> None:
        self.query_one("#confirm-yes", Button).focus()

    @on(Button.Pressed)
    def _pressed(self, event: Button.Pressed) -> None:
        self.dismiss(event.button.id == "confirm-yes")

    def action_answer(self, value: bool | None) -> None:
        self.dismiss(value)


class AlertScreen(ModalScreen[None]):
    """An alert, as Telegram shows `answerCallbackQuery(show_alert=True)`."""

    BINDINGS = [Binding("escape,enter", "close", "OK")]

    def __init__(self, text: str) -> None:
        super().__init__()
        self.text = text

    def compose(self) -> ComposeResult:
        with Vertical(id="alert-box", classes="dialog"):
            yield Static(inert_text(self.text), id="alert-text")
            with Horizontal(classes="dialog-buttons"):
                yield Button("OK", id="alert-ok", variant="primary", compact=True)

    @on(Button.Pressed)
    def _ok(self) -> None:
        self.dismiss(None)

    def action_close(self) -> None:
        self.dismiss(None)


class DocumentScreen(ModalScreen[None]):
    """A document the bot sent (e.g. the player's data export): preview and save."""

    BINDINGS = [
        Binding("escape,q", "close", "Close"),
        Binding("s", "save", "Save to the current folder"),
    ]

    def __init__(self, filename: str, data: bytes | None, mime_type: str | None = None) -> None:
        super().__init__()
        self.filename = filename or "document"
        self.data = data
        self.mime_type = mime_type

    def compose(self) -> ComposeResult:
        with Vertical(id="doc-box", classes="dialog"):
            size = len(self.data) if self.data is not None else 0
            yield Static(
                Text.assemble(
                    ("📄 ", ""), (self.filename, "bold"), (f"  {size} B  {self.mime_type or ''}", "dim")
                )
            )
            with VerticalScroll(id="doc-scroll"):
                yield Static(self._preview(), id="doc-preview")
            with Horizontal(classes="dialog-buttons"):
                yield Button("Close", id="doc-close", compact=True)
                yield Button("Save (s)", id="doc-save", variant="primary", compact=True)

    def _preview(self) -> Text:
        if self.data is None:
            return Text("(the file's bytes are not available locally)", style="dim")
        head = self.data[:16_384]
        try:
            text = head.decode("utf-8")
        except UnicodeDecodeError:
            return Text(f"binary, {len(self.data)} bytes", style="dim")
        if self.filename.endswith(".json"):
            import json

            with contextlib.suppress(ValueError):
                text = json.dumps(json.loads(self.data.decode("utf-8")), ensure_ascii=False, indent=2)[
                    :16_384
                ]
        return Text(text + ("\n…" if len(self.data) > len(head) else ""))

    @on(Button.Pressed, "#doc-close")
    def _close(self) -> None:
        self.dismiss(None)

    @on(Button.Pressed, "#doc-save")
    def _save_pressed(self) -> None:
        self.action_save()

    def action_close(self) -> None:
        self.dismiss(None)

    def action_save(self) -> None:
        if self.data is None:
            self.notify("Nothing to save", severity="warning")
            return
        name = Path(self.filename).name or "document"
        target = Path.cwd() / name
        stem, suffix = target.stem, target.suffix
        n = 1
        while target.exists():
            target = target.with_name(f"{stem}-{n}{suffix}")
            n += 1
        target.write_bytes(self.data)
        self.notify(f"Saved {target}")


class PathScreen(ModalScreen[str | None]):
    """A file path typed by the operator (e.g. a WAV/OGG file to send as a voice message);
    Enter gives it, Esc dismisses with None."""

    BINDINGS = [Binding("escape", "cancel", "Cancel")]

    def __init__(self, prompt: str) -> None:
        super().__init__()
        self.prompt = prompt

    def compose(self) -> ComposeResult:
        with Vertical(id="path-box", classes="dialog"):
            yield Static(inert_text(self.prompt), id="path-prompt")
            yield Input(placeholder="/path/to/voice.ogg", id="path-input")

    def on_mount(self) -> None:
        self.query_one("#path-input", Input).focus()

    @on(Input.Submitted, "#path-input")
    def _submitted(self, event: Input.Submitted) -> None:
        self.dismiss(event.value.strip() or None)

    def action_cancel(self) -> None:
        self.dismiss(None)
