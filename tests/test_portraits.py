"""Portraits (issue 17, item 4): a card's picture, stored in the database, served by the Web App
under a content-hash URL with caching headers; cards without a picture keep the drawn initials;
GET /api/personas/<id> never serves unbounded text."""

from __future__ import annotations

import io
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from PIL import Image

from tests.support.webapp import WebAppHarness, running_webapp
from tests.test_cards_import import picture_png
from tests.test_catalog import text_chunk, v2, write
from vitte.catalog.cards import read_card_file
from vitte.catalog.seed import seed_cards
from vitte.config import Settings


@pytest.fixture
def _clean_redis(backend: str, request: pytest.FixtureRequest) -> None:
    if backend == "postgres":
        request.getfixturevalue("redis_cleanup")


@pytest.fixture
async def webapp(backend_settings: Settings, _clean_redis: None) -> AsyncIterator[WebAppHarness]:
    async with running_webapp(backend_settings) as h:
        yield h


async def _seed(h: WebAppHarness, path: Path) -> None:
    await seed_cards(h.core.db, [read_card_file(path)])
    h.core.catalog.invalidate()


async def test_portrait_is_served_with_caching_headers(webapp: WebAppHarness, tmp_path: Path) -> None:
    await _seed(
        webapp,
        write(
            tmp_path / "pic.png",
            picture_png(text_chunk("chara", v2(name="Pic")), size=(600, 800), color="blue"),
        ),
    )
    listed = await (await webapp.client.get("/api/personas")).json()
    pic = next(p for p in listed["personas"] if p["id"] == "pic")
    assert pic["avatar_url"].startswith("/portraits/pic/") and pic["avatar_url"].endswith("-128.webp")
    assert pic["portrait_url"].endswith("-512.webp")
    mila = next(p for p in listed["personas"] if p["id"] == "mila")  # a shipped persona: its drawn avatar
    assert mila["portrait_url"] is None and mila["avatar_url"] == "/avatars/mila.svg"

    resp = await webapp.client.get(pic["avatar_url"])
    assert resp.status == 200 and resp.content_type == "image/webp"
    assert resp.headers["Cache-Control"] == "public, max-age=31536000, immutable"
    img = Image.open(io.BytesIO(await resp.read()))
    assert img.size == (128, 128) and img.convert("RGB").getpixel((64, 64))[2] > 200  # blue
    etag = resp.headers["ETag"]
    again = await webapp.client.get(pic["avatar_url"], headers={"If-None-Match": etag})
    assert again.status == 304

    details = await (await webapp.client.get("/api/personas/pic")).json()
    big = await webapp.client.get(details["portrait_url"])
    assert big.status == 200 and Image.open(io.BytesIO(await big.read())).size == (512, 512)

    # a new picture is a new URL (the bytes under one URL never change)
    await _seed(
        webapp, write(tmp_path / "pic.png", picture_png(text_chunk("chara", v2(name="Pic")), color="green"))
    )
    listed = await (await webapp.client.get("/api/personas")).json()
    new_url = next(p for p in listed["personas"] if p["id"] == "pic")["avatar_url"]
    assert new_url != pic["avatar_url"]
    fresh = await webapp.client.get(new_url)
    assert fresh.status == 200
    assert Image.open(io.BytesIO(await fresh.read())).convert("RGB").getpixel((64, 64))[1] > 100  # green
    for bad in (
        "/portraits/pic/x.webp",
        "/portraits/pic/" + "a" * 64 + "-99.webp",
        "/portraits/nobody/" + "a" * 64 + "-128.webp",
    ):
        assert (await webapp.client.get(bad)).status == 404


async def test_persona_details_never_serve_unbounded_text(webapp: WebAppHarness, tmp_path: Path) -> None:
    long = "Она любит долгие прогулки. " * 6000  # 162,000 characters of prose
    card = v2(name="Long", description=long, scenario=long, first_mes="Привет.")
    await _seed(webapp, write(tmp_path / "long.json", card))
    resp = await webapp.client.get("/api/personas/long")
    body = await resp.json()
    assert 0 < len(body["description"]) <= 4000 and body["description"].endswith("…")
    assert all(len(s["premise"]) <= 2000 for s in body["stories"])
    assert len(await resp.read()) < 20_000
