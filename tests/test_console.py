"""`vitte console`: the Textual console driven end to end with Pilot, and its snapshots.

The console runs the real core on a fresh SQLite file (each test's working directory is its
own tmp_path), the real Dispatcher through the local Bot API session, and the real Web App
on loopback. Times are fixed ("12:00"), the player is fixed (1001, Аня), the writer is the
deterministic demo writer.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shutil
from collections.abc import AsyncGenerator, Callable
from pathlib import Path
from typing import Any

import pytest
from textual.pilot import Pilot
from textual.widgets import Static

from tui.app import VitteConsole, console_commands
from tui.backend import WebAppClient, sign_init_data, webapp_route
from tui.chat import MAX_MOUNTED, PAGE, ChatHeader, InlineButton, MessageRow
from tui.screens import AlertScreen, ConfirmScreen, DocumentScreen, HelpScreen
from tui.webapp import Card, WebAppScreen
from vitte.bot.runtime import Runtime
from vitte.config import load_settings
from vitte.llm import DemoWriter
from vitte.llm.base import LLMRequest

USER_ID = 1001
SQLITE = "sqlite+aiosqlite:///vitte.sqlite3"  # relative: the test's own tmp_path
PERSONA, STORY = "mila", "mila.rainy-closing"


@pytest.fixture(scope="session")
def _template_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A migrated and seeded SQLite file, copied for every test but the first-run one."""
    from vitte.core import Core

    path = tmp_path_factory.mktemp("console-template") / "vitte.sqlite3"

    async def build() -> None:
        core = await Core.open(load_settings(database_url=f"sqlite+aiosqlite:///{path}"), seed_if_empty=True)
        await core.close()

    asyncio.run(build())
    return path


@pytest.fixture(autouse=True)
def _database(request: pytest.FixtureRequest, _template_db: Path) -> None:
    if "first_run" not in request.node.name:
        shutil.copyfile(_template_db, "vitte.sqlite3")


def fixed_clock(ts: float) -> str:
    return "12:00"


def fixed_log_clock(ts: float) -> str:
    return "12:00:00"


class GatedWriter(DemoWriter):
    """The demo writer that stops after `words` words until `gate` is set (or `timeout`)."""

    def __init__(self, words: int = 5, timeout: float = 5.0, delay: float = 0.0) -> None:
        super().__init__(delay=delay)
        self.words = words
        self.timeout = timeout
        self.gate = asyncio.Event()
        self.reached = asyncio.Event()

    async def stream(self, request: LLMRequest) -> AsyncGenerator[str, None]:
        words = re.findall(r"\s*\S+", self.compose(request))
        for i, word in enumerate(words):
            if i == self.words:
                self.reached.set()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.gate.wait(), self.timeout)
            elif i and self.delay:
                await asyncio.sleep(self.delay)
            yield word


def make_app(
    *, llm: Any = None, theme: str = "dark", update_id_start: int | None = 1, **settings: Any
) -> VitteConsole:
    settings.setdefault("database_url", SQLITE)
    return VitteConsole(
        load_settings(**settings),
        user_id=USER_ID,
        first_name="Аня",
        language="ru",
        llm=llm or DemoWriter(delay=0.01),
        runtime=Runtime(draft_interval=0.02),
        clock=fixed_clock,
        log_clock=fixed_log_clock,
        theme=theme,
        update_id_start=update_id_start,
    )


