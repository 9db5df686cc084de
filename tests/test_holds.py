"""Issue 15 (#1, #5): a block and today's quota outlive "delete my data", and a blocked player is
sold nothing — through the real Web App (aiohttp on loopback, a fake Bot API), the real bot
(Dispatcher + the local Bot API session) and the operator's CLI, on SQLite and PostgreSQL.

What is kept after a deletion is a `Hold`: the id, the block (time, the operator's note) and
today's reply count; the player never sees the note (/mydata and the Web App's export)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from sqlalchemy import select
from typer.testing import CliRunner

from cli.main import app as vitte_cli
from tests.support.bot_harness import BotEnv, env
from tests.support.initdata import auth_header, make_init_data
from tests.support.webapp import WebAppHarness, running_webapp
from vitte.billing import BLOCKED
from vitte.billing_texts import pre_checkout_error_text
from vitte.bot.texts import t
from vitte.config import Settings
from vitte.errors import UnknownUser
from vitte.models import Hold, Usage

__all__ = ["env"]

ANYA = 1001
MILA_STORY = "mila.rainy-closing"
NOTE = "internal note: suspected fraud, ticket #4411"


@pytest.fixture
async def webapp(backend_settings: Settings, redis_cleanup_if_any: None) -> AsyncIterator[WebAppHarness]:
    async with running_webapp(backend_settings) as h:
        yield h


def tma(user_id: int = ANYA, **kw: Any) -> dict[str, str]:
    return auth_header(make_init_data(user_id, **kw))


async def post(h: WebAppHarness, path: str, payload: dict[str, Any], user_id: int = ANYA) -> tuple[int, dict]:
    resp = await h.client.post(path, json=payload, headers=tma(user_id))
    assert resp.content_type == "application/json", await resp.text()
    return resp.status, await resp.json()


async def onboard(h: WebAppHarness, user_id: int = ANYA) -> None:
    """What a player does after deleting their data: confirm the age again."""
    status, body = await post(h, "/api/me/adult", {"adult": True}, user_id)
    assert status == 200, body


async def delete_via_api(h: WebAppHarness, user_id: int = ANYA) -> None:
    status, body = await post(h, "/api/me/delete", {"confirm": True}, user_id)
    assert status == 200 and body["deleted"] is True, body


async def holds(h: WebAppHarness) -> list[Hold]:
    async with h.core.db.session() as s:
        return list((await s.execute(select(Hold).order_by(Hold.user_id))).scalars())


def cli_show(settings: Settings, user_id: int) -> dict[str, Any]:
    env_ = {"VITTE_DATABASE_URL": settings.database_url}
    if settings.redis_url:
        env_ |= {"VITTE_REDIS_URL": settings.redis_url, "VITTE_REDIS_PREFIX": settings.redis_prefix}
    res = CliRunner().invoke(vitte_cli, ["user", "show", str(user_id), "--json"], env=env_)
    assert res.exit_code == 0, res.output
    return json.loads(res.output)


# ---------------------------------------------------------------------- #1 the block sticks


async def test_a_blocked_player_cannot_delete_their_way_out(webapp: WebAppHarness) -> None:
    h = webapp
    await onboard(h)
    await h.core.players.block(ANYA, NOTE)
    status, body = await post(h, "/api/dialogs", {"persona_id": "mila", "story_id": MILA_STORY})
    assert (status, body["code"]) == (403, "blocked")

    await delete_via_api(h)
    with pytest.raises(UnknownUser):
        await h.core.players.get(ANYA)
    (hold,) = await holds(h)  # the minimal record: the id, the block and its note, no content
    assert (hold.user_id, hold.blocked_reason) == (ANYA, NOTE) and hold.blocked_at is not None

    await onboard(h)  # a clean start, as the attacker hoped
    status, body = await post(h, "/api/dialogs", {"persona_id": "mila", "story_id": MILA_STORY})
    assert (status, body["code"]) == (403, "blocked"), body
    assert await h.dialogs_of(ANYA) == [] and h.botapi.sent_messages(ANYA) == []
    player = await h.core.players.get(ANYA)
    assert player.blocked_at == hold.blocked_at and player.blocked_reason == NOTE
    assert await holds(h) == []  # the row holds the block again
    shown = await asyncio.to_thread(cli_show, h.core.settings, ANYA)
    assert shown["blocked"] is True

    # deleting and coming back again changes nothing; the operator's unblock still works
    await delete_via_api(h)
    await onboard(h)
    assert (await h.core.players.get(ANYA)).blocked_at == hold.blocked_at
    await h.core.players.unblock(ANYA)
    status, _body = await post(h, "/api/dialogs", {"persona_id": "mila", "story_id": MILA_STORY})
    assert status == 200


def cli(settings: Settings, *args: str) -> Any:
    env_ = {"VITTE_DATABASE_URL": settings.database_url}
    if settings.redis_url:
        env_ |= {"VITTE_REDIS_URL": settings.redis_url, "VITTE_REDIS_PREFIX": settings.redis_prefix}
    return CliRunner().invoke(vitte_cli, list(args), env=env_)


async def test_the_operator_can_unblock_a_player_who_deleted_their_data(webapp: WebAppHarness) -> None:
    """The block of a player who deleted their data and has not come back lives in the hold:
    `vitte user unblock` lifts it there (today's count stays held), so they come back unblocked."""
    h = webapp
    await onboard(h)
    await h.core.billing.check_and_count(ANYA)  # one reply today
    await h.core.players.block(ANYA, NOTE)
    await delete_via_api(h)
    other = ANYA + 7
    await onboard(h, other)
    await h.core.players.block(other, NOTE)
    await delete_via_api(h, other)

    unblocked = await asyncio.to_thread(cli, h.core.settings, "user", "unblock", str(ANYA))
    assert unblocked.exit_code == 0, unblocked.output
    assert unblocked.output.strip() == f"unblocked user {ANYA}"
    unknown = await asyncio.to_thread(cli, h.core.settings, "user", "unblock", "424242")
    assert unknown.exit_code == 1 and "424242" in unknown.output
    kept = {x.user_id: x for x in await holds(h)}
    assert (kept[ANYA].blocked_at, kept[ANYA].blocked_reason, kept[ANYA].usage_replies) == (None, None, 1)
    assert kept[other].blocked_at is not None  # only the one named
    assert (await asyncio.to_thread(cli, h.core.settings, "user", "unblock", str(other))).exit_code == 0
    assert other not in {x.user_id for x in await holds(h)}  # nothing else held: gone

    await onboard(h)
    status, body = await post(h, "/api/dialogs", {"persona_id": "mila", "story_id": MILA_STORY})
    assert status == 200, body
    assert (await h.core.billing.entitlement(ANYA)).used_today == 1
    assert (await h.core.players.get(ANYA)).blocked_at is None


async def test_todays_quota_survives_deletion(webapp: WebAppHarness) -> None:
    h = webapp
    await onboard(h)
    for _ in range(3):  # three replies written today
        await h.core.billing.check_and_count(ANYA)
    before = (await h.core.billing.entitlement(ANYA)).left_today

    await delete_via_api(h)
    (hold,) = await holds(h)
    assert (hold.usage_replies, hold.blocked_at, hold.blocked_reason) == (3, None, None)

    await onboard(h)
    ent = await h.core.billing.entitlement(ANYA)
    assert (ent.used_today, ent.left_today) == (3, before)
    resp = await h.client.get("/api/me", headers=tma())
    me = await resp.json()
    assert (me["used_today"], me["left_today"]) == (3, before)
    shown = await asyncio.to_thread(cli_show, h.core.settings, ANYA)
    assert (shown["blocked"], shown["used_today"]) == (False, 3)
    assert await holds(h) == []


async def test_nothing_is_held_for_a_player_with_nothing_to_hold(webapp: WebAppHarness) -> None:
    h = webapp
    await onboard(h)
    await delete_via_api(h)
    assert await holds(h) == []
    async with h.core.db.session() as s:
        assert list((await s.execute(select(Usage).where(Usage.user_id == ANYA))).scalars()) == []


# ---------------------------------------------------------------------- #1 nothing sold to a blocked player


async def test_a_blocked_player_gets_no_invoice(webapp: WebAppHarness) -> None:
    h = webapp
    await onboard(h)
    await h.core.players.block(ANYA, NOTE)
    for plan in ("premium", "pack"):
        status, body = await post(h, "/api/invoice", {"plan_id": plan})
        assert (status, body["code"]) == (403, "blocked"), body
        assert NOTE not in json.dumps(body, ensure_ascii=False)
    # deleted (a held block) and asking before anything else: refused all the same
    await delete_via_api(h)
    status, body = await post(h, "/api/invoice", {"plan_id": "premium"})
    assert (status, body["code"]) == (403, "blocked"), body
    assert [c for c in h.botapi.calls if c.method.lower() == "createinvoicelink"] == []


async def test_the_export_never_contains_the_block_reason(webapp: WebAppHarness) -> None:
    h = webapp
    await onboard(h)
    await h.core.players.block(ANYA, NOTE)
    data = await h.core.players.export(ANYA)  # /mydata and the Web App's export send this file
    text = json.dumps(data, ensure_ascii=False)
    assert NOTE not in text and "blocked_reason" not in text
    assert data["profile"]["blocked_at"] is not None
    status, body = await post(h, "/api/me/export", {})
    assert status == 200 and body["sent"] is True, body
    assert NOTE not in json.dumps([c.params for c in h.botapi.calls], ensure_ascii=False, default=str)


# ---------------------------------------------------------------------- the bot: pre-checkout, /premium


@pytest.fixture
def shop(env: BotEnv) -> BotEnv:
    from pydantic import SecretStr

    env.core.settings.payload_secret = SecretStr("test-payload-secret")
    return env


async def test_a_blocked_player_cannot_pay(shop: BotEnv) -> None:
    env = shop
    p = env.player(2002, language_code="en")
    await p.send("/start")
    payload = env.core.billing.make_invoice(p.user_id, "pack").payload  # an invoice got earlier
    price = env.core.billing.plan("pack").price_stars
    await env.core.players.block(p.user_id, NOTE)
    answer = p.pre_checkout_answer(await p.pre_checkout(payload, price))
    assert answer is not None and answer["ok"] is False
    assert answer["error_message"] == pre_checkout_error_text(BLOCKED, "en")
    assert NOTE not in answer["error_message"]

    # /premium offers nothing to buy: the polite line, no invoice link
    await p.send("/premium")
    assert p.last_bot_text() == t("en", "blocked")
    assert env.sent("createInvoiceLink") == []

    # after "delete my data", before the player is seen again: still refused
    await env.core.players.delete_data(p.user_id)
    answer = p.pre_checkout_answer(await p.pre_checkout(payload, price))
    assert answer is not None and answer["ok"] is False
    assert answer["error_message"] == pre_checkout_error_text(BLOCKED, "en")
    assert await env.core.billing.list_payments(p.user_id) == []


async def test_pre_checkout_of_a_player_not_blocked_is_unchanged(shop: BotEnv) -> None:
    env = shop
    p = env.player(2003, language_code="en")
    await p.send("/start")
    payload = env.core.billing.make_invoice(p.user_id, "pack").payload
    answer = p.pre_checkout_answer(await p.pre_checkout(payload, env.core.billing.plan("pack").price_stars))
    assert answer is not None and answer["ok"] is True
