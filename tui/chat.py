"""The chat pane: the player's private chat with the bot, drawn from the local session's ChatLog.

The ChatLog (what the local Bot API recorded: messages in their current state, drafts, the
last chat action) is the single source; `ChatView.sync()` reconciles the mounted bubbles with
it — new messages appended, edited ones re-rendered in place, deleted ones removed, the live
draft shown as a streaming bubble. At most `MAX_MOUNTED` bubbles are mounted: scrolling to the
top mounts older ones page by page (and unmounts the newest beyond twice that), `End`
returns to the live end.
"""

from __future__ import annotations

import time
from bisect import bisect_left
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from rich.text import Text
from textual import events
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.message import Message
from textual.widgets import Input, Static

from tui import photo_view
from tui.portrait import portrait_cells
from tui.strings import inert_text, tr

if TYPE_CHECKING:
    from aiogram.types import InlineKeyboardButton

    from vitte.localapi import ChatLog, LocalMessage

Clock = Callable[[float], str]

MAX_MOUNTED = 200  # bubbles mounted while following the live end
PAGE = 100  # bubbles mounted per scroll-up
TYPING_SECONDS = 5.0  # Telegram shows a chat action for about 5 s
DRAFT_SECONDS = 30.0  # and a draft for about 30 s


def local_hhmm(ts: float) -> str:
    return time.strftime("%H:%M", time.localtime(ts))


# --------------------------------------------------------------------------- text


_ENTITY_STYLES = {
    "bold": "bold",
    "italic": "italic",
    "underline": "underline",
    "strikethrough": "strike",
    "spoiler": "reverse",
    "code": "bold",
    "pre": "bold",
    "blockquote": "italic",
    "expandable_blockquote": "italic",
    "text_link": "underline",
    "url": "underline",
}


def entity_text(text: str, entities: list[dict[str, Any]] | None) -> Text:
    """Telegram text + entities (UTF-16 offsets) as a styled rich Text."""
    out = Text(text)
    if not entities:
        return out
    py_index = [0]
    for i, ch in enumerate(text):
        py_index.append(i + 1)
        if ord(ch) > 0xFFFF:
            py_index.append(i + 1)
    for entity in entities:
        style = _ENTITY_STYLES.get(str(entity.get("type")))
        if not style:
            continue
        start = int(entity.get("offset", 0))
        end = start + int(entity.get("length", 0))
        if 0 <= start < end < len(py_index) + 1:
            out.stylize(style, py_index[min(start, len(py_index) - 1)], py_index[min(end, len(py_index) - 1)])
    return out


def _size(n: int) -> str:
    if n < 1024:
        return f"{n} B"
    if n < 1024 * 1024:
        return f"{n / 1024:.1f} KB"
    return f"{n / 1024 / 1024:.1f} MB"


# --------------------------------------------------------------------------- buttons


@dataclass(frozen=True, slots=True)
class ButtonSpec:
    """One inline button as the console shows it; `kind` says what pressing it does."""

    label: str
    kind: str  # callback | web_app | url | invoice_link | pay | copy | file | start | other
    target: str | None = None
    text: str = ""  # the button's text in the markup (what LocalPlayer.click looks for)


def button_spec(button: InlineKeyboardButton) -> ButtonSpec:
    if button.callback_data is not None:
        return ButtonSpec(button.text, "callback", button.callback_data, button.text)
    if button.web_app is not None:
        return ButtonSpec(button.text, "web_app", button.web_app.url, button.text)
    if button.url is not None:
        # https://t.me/$… is a Telegram invoice link (createInvoiceLink): it opens the payment
        kind = "invoice_link" if button.url.startswith("https://t.me/$") else "url"
        return ButtonSpec(button.text, kind, button.url, button.text)
    if button.pay:
        return ButtonSpec(button.text, "pay", None, button.text)
    if button.copy_text is not None:
        return ButtonSpec(button.text, "copy", button.copy_text.text, button.text)
    if button.login_url is not None:
        return ButtonSpec(button.text, "url", button.login_url.url, button.text)
    return ButtonSpec(button.text, "other", None, button.text)


_KIND_MARK = {"web_app": " ↗", "url": " 🔗", "copy": " ⧉"}


