"""`vitte console` shows /memory as Telegram does (issue 16, item 4): driven with Pilot through
the real Dispatcher — "запомни, что …" in the chat, /memory's list and summary heading, its
[N · Забыть] button pressed from the keyboard, the message edited in place."""

from __future__ import annotations

from tests.test_console import (  # noqa: F401  (fixtures: each test gets a migrated, seeded SQLite file)
    USER_ID,
    _database,
    _template_db,
    bubble_texts,
    button_labels,
    choose_in_webapp,
    make_app,
    send,
    until,
    wait_idle,
)


async def test_memory_in_the_console_lists_and_forgets() -> None:
    app = make_app()
    async with app.run_test(size=(100, 30)) as pilot:
        await choose_in_webapp(pilot)
        await wait_idle(pilot)
        await send(pilot, "Запомни, что у меня кот Барсик")
        await wait_idle(pilot)
        core = app.backend.core
        assert core is not None
        assert [f.text for f in (await core.dialogs.memory_page(USER_ID)).facts] == ["у меня кот Барсик"]

        await send(pilot, "/memory")
        await until(pilot, lambda: "1 · Забыть" in button_labels(app), what="/memory's buttons")
        message = app.player.chat.last_bot_message()
        assert message is not None and message.text is not None
        assert "помнит о тебе (1):" in message.text and "1. у меня кот Барсик" in message.text
        assert "История до сих пор" in message.text
        shown = bubble_texts(app)[-1]
        assert "1. у меня кот Барсик" in shown and "<b>" not in shown  # the HTML rendered, not shown raw
        await wait_idle(pilot)

        await pilot.press(f"alt+{button_labels(app).index('1 · Забыть') + 1}")
        await until(pilot, lambda: "кот Барсик" not in (message.text or ""), what="forgotten")
        await wait_idle(pilot)
        assert "пока не запомнил(а)" in (message.text or "")
        assert app.player.chat.last_bot_message() is message  # edited in place
        assert (await core.dialogs.memory_page(USER_ID)).facts == []
        assert "кот Барсик" not in bubble_texts(app)[-1]


async def test_the_consoles_web_app_memory_page_adds_and_forgets() -> None:
    from textual.widgets import Input

    from tui.webapp import Card, WebAppScreen

    app = make_app()
    async with app.run_test(size=(100, 30)) as pilot:
        await choose_in_webapp(pilot)
        await wait_idle(pilot)
        core = app.backend.core
        assert core is not None
        await core.dialogs.facts.add(USER_ID, "люблю грозу")
        app.open_webapp("#/memory")
        screen = await until(
            pilot, lambda: isinstance(app.screen, WebAppScreen) and app.screen, what="web app"
        )
        await until(pilot, lambda: screen.shown == "#/memory", what="the memory page")
        assert "1. люблю грозу" in str(
            screen.query_one(
                f"#wa-fact-{(await core.dialogs.memory_page(USER_ID)).facts[0].id}", Card
            ).render()
        )
        field = screen.query_one("#wa-fact-new", Input)
        field.focus()
        field.value = "запомни: у меня кот Барсик"
        await pilot.press("enter")
        await until(pilot, lambda: len(screen.query(Card)) == 2, what="the fact added")
        facts = (await core.dialogs.memory_page(USER_ID)).facts
        assert [f.text for f in facts] == ["у меня кот Барсик", "люблю грозу"]
        card = screen.query_one(f"#wa-fact-{facts[1].id}", Card)
        card.focus()
        await pilot.pause()
        await pilot.press("enter")
        await until(pilot, lambda: len(screen.query(Card)) == 1, what="the fact forgotten")
        assert [f.text for f in (await core.dialogs.memory_page(USER_ID)).facts] == ["у меня кот Барсик"]
