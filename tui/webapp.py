"""The Web App, as a console screen: CharactersList → CharacterDetails → story, Settings, Memory,
Premium.

It is a client of the real Web App: every page is a call to its JSON API on loopback with
initData signed for the simulated player (see `tui.backend.WebAppClient`), and it follows
the page's flow (app.js): the same confirmations before switching or restarting a story,
the same messages. Choosing a story makes the Web App open the dialog and the bot send the
opening into the chat; the screen then closes, as the page closes itself in Telegram.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import TYPE_CHECKING, Any

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.events import Click
from textual.message import Message
from textual.screen import Screen
from textual.widget import Widget
from textual.widgets import Button, Footer, Input, Static

from tui.backend import WebAppError
from tui.screens import ConfirmScreen
from tui.strings import inert_text, stories_label, tr
from vitte.i18n import DEFAULT_LANGUAGE, LANGUAGES, format_day
from vitte.webapp.texts import PAGE

if TYPE_CHECKING:
    from tui.backend import WebAppClient

STYLES = ("short", "normal", "long")


class Card(Static, can_focus=True):
    """A focusable card (a persona, a settings row): Enter or a click opens/acts."""

    BINDINGS = [Binding("enter,space", "press", "Open", show=False)]

    class Pressed(Message):
        def __init__(self, card: Card) -> None:
            super().__init__()
            self.card = card

    def __init__(
        self, content: Text, action: tuple[Any, ...], *, classes: str = "", id: str | None = None
    ) -> None:
        super().__init__(inert_text(content), classes=f"wa-card {classes}".strip(), id=id)
        self.payload = action

    def on_click(self, event: Click) -> None:
        event.stop()
        self.action_press()

    def action_press(self) -> None:
        self.post_message(self.Pressed(self))


class ActionButton(Button):
    def __init__(self, label: str, action: tuple[Any, ...], **kw: Any) -> None:
        super().__init__(label, **kw)
        self.payload = action


def _color(colors: Any, index: int = 0) -> str:
    if isinstance(colors, list) and len(colors) > index and isinstance(colors[index], str):
        return colors[index]
    return "magenta"


def _date(iso: str | None, lang: str) -> str:
    """A day as the page writes it ("1 января 2026"), from the catalogue's pattern."""
    if not iso:
        return ""
    try:
        value = datetime.fromisoformat(iso.replace("Z", "+00:00"))
    except ValueError:
        return iso[:10]
    return format_day(value, lang)