class InlineButton(Static, can_focus=True):
    """An inline keyboard button: click it, or focus it and press Enter."""

    BINDINGS = [Binding("enter,space", "press", "Press", show=False)]

    class Pressed(Message):
        def __init__(self, button: InlineButton) -> None:
            super().__init__()
            self.button = button

    def __init__(self, spec: ButtonSpec, message_id: int | None, *, hint: int | None = None) -> None:
        super().__init__(classes=f"ibtn -{spec.kind}")
        self.spec = spec
        self.message_id = message_id
        self.hint = hint
        self._paint()

    def _paint(self) -> None:
        label = Text(no_wrap=True, overflow="ellipsis", justify="center")
        if self.hint is not None:
            label.append(f"{self.hint}·", style="dim")
        label.append(self.spec.label)
        label.append(_KIND_MARK.get(self.spec.kind, ""), style="dim")
        self.update(label)

    def set_hint(self, hint: int | None) -> None:
        if hint != self.hint:
            self.hint = hint
            self._paint()

    def on_click(self, event: events.Click) -> None:
        event.stop()
        self.action_press()

    def action_press(self) -> None:
        self.post_message(self.Pressed(self))


class InlineKeyboard(Vertical):
    """Rows of inline buttons under a message."""

    def __init__(self, rows: list[list[ButtonSpec]], message_id: int | None) -> None:
        button_rows = [[InlineButton(spec, message_id) for spec in row] for row in rows if row]
        self.buttons = [b for row in button_rows for b in row]  # known before mounting
        super().__init__(*(Horizontal(*row, classes="kbrow") for row in button_rows), classes="keyboard")


# --------------------------------------------------------------------------- messages


# voice notes, audio files and round videos as the console shows them (issue 19)
_SPOKEN_MARK = {"voice": "🎤", "audio": "🎵", "video_note": "⭕"}
PHOTO_CELLS = (16, 6)  # a photo's thumbnail: columns × rows of half-block cells


def keyboard_rows(msg: LocalMessage, lang: str) -> list[list[ButtonSpec]]:
    rows = (
        [[button_spec(b) for b in row] for row in msg.reply_markup.inline_keyboard]
        if msg.reply_markup
        else []
    )
    if (
        msg.kind == "invoice"
        and msg.invoice is not None
        and not any(b.kind == "pay" for r in rows for b in r)
    ):
        amount = msg.invoice.get("total_amount", 0)
        rows.insert(0, [ButtonSpec(tr(lang, "pay", amount=amount), "pay")])
    if msg.kind in ("document", "photo", "voice") and msg.file is not None and msg.from_bot:
        rows.append([ButtonSpec(tr(lang, "open_file"), "file")])
    return rows


def message_body(msg: LocalMessage, lang: str, clock: Clock, *, pictured: bool = False) -> Text:
    """The bubble's text: content, then the time (and 'edited', and ✓✓ on the player's side).
    `pictured`: a photo drawn above by an image widget (tui.photo_view): no thumbnail here."""
    body = Text()
    if msg.kind == "text":
        body.append_text(entity_text(msg.text or "", msg.entities))
    elif msg.kind == "invoice" and msg.invoice is not None:
        inv = msg.invoice
        body.append("🧾 ")
        body.append(str(inv.get("title", "")), style="bold")
        body.append("\n" + str(inv.get("description", "")))
        amount = inv.get("total_amount", 0)
        currency = inv.get("currency", "XTR")
        price = f"⭐ {amount}" if currency == "XTR" else f"{amount} {currency}"
        if inv.get("subscription_period"):
            price += " / 30 d"
        body.append(f"\n{price}", style="bold")
    elif msg.kind == "document":
        name = (msg.file.filename if msg.file else None) or "document"
        size = _size(msg.file.size) if msg.file is not None and msg.file.data is not None else ""
        body.append("📄 ")
        body.append(name, style="bold")
        if size:
            body.append(f" · {size}", style="dim")
        if msg.text:
            body.append("\n")
            body.append_text(entity_text(msg.text, msg.entities))
    elif msg.kind in _SPOKEN_MARK:  # a voice note: "🎤 0:07", its caption (the transcript: 📝)
        seconds = int((msg.extra.get(msg.kind) or {}).get("duration") or 0)
        body.append(f"{_SPOKEN_MARK[msg.kind]} {seconds // 60}:{seconds % 60:02d}", style="bold")
        if msg.text:
            body.append("\n")
            body.append_text(entity_text(msg.text, msg.entities))
    elif msg.kind == "photo":  # a thumbnail in half-block cells, else "🖼 photo"
        thumb = (
            portrait_cells(msg.file.data, *PHOTO_CELLS)
            if msg.file is not None and msg.file.data and not pictured
            else None
        )
        if thumb is not None:
            body.append_text(thumb)
        elif not pictured:
            body.append(f"🖼 {tr(lang, 'file_kind_photo')}", style="italic")
        if msg.text:
            body.append("\n" if not pictured else "")
            body.append_text(entity_text(msg.text, msg.entities))
    elif msg.kind == "successful_payment":
        pay = msg.extra.get("successful_payment") or {}
        body.append(tr(lang, "paid", amount=pay.get("total_amount", "?")))
    else:
        label = tr(lang, f"file_kind_{msg.kind}")
        if msg.kind == "sticker":
            emoji = (msg.extra.get("sticker") or {}).get("emoji") or "🙂"
            label = f"{emoji} {label}"
        body.append(label, style="italic")
        if msg.text:
            body.append("\n")
            body.append_text(entity_text(msg.text, msg.entities))
    meta = clock(float(msg.date))
    if msg.edited:
        meta = f"{tr(lang, 'edited')} {meta}"
    if not msg.from_bot:
        meta += " ✓✓"
    body.append(f"  {meta}", style="dim")
    return inert_text(body)


