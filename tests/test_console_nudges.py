"""The console's operator panel moves the clock (issue 18, item 6): "+1 h" does nothing yet,
"+1 day" lets the persona write first; the nudge arrives in the local chat as a bot message,
through the real scheduler and the local Bot API (Textual Pilot)."""

from __future__ import annotations

import sqlalchemy as sa
from textual.widgets import Button, Static

from tests.test_console import (  # noqa: F401  (fixtures: each test gets a migrated, seeded SQLite file)
    USER_ID,
    _database,
    _template_db,
    bubble_texts,
    choose_in_webapp,
    make_app,
    send,
    until,
    wait_idle,
)
from vitte.models import KIND_NUDGE, Message


async def nudges(app: object) -> list[Message]:
    core = app.backend.core  # type: ignore[attr-defined]
    async with core.db.session() as s:
        return list((await s.execute(sa.select(Message).where(Message.kind == KIND_NUDGE))).scalars())  # type: ignore[arg-type]


async def test_the_operator_moves_the_clock_and_the_persona_writes_first() -> None:
    app = make_app(nudge_quiet_hours="")
    async with app.run_test(size=(120, 40)) as pilot:
        await choose_in_webapp(pilot)
        await wait_idle(pilot)
        await send(pilot, "Завтра собеседование, пожелай удачи")
        await wait_idle(pilot)
        before = len(bubble_texts(app))
        await pilot.press("f2")
        await until(pilot, lambda: app.operator.display, what="the operator panel")

        app.operator.query_one("#op-plus-hour", Button).press()  # the panel scrolls: pressed, not clicked
        await until(pilot, lambda: "+1 h ahead" in str(app.operator.query_one("#op-clock", Static).render()),
                    what="+1 h")
        assert "0 nudge(s) sent" in str(app.operator.query_one("#op-clock", Static).render())
        assert await nudges(app) == [] and len(bubble_texts(app)) == before

        app.operator.query_one("#op-plus-day", Button).press()
        await until(pilot, lambda: "1 nudge(s) sent" in str(app.operator.query_one("#op-clock", Static).render()),
                    what="+1 day")
        (stored,) = await nudges(app)
        assert stored.telegram_message_id is not None
        await until(pilot, lambda: len(bubble_texts(app)) == before + 1, what="the nudge in the chat")
        assert stored.text.split()[0] in bubble_texts(app)[-1]
        message = app.player.chat.last_bot_message()
        assert message is not None and message.text == stored.text