async def until(
    pilot: Pilot[Any],
    condition: Callable[[], Any],
    timeout: float = 10.0,  # noqa: ASYNC109
    what: str = "",
) -> Any:
    """Poll `condition` (plain sleeps let the app, the bot and the Web App run), then settle."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        value = condition()
        if value:
            await pilot.pause()
            return value
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for {what or condition}")
        await asyncio.sleep(0.01)


async def started(pilot: Pilot[Any]) -> VitteConsole:
    app = pilot.app
    assert isinstance(app, VitteConsole)
    await asyncio.wait_for(app.ready.wait(), 15)
    await pilot.pause()
    return app


def bot_texts(app: VitteConsole) -> list[str]:
    return [m.text or "" for m in app.player.chat.bot_messages()]


def bubble_texts(app: VitteConsole) -> list[str]:
    return [str(row.bubble.render()) for row in app.chat_view.rows.values()]


def button_labels(app: VitteConsole) -> list[str]:
    return [b.spec.label for b in app.chat_view.active_buttons()]


def status(app: VitteConsole) -> str:
    return str(app.query_one(ChatHeader).status_label.render())


def peer(app: VitteConsole) -> str:
    return str(app.query_one(ChatHeader).name_label.render())


async def send(pilot: Pilot[Any], text: str) -> None:
    app = pilot.app
    assert isinstance(app, VitteConsole)
    if app.focused is not app.composer:
        app.composer.focus()
        await pilot.pause()
    app.composer.value = text
    await pilot.press("enter")
    await until(pilot, lambda: app.composer.value == "", what="sent")


async def wait_idle(pilot: Pilot[Any]) -> None:
    """Until every player action the console started has finished."""
    app = pilot.app
    assert isinstance(app, VitteConsole)
    await until(pilot, lambda: not app.busy, what="idle")


async def choose_in_webapp(pilot: Pilot[Any], persona: str = PERSONA, story_index: int = 0) -> None:
    """/start → 💕 Начать общение → Выбрать персонажа (Web App) → persona → story → 18+ → chat."""
    app = await started(pilot)
    await send(pilot, "/start")
    await until(pilot, lambda: "💕 Начать общение" in button_labels(app), what="greeting")
    await pilot.press("alt+1")
    await until(pilot, lambda: button_labels(app) == ["Выбрать персонажа"], what="web app button")
    await pilot.press("alt+1")
    screen = await until(pilot, lambda: isinstance(app.screen, WebAppScreen) and app.screen, what="web app")
    await until(pilot, lambda: screen.shown == "#/", what="the personas")
    card = screen.query_one(f"#wa-persona-{persona}", Card)
    card.focus()
    await pilot.pause()
    await pilot.press("enter")
    await until(pilot, lambda: screen.shown == f"#/persona/{persona}", what="the persona")
    starts = list(screen.query(".wa-start"))
    starts[story_index].press()
    opened = len(app.player.chat.bot_messages())
    confirm = await until(
        pilot,
        lambda: isinstance(app.screen, ConfirmScreen) or not isinstance(app.screen, WebAppScreen),
        what="age gate",
    )
    if isinstance(app.screen, ConfirmScreen):  # the 18+ question
        assert confirm
        await pilot.press("y")
    await until(
        pilot, lambda: not isinstance(app.screen, (WebAppScreen, ConfirmScreen)), what="back in the chat"
    )
    await until(pilot, lambda: len(app.player.chat.bot_messages()) > opened, what="the opening")
    await until(pilot, lambda: peer(app) != "Vitte", what="persona in the header")
    await pilot.pause()


# ====================================================================== Pilot


async def test_first_run_seeds_a_fresh_sqlite_file_and_starts_empty() -> None:
    assert not os.path.exists("vitte.sqlite3")  # noqa: ASYNC240
    app = make_app()
    async with app.run_test(size=(80, 24)) as pilot:
        await started(pilot)
        assert os.path.exists("vitte.sqlite3")  # noqa: ASYNC240
        personas = await app.backend.core.catalog.personas()
        assert [p.id for p in personas] and PERSONA in [p.id for p in personas]
        # an empty chat, as Telegram shows a new bot: a START button
        assert app.chat_view.rows == {}
        assert button_labels(app) == ["СТАРТ"]
        assert peer(app) == "Vitte" and status(app) == "в сети"
        await pilot.press("alt+1")  # START sends /start
        await until(pilot, lambda: bot_texts(app), what="greeting")
        await wait_idle(pilot)
        assert bot_texts(app)[0].startswith("Привет, Аня! 💕")
        assert [m.text for m in app.player.chat.user_messages()] == ["/start"]
        assert len(app.chat_view.rows) == 2
        assert button_labels(app) == ["💕 Начать общение"]
        assert (await app.backend.core.players.get(USER_ID)).first_name == "Аня"


async def test_choose_a_persona_through_the_web_app_then_chat_streams() -> None:
    writer = GatedWriter(words=8, delay=0.03)  # the demo writer, word by word, held after 8 words
    app = make_app(llm=writer)
    async with app.run_test(size=(100, 30)) as pilot:
        await choose_in_webapp(pilot)
        core = app.backend.core
        view = await core.dialogs.current(USER_ID)
        assert view is not None and view.persona_id == PERSONA and view.story_id == STORY
        assert peer(app) == "Мила"
        opening = app.player.chat.last_bot_message()
        assert opening is not None and "Мила" in (opening.text or "")
        assert (opening.text or "")[:30] in bubble_texts(app)[-1]

        await send(pilot, "Расскажи, что ты сегодня рисовала и почему именно это?")
        # the reply streams in: the draft bubble grows, the header says "печатает…"
        await asyncio.wait_for(writer.reached.wait(), 10)
        draft = await until(
            pilot,
            lambda: (d := app.player.chat.current_draft) and len(d.text.split()) >= 8 and d,
            what="the draft with 8 words",
        )
        await until(
            pilot, lambda: draft.text[:25] in str(app.chat_view._draft.bubble.render()), what="bubble"
        )
        assert app.chat_view._draft.display
        assert status(app) == "печатает…"
        assert app.check_action("stop", ()) is True  # Esc would stop it
        # several drafts, each longer: live streaming
        await until(
            pilot,
            lambda: len({c.params.get("text") for c in app.backend.session.calls_of("sendMessageDraft")} - {"", None})
            >= 2,
            what="a second, longer draft",
        )
        writer.gate.set()
        await wait_idle(pilot)
        await until(pilot, lambda: status(app) == "в сети", what="online again")
        assert not app.chat_view._draft.display
        final = app.player.last_bot_text() or ""
        assert final.startswith(draft.text.strip()) and len(final) > len(draft.text)
        assert final[:20] in bubble_texts(app)[-1]
        assert button_labels(app) == ["🔄"]
        stored = await core.dialogs.messages(view.id, 10)
        assert [m.role for m in stored][-2:] == ["user", "assistant"]
        assert stored[-1].text == final


async def test_stop_key_stops_the_draft() -> None:
    writer = GatedWriter(words=4)
    app = make_app(llm=writer)
    async with app.run_test(size=(80, 24)) as pilot:
        await started(pilot)
        core = app.backend.core
        await core.players.seen(USER_ID, first_name="Аня")
        await core.players.confirm_adult(USER_ID, language_code="ru")
        await core.dialogs.choose(USER_ID, PERSONA, STORY)
        await send(pilot, "Привет! Как прошёл твой день, что нового в кофейне?")
        await asyncio.wait_for(writer.reached.wait(), 10)
        await until(pilot, lambda: app.check_action("stop", ()) is True, what="a stoppable draft")
        assert status(app) == "печатает…"
        await pilot.press("escape")
        await until(pilot, lambda: app.player.chat.stopped_draft_ids, what="stop pressed")
        writer.gate.set()
        await wait_idle(pilot)
        await until(pilot, lambda: status(app) == "в сети", what="online")
        assert any(u.stopped_message_generation for u in app.player.updates)
        view = await core.dialogs.current(USER_ID)
        stored = await core.dialogs.messages(view.id, 5)
        assert stored[-1].role == "assistant" and stored[-1].status == "stopped"
        assert app.player.last_bot_text() == stored[-1].text
        assert len(stored[-1].text.split()) <= writer.words + 1  # cut where it was stopped


async def test_start_chatting_then_start_over_edits_in_place() -> None:
    app = make_app()
    async with app.run_test(size=(80, 24)) as pilot:
        await choose_in_webapp(pilot)
        core = app.backend.core
        first = await core.dialogs.current(USER_ID)
        # "💕 Начать общение" under the greeting (an older message): focus it, Enter
        entry = next(b for b in app.chat_view.query(InlineButton) if b.spec.label == "💕 Начать общение")
        entry.focus()
        await pilot.pause()
        await pilot.press("enter")
        await until(
            pilot, lambda: button_labels(app) == ["Продолжить общение", "Начать заново"], what="continue?"
        )
        asked = app.player.last_bot_message()
        assert asked is not None and asked.text == "Продолжить с Мила?"
        row = app.chat_view.rows[asked.message_id]
        await pilot.press("alt+2")  # Начать заново
        await until(pilot, lambda: asked.edited, what="the question edited in place")
        await wait_idle(pilot)
        await until(pilot, lambda: "память очищена" in str(row.bubble.render()), what="bubble updated")
        assert row.keyboard is None and "изменено" in str(row.bubble.render())
        second = await core.dialogs.current(USER_ID)
        assert second is not None and second.id != first.id and second.persona_id == PERSONA
        assert (await core.dialogs.dialog(first.id)).status == "ended"
        assert app.player.last_bot_message().message_id > asked.message_id  # the new opening


async def test_settings_from_the_chat_and_from_the_web_app() -> None:
    app = make_app()
    async with app.run_test(size=(80, 24)) as pilot:
        await started(pilot)
        await send(pilot, "/settings")
        await until(pilot, lambda: any("English" in b for b in button_labels(app)), what="settings")
        message = app.player.last_bot_message()
        labels = button_labels(app)
        await pilot.press(f"alt+{labels.index('English') + 1}")
        await until(pilot, lambda: "Language" in (message.text or ""), what="settings in English")
        await wait_idle(pilot)
        assert (await app.backend.core.players.get(USER_ID)).language == "en"
        await until(pilot, lambda: status(app) == "online", what="chrome in English")
        assert "Language" in str(app.chat_view.rows[message.message_id].bubble.render())
        # the Web App's settings page, through its API
        app.open_webapp("#/settings")
        screen = await until(
            pilot, lambda: isinstance(app.screen, WebAppScreen) and app.screen, what="web app"
        )
        await until(pilot, lambda: screen.shown == "#/settings", what="settings page")
        long_row = screen.query_one("#wa-style-long")
        long_row.focus()
        await pilot.pause()
        await pilot.press("enter")
        await until(
            pilot,
            lambda: app.backend.core is not None and screen.me and screen.me.get("style") == "long",
            what="saved",
        )
        assert (await app.backend.core.players.get(USER_ID)).style == "long"
        # "Download my data": the bot sends the file into the chat
        screen.query_one("#wa-export").focus()
        await pilot.pause()
        await pilot.press("enter")
        await until(
            pilot,
            lambda: (m := app.player.chat.last_bot_message()) and m.kind == "document",
            what="the data file in the chat",
        )
        await pilot.press("escape")
        await until(pilot, lambda: not isinstance(app.screen, WebAppScreen), what="closed")


async def test_quota_then_pay_in_the_chat_and_in_the_web_app() -> None:
    app = make_app(free_daily_replies=1)
    async with app.run_test(size=(80, 24)) as pilot:
        await choose_in_webapp(pilot)
        billing = app.backend.core.billing
        await send(pilot, "Привет!")
        await wait_idle(pilot)
        await send(pilot, "Ещё одно сообщение")
        await wait_idle(pilot)
        assert (await billing.entitlement(USER_ID)).left_today == 0
        refusal = app.player.last_bot_text() or ""
        assert refusal[:20] in bubble_texts(app)[-1]
        kinds = [b.spec.kind for b in app.chat_view.active_buttons()]
        assert "invoice_link" in kinds and "callback" in kinds  # premium (a link) and the reply pack
        # the reply pack: its button makes the bot send an invoice; Pay runs the Stars flow
        await pilot.press(f"alt+{kinds.index('callback') + 1}")
        invoice = await until(
            pilot, lambda: (m := app.player.last_bot_message()) and m.kind == "invoice" and m, what="invoice"
        )
        await until(pilot, lambda: invoice.message_id in app.chat_view.rows, what="invoice card")
        assert "🧾" in str(app.chat_view.rows[invoice.message_id].bubble.render())
        await pilot.press("alt+1")  # Pay
        await until(
            pilot, lambda: app.player.chat.user_messages()[-1].kind == "successful_payment", what="paid"
        )
        await wait_idle(pilot)
        answers = list(app.backend.session.pre_checkout_answers.values())
        assert answers and all(a["ok"] for a in answers)
        assert (await billing.entitlement(USER_ID)).extra_replies > 0
        await send(pilot, "Теперь можно?")
        await wait_idle(pilot)
        assert (await core_messages(app))[-1].role == "assistant"
        # premium through the Web App's paywall: an invoice link, paid locally
        app.open_webapp("#/premium")
        screen = await until(
            pilot, lambda: isinstance(app.screen, WebAppScreen) and app.screen, what="web app"
        )
        await until(pilot, lambda: screen.shown == "#/premium", what="premium page")
        screen.query_one("#wa-buy-premium").press()
        await until(pilot, lambda: app.backend.session.invoice_links, what="an invoice link")
        await until(
            pilot,
            lambda: not app.busy and screen.shown == "#/premium" and (screen.me or {}).get("is_premium"),
            what="premium",
        )
        assert (await billing.entitlement(USER_ID)).is_premium
        assert app.player.chat.user_messages()[-1].kind == "successful_payment"


async def core_messages(app: VitteConsole) -> list[Any]:
    view = await app.backend.core.dialogs.current(USER_ID)
    assert view is not None
    return await app.backend.core.dialogs.messages(view.id, 10)


async def test_document_card_from_mydata() -> None:
    app = make_app()
    async with app.run_test(size=(80, 24)) as pilot:
        await started(pilot)
        await send(pilot, "/start")
        await wait_idle(pilot)
        await send(pilot, "/mydata")
        doc = await until(
            pilot,
            lambda: (m := app.player.chat.last_bot_message()) and m.kind == "document" and m,
            what="document",
        )
        await until(pilot, lambda: doc.message_id in app.chat_view.rows, what="file card")
        card = str(app.chat_view.rows[doc.message_id].bubble.render())
        name = doc.file.filename
        assert f"📄 {name}" in card
        assert [b.spec.kind for b in app.chat_view.active_buttons()] == ["file"]
        await pilot.press("alt+1")  # Открыть файл
        await until(pilot, lambda: isinstance(app.screen, DocumentScreen), what="preview")
        assert str(USER_ID) in str(app.screen.query_one("#doc-preview", Static).render())
        await pilot.press("s")
        await pilot.pause()
        with open(name, "rb") as saved:  # noqa: ASYNC230 - a small file, in a test
            assert saved.read() == doc.file.data
        await pilot.press("escape")
        await until(pilot, lambda: not isinstance(app.screen, DocumentScreen), what="closed")


async def test_callback_alert_and_toast() -> None:
    app = make_app()
    async with app.run_test(size=(80, 24)) as pilot:
        await started(pilot)
        await send(pilot, "/settings")
        await until(pilot, lambda: button_labels(app), what="settings")
        await wait_idle(pilot)
        labels = button_labels(app)
        await pilot.press(f"alt+{labels.index('Русский') + 1 if 'Русский' in labels else 1}")
        await wait_idle(pilot)
        await pilot.pause(0.1)
        answers = [c for c in app.backend.session.calls_of("answerCallbackQuery") if c.params.get("text")]
        if answers:
            texts = [n.message for n in app._notifications]
            assert answers[-1].params["text"] in texts or isinstance(app.screen, AlertScreen)


async def test_operator_panel_switch_reset_and_log() -> None:
    app = make_app()
    async with app.run_test(size=(120, 40)) as pilot:
        await choose_in_webapp(pilot)
        await send(pilot, "Привет!")
        await wait_idle(pilot)
        await pilot.press("f2")
        panel = app.operator
        assert panel.display
        dialog = panel.query_one("#op-dialog", Static)
        await until(pilot, lambda: "Мила" in str(dialog.render()), what="dialog in the panel")
        messages = str(panel.query_one("#op-messages", Static).render())
        assert "player: Привет!" in messages and "persona:" in messages
        # reset (confirm) → the engine has no active dialog
        panel.query_one("#op-reset").press()
        await until(pilot, lambda: isinstance(app.screen, ConfirmScreen), what="confirm")
        await pilot.press("y")
        await until(pilot, lambda: "ended" in str(dialog.render()), what="reset shown")
        assert await app.backend.core.dialogs.current(USER_ID) is None
        await until(pilot, lambda: peer(app) == "Vitte", what="no persona in the header")
        # switch to a new player: their own, empty chat
        panel.query_one("#op-id").value = "2002"
        panel.query_one("#op-name").value = "Bob"
        panel.query_one("#op-lang").value = "en"
        panel.query_one("#op-switch").press()
        await until(pilot, lambda: app.backend.profile.user_id == 2002, what="switched")
        await pilot.pause()
        assert app.chat_view.rows == {} and button_labels(app) == ["START"]
        assert status(app) == "online"
        await pilot.press("alt+1")
        await until(pilot, lambda: bot_texts(app), what="Bob's greeting")
        assert bot_texts(app)[0].startswith("Hi, Bob!")
        # and back: the first player's chat is still there
        await app.switch_player(USER_ID)
        assert len(app.chat_view.rows) > 3 and app.backend.profile.first_name == "Аня"
        # the Bot API log
        await pilot.press("f3")
        assert app.log_pane.display
        lines = [str(line.text) for line in app.log_pane.lines]
        assert any("sendMessage" in line and "→1001" in line for line in lines)
        assert any("answerCallbackQuery" in line for line in lines)


async def test_on_postgres_and_redis_as_configured(
    pg_url: str, redis_url: str, redis_prefix: str, redis_cleanup: None
) -> None:
    """The operator's case: the configured PostgreSQL + Redis; a second console run on the same
    Redis is not mistaken for duplicate updates."""
    for run in range(2):
        app = make_app(
            database_url=pg_url, redis_url=redis_url, redis_prefix=redis_prefix, update_id_start=None
        )
        async with app.run_test(size=(80, 24)) as pilot:
            await started(pilot)
            assert not app.backend.settings.is_sqlite and app.backend.settings.redis_url == redis_url
            if run == 0:
                await choose_in_webapp(pilot)
                await send(pilot, "Привет!")
                await wait_idle(pilot)
                assert len(await core_messages(app)) == 3  # opening, the player's, the reply
            else:  # a new run: the chat shows the stored dialog; the same player, the same dialog
                history = [str(w.render()) for w in app.chat_view.query(".history .bubble")]
                assert len(history) == 3 and history[1].startswith("Привет!")
                await send(pilot, "Ещё раз привет!")
                await wait_idle(pilot)
                assert peer(app) == "Мила"
                messages = await core_messages(app)
                assert [m.role for m in messages][-2:] == ["user", "assistant"] and len(messages) == 5


async def test_thousands_of_messages_stay_virtualised() -> None:
    app = make_app()
    async with app.run_test(size=(80, 24)) as pilot:
        await started(pilot)
        bot = app.backend.bot
        total = 1200
        for i in range(total):
            await bot.send_message(USER_ID, f"message {i}")
        view = app.chat_view
        for _ in range(500):  # plain sleeps: a Pilot pause visits every mounted widget
            if view._high >= total:
                break
            await asyncio.sleep(0.02)
        await pilot.pause()
        assert len(view.rows) == MAX_MOUNTED
        assert len(view.query(MessageRow)) == MAX_MOUNTED
        assert bubble_texts(app)[-1].startswith(f"message {total - 1} ")
        first = next(iter(view.rows))
        for k in range(1, 5):  # Home (or scrolling to the top) mounts a page of older messages
            await pilot.press("ctrl+home")
            await until(pilot, lambda k=k: next(iter(view.rows)) == first - k * PAGE, what=f"page {k}")
            await until(pilot, lambda: not view._loading, what="settled")
        assert len(view.rows) == 2 * MAX_MOUNTED
        assert next(iter(view.rows)) == first - 4 * PAGE
        assert not view.follow  # the newest were unmounted while reading history
        await bot.send_message(USER_ID, "the newest")  # not mounted while reading history
        await pilot.pause()
        assert not bubble_texts(app)[-1].startswith("the newest")
        await pilot.press("ctrl+end")
        await pilot.pause()
        assert view.follow and len(view.rows) == MAX_MOUNTED
        assert bubble_texts(app)[-1].startswith("the newest")
        await bot.send_message(USER_ID, "one more")
        await until(pilot, lambda: bubble_texts(app)[-1].startswith("one more"), what="appended")
        assert len(view.rows) == MAX_MOUNTED


async def test_keys_help_theme_and_palette() -> None:
    app = make_app()
    async with app.run_test(size=(80, 24)) as pilot:
        await started(pilot)
        await pilot.press("f1")
        assert isinstance(app.screen, HelpScreen)
        await pilot.press("escape")
        assert not isinstance(app.screen, HelpScreen)
        assert app.theme == "vitte-dark"
        await pilot.press("ctrl+t")
        assert app.theme == "vitte-light"
        await pilot.press("ctrl+t")
        assert app.theme == "vitte-dark"
        titles = [c[0] for c in console_commands(app)]
        for expected in (
            "Send /start",
            "Send /chat",
            "Send /settings",
            "Send /help",
            "Open the Web App",
            "Stop the reply",
            "Toggle the operator panel",
            "Toggle the Bot API log",
            "Reset the dialog",
            "Toggle light/dark theme",
            "Help",
            "Press: СТАРТ",
        ):
            assert expected in titles
        # the palette runs them
        await pilot.press("ctrl+p")
        await pilot.pause()
        await pilot.press(*"Send /help")
        await pilot.pause(0.3)
        await pilot.press("enter")
        await until(pilot, lambda: bot_texts(app), what="help text")
        await wait_idle(pilot)
        assert "/settings" in bot_texts(app)[-1]
        # F4 opens the Web App; Esc closes it
        await pilot.press("f4")
        await until(pilot, lambda: isinstance(app.screen, WebAppScreen), what="web app")
        await pilot.press("escape")
        await until(pilot, lambda: not isinstance(app.screen, WebAppScreen), what="closed")


async def test_web_app_rejects_init_data_for_another_bot() -> None:
    app = make_app()
    async with app.run_test(size=(80, 24)) as pilot:
        await started(pilot)
        assert app.backend.web is not None
        forged = WebAppClient(
            app.backend.webapp.url,
            lambda: sign_init_data(
                {"id": USER_ID, "first_name": "Аня"}, "987654321:ZZHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw"
            ),
        )
        try:
            with pytest.raises(Exception) as err:
                await forged.me()
            assert getattr(err.value, "status", None) == 401
            me = await app.backend.web.me()
            assert me["id"] == USER_ID
        finally:
            await forged.close()


def test_web_app_routes_from_button_urls() -> None:
    assert webapp_route("https://vitte.local/webapp") == "#/"
    assert webapp_route("https://app.example/#/persona/mila") == "#/persona/mila"
    assert webapp_route("https://app.example/#/settings?x=1") == "#/settings"
    assert webapp_route(None) == "#/"


def test_cli_console_rejects_bad_options() -> None:
    import typer
    from typer.testing import CliRunner

    from cli.console import console

    app = typer.Typer()
    app.command()(console)
    result = CliRunner().invoke(app, ["--lang", "de"])
    assert result.exit_code == 2 and "--lang" in result.output


def test_inline_button_kinds() -> None:
    from aiogram.types import InlineKeyboardButton, WebAppInfo

    from tui.chat import button_spec

    assert button_spec(InlineKeyboardButton(text="a", callback_data="x")).kind == "callback"
    assert (
        button_spec(InlineKeyboardButton(text="b", web_app=WebAppInfo(url="https://x/#/premium"))).target
        == "https://x/#/premium"
    )
    assert button_spec(InlineKeyboardButton(text="c", url="https://x")).kind == "url"
    assert button_spec(InlineKeyboardButton(text="d", pay=True)).kind == "pay"
    assert InlineButton.__name__ == "InlineButton"


# ====================================================================== snapshots


async def _after_start(pilot: Pilot[Any]) -> None:
    app = await started(pilot)
    await send(pilot, "/start")
    await until(pilot, lambda: button_labels(app) == ["💕 Начать общение"], what="greeting")
    await wait_idle(pilot)
    app.clear_notifications()


async def _with_dialog(
    pilot: Pilot[Any], message: str | None = "Привет! Как прошёл твой день?"
) -> VitteConsole:
    """A dialog with Mila opened the way the Web App opens it (engine + the bot's opening)."""
    from vitte.telegram.messages import send_opening

    app = await started(pilot)
    core = app.backend.core
    await core.players.seen(USER_ID, first_name="Аня")
    await core.players.confirm_adult(USER_ID, language_code="ru")
    opening = await core.dialogs.choose(USER_ID, PERSONA, STORY)
    await send_opening(app.backend.bot, USER_ID, opening)
    await app.refresh_peer()
    if message:
        await send(pilot, message)
        await wait_idle(pilot)
    await until(pilot, lambda: peer(app) == "Мила", what="header")
    await pilot.pause()
    return app


@pytest.mark.parametrize("size", [(80, 24), (120, 40)], ids=["80x24", "120x40"])
def test_snapshot_chat_after_start(snap_compare: Any, size: tuple[int, int]) -> None:
    assert snap_compare(make_app(), terminal_size=size, run_before=_after_start)


@pytest.mark.parametrize("size", [(80, 24), (120, 40)], ids=["80x24", "120x40"])
def test_snapshot_conversation(snap_compare: Any, size: tuple[int, int]) -> None:
    async def run_before(pilot: Pilot[Any]) -> None:
        app = await _with_dialog(pilot)
        app.clear_notifications()

    assert snap_compare(make_app(), terminal_size=size, run_before=run_before)


@pytest.mark.parametrize("size", [(80, 24), (120, 40)], ids=["80x24", "120x40"])
def test_snapshot_reply_streaming(snap_compare: Any, size: tuple[int, int]) -> None:
    writer = GatedWriter(words=6, timeout=3.0)

    async def run_before(pilot: Pilot[Any]) -> None:
        app = await _with_dialog(pilot, message=None)
        await send(pilot, "Расскажи, что ты сегодня рисовала и почему именно это?")
        await asyncio.wait_for(writer.reached.wait(), 10)
        await until(
            pilot,
            lambda: (
                app.player.chat.current_draft is not None
                and len(app.player.chat.current_draft.text.split()) >= 6
                and app.chat_view._draft.display
            ),
            what="the draft",
        )
        await until(pilot, lambda: status(app) == "печатает…", what="typing")
        app.clear_notifications()

    assert snap_compare(make_app(llm=writer), terminal_size=size, run_before=run_before)


@pytest.mark.parametrize("size", [(80, 24), (120, 40)], ids=["80x24", "120x40"])
def test_snapshot_web_app_personas(snap_compare: Any, size: tuple[int, int]) -> None:
    async def run_before(pilot: Pilot[Any]) -> None:
        app = await started(pilot)
        app.open_webapp("#/")
        await until(
            pilot, lambda: isinstance(app.screen, WebAppScreen) and app.screen.shown == "#/", what="list"
        )
        await pilot.pause()

    assert snap_compare(make_app(), terminal_size=size, run_before=run_before)


def test_snapshot_web_app_persona_details(snap_compare: Any) -> None:
    async def run_before(pilot: Pilot[Any]) -> None:
        app = await started(pilot)
        app.open_webapp(f"#/persona/{PERSONA}")
        await until(pilot, lambda: isinstance(app.screen, WebAppScreen) and app.screen.shown, what="details")
        await pilot.pause()

    assert snap_compare(make_app(), terminal_size=(120, 40), run_before=run_before)


def test_snapshot_web_app_premium(snap_compare: Any) -> None:
    async def run_before(pilot: Pilot[Any]) -> None:
        app = await started(pilot)
        app.open_webapp("#/premium")
        await until(pilot, lambda: isinstance(app.screen, WebAppScreen) and app.screen.shown, what="plans")
        await wait_idle(pilot)  # under load the page's layout may still be settling
        await pilot.pause()
        await pilot.pause()

    assert snap_compare(make_app(), terminal_size=(80, 24), run_before=run_before)


def test_snapshot_operator_and_log(snap_compare: Any) -> None:
    async def run_before(pilot: Pilot[Any]) -> None:
        app = await _with_dialog(pilot, message=None)  # drafts' timing would vary the log
        await send(pilot, "/chat")
        await until(pilot, lambda: "Продолжить общение" in button_labels(app), what="continue?")
        await wait_idle(pilot)
        await pilot.press("f2", "f3")
        await until(
            pilot, lambda: "Мила" in str(app.operator.query_one("#op-dialog", Static).render()), what="panel"
        )
        app.clear_notifications()
        app.composer.focus()
        await pilot.pause()

    assert snap_compare(make_app(), terminal_size=(120, 40), run_before=run_before)


def test_snapshot_help(snap_compare: Any) -> None:
    async def run_before(pilot: Pilot[Any]) -> None:
        await _after_start(pilot)
        await pilot.press("f1")
        await pilot.pause()

    assert snap_compare(make_app(), terminal_size=(80, 24), run_before=run_before)


def test_snapshot_light_theme(snap_compare: Any) -> None:
    async def run_before(pilot: Pilot[Any]) -> None:
        app = await _with_dialog(pilot)
        app.clear_notifications()

    assert snap_compare(make_app(theme="light"), terminal_size=(80, 24), run_before=run_before)


def test_snapshot_first_run(snap_compare: Any) -> None:
    async def run_before(pilot: Pilot[Any]) -> None:
        await started(pilot)

    assert snap_compare(make_app(), terminal_size=(80, 24), run_before=run_before)


def test_snapshot_returning_player(snap_compare: Any) -> None:
    """The store holds the player's dialog from an earlier run: the chat shows it, read-only."""
    from vitte.core import Core

    async def earlier_run() -> None:
        core = await Core.open(load_settings(database_url=SQLITE), llm=DemoWriter(delay=0))
        try:
            await core.players.seen(USER_ID, first_name="Аня", language_code="ru")
            await core.players.confirm_adult(USER_ID, language_code="ru")
            await core.dialogs.choose(USER_ID, PERSONA, STORY)
            await core.dialogs.reply(USER_ID, "Привет! Я промокла до нитки.")
        finally:
            await core.close()

    asyncio.run(earlier_run())

    async def run_before(pilot: Pilot[Any]) -> None:
        app = await started(pilot)
        await until(pilot, lambda: app.chat_view.query(".history .bubble"), what="history")
        await until(pilot, lambda: peer(app) == "Мила", what="header")

    assert snap_compare(make_app(), terminal_size=(80, 24), run_before=run_before)


async def test_a_timer_tick_while_the_app_closes_is_harmless() -> None:
    """The half-second tick may fire after the chat view is gone (seen under load at exit)."""
    app = make_app()
    async with app.run_test(size=(80, 24)) as pilot:
        await started(pilot)
        await app.chat_view.remove()
        app._tick()  # no chat view: nothing to sync, no error
        await pilot.pause()


# a player's (and a card's, the memory's) hostile text: markup, a window title, colours, OSC-8
HOSTILE = "[/b] [bold red]x[/] \x1b]0;pwned\x07\x1b[31mred\x1b[0m \x1b]8;;https://evil.example/\x1b\\link\x1b]8;;\x1b\\\x08"
CONTROLS = {chr(c) for c in range(32) if chr(c) not in "\n"} | {chr(c) for c in range(0x7F, 0xA0)}


async def test_hostile_text_is_inert_in_the_chat_and_the_operator_panel() -> None:
    app = make_app()
    async with app.run_test(size=(160, 50)) as pilot:
        await choose_in_webapp(pilot)
        await send(pilot, "hi " + HOSTILE)
        await wait_idle(pilot)
        core = app.backend.core
        view = await core.dialogs.latest(USER_ID)
        assert view is not None
        assert await core.dialogs.store.save_summary(view.id, 0, "memory " + HOSTILE, 0)
        await pilot.press("f2")
        panel = app.operator
        memory = panel.query_one("#op-memory", Static)
        await until(pilot, lambda: "memory" in str(memory.render()), what="memory in the panel")
        shown = {
            "bubbles": "\n".join(bubble_texts(app)),
            "memory": str(memory.render()),
            "messages": str(panel.query_one("#op-messages", Static).render()),
            "log": "\n".join(str(line.text) for line in app.log_pane.lines),
        }
        for where, text in shown.items():
            assert not set(text) & CONTROLS, (where, text)
        assert "hi [/b] [bold red]x[/] red link" in shown["bubbles"]
        assert "memory [/b] [bold red]x[/] red link" in shown["memory"]
        assert "hi [/b] [bold red]x[/] red link" in shown["messages"]
        # what reaches the terminal: no escape sequence from the data in the rendered screen
        screen = app.export_screenshot()
        assert "pwned" not in screen and "evil.example" not in screen
