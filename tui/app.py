"""`vitte console`: a local Telegram in the terminal, over the real bot.

The console is not a second implementation of anything: it opens the core like every face
(`Core.open(settings, seed_if_empty=True)`), builds the one Dispatcher (`build_dispatcher`),
and plays a Telegram user with `LocalPlayer` — real `Update` objects fed to that Dispatcher —
while the in-process `LocalBotSession` records what the bot sends. The chat pane draws that
record; the Web App screen calls the real Web App API; the operator panel reads the store.

Run: `vitte console [--user ID]` or `python -m tui.app`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Awaitable, Callable
from functools import partial
from typing import TYPE_CHECKING, Any

from rich.text import Text
from textual import on, work
from textual.app import App, ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.css.query import NoMatches
from textual.theme import Theme
from textual.widgets import Footer, Input

from tui.backend import DEFAULT_USER_ID, ConsoleBackend, webapp_route
from tui.chat import ChatHeader, ChatView, Clock, Composer, InlineButton, local_hhmm
from tui.commands import Command, ConsoleCommands
from tui.operator import LogPane, OperatorPanel, local_hhmmss
from tui.portrait import portrait_cells
from tui.screens import AlertScreen, DocumentScreen, HelpScreen, PathScreen
from tui.strings import tr
from tui.voicefile import VoiceFileError, read_voice_file
from tui.webapp import WebAppScreen
from vitte.catalog.portrait_store import PortraitStore
from vitte.catalog.portraits import SIZES
from vitte.i18n import DEFAULT_LANGUAGE

if TYPE_CHECKING:
    from vitte.config import Settings
    from vitte.llm.base import LLM
    from vitte.localapi import ApiCall, LocalPlayer

log = logging.getLogger("vitte.console")

THEMES = {
    "dark": Theme(
        name="vitte-dark",
        primary="#E0517A",
        secondary="#9D7CD8",
        accent="#F49AB6",
        foreground="#EEE6EE",
        background="#151218",
        surface="#1F1A23",
        panel="#2A232F",
        success="#7BC67B",
        warning="#E8B04A",
        error="#E5534B",
        dark=True,
    ),
    "light": Theme(
        name="vitte-light",
        primary="#C2185B",
        secondary="#6A4FB3",
        accent="#D81B60",
        foreground="#2A2028",
        background="#FBF6F8",
        surface="#FFFFFF",
        panel="#F1E4EA",
        success="#2E7D32",
        warning="#B26A00",
        error="#C62828",
        dark=False,
    ),
}


class _PaneLogHandler(logging.Handler):
    """Warnings from the bot and the core go to the log pane, not over the screen."""

    def __init__(self, app: VitteConsole) -> None:
        super().__init__(logging.WARNING)
        self.app = app
        self.thread = threading.get_ident()

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = f"{record.levelname.lower()} {record.name}: {record.getMessage()}"
            if threading.get_ident() == self.thread:
                self.app.log_note(line, error=True)
            else:
                self.app.call_from_thread(self.app.log_note, line, True)
        except Exception:  # never let logging break the console
            pass


class VitteConsole(App[None]):
    """The console app; see the module docstring."""

    CSS_PATH = "vitte.tcss"
    TITLE = "Vitte console"
    COMMANDS = App.COMMANDS | {ConsoleCommands}
    COMMAND_PALETTE_BINDING = "ctrl+p"
    BINDINGS = [
        Binding("f1", "help", "Help"),
        Binding("question_mark", "help", "Help", show=False),
        Binding("f2", "toggle_operator", "Operator"),
        Binding("f3", "toggle_log", "Log"),
        Binding("f4", "open_webapp", "Web App"),
        Binding("f6", "send_voice_file", "Voice file", show=False),  # in the palette and F1
        Binding("ctrl+t", "toggle_theme", "Theme"),
        Binding("escape", "stop", "Stop reply"),
        Binding("ctrl+s", "stop", "Stop reply", show=False),
        Binding("pageup", "scroll_chat(-1)", "Scroll up", show=False),
        Binding("pagedown", "scroll_chat(1)", "Scroll down", show=False),
        Binding("ctrl+home", "load_older", "Older", show=False),
        Binding("ctrl+end", "latest", "Latest", show=False),
        # priority: checked before the focused input, which would otherwise type the key
        *(
            Binding(f"alt+{i}", f"press_button({i})", f"Button {i}", show=False, priority=True)
            for i in range(1, 10)
        ),
    ]

    def __init__(
        self,
        settings: Settings,
        *,
        user_id: int = DEFAULT_USER_ID,
        first_name: str | None = None,
        language: str | None = None,
        username: str | None = None,
        llm: LLM | None = None,
        runtime: Any = None,
        clock: Clock | None = None,
        log_clock: Clock | None = None,
        theme: str = "dark",
        show_log: bool = False,
        show_operator: bool = False,
        update_id_start: int | None = None,
    ) -> None:
        super().__init__()
        self.backend = ConsoleBackend(settings, llm=llm, runtime=runtime, update_id_start=update_id_start)
        self.start_user = (user_id, first_name, language, username)
        self.clock = clock or local_hhmm
        self.log_clock = log_clock or local_hhmmss
        for t in THEMES.values():
            self.register_theme(t)
        self.theme = THEMES["light" if theme == "light" else "dark"].name
        self._show_log = show_log
        self._show_operator = show_operator
        self.lang = language or DEFAULT_LANGUAGE
        self.ready = asyncio.Event()
        self._tasks: set[asyncio.Task[Any]] = set()  # our own work: awaited, not cut, at exit
        self._peer_task: asyncio.Task[Any] | None = None
        self._peer_dirty = False
        self._operator_task: asyncio.Task[Any] | None = None
        self._peer_name = "Vitte"
        self._peer_picture: Text | None = None  # the persona's portrait (tui.portrait), else its initial
        self._portraits: PortraitStore | None = None
        self._log_handler: _PaneLogHandler | None = None

    # ------------------------------------------------------------------ layout
    def compose(self) -> ComposeResult:
        yield ChatHeader(id="header")
        with Horizontal(id="main"):
            with Vertical(id="chat-column"):
                yield ChatView(lang=self.lang, clock=self.clock, id="chat")
                yield Composer(placeholder=tr(self.lang, "placeholder"), id="composer")
            yield OperatorPanel(clock=self.clock, id="operator")
        yield LogPane(clock=self.log_clock, id="log")
        yield Footer()

    @property
    def chat_view(self) -> ChatView:
        return self.query_one("#chat", ChatView)

    @property
    def composer(self) -> Composer:
        return self.query_one("#composer", Composer)

    @property
    def operator(self) -> OperatorPanel:
        return self.query_one("#operator", OperatorPanel)

    @property
    def log_pane(self) -> LogPane:
        return self.query_one("#log", LogPane)

    @property
    def player(self) -> LocalPlayer:
        assert self.backend.player is not None
        return self.backend.player

    def on_mount(self) -> None:
        self.operator.display = self._show_operator
        self.screen.set_class(self._show_operator, "-operator")
        self.log_pane.display = self._show_log
        self._layout_for(self.size.width)
        if self.is_headless:
            self.composer.cursor_blink = False
        self.composer.focus()
        self.chat_view.loading = True
        self.query_one("#header", ChatHeader).set_peer("Vitte", tr(self.lang, "connecting"), typing=False)
        self._log_handler = _PaneLogHandler(self)
        logging.getLogger().addHandler(self._log_handler)
        self.start()

    async def on_unmount(self) -> None:
        if self._log_handler is not None:
            logging.getLogger().removeHandler(self._log_handler)
        # Let what the player started finish (briefly) rather than cut a store query in half.
        pending = {t for t in self._tasks if not t.done()}
        if pending:
            _done, still = await asyncio.wait(pending, timeout=2.0)
            for task in still:
                task.cancel()
            if still:
                await asyncio.wait(still, timeout=1.0)
        with contextlib.suppress(Exception):
            await self.backend.close()

    def on_resize(self) -> None:
        self._layout_for(self.size.width)

    def _layout_for(self, width: int) -> None:
        self.screen.set_class(width < 100, "-narrow")

    # ------------------------------------------------------------------ startup
    @work(group="startup", exit_on_error=False)
    async def start(self) -> None:
        try:
            await self.backend.open()
            user_id, name, lang, username = self.start_user
            await self.backend.use_player(user_id, first_name=name, language=lang, username=username)
        except Exception as exc:
            log.debug("console start failed", exc_info=True)
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            from vitte.config import ConfigError
            from vitte.db import is_unavailable

            what = "database unavailable" if is_unavailable(exc) else "cannot start the console"
            code = 2 if isinstance(exc, ConfigError) else 1
            self.exit(return_code=code, message=f"error: {what}: {first}")
            return
        self.consume_calls()
        self._suggest_commands()
        self._attach_player()
        self.chat_view.loading = False
        await self.refresh_peer()
        await self.show_stored_history()
        if self.operator.display:
            await self.refresh_operator()
        self.set_interval(0.5, self._tick)
        self.ready.set()

    def palette_commands(self) -> list[Command]:
        """The command palette's entries (tui.commands.ConsoleCommands); none before a player."""
        return console_commands(self) if self.backend.player is not None else []

    def _suggest_commands(self) -> None:
        """Typing "/" offers the bot's commands (→ accepts), as Telegram's command menu does."""
        from textual.suggester import SuggestFromList

        try:
            from vitte.bot.factory import COMMANDS
        except ImportError:  # pragma: no cover
            return
        self.composer.suggester = SuggestFromList([f"/{c}" for c in COMMANDS], case_sensitive=False)

    def _attach_player(self) -> None:
        profile = self.backend.profile
        assert profile is not None
        self.lang = profile.language
        self.chat_view.attach(self.player.chat, lang=profile.language)
        self.composer.placeholder = tr(self.lang, "placeholder")
        self.operator.show_form(profile.user_id, profile.first_name, profile.language)
        self.operator.show_store(
            self.backend.store_label(), self.backend.llm_label, self.backend.webapp is not None
        )
        self.log_pane.clear()
        for call in list(self.backend.session.calls)[-300:]:
            if call.chat_id in (None, profile.user_id):
                self.log_pane.add_call(call)
        self._paint_info()

    def _paint_info(self) -> None:
        profile = self.backend.profile
        if profile is None:
            return
        info = Text(justify="right")
        info.append(profile.first_name, style="bold")
        info.append(f" · id {profile.user_id}\n", style="dim")
        if self.backend.is_demo:
            info.append("demo writer", style="italic")
            info.append(" · ", style="dim")
        info.append("SQLite" if self.backend.settings.is_sqlite else "PostgreSQL", style="dim")
        self.query_one("#header", ChatHeader).set_info(info)

    def _tick(self) -> None:
        try:
            view = self.chat_view
        except NoMatches:  # the app is closing: its widgets are gone before its timers
            return
        view.sync()

    # ------------------------------------------------------------------ the bot's side
    @work(group="calls", exit_on_error=False)
    async def consume_calls(self) -> None:
        queue = self.backend.session.listen(maxsize=100_000)
        try:
            while True:
                batch = [await queue.get()]
                while not queue.empty():
                    batch.append(queue.get_nowait())
                self._on_calls(batch)
        finally:
            self.backend.session.unlisten(queue)

    def _on_calls(self, batch: list[ApiCall]) -> None:
        user_id = self.backend.profile.user_id if self.backend.profile else None
        peer_changed = False
        for call in batch:
            if call.chat_id not in (None, user_id):
                continue
            self.log_pane.add_call(call)
            if call.method == "answerCallbackQuery" and call.ok and call.params.get("text"):
                query = self.backend.session.callback_queries.get(str(call.params.get("callback_query_id")))
                if query is None or query.get("chat_id") == user_id:
                    text = str(call.params["text"])
                    if call.params.get("show_alert"):
                        self.push_screen(AlertScreen(text))
                    else:
                        self.notify(text, timeout=4)
            if call.method in ("sendMessage", "editMessageText", "sendInvoice"):
                peer_changed = True
        self.chat_view.sync()
        if peer_changed:
            self.refresh_peer_soon()

    @on(ChatView.Changed)
    def _chat_changed(self) -> None:
        self._paint_peer()
        self.refresh_bindings()

    def _paint_peer(self) -> None:
        typing = self.chat_view.typing
        status = tr(self.lang, "typing") if typing else tr(self.lang, "online")
        self.query_one("#header", ChatHeader).set_peer(
            self._peer_name, status, typing=typing, picture=self._peer_picture
        )

    def spawn(self, coro: Awaitable[Any]) -> asyncio.Task[Any]:
        """Run `coro` as a task of ours; the app waits for these before closing the store."""

        async def guarded() -> Any:
            try:
                return await coro
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("console task failed: %s: %s", type(exc).__name__, exc)
                return None

        task = asyncio.ensure_future(guarded())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    @property
    def busy(self) -> bool:
        """Something the console started is still running (player actions, store reads)."""
        return any(not t.done() for t in self._tasks)

    def refresh_peer_soon(self) -> None:
        if self._peer_task is not None and not self._peer_task.done():
            self._peer_dirty = True
            return

        async def run() -> None:
            while True:
                self._peer_dirty = False
                await self.refresh_peer()
                if not self._peer_dirty:
                    return

        self._peer_task = self.spawn(run())

    def refresh_operator_soon(self) -> None:
        if self._operator_task is not None and not self._operator_task.done():
            return
        self._operator_task = self.spawn(self.refresh_operator())

    async def refresh_peer(self) -> None:
        """The persona's name (the active dialog's) and the player's language, from the store."""
        core, profile = self.backend.core, self.backend.profile
        if core is None or profile is None:
            return
        name, lang = "Vitte", profile.language
        picture: Text | None = None
        with contextlib.suppress(Exception):
            from vitte.errors import UnknownUser

            with contextlib.suppress(UnknownUser):
                lang = (await core.players.get(profile.user_id)).language
            view = await core.dialogs.current(profile.user_id)
            if view is not None:
                name = view.persona_name
                picture = await self._portrait_of(core, view.persona_id)
        self._peer_name = name
        self._peer_picture = picture
        if lang != self.lang:
            self.lang = lang
            self.chat_view.set_lang(lang)
            self.composer.placeholder = tr(lang, "placeholder")
        self._paint_peer()

    async def _portrait_of(self, core: Any, persona_id: str) -> Text | None:
        """The persona's stored portrait (its small size) as header cells; None: its initial."""
        digest = (await core.catalog.persona(persona_id)).portrait
        if not digest:
            return None
        if self._portraits is None:
            self._portraits = PortraitStore(core.db)
        found = await self._portraits.get(persona_id, min(SIZES), digest)
        return portrait_cells(found[0]) if found is not None else None

    # ------------------------------------------------------------------ the player's side
    def act(self, label: str, factory: Callable[[], Awaitable[Any]]) -> None:
        """Run a player action (it feeds an update to the Dispatcher) without blocking the UI."""
        self.log_note(f"▶ {label}")
        self.spawn(self.perform(factory))

    async def perform(self, factory: Callable[[], Awaitable[Any]]) -> bool:
        from vitte.localapi import LocalPlayerError, PaymentDeclined

        task = asyncio.ensure_future(factory())
        await asyncio.sleep(0)  # the player's own message is in the chat log by now
        self.chat_view.sync()
        ok = False
        try:
            await task
            ok = True
        except PaymentDeclined as exc:
            self.notify(f"Payment not completed: {exc}", severity="warning", timeout=6)
        except LocalPlayerError as exc:
            self.notify(str(exc), severity="warning")
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.warning("player action failed: %s: %s", type(exc).__name__, exc)
            self.notify(f"{type(exc).__name__}: {exc}", severity="error", timeout=8)
        finally:
            self.chat_view.sync()
        await self.refresh_peer()
        if self.operator.display:
            await self.refresh_operator()
        return ok

    def send_text(self, text: str) -> None:
        if self.backend.player is None:
            return
        player = self.player
        self.chat_view.action_latest()
        self.act(f"send «{text[:60]}»", lambda: player.send(text))

    @on(Input.Submitted, "#composer")
    def _submitted(self, event: Input.Submitted) -> None:
        event.stop()
        text = event.value
        if not text.strip():
            return
        self.composer.remember(text)
        self.composer.value = ""
        self.send_text(text)

    @on(InlineButton.Pressed)
    def _button_pressed(self, event: InlineButton.Pressed) -> None:
        event.stop()
        self.press(event.button)

    def press(self, button: InlineButton) -> None:
        if self.backend.player is None:
            return
        spec, message_id = button.spec, button.message_id
        player = self.player
        if spec.kind == "callback":
            self.act(f"press [{spec.label}]", lambda: player.click(spec.text, message_id))
        elif spec.kind == "web_app":
            self.open_webapp(webapp_route(spec.target))
        elif spec.kind == "start":
            self.send_text("/start")
        elif spec.kind == "pay":
            self.act("pay the invoice", lambda: player.buy(message_id))
        elif spec.kind == "invoice_link" and spec.target in self.backend.session.invoice_links:
            link = spec.target
            self.act("pay the invoice link", lambda: player.buy(link=link))
        elif spec.kind == "file":
            self._open_document(message_id)
        elif spec.kind in ("url", "copy") and spec.target:
            self.copy_to_clipboard(spec.target)
            self.notify(f"{spec.target}\n(copied: the console opens no browser)", timeout=6)
        else:
            self.notify(f"The button «{spec.label}» sends nothing to the bot", severity="warning")

    def _open_document(self, message_id: int | None) -> None:
        msg = self.player.chat.message(message_id) if message_id is not None else None
        if msg is None or msg.file is None:
            self.notify("The file is no longer in the chat", severity="warning")
            return
        self.push_screen(
            DocumentScreen(msg.file.filename or "document", msg.file.data, msg.file.mime_type),
            callback=self._back_to_chat,
        )

    def send_media(self, kind: str) -> None:
        player = self.player
        senders: dict[str, Callable[[], Awaitable[Any]]] = {
            "sticker": lambda: player.send_sticker(),
            "photo": lambda: player.send_photo(),
            "voice": lambda: player.send_voice(),
            "document": lambda: player.send_document(),
        }
        self.act(f"send a {kind}", senders[kind])

    def action_send_voice_file(self) -> None:
        """F6: a WAV/OGG file from disk sent as the player's voice message (a path prompt)."""

        def chosen(path: str | None) -> None:
            if not path:
                return
            try:
                data, seconds, mime = read_voice_file(path)
            except VoiceFileError as exc:
                self.notify(str(exc), severity="warning")
                return
            player = self.player
            self.act(
                f"send a voice message ({seconds} s)",
                lambda: player.send_voice(data, duration=seconds, mime_type=mime),
            )

        self.push_screen(PathScreen("A WAV or OGG file to send as a voice message (its path):"), callback=chosen)

    def action_edit_last(self) -> None:
        text = self.composer.value.strip()
        mine = [m for m in self.player.chat.user_messages() if m.kind == "text" and not m.deleted]
        if not mine:
            self.notify("You have sent no text message yet", severity="warning")
            return
        if not text:
            self.notify("Type the new text in the input first, then run this command", severity="warning")
            return
        self.composer.value = ""
        target = mine[-1].message_id
        player = self.player
        self.act(f"edit message {target}", lambda: player.edit(target, text))

    # ------------------------------------------------------------------ actions
    # the chat's own keys: only on the chat screen (not under the Web App or a dialog)
    _CHAT_ACTIONS = frozenset(
        {
            "stop",
            "press_button",
            "toggle_operator",
            "toggle_log",
            "open_webapp",
            "scroll_chat",
            "load_older",
            "latest",
        }
    )

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action in self._CHAT_ACTIONS and len(self.screen_stack) > 1:
            return False
        if action == "stop":
            return self._stoppable_draft() is not None
        return True

    def _stoppable_draft(self) -> int | None:
        if self.backend.player is None:
            return None
        draft = self.player.chat.current_draft
        if draft is None or draft.stopped or not draft.can_stop:
            return None
        return draft.draft_id

    def action_stop(self) -> None:
        draft_id = self._stoppable_draft()
        if draft_id is None:
            return
        player = self.player
        self.act(f"stop draft {draft_id}", lambda: player.stop_generation(draft_id))

    def action_press_button(self, n: int) -> None:
        buttons = self.chat_view.active_buttons()
        if 0 < n <= len(buttons):
            self.press(buttons[n - 1])
        else:
            self.bell()

    def action_scroll_chat(self, direction: int) -> None:
        if direction < 0:
            self.chat_view.scroll_page_up()
        else:
            self.chat_view.scroll_page_down()

    def action_load_older(self) -> None:
        self.chat_view.action_load_older()

    def action_latest(self) -> None:
        self.chat_view.action_latest()

    def action_help(self) -> None:
        if not isinstance(self.screen, HelpScreen):
            self.push_screen(
                HelpScreen(), callback=self._back_to_chat if len(self.screen_stack) == 1 else None
            )

    def action_toggle_theme(self) -> None:
        self.theme = THEMES["light"].name if self.theme == THEMES["dark"].name else THEMES["dark"].name

    def action_toggle_log(self) -> None:
        self.log_pane.display = not self.log_pane.display

    def action_toggle_operator(self) -> None:
        panel = self.operator
        panel.display = not panel.display
        self.screen.set_class(panel.display, "-operator")
        if panel.display:
            self.refresh_operator_soon()
        else:
            self.composer.focus()

    def action_switch_player(self) -> None:
        if not self.operator.display:
            self.action_toggle_operator()
        self.operator.query_one("#op-id", Input).focus()

    def action_new_player(self) -> None:
        if not self.operator.display:
            self.action_toggle_operator()
        self.operator.query_one("#op-new").press()  # type: ignore[attr-defined]

    def action_refresh_operator(self) -> None:
        if not self.operator.display:
            self.action_toggle_operator()
        else:
            self.refresh_operator_soon()

    def action_copy_webapp_url(self) -> None:
        url = self.backend.browser_url()
        if url is None:
            self.notify("The Web App is not running", severity="warning")
            return
        self.copy_to_clipboard(url)
        self.notify("Copied the Web App URL (valid for this player for a day)")

    def action_pay_invoice(self) -> None:
        if self.backend.player is None:
            return
        player = self.player
        self.act("pay the newest invoice", lambda: player.buy())

    def action_reset_dialog(self) -> None:
        self.reset_dialog()

    # ------------------------------------------------------------------ Web App
    def action_open_webapp(self) -> None:
        self.open_webapp("#/")

    def open_webapp(self, route: str = "#/") -> None:
        if self.backend.player is None:
            return
        self.push_screen(
            WebAppScreen(
                self.backend.web,
                lang=self.lang,
                route=route,
                pay_link=self.pay_link,
                unavailable=self.backend.webapp_error,
            ),
            callback=self._back_to_chat,
        )

    def _back_to_chat(self, _result: object = None) -> None:
        """A screen over the chat closed: typing goes to the message field again."""
        self.call_after_refresh(self.composer.focus)

    async def pay_link(self, link: str) -> bool:
        player = self.player
        self.log_note("▶ pay the invoice link")
        return await self.perform(lambda: player.buy(link=link))

    # ------------------------------------------------------------------ operator
    async def refresh_operator(self) -> None:
        core, profile = self.backend.core, self.backend.profile
        if core is None or profile is None:
            return
        from vitte.errors import UnknownUser

        try:
            try:
                player = await core.players.get(profile.user_id)
            except UnknownUser:
                player = None
            view = await core.dialogs.latest(profile.user_id)
            messages = await core.dialogs.messages(view.id, 30) if view is not None else []
        except Exception as exc:
            self.notify(f"store: {type(exc).__name__}: {exc}", severity="error")
            return
        self.operator.show_state(player, view, messages)

    @on(OperatorPanel.SwitchPlayer)
    async def _switch_player(self, event: OperatorPanel.SwitchPlayer) -> None:
        await self.switch_player(event.user_id, name=event.name, language=event.language)

    async def show_stored_history(self, limit: int = 20) -> None:
        """A player coming back (or an operator reproducing one): their chat in this console is
        empty, but the store holds their active dialog — show its last messages, read-only."""
        core, profile = self.backend.core, self.backend.profile
        if core is None or profile is None or self.player.chat.messages:
            return
        from tui.operator import ts

        try:
            view = await core.dialogs.current(profile.user_id)
            stored = await core.dialogs.messages(view.id, limit) if view is not None else []
        except Exception as exc:
            log.warning("stored history unavailable: %s", exc)
            return
        items = [
            (m.role == "assistant", m.text, ts(m.created_at))
            for m in stored
            if m.role in ("user", "assistant") and m.text
        ]
        if view is not None and items and not self.player.chat.messages:
            self.chat_view.show_history(items, tr(self.lang, "history", persona=view.persona_name))

    async def switch_player(
        self, user_id: int, *, name: str | None = None, language: str | None = None
    ) -> None:
        same = self.backend.profile is not None and self.backend.profile.user_id == user_id
        await self.backend.use_player(
            user_id, first_name=name if not same or name else None, language=language
        )
        self._attach_player()
        await self.refresh_peer()
        await self.show_stored_history()
        await self.refresh_operator()
        self.notify(
            f"Playing as {self.backend.profile.first_name if self.backend.profile else user_id} ({user_id})"
        )

    @on(OperatorPanel.ResetDialog)
    def _reset_requested(self) -> None:
        self.reset_dialog()

    @on(OperatorPanel.Refresh)
    def _refresh_requested(self) -> None:
        self.refresh_operator_soon()

    @work(group="operator-reset", exclusive=True, exit_on_error=False)
    async def reset_dialog(self) -> None:
        from tui.screens import ConfirmScreen

        core, profile = self.backend.core, self.backend.profile
        if core is None or profile is None:
            return
        ok = await self.push_screen_wait(
            ConfirmScreen(
                f"Reset the dialog of user {profile.user_id}? Memory will be cleared.", "Reset", "Cancel"
            )
        )
        if not ok:
            return
        try:
            ended = await core.dialogs.reset(profile.user_id)
        except Exception as exc:
            self.notify(f"reset failed: {exc}", severity="error")
            return
        if ended is None:
            self.notify(f"User {profile.user_id} had no active dialog; active persona cleared")
        else:
            self.notify(f"Reset: dialog {ended.id} with {ended.persona_name} ended, memory cleared")
        self.log_note(f"▶ operator reset the dialog of {profile.user_id}")
        await self.refresh_peer()
        if self.operator.display:
            await self.refresh_operator()

    # ------------------------------------------------------------------ log
    def log_note(self, text: str, error: bool = False) -> None:
        with contextlib.suppress(Exception):
            line = Text(text, style="bold red" if error else "italic dim")
            self.log_pane.write(line)


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
        ("Send a voice file (WAV/OGG)", "A file from disk as a voice message (F6)", app.action_send_voice_file),
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


def main() -> None:  # pragma: no cover - `python -m tui.app` (with options: `vitte console`)
    from tui import photo_view
    from vitte.config import load_settings

    app = VitteConsole(load_settings())
    photo_view.detect()  # textual-image asks the terminal before Textual takes it
    app.run()
    raise SystemExit(app.return_code or 0)


if __name__ == "__main__":  # pragma: no cover
    main()