def signature(msg: LocalMessage) -> tuple[Any, ...]:
    return (msg.text, msg.kind, msg.edited, msg.edit_date, msg.markup_json, msg.entities)


class MessageRow(Vertical):
    """One message: its bubble (left for the bot, right for the player) and its keyboard."""

    def __init__(self, msg: LocalMessage, view: ChatView) -> None:
        self.message_id = msg.message_id
        self.from_bot = msg.from_bot
        self._view = view
        self._signature = signature(msg)
        self._rows = keyboard_rows(msg, view.lang)
        # a photo drawn by textual-image where the terminal shows pictures, else the thumbnail
        self.picture = photo_view.photo_widget(msg.file.data) if msg.kind == "photo" and msg.file else None
        self._pictured = self.picture is not None
        self.bubble = Static(message_body(msg, view.lang, view.clock, pictured=self._pictured), classes="bubble")
        children: list[Any] = [self.bubble] if self.picture is None else [self.picture, self.bubble]
        self.keyboard: InlineKeyboard | None = None
        if self._rows:
            self.keyboard = InlineKeyboard(self._rows, msg.message_id)
            children.append(self.keyboard)
        side = "-bot" if msg.from_bot else "-me"
        kind = f" -{msg.kind}" if msg.kind != "text" else ""
        service = " -service" if msg.kind == "successful_payment" else ""
        super().__init__(*children, classes=f"msg {side}{kind}{service}")

    def update_from(self, msg: LocalMessage, *, force: bool = False) -> bool:
        sig = signature(msg)
        if sig == self._signature and not force:
            return False
        self._signature = sig
        self.bubble.update(message_body(msg, self._view.lang, self._view.clock, pictured=self._pictured))
        self.set_class(msg.edited, "-edited")
        rows = keyboard_rows(msg, self._view.lang)
        if rows != self._rows or force:
            self._rows = rows
            if self.keyboard is not None:
                self.keyboard.remove()
                self.keyboard = None
            if rows:
                self.keyboard = InlineKeyboard(rows, msg.message_id)
                self.mount(self.keyboard)
        return True

    @property
    def buttons(self) -> list[InlineButton]:
        return self.keyboard.buttons if self.keyboard is not None else []


class DraftRow(Vertical):
    """The reply being written: the current sendMessageDraft text, or a typing indicator."""

    def __init__(self) -> None:
        self.bubble = Static(classes="bubble")
        self.hint = Static(classes="draft-hint")
        super().__init__(self.bubble, self.hint, classes="msg -bot -draft")
        self.display = False
        self.state: tuple[Any, ...] = ()

    def show(self, state: tuple[Any, ...], body: Text, hint: str) -> None:
        if state == self.state and self.display:
            return
        self.state = state
        self.bubble.update(body)
        self.hint.update(Text(hint, style="dim"))
        self.hint.display = bool(hint)
        self.display = True

    def hide(self) -> None:
        if self.display:
            self.display = False
            self.state = ()


class EmptyChat(Vertical):
    def __init__(self, lang: str) -> None:
        self.title_label = Static(classes="empty-title")
        self.hint_label = Static(classes="empty-hint")
        self.start = InlineButton(ButtonSpec(tr(lang, "start_button"), "start"), None)
        super().__init__(
            self.title_label,
            self.hint_label,
            Horizontal(self.start, classes="kbrow start-row"),
            classes="empty",
        )
        self.set_lang(lang)

    def set_lang(self, lang: str) -> None:
        self.title_label.update(tr(lang, "empty_title"))
        self.hint_label.update(tr(lang, "empty_hint"))
        self.start.spec = ButtonSpec(tr(lang, "start_button"), "start")
        self.start.set_hint(None)
        self.start._paint()


