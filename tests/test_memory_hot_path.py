"""The facts cost the reply's hot path nothing while they do not change (issue 16, item 2),
counted on the wire in front of PostgreSQL (`vitte.devtools.pgwire`), through the real
Dispatcher: a dialog with facts answers in the same two SQL round trips as one without, its
pinned facts in every prompt; a fact forgotten elsewhere (the Web App, another process) is
read once, at the next reply, and is gone from that reply's prompt."""

from __future__ import annotations

from typing import Any

from tests.test_hot_path import REPLY, SQL_ROUND_TRIPS_PER_REPLY, _player, wired  # noqa: F401
from vitte.core import Core
from vitte.devtools.llm_server import FakeLLMServer
from vitte.devtools.pgwire import PgWireCounter

WARM_UP = 6


def system_text(llm: FakeLLMServer) -> str:
    return " ".join(m["content"] for m in llm.completions[-1].json["messages"] if m["role"] == "system")


async def test_pinned_facts_cost_no_round_trip_until_they_change(wired: dict[str, Any]) -> None:  # noqa: F811
    core: Core = wired["core"]
    proxy: PgWireCounter = wired["proxy"]
    llm: FakeLLMServer = wired["llm"]
    core.settings.memory_facts_every = 0  # the background extraction would be on the same wire
    player = await _player(wired, 7601)
    # connections, caches, and psycopg's own preparation of statements run five times (one
    # extra round trip each, once per connection): before anything is counted
    for i in range(WARM_UP):
        await player.send(f"Hello {i}!")
    cat = await core.dialogs.facts.add(7601, "Has a cat called Barsik")
    await core.dialogs.facts.add(7601, "Works night shifts at the hospital")
    await player.send("Hello again!")  # the dialog's facts changed: its row and facts read
    assert player.last_bot_text() == REPLY
    reloads = core.dialogs.facts.reloads

    for text in ("How was your evening?", "Tell me more."):
        proxy.reset()
        await player.send(text)
        assert player.last_bot_text() == REPLY
        assert proxy.round_trips == SQL_ROUND_TRIPS_PER_REPLY, dict(proxy.queries)
        assert "- Has a cat called Barsik" in system_text(llm)
    assert core.dialogs.facts.reloads == reloads

    await core.dialogs.facts.forget(7601, cat.id)  # as the Web App does, in another "process"
    proxy.reset()
    await player.send("What do you know about me?")
    assert player.last_bot_text() == REPLY
    # the refused turn and the row read again (its facts version changed), the facts read once
    assert proxy.round_trips == SQL_ROUND_TRIPS_PER_REPLY + 2 + 1
    assert "Barsik" not in system_text(llm) and "- Works night shifts at the hospital" in system_text(llm)
    assert core.dialogs.facts.reloads == reloads + 1
    for text in ("And then?", "And after that?"):
        proxy.reset()
        await player.send(text)
        assert proxy.round_trips == SQL_ROUND_TRIPS_PER_REPLY
