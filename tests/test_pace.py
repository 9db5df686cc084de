"""Issue 15 (#6): the pace of a player's actions that make the bot send — opening dialogs and
invoices from the Web App, /paysupport in the bot — with friendly refusals (the Web App: 429 with
`retry_after`; the bot: a short text), on SQLite + the in-process cache and PostgreSQL + Redis."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from tests.support.bot_harness import ADMIN_ID, BotEnv, env
from tests.support.initdata import auth_header, make_init_data
from tests.support.webapp import WebAppHarness, running_webapp
from vitte.billing_texts import paysupport_text
from vitte.bot.paywall import pt
from vitte.cache.base import window_remaining
from vitte.config import Settings
from vitte.pace import DIALOG_OPENINGS, INVOICES, PAYSUPPORT, Pace

__all__ = ["env"]

ANYA, BORIS = 1001, 2002


@pytest.fixture
async def webapp(backend_settings: Settings, redis_cleanup_if_any: None) -> AsyncIterator[WebAppHarness]:
    async with running_webapp(backend_settings) as h:
        yield h


def tma(user_id: int = ANYA) -> dict[str, str]:
    return auth_header(make_init_data(user_id))


async def away_from_the_window_edge(pace: Pace, margin: float = 5.0) -> None:
    """The limits count in fixed windows: start a burst where it cannot straddle two."""
    left = window_remaining(pace.window)
    if left < margin:
        await asyncio.sleep(left + 0.05)


async def adult(h: WebAppHarness, user_id: int) -> None:
    resp = await h.client.post("/api/me/adult", json={"adult": True}, headers=tma(user_id))
    assert resp.status == 200, await resp.text()


async def burst(h: WebAppHarness, path: str, payloads: list[dict[str, Any]], user_id: int = ANYA) -> list[tuple]:
    """The requests one after another, as fast as they go: (status, body, Retry-After)."""
    out = []
    for payload in payloads:
        resp = await h.client.post(path, json=payload, headers=tma(user_id))
        out.append((resp.status, await resp.json(), resp.headers.get("Retry-After")))
    return out


def assert_polite_429(results: list[tuple], pace: Pace) -> None:
    for status, body, retry_header in results:
        assert status == 429, body
        assert body["code"] == "rate_limited" and body["error"]
        assert isinstance(body["retry_after"], int) and 1 <= body["retry_after"] <= pace.window
        assert retry_header == str(body["retry_after"])


async def test_dialog_openings_are_paced(webapp: WebAppHarness) -> None:
    h = webapp
    await adult(h, ANYA)
    stories = [s.id for s in (await h.core.catalog.persona("mila")).stories]
    assert len(stories) >= 2
    payloads = [{"persona_id": "mila", "story_id": stories[i % len(stories)]} for i in range(60)]
    await away_from_the_window_edge(DIALOG_OPENINGS)
    results = await burst(h, "/api/dialogs", payloads)

    ok = [r for r in results if r[0] == 200]
    assert len(ok) == DIALOG_OPENINGS.limit == 10
    assert_polite_429([r for r in results if r[0] != 200], DIALOG_OPENINGS)
    assert len(h.botapi.sent_messages(ANYA)) == 10  # not 60
    assert len(await h.dialogs_of(ANYA)) == 10

    # another player is not slowed down by Anya
    await adult(h, BORIS)
    resp = await h.client.post("/api/dialogs", json=payloads[0], headers=tma(BORIS))
    assert resp.status == 200, await resp.text()


async def test_invoices_are_paced(webapp: WebAppHarness) -> None:
    h = webapp
    await away_from_the_window_edge(INVOICES)
    results = await burst(h, "/api/invoice", [{"plan_id": "pack"}] * 20)
    assert [r[0] for r in results[: INVOICES.limit]] == [200] * 5
    assert_polite_429(results[INVOICES.limit :], INVOICES)
    links = [c for c in h.botapi.calls if c.method.lower() == "createinvoicelink"]
    assert len(links) == 5


async def test_paysupport_forwards_once_per_few_minutes(env: BotEnv) -> None:
    p = env.player()
    long_problem = "оплатил, но не включилось " + "x" * 3000
    await away_from_the_window_edge(PAYSUPPORT, margin=3.0)
    for _ in range(10):
        await p.send(f"/paysupport {long_problem}")

    (forwarded,) = env.sent("sendMessage", ADMIN_ID)  # one, not ten
    text = forwarded.params["text"]
    assert f"id {p.user_id}" in text  # the player's id, whatever name they chose
    assert "оплатил, но не включилось" in text and "x" * 1000 not in text  # length-capped
    answers = [m.text for m in p.bot_messages()]
    assert answers[0] == pt("ru", "support_sent")
    refusals = {pt("ru", "support_too_often", minutes=m) for m in range(1, 6)}
    assert len(answers) == 10 and all(a in refusals for a in answers[1:])

    # without a problem, /paysupport still answers how to reach support (nothing is forwarded)
    await p.send("/paysupport")
    assert p.last_bot_text() == paysupport_text(env.core.settings, "ru")
    # another player has a limit of their own
    other = env.player(3003, language_code="en")
    await other.send("/paysupport my Stars are gone")
    assert other.last_bot_text() == pt("en", "support_sent")
    assert len(env.sent("sendMessage", ADMIN_ID)) == 2


async def test_pack_invoices_from_the_paywall_are_paced(env: BotEnv) -> None:
    from pydantic import SecretStr

    from tests.support.bot_harness import press

    env.core.settings.payload_secret = SecretStr("test-payload-secret")
    env.core.settings.free_daily_replies = 1
    p = env.player()
    await env.choose(p)
    await p.send("раз")
    await p.send("два")  # the paywall: Premium (a link) and the pack (a callback)
    refusal = p.last_bot_message()
    assert refusal is not None
    (pack,) = [b for b in refusal.iter_buttons() if b.callback_data]
    await away_from_the_window_edge(INVOICES)
    for _ in range(10):
        await press(p, refusal, pack.callback_data or "")
    assert len(env.sent("sendInvoice", p.user_id)) == INVOICES.limit == 5
    answers = [a.get("text") for a in env.session.callback_answers.values()]
    slow = [a for a in answers if a and a.startswith("Не так быстро")]
    assert len(slow) == 5  # a short friendly line on the button, nothing sent
