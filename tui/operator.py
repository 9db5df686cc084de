"""The operator's side: who is being simulated, the dialog as the engine holds it, the raw
Bot API calls the bot made."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.containers import Horizontal, VerticalScroll
from textual.message import Message
from textual.widgets import Button, Input, RichLog, Select, Static

from tui.strings import inert_text
from vitte.i18n import DEFAULT_LANGUAGE, LANGUAGES, normalize_language

if TYPE_CHECKING:
    from vitte.dialogs import DialogView, MessageView
    from vitte.localapi import ApiCall
    from vitte.players import PlayerView

Clock = Callable[[float], str]


def local_hhmmss(ts: float) -> str:
    return time.strftime("%H:%M:%S", time.localtime(ts))


def ts(value: datetime) -> float:
    """A stored time (naive values are UTC) as a Unix timestamp."""
    return (value if value.tzinfo else value.replace(tzinfo=UTC)).timestamp()


def _short(text: Any, limit: int = 70) -> str:
    s = " ".join(str(text).split())
    return s if len(s) <= limit else s[: limit - 1] + "…"


def _markup(params: dict[str, Any]) -> str:
    markup = params.get("reply_markup")
    if not isinstance(markup, dict):
        return ""
    rows = markup.get("inline_keyboard")
    if not rows:
        return " [keyboard]" if "keyboard" in markup else ""
    return " [" + " | ".join(" · ".join(str(b.get("text", "?")) for b in row) for row in rows) + "]"


def describe_call(call: ApiCall, clock: Clock = local_hhmmss) -> Text:
    """One line of the Bot API log."""
    p = call.params
    line = Text()
    line.append(clock(call.ts), style="dim")
    line.append(f" #{call.seq} ", style="dim")
    line.append(call.method, style="bold")
    if call.chat_id is not None:
        line.append(f" →{call.chat_id}", style="dim")
    detail = ""
    if call.method in ("sendMessage", "editMessageText"):
        if "message_id" in p:
            detail += f" msg {p['message_id']}"
        detail += f" «{_short(p.get('text', ''))}»" + _markup(p)
    elif call.method == "sendMessageDraft":
        detail = f" draft {p.get('draft_id')} ({len(str(p.get('text', '')))} chars)"
        if p.get("can_stop"):
            detail += " stop"
    elif call.method == "sendChatAction":
        detail = f" {p.get('action')}"
    elif call.method == "editMessageReplyMarkup":
        detail = f" msg {p.get('message_id')}" + (_markup(p) or " [none]")
    elif call.method == "answerCallbackQuery":
        detail = f" «{_short(p['text'])}»" if p.get("text") else ""
        if p.get("show_alert"):
            detail += " alert"
    elif call.method in ("deleteMessage", "deleteMessages"):
        detail = f" {p.get('message_id') or p.get('message_ids')}"
    elif call.method == "sendInvoice":
        prices = p.get("prices") or []
        total = sum(int(x.get("amount", 0)) for x in prices if isinstance(x, dict))
        detail = f" «{_short(p.get('title', ''), 40)}» {total} {p.get('currency', '')}"
    elif call.method == "answerPreCheckoutQuery":
        detail = " ok" if p.get("ok") else f" declined «{_short(p.get('error_message', ''))}»"
    else:
        rest = {k: v for k, v in p.items() if k != "chat_id"}
        if rest:
            detail = " " + _short(json.dumps(rest, ensure_ascii=False, default=str), 90)
    line.append(detail)
    if call.error:
        line.append(f"  ✗ {call.error}", style="bold red")
    else:
        result = call.result
        if isinstance(result, dict) and "message_id" in result:
            line.append(f"  ✓ msg {result['message_id']}", style="green")
        else:
            line.append("  ✓", style="green")
    return inert_text(line)


class LogPane(RichLog):
    """The raw Bot API calls, newest at the bottom."""

    def __init__(self, *, clock: Clock = local_hhmmss, id: str | None = None) -> None:
        super().__init__(max_lines=2000, wrap=False, markup=False, highlight=False, min_width=60, id=id)
        self.clock = clock
        self.border_title = "Bot API calls (F3)"

    def add_call(self, call: ApiCall) -> None:
        self.write(describe_call(call, self.clock))

    def add_note(self, text: str) -> None:
        self.write(inert_text(text, style="italic"))


class OperatorPanel(VerticalScroll):
    """Switch or create the simulated player; the engine's view of their dialog; reset it."""

    class SwitchPlayer(Message):
        def __init__(self, user_id: int, name: str | None, language: str | None) -> None:
            super().__init__()
            self.user_id = user_id
            self.name = name
            self.language = language

    class ResetDialog(Message):
        pass

    class Refresh(Message):
        pass


    def __init__(self, *, clock: Callable[[float], str], id: str | None = None) -> None:
        super().__init__(id=id)
        self.clock = clock
        self.border_title = "Operator (F2)"

    def compose(self) -> ComposeResult:
        yield Static(Text("Operator", style="bold"), classes="op-title")
        yield Static(classes="op-store", id="op-store")
        yield Static("Simulated player", classes="op-section")
        with Horizontal(classes="op-form"):
            yield Input(placeholder="user id", id="op-id", compact=True, type="integer")
            yield Input(placeholder="first name", id="op-name", compact=True)
        with Horizontal(classes="op-form"):
            yield Select(
                [(code, code) for code in LANGUAGES],
                value=DEFAULT_LANGUAGE,
                allow_blank=False,
                id="op-lang",
                compact=True,
            )
            yield Button("Switch", id="op-switch", compact=True, variant="primary")
            yield Button("New", id="op-new", compact=True)
        yield Static(id="op-player", classes="op-body")
        yield Static("Dialog (engine)", classes="op-section")
        yield Static(id="op-dialog", classes="op-body")
        yield Static("Memory", classes="op-section")
        yield Static(id="op-memory", classes="op-body")
        yield Static("Messages (store)", classes="op-section")
        yield Static(id="op-messages", classes="op-body")
        with Horizontal(classes="op-form"):
            yield Button("Refresh", id="op-refresh", compact=True)
            yield Button("Reset dialog", id="op-reset", compact=True, variant="error")
        yield Static("Clock (the persona writes first)", classes="op-section")
        with Horizontal(classes="op-form"):
            yield Button("+1 h", id="op-plus-hour", compact=True)
            yield Button("+1 day", id="op-plus-day", compact=True)
        yield Static(id="op-clock", classes="op-body")
        yield Static(id="op-web", classes="op-body op-web")

    # ------------------------------------------------------------------ input
    @on(Button.Pressed, "#op-switch")
    def _switch(self, event: Button.Pressed) -> None:
        event.stop()
        raw = self.query_one("#op-id", Input).value.strip()
        if not raw.isdigit() or not 0 < int(raw) < 2**52:
            self.notify("A Telegram user id is a positive number", severity="warning")
            return
        self._post_switch(int(raw))

    @on(Input.Submitted, "#op-id,#op-name")
    def _submitted(self, event: Input.Submitted) -> None:
        event.stop()
        self._switch(Button.Pressed(self.query_one("#op-switch", Button)))

    @on(Button.Pressed, "#op-new")
    def _new(self, event: Button.Pressed) -> None:
        event.stop()
        import random

        self.query_one("#op-id", Input).value = str(random.randint(10_000_000, 99_999_999))
        self._post_switch(int(self.query_one("#op-id", Input).value))

    def _post_switch(self, user_id: int) -> None:
        name = self.query_one("#op-name", Input).value.strip() or None
        lang = self.query_one("#op-lang", Select).value
        self.post_message(self.SwitchPlayer(user_id, name, str(lang) if lang else None))

    @on(Button.Pressed, "#op-reset")
    def _reset(self, event: Button.Pressed) -> None:
        event.stop()
        self.post_message(self.ResetDialog())

    @on(Button.Pressed, "#op-plus-hour")
    def _plus_hour(self, event: Button.Pressed) -> None:
        event.stop()
        self.advance_clock(3600.0)

    @on(Button.Pressed, "#op-plus-day")
    def _plus_day(self, event: Button.Pressed) -> None:
        event.stop()
        self.advance_clock(86400.0)

    @work(group="operator-clock", exit_on_error=False)
    async def advance_clock(self, seconds: float) -> None:
        """"+1 h" / "+1 day": the console backend's scheduler clock moved forward; the nudges
        due by then arrive in the local chat (then the panel is refreshed)."""
        backend = getattr(self.app, "backend", None)
        if backend is None:
            return
        try:
            report = await backend.advance_clock(seconds)
        except Exception as exc:
            self.notify(f"clock: {exc}", severity="error")
            return
        held = ", ".join(f"{k} {v}" for k, v in sorted(report.reasons.items()) if k != "sent")
        note = f"{report.sent} nudge(s) sent" + (f"; not now: {held}" if held else "")
        self.show_clock(backend.clock.offset.total_seconds(), note)
        self.notify(f"Clock +{seconds / 3600:g} h: {note}")
        log_note = getattr(self.app, "log_note", None)
        if callable(log_note):
            log_note(f"▶ operator moved the clock +{seconds / 3600:g} h: {note}")
        self.post_message(self.Refresh())

    def show_clock(self, offset_seconds: float, note: str = "") -> None:
        """How far the scheduler's clock is ahead of the wall clock, and the last run's result."""
        text = Text()
        hours = offset_seconds / 3600
        text.append(f"+{hours:g} h ahead" if offset_seconds else "the wall clock", style="dim")
        if note:
            text.append("\n" + note)
        self.query_one("#op-clock", Static).update(inert_text(text))

    @on(Button.Pressed, "#op-refresh")
    def _refresh(self, event: Button.Pressed) -> None:
        event.stop()
        self.post_message(self.Refresh())

    # ------------------------------------------------------------------ output
    def show_form(self, user_id: int, name: str, language: str) -> None:
        self.query_one("#op-id", Input).value = str(user_id)
        self.query_one("#op-name", Input).value = name
        self.query_one("#op-lang", Select).value = normalize_language(language)

    def show_store(self, store: str, llm: str, webapp: bool) -> None:
        text = Text()
        text.append("store ", style="dim")
        text.append(store + "\n")
        text.append("LLM   ", style="dim")
        text.append(llm)
        self.query_one("#op-store", Static).update(text)
        self.query_one("#op-web", Static).update(
            Text(
                "Web App: served in-process on 127.0.0.1; Ctrl+P → “Copy the Web App browser URL” "
                "opens the real page as this player.",
                style="dim",
            )
            if webapp
            else Text("Web App: not running", style="dim")
        )

    def show_state(
        self,
        player: PlayerView | None,
        dialog: DialogView | None,
        messages: list[MessageView],
        *,
        online: bool | None = None,
    ) -> None:
        p = Text()
        if player is None:
            p.append("not in the store yet (send /start)", style="dim")
        else:
            p.append(f"{player.display_name}", style="bold")
            p.append(f"  id {player.id}\n")
            p.append(f"lang {player.language} · style {player.style}")
            p.append(" · premium" if player.is_premium else " · free")
            if player.blocked_at is not None:
                p.append(f" · BLOCKED ({player.blocked_reason or '-'})", style="bold red")
            if online is not None:
                p.append(" · online" if online else "", style="green")
        self.query_one("#op-player", Static).update(inert_text(p))

        d = Text()
        if dialog is None:
            d.append("no dialog", style="dim")
        else:
            d.append(dialog.persona_name, style="bold")
            if dialog.story_title:
                d.append(f" · {dialog.story_title}")
            d.append(f"\ndialog {dialog.id} · ")
            d.append(dialog.status, style="green" if dialog.status == "active" else "yellow")
            d.append(f" · since {self.clock(ts(dialog.created_at))}")
        self.query_one("#op-dialog", Static).update(inert_text(d))
        memory = dialog.summary if dialog is not None else ""
        self.query_one("#op-memory", Static).update(inert_text(memory or "(empty)", style="" if memory else "dim"))

        m = Text()
        if not messages:
            m.append("(none)", style="dim")
        for i, msg in enumerate(messages):
            if i:
                m.append("\n")
            who = {"user": "player", "assistant": "persona"}.get(msg.role, msg.role)
            m.append(f"{self.clock(ts(msg.created_at))} ", style="dim")
            m.append(f"{who}", style="bold cyan" if msg.role == "user" else "bold magenta")
            if msg.status != "ok":
                m.append(f" [{msg.status}]", style="yellow")
            m.append(": " + _short(msg.text, 160))
        self.query_one("#op-messages", Static).update(inert_text(m))