class ChatView(VerticalScroll):
    """The conversation, virtualised: a window of at most 2 × MAX_MOUNTED bubbles."""

    BINDINGS = [
        Binding("home", "load_older", "Older", show=False),
        Binding("end", "latest", "Latest", show=False),
    ]

    class Changed(Message):
        """The chat's look changed (new message, draft, typing)."""

    def __init__(self, *, lang: str = "ru", clock: Clock = local_hhmm, id: str | None = None) -> None:
        super().__init__(id=id)
        self.lang = lang
        self.clock = clock
        self.chat: ChatLog | None = None
        self.rows: dict[int, MessageRow] = {}
        self.follow = True  # the window ends at the newest message
        self._high = 0  # the highest message id already considered
        self._older = Static(classes="note -older")
        self._history = Vertical(classes="history")  # the dialog as stored, before this session
        self._newer = Static(classes="note -newer")
        self._draft = DraftRow()
        self._empty = EmptyChat(lang)
        self._last_bot_at = 0.0
        self._active_keyboard: MessageRow | None = None
        self._loading = False
        self.typing = False

    def compose(self) -> ComposeResult:
        yield self._older
        yield self._history
        yield self._empty
        yield self._draft
        yield self._newer

    def on_mount(self) -> None:
        self._older.display = False
        self._newer.display = False
        self._history.display = False
        self.anchor()

    # ------------------------------------------------------------------ model
    def visible_messages(self) -> list[LocalMessage]:
        return [m for m in self.chat.messages if not m.deleted] if self.chat is not None else []

    def attach(self, chat: ChatLog, *, lang: str | None = None) -> None:
        """Show another chat (another simulated player), from its newest messages."""
        self.chat = chat
        if lang:
            self.lang = lang
            self._empty.set_lang(lang)
        self._history.remove_children()
        self._history.display = False
        self._reset_window()

    def set_lang(self, lang: str) -> None:
        if lang == self.lang:
            return
        self.lang = lang
        self._empty.set_lang(lang)
        if self.chat is not None:
            for mid, row in self.rows.items():
                msg = self.chat.message(mid)
                if msg is not None:
                    row.update_from(msg, force=True)

    def show_history(self, items: list[tuple[bool, str, float]], title: str) -> None:
        """The stored dialog's last messages (from_persona, text, time) above this session's chat."""
        self._history.remove_children()
        self._history.display = bool(items)
        if not items:
            return
        rows: list[Any] = [Static(Text(title, style="dim italic"), classes="note -history")]
        for from_persona, text, ts in items:
            body = inert_text(text)
            body.append(f"  {self.clock(ts)}", style="dim")
            side = "-bot" if from_persona else "-me"
            rows.append(Vertical(Static(body, classes="bubble"), classes=f"msg {side} -stored"))
        rows.append(Static(Text("· · ·", style="dim"), classes="note -history"))
        self._history.mount_all(rows)
        self._empty.display = False

    def _reset_window(self) -> None:
        for row in self.rows.values():
            row.remove()
        self.rows = {}
        self._active_keyboard = None
        visible = self.visible_messages()
        self._high = visible[-1].message_id if visible else 0
        self.follow = True
        tail = visible[-MAX_MOUNTED:]
        self.rows = {r.message_id: r for r in self._mount_rows(tail, before=self._draft)}
        self._after_change(visible)
        self.anchor()

    def _mount_rows(
        self, msgs: list[LocalMessage], *, before: Any = None, after: Any = None
    ) -> list[MessageRow]:
        rows = [MessageRow(m, self) for m in msgs]
        if not rows:
            return rows
        if before is not None:
            self.mount_all(rows, before=before)
        else:
            self.mount_all(rows, after=after)
        return rows

    # ------------------------------------------------------------------ sync
    def sync(self) -> None:
        """Reconcile the bubbles with the ChatLog (cheap when nothing changed)."""
        chat = self.chat
        if chat is None:
            return
        changed = False
        for mid, row in list(self.rows.items()):
            msg = chat.message(mid)
            if msg is None or msg.deleted:
                row.remove()
                del self.rows[mid]
                changed = True
            elif row.update_from(msg):
                changed = True
        visible: list[LocalMessage] | None = None
        last_id = getattr(chat, "_last_message_id", None)  # cheap check before a scan
        if last_id is None or last_id > self._high:
            visible = self.visible_messages()
            new = [m for m in visible if m.message_id > self._high]
            if new:
                self._high = new[-1].message_id
                if any(m.from_bot for m in new):
                    self._last_bot_at = time.time()
                if self.follow:
                    rows = self._mount_rows(new[-MAX_MOUNTED:], before=self._draft)
                    self.rows.update({r.message_id: r for r in rows})
                    if not self.rows or len(self.rows) > MAX_MOUNTED:
                        self._prune_oldest(
                            MAX_MOUNTED if self.is_vertical_scroll_end_ish else 2 * MAX_MOUNTED
                        )
                changed = True
        if changed:
            self._after_change(visible if visible is not None else self.visible_messages())
        self._sync_draft()
        if changed:
            self.post_message(self.Changed())

    @property
    def is_vertical_scroll_end_ish(self) -> bool:
        return self.scroll_y >= self.max_scroll_y - 2

    def _prune_oldest(self, keep: int) -> None:
        while len(self.rows) > keep:
            mid = next(iter(self.rows))
            self.rows.pop(mid).remove()

    def _prune_newest(self, keep: int) -> None:
        while len(self.rows) > keep:
            mid = next(reversed(self.rows))
            self.rows.pop(mid).remove()
            self.follow = False

    def _after_change(self, visible: list[LocalMessage]) -> None:
        self._empty.display = not visible and not self._history.display
        if self.rows and visible:
            first = next(iter(self.rows))
            older = bisect_left(visible, first, key=lambda m: m.message_id)
            last = next(reversed(self.rows))
            newer = len(visible) - bisect_left(visible, last + 1, key=lambda m: m.message_id)
        else:
            older = newer = 0
        self._older.display = older > 0
        if older:
            self._older.update(Text(tr(self.lang, "older", count=older), style="dim"))
        self._newer.display = newer > 0
        if newer:
            self._newer.update(Text(tr(self.lang, "newer"), style="dim"))
        self._refresh_hints()

    def _refresh_hints(self) -> None:
        """Number the buttons of the newest keyboard: alt+1 … alt+9 press them."""
        active = None
        for row in reversed(self.rows.values()):
            if row.keyboard is not None and row.from_bot:
                active = row
                break
        if self._active_keyboard is not None and self._active_keyboard is not active:
            for button in self._active_keyboard.buttons:
                button.set_hint(None)
        self._active_keyboard = active
        if active is not None:
            for i, button in enumerate(active.buttons, 1):
                button.set_hint(i if i <= 9 else None)

    def active_buttons(self) -> list[InlineButton]:
        if self._empty.display or (not self.rows and self._history.display):
            return [self._empty.start]
        return self._active_keyboard.buttons if self._active_keyboard is not None else []

    def _sync_draft(self) -> None:
        chat = self.chat
        assert chat is not None
        now = time.time()
        draft = chat.current_draft
        typing_action = (
            chat.last_action == "typing"
            and chat.last_action_ts is not None
            and now - chat.last_action_ts < TYPING_SECONDS
            and chat.last_action_ts >= self._last_bot_at
        )
        if draft is not None and now - draft.ts < DRAFT_SECONDS and self.follow:
            body = Text()
            if draft.text:
                body.append_text(entity_text(draft.text, draft.entities))
                if not draft.stopped:
                    body.append("▍", style="blink")
            else:
                body.append(tr(self.lang, "thinking"), style="italic dim")
            hint = ""
            if draft.stopped:
                hint = "⏹ " + tr(self.lang, "stopped")
            elif draft.can_stop:
                hint = "⏹ " + tr(self.lang, "stop_hint")
            self._draft.show(("draft", draft.draft_id, draft.text, draft.stopped), inert_text(body), hint)
            typing = not draft.stopped
        elif typing_action and self.follow:
            self._draft.show(("typing",), Text("• • •", style="bold"), "")
            typing = True
        else:
            self._draft.hide()
            typing = False
        if typing != self.typing:
            self.typing = typing
            self.post_message(self.Changed())

    # ------------------------------------------------------------------ paging
    def watch_scroll_y(self, old_value: float, new_value: float) -> None:
        super().watch_scroll_y(old_value, new_value)
        if new_value <= 0 < old_value and self._older.display:
            self.call_later(self.load_older)
        elif not self.follow and new_value >= self.max_scroll_y > old_value:
            self.call_later(self.load_newer)

    def on_mouse_scroll_up(self, event: events.MouseScrollUp) -> None:
        if self.scroll_y <= 0 and self._older.display:
            self.call_later(self.load_older)

    def action_load_older(self) -> None:
        """Home: to the top of what is mounted; at the top, a page of older messages too."""
        self.release_anchor()
        if self.scroll_y > 0:
            self.scroll_home(animate=False)
        else:
            self.load_older(keep_place=False)

    def load_older(self, *, keep_place: bool = True) -> None:
        """Mount the page of messages above the first mounted one.

        `keep_place`: the view stays where it was (scrolling up into history); otherwise it
        moves to the top of the new page.
        """
        if self._loading or not self.rows:
            return
        visible = self.visible_messages()
        first = next(iter(self.rows))
        idx = bisect_left(visible, first, key=lambda m: m.message_id)
        if idx <= 0:
            return
        self._loading = True
        chunk = visible[max(0, idx - PAGE) : idx]
        old_height = self.virtual_size.height
        old_y = self.scroll_y
        self.release_anchor()
        rows = self._mount_rows(chunk, after=self._history)
        self.rows = {r.message_id: r for r in rows} | self.rows
        self._prune_newest(2 * MAX_MOUNTED)
        self._after_change(visible)

        def settle() -> None:
            if keep_place:
                delta = self.virtual_size.height - old_height
                self.scroll_to(y=old_y + max(0, delta), animate=False, immediate=True)
            else:
                self.scroll_home(animate=False, immediate=True)
            self._loading = False

        self.call_after_refresh(settle)

    def load_newer(self) -> None:
        if self._loading or self.follow or not self.rows:
            return
        visible = self.visible_messages()
        last = next(reversed(self.rows))
        idx = bisect_left(visible, last + 1, key=lambda m: m.message_id)
        chunk = visible[idx : idx + PAGE]
        if not chunk:
            self.follow = True
            self._after_change(visible)
            return
        rows = self._mount_rows(chunk, before=self._draft)
        self.rows.update({r.message_id: r for r in rows})
        self._prune_oldest(2 * MAX_MOUNTED)
        if idx + PAGE >= len(visible):
            self.follow = True
        self._after_change(visible)

    def action_latest(self) -> None:
        if not self.follow:
            self._reset_window()
        self.anchor()
        self.scroll_end(animate=False)