class WebAppScreen(Screen[None]):
    """One Web App session; routes '#/', '#/persona/<id>', '#/settings', '#/memory', '#/premium'."""

    BINDINGS = [
        Binding("escape", "back", "Back"),
        Binding("ctrl+w", "close", "Close Web App"),
        Binding("f5", "reload", "Reload"),
    ]

    def __init__(
        self,
        client: WebAppClient | None,
        *,
        lang: str = DEFAULT_LANGUAGE,
        route: str = "#/",
        pay_link: Callable[[str], Awaitable[bool]] | None = None,
        unavailable: str | None = None,
    ) -> None:
        super().__init__()
        self.client = client
        self.lang = lang
        self.route = route or "#/"
        self.history: list[str] = []
        self.me: dict[str, Any] | None = None
        self.auth_error: str | None = None
        self.pay_link = pay_link
        self.unavailable = unavailable
        self.busy = False
        self.shown: str | None = None

    def compose(self) -> ComposeResult:
        with Horizontal(id="wa-bar"):
            yield Static("‹", id="wa-back", classes="wa-icon")
            yield Static("Vitte", id="wa-title")
            yield Static("✕", id="wa-close", classes="wa-icon")
        yield VerticalScroll(id="wa-body")
        yield Footer()

    def on_mount(self) -> None:
        self.navigate(self.route, push=False)

    # ------------------------------------------------------------------ navigation
    def navigate(self, route: str, *, push: bool = True) -> None:
        if push and self.route != route:
            self.history.append(self.route)
        self.route = route
        self.render_route()

    def action_back(self) -> None:
        if self.history:
            self.route = self.history.pop()
            self.render_route()
        else:
            self.action_close()

    def action_close(self) -> None:
        self.dismiss(None)

    def action_reload(self) -> None:
        self.render_route()

    @on(Click, "#wa-back")
    def _back_clicked(self) -> None:
        self.action_back()

    @on(Click, "#wa-close")
    def _close_clicked(self) -> None:
        self.action_close()

    @work(exclusive=True, group="wa-render")
    async def render_route(self) -> None:
        body = self.query_one("#wa-body", VerticalScroll)
        if self.client is None:
            await self._show(
                [Static(inert_text(tr(self.lang, "wa_unavailable", error=self.unavailable or "-")), classes="wa-notice")]
            )
            return
        route = self.route
        try:
            parts = [p for p in route.removeprefix("#").split("/") if p]
            if not parts:
                widgets = await self._list_page()
                title = "Vitte"
            elif parts[0] == "persona" and len(parts) == 2:
                widgets = await self._persona_page(parts[1])
                title = self._persona_name or "Vitte"
            elif parts == ["settings"]:
                widgets = await self._settings_page()
                title = tr(self.lang, "wa_settings")
            elif parts == ["memory"]:
                widgets = await self._memory_page()
                title = PAGE.t(self.lang, "memory")
            elif parts == ["premium"]:
                widgets = await self._premium_page()
                title = tr(self.lang, "wa_premium")
            else:
                widgets = [Static("404", classes="wa-notice")]
                title = "Vitte"
        except WebAppError as exc:
            widgets = [Static(inert_text(f"⚠️ {exc.message}"), classes="wa-notice -error")]
            title = "Vitte"
        except OSError as exc:
            widgets = [Static(inert_text(f"⚠️ {exc}"), classes="wa-notice -error")]
            title = "Vitte"
        if route != self.route:
            return
        self.query_one("#wa-title", Static).update(inert_text(title, style="bold"))
        self.query_one("#wa-back", Static).display = bool(self.history)
        await self._show(widgets)
        body.scroll_home(animate=False)
        self.shown = route  # the page for `route` is on screen (tests wait for this)

    async def _show(self, widgets: list[Widget]) -> None:
        body = self.query_one("#wa-body", VerticalScroll)
        await body.remove_children()
        await body.mount_all(widgets)
        focusable = [w for w in body.query("*") if w.focusable]
        if focusable:
            focusable[0].focus()

    async def _load_me(self) -> dict[str, Any] | None:
        assert self.client is not None
        try:
            self.me = await self.client.me()
            self.auth_error = None
            self.lang = self.me.get("language", self.lang)
        except WebAppError as exc:
            if exc.status == 401:
                self.me, self.auth_error = None, exc.message
            else:
                raise
        return self.me

    # ------------------------------------------------------------------ pages
    _persona_name: str | None = None

    async def _list_page(self) -> list[Widget]:
        assert self.client is not None
        me = await self._load_me()
        data = await self.client.personas()
        lang = self.lang = data.get("language", self.lang)
        out: list[Widget] = [
            Horizontal(
                Static(Text.assemble(("♥ ", "bold red"), ("Vitte", "bold")), classes="wa-brand"),
                ActionButton(
                    "🔖 " + PAGE.t(lang, "memory"), ("go", "#/memory"), compact=True, id="wa-to-memory"
                ),
                ActionButton(
                    "⭐ " + tr(lang, "wa_premium"), ("go", "#/premium"), compact=True, id="wa-to-premium"
                ),
                ActionButton(
                    "⚙ " + tr(lang, "wa_settings"), ("go", "#/settings"), compact=True, id="wa-to-settings"
                ),
                classes="wa-head",
            ),
            Static(Text(tr(lang, "wa_list_title"), style="bold"), classes="wa-h1"),
            Static(Text(tr(lang, "wa_list_lead"), style="dim"), classes="wa-lead"),
        ]
        if self.auth_error:
            out.append(Static(Text(self.auth_error), classes="wa-notice -error"))
        personas = data.get("personas") or []
        if me and me.get("dialog_id") and me.get("persona_id"):
            now = Text()
            now.append(tr(lang, "wa_now") + "\n", style="dim")
            now.append(str(me.get("persona_name") or ""), style="bold")
            if me.get("story_title"):
                now.append(f" · {me['story_title']}")
            out.append(Card(now, ("go", f"#/persona/{me['persona_id']}"), classes="wa-now", id="wa-now"))
        for p in personas:
            t = Text()
            t.append("● ", style=_color(p.get("colors")))
            t.append(str(p.get("name", "")), style="bold")
            t.append(f"  · {stories_label(lang, int(p.get('story_count', 0)))}", style="dim")
            if p.get("current"):
                t.append(f"  ♥ {tr(lang, 'wa_current')}", style="bold green")
            t.append("\n" + str(p.get("tagline", "")))
            tags = p.get("tags") or []
            if tags:
                t.append("\n" + "  ".join(f"#{tag}" for tag in tags[:4]), style="dim")
            out.append(
                Card(
                    t,
                    ("go", f"#/persona/{p.get('id')}"),
                    classes="wa-persona" + (" -current" if p.get("current") else ""),
                    id=f"wa-persona-{p.get('id')}",
                )
            )
        return out

    async def _persona_page(self, persona_id: str) -> list[Widget]:
        assert self.client is not None
        if self.me is None:
            await self._load_me()
        p = await self.client.persona(persona_id)
        lang = self.lang = p.get("language", self.lang)
        self._persona_name = str(p.get("name", ""))
        hero = Text()
        hero.append("● ", style=_color(p.get("colors")))
        hero.append(str(p.get("name", "")), style="bold")
        if p.get("current"):
            hero.append(f"   ♥ {tr(lang, 'wa_current')}", style="bold green")
        hero.append("\n" + str(p.get("tagline", "")), style="italic")
        tags = p.get("tags") or []
        if tags:
            hero.append("\n" + "  ".join(f"#{tag}" for tag in tags[:6]), style="dim")
        out: list[Widget] = [Static(inert_text(hero), classes="wa-hero")]
        out.append(Static(Text(tr(lang, "wa_about"), style="bold"), classes="wa-section"))
        out.append(Static(inert_text(str(p.get("description", ""))), classes="wa-prose"))
        out.append(Static(Text(tr(lang, "wa_stories"), style="bold"), classes="wa-section"))
        for i, s in enumerate(p.get("stories") or [], 1):
            current = bool(s.get("current"))
            head = Text()
            head.append(f"{i}  ", style=f"bold {_color(p.get('colors'), 1)}")
            head.append(str(s.get("title", "")), style="bold")
            if current:
                head.append(f"   {tr(lang, 'wa_current_story')}", style="green")
            head.append("\n" + str(s.get("premise", "")))
            label = ("↻ " + tr(lang, "wa_refresh")) if current else tr(lang, "wa_start")
            out.append(
                Vertical(
                    Static(inert_text(head), classes="wa-story-text"),
                    ActionButton(
                        label,
                        ("start", p, s),
                        variant="default" if current else "primary",
                        id=f"wa-start-{s.get('id', i)}".replace(".", "-"),
                        classes="wa-start",
                    ),
                    classes="wa-story" + (" -current" if current else ""),
                )
            )
        return out

    async def _settings_page(self) -> list[Widget]:
        me = await self._load_me()
        lang = self.lang
        if me is None:
            return [Static(Text(self.auth_error or "—"), classes="wa-notice")]
        out: list[Widget] = [Static(Text(tr(lang, "wa_language"), style="bold"), classes="wa-section")]
        out.append(
            Horizontal(
                *(
                    ActionButton(
                        ("✓ " if me.get("language") == code else "") + tr(lang, f"lang_{code}"),
                        ("setting", "language", code),
                        compact=True,
                        variant="primary" if me.get("language") == code else "default",
                        id=f"wa-lang-{code}",
                    )
                    for code in LANGUAGES
                ),
                classes="wa-segmented",
            )
        )
        out.append(Static(Text(tr(lang, "wa_style"), style="bold"), classes="wa-section"))
        for style in STYLES:
            on_ = me.get("style") == style
            t = Text()
            t.append(("● " if on_ else "○ "), style="bold green" if on_ else "dim")
            t.append(tr(lang, f"wa_style_{style}"), style="bold")
            t.append("\n  " + tr(lang, f"wa_style_{style}_hint"), style="dim")
            out.append(
                Card(
                    t,
                    ("setting", "style", style),
                    classes="wa-row" + (" -on" if on_ else ""),
                    id=f"wa-style-{style}",
                )
            )
        out.append(Static(Text(tr(lang, "wa_data"), style="bold"), classes="wa-section"))
        t = Text()
        t.append("⬇ " + tr(lang, "wa_export"), style="bold")
        t.append("\n  " + tr(lang, "wa_export_hint"), style="dim")
        out.append(Card(t, ("export",), classes="wa-row", id="wa-export"))
        t = Text()
        t.append("🗑 " + tr(lang, "wa_delete"), style="bold red")
        t.append("\n  " + tr(lang, "wa_delete_hint"), style="dim")
        out.append(Card(t, ("delete",), classes="wa-row -danger", id="wa-delete"))
        return out

    async def _memory_page(self) -> list[Widget]:
        """What the persona remembers (the page's texts, app.js's memory page): add a fact, a
        fact's Enter forgets it, the summary read-only."""
        assert self.client is not None
        me = await self._load_me()
        lang = self.lang
        if me is None:
            return [Static(Text(self.auth_error or PAGE.t(lang, "memoryNeedTelegram")), classes="wa-notice")]
        mem = await self.client.memory()
        if not mem.get("dialog_id"):
            return [Static(Text(PAGE.t(lang, "memoryNoDialog")), classes="wa-notice", id="wa-memory-none")]
        intro = PAGE.t(lang, "memoryIntro", persona=mem.get("persona") or "")
        out: list[Widget] = [
            Static(inert_text(intro, style="bold"), classes="wa-section"),
            Input(placeholder=PAGE.t(lang, "memoryAddPlaceholder"), max_length=320, id="wa-fact-new"),
        ]
        facts = mem.get("facts") or []
        if not facts:
            out.append(Static(Text(PAGE.t(lang, "memoryEmpty"), style="dim"), classes="wa-notice"))
        for i, fact in enumerate(facts, 1):
            t = inert_text(f"{i}. {fact.get('text', '')}")
            t.append("\n  ⏎ " + PAGE.t(lang, "memoryForget"), style="dim")
            action = ("forget", int(fact.get("id", 0)))
            out.append(Card(t, action, classes="wa-row", id=f"wa-fact-{fact.get('id')}"))
        out.append(Static(Text(PAGE.t(lang, "memorySummary"), style="bold"), classes="wa-section"))
        summary = str(mem.get("summary") or "") or PAGE.t(lang, "memorySummaryEmpty")
        out.append(Static(inert_text(summary), classes="wa-row", id="wa-summary"))
        return out

    @on(Input.Submitted, "#wa-fact-new")
    def _fact_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        if event.value.strip():
            self.add_fact(event.value)

    @work(exclusive=True, group="wa-action")
    async def add_fact(self, text: str) -> None:
        assert self.client is not None
        try:
            await self.client.add_fact(text)
        except WebAppError as exc:
            self.notify(exc.message, severity="error")
            return
        self.notify(PAGE.t(self.lang, "memorySaved"))
        self.render_route()

    @work(exclusive=True, group="wa-action")
    async def forget_fact(self, fact_id: int) -> None:
        assert self.client is not None
        try:
            await self.client.forget_fact(fact_id)
        except WebAppError as exc:
            self.notify(exc.message, severity="error")
            return
        self.notify(PAGE.t(self.lang, "memoryForgotten"))
        self.render_route()

    async def _premium_page(self) -> list[Widget]:
        assert self.client is not None
        me = await self._load_me()
        data = await self.client.plans()
        lang = self.lang = data.get("language", self.lang)
        out: list[Widget] = [
            Static(
                Text.assemble(
                    ("★ ", "bold yellow"),
                    (tr(lang, "wa_premium_title"), "bold"),
                    ("\n" + tr(lang, "wa_premium_lead"), "dim"),
                ),
                classes="wa-hero",
            )
        ]
        if me:
            premium = me.get("plan") == "premium"
            t = Text()
            t.append(tr(lang, "wa_your_plan") + ": ", style="dim")
            t.append(str(me.get("plan_title") or ""), style="bold")
            hint = (
                tr(lang, "wa_active_until", date=_date(me.get("premium_until"), lang))
                if premium and me.get("premium_until")
                else tr(lang, "wa_free_forever")
            )
            t.append("\n" + hint, style="dim")
            out.append(Static(t, classes="wa-plan-status"))
        current = (me or {}).get("plan") or data.get("current_plan")
        for plan in data.get("plans") or []:
            paid = int(plan.get("price_stars", 0)) > 0
            t = Text()
            t.append(str(plan.get("title", "")), style="bold")
            price = (
                tr(lang, "wa_price", price=plan.get("price_stars"), days=plan.get("period_days"))
                if paid
                else tr(lang, "wa_free")
            )
            t.append(f"   {price}", style="bold yellow" if paid else "dim")
            if current == plan.get("id"):
                t.append(f"\n{tr(lang, 'wa_you_have')}", style="green")
            for perk in plan.get("perks") or []:
                t.append(f"\n ✓ {perk}")
            children: list[Widget] = [Static(t)]
            if paid and not (me and me.get("plan") == plan.get("id")):
                children.append(
                    ActionButton(
                        tr(lang, "wa_buy", price=plan.get("price_stars")),
                        ("buy", plan),
                        variant="warning",
                        id=f"wa-buy-{plan.get('id')}",
                    )
                )
            out.append(Vertical(*children, classes="wa-plan" + (" -premium" if paid else "")))
        return out

    # ------------------------------------------------------------------ actions
    @on(Card.Pressed)
    def _card(self, event: Card.Pressed) -> None:
        event.stop()
        self._act(event.card.payload)

    @on(Button.Pressed)
    def _button(self, event: Button.Pressed) -> None:
        if isinstance(event.button, ActionButton):
            event.stop()
            self._act(event.button.payload)

    def _act(self, action: tuple[Any, ...]) -> None:
        kind = action[0]
        if kind == "go":
            self.navigate(action[1])
        elif kind == "start":
            self.start_story(action[1], action[2])
        elif kind == "setting":
            self.save_setting(action[1], action[2])
        elif kind == "delete":
            self.delete_data()
        elif kind == "export":
            self.export_data()
        elif kind == "forget":
            self.forget_fact(action[1])
        elif kind == "buy":
            self.buy(action[1])

    async def _confirm(self, question: str) -> bool:
        answer: bool | None = await self.app.push_screen_wait(
            ConfirmScreen(question, tr(self.lang, "wa_yes"), tr(self.lang, "wa_no"))
        )
        return bool(answer)

    @work(exclusive=True, group="wa-action")
    async def start_story(self, p: dict[str, Any], s: dict[str, Any]) -> None:
        assert self.client is not None
        if self.auth_error:
            self.notify(self.auth_error, severity="error")
            return
        restart = bool(s.get("current"))
        me = self.me or {}
        ask = None
        if restart:
            ask = tr(self.lang, "wa_confirm_restart")
        elif me.get("dialog_id") and (
            me.get("persona_id") != p.get("id") or me.get("story_id") != s.get("id")
        ):
            ask = tr(self.lang, "wa_confirm_switch", name=me.get("persona_name") or "")
        if ask and not await self._confirm(ask):
            return
        if me.get("adult_confirmed") is False and not await self._age_gate():
            return
        for attempt in range(2):
            try:
                await self.client.open_dialog(
                    str(p.get("id")), str(s.get("id")), restart=restart, dialog_id=p.get("dialog_id")
                )
                break
            except WebAppError as exc:
                if exc.code == "age_unconfirmed" and attempt == 0:
                    if await self._age_gate():
                        continue
                    return
                self.notify(exc.message, severity="error")
                if exc.code == "stale_dialog" or exc.status == 404:
                    self.me = None
                    self.render_route()
                return
        self.notify(tr(self.lang, "wa_sent"))
        self.dismiss(None)  # the page closes itself in Telegram: back to the chat

    async def _age_gate(self) -> bool:
        """The 18+ question, answered through the Web App API (POST /api/me/adult)."""
        assert self.client is not None
        try:
            from vitte.bot.texts import t as bot_text

            question = bot_text(self.lang, "age_question")
            yes, no = bot_text(self.lang, "btn_age_yes"), bot_text(self.lang, "btn_age_no")
        except Exception:  # the bot's texts moved: plain words
            question, yes, no = "18+?", "18+", "<18"
        answer = await self.app.push_screen_wait(ConfirmScreen(question, yes, no))
        if answer is None:  # dismissed: no answer given
            return False
        adult = bool(answer)
        try:
            self.me = await self.client.confirm_adult(adult)
        except WebAppError as exc:
            self.notify(exc.message, severity="error")
            return False
        return adult

    @work(exclusive=True, group="wa-action")
    async def save_setting(self, key: str, value: str) -> None:
        assert self.client is not None
        if self.me is not None and self.me.get(key) == value:
            return
        try:
            self.me = await self.client.save_settings(**{key: value})
        except WebAppError as exc:
            self.notify(exc.message, severity="error")
            return
        self.lang = self.me.get("language", self.lang)
        self.notify(tr(self.lang, "wa_saved"))
        self.render_route()

    @work(exclusive=True, group="wa-action")
    async def export_data(self) -> None:
        """The bot sends the data file into the chat (as /mydata does)."""
        assert self.client is not None
        try:
            await self.client.export_me()
        except WebAppError as exc:
            self.notify(exc.message, severity="error")
            return
        self.notify(tr(self.lang, "wa_export_sent"))

    @work(exclusive=True, group="wa-action")
    async def delete_data(self) -> None:
        assert self.client is not None
        if not await self._confirm(tr(self.lang, "wa_confirm_delete")):
            return
        try:
            await self.client.delete_me()
        except WebAppError as exc:
            self.notify(exc.message, severity="error")
            return
        self.me = None
        self.notify(tr(self.lang, "wa_deleted"))
        self.render_route()

    @work(exclusive=True, group="wa-action")
    async def buy(self, plan: dict[str, Any]) -> None:
        assert self.client is not None
        if self.auth_error:
            self.notify(self.auth_error, severity="error")
            return
        try:
            res = await self.client.invoice(str(plan.get("id")))
        except WebAppError as exc:
            if exc.status == 501:
                self.notify(tr(self.lang, "wa_coming_soon"))
            else:
                self.notify(exc.message, severity="error")
            return
        link = (res or {}).get("invoice_link") or (res or {}).get("link")
        if not link:
            self.notify("no invoice link in the answer", severity="error")
            return
        paid = await self.pay_link(link) if self.pay_link is not None else False
        if paid:
            self.notify(tr(self.lang, "wa_paid"))
            self.me = None
            self.render_route()