# --------------------------------------------------------------------------- header and input


class ChatHeader(Horizontal):
    """The peer: avatar, name, "печатает…" / "в сети"; on the right, who is playing."""

    def __init__(self, id: str | None = None) -> None:
        self.avatar = Static("V", classes="avatar")
        self.name_label = Static("Vitte", classes="peer-name")
        self.status_label = Static("", classes="peer-status")
        self.info = Static("", classes="peer-info")
        super().__init__(
            self.avatar, Vertical(self.name_label, self.status_label, classes="peer"), self.info, id=id
        )

    def set_peer(self, name: str, status: str, *, typing: bool, picture: Text | None = None) -> None:
        """`picture`: the persona's portrait as cells (tui.portrait); else its initial."""
        name = inert_text(name).plain
        self.avatar.update(picture if picture is not None else Text((name[:1] or "V").upper()))
        self.avatar.set_class(picture is not None, "-portrait")
        self.name_label.update(Text(name, style="bold"))
        self.status_label.update(inert_text(status))
        self.status_label.set_class(typing, "-typing")

    def set_info(self, info: Text | str) -> None:
        self.info.update(inert_text(info))


class Composer(Input):
    """The message field: Enter sends (commands too, as in Telegram); ↑/↓ recall sent lines."""

    BINDINGS = [
        Binding("up", "history(-1)", "Previous", show=False),
        Binding("down", "history(1)", "Next", show=False),
    ]

    def __init__(self, **kw: Any) -> None:
        super().__init__(**kw)
        self.sent: list[str] = []
        self._pos = 0

    def remember(self, text: str) -> None:
        if text and (not self.sent or self.sent[-1] != text):
            self.sent.append(text)
            del self.sent[:-100]
        self._pos = len(self.sent)

    def action_history(self, step: int) -> None:
        if not self.sent:
            return
        self._pos = max(0, min(len(self.sent), self._pos + step))
        self.value = self.sent[self._pos] if self._pos < len(self.sent) else ""
        self.cursor_position = len(self.value)
