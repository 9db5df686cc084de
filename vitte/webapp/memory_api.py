"""The Web App's memory page API (issue 16, item 4): the player's facts and summary, and
adding, editing and forgetting a fact. Thin routes over `vitte.dialogs.factbook`; every route
needs the player's initData and acts only on that player's facts in their active dialog (a
fact id of anyone else's is 404, the same as one that does not exist).

    GET    /api/me/memory[?page=N]    {"dialog_id", "persona", "facts": [...], "total", "page",
                                       "pages", "summary", "max_chars"}
    POST   /api/me/memory             {"text"} → 201 {"fact"}; "запомни: …" / "remember: …" read as the fact
    PATCH  /api/me/memory/{id}        {"text"} → {"fact"}
    DELETE /api/me/memory/{id}        → {"deleted": true}
"""

from __future__ import annotations

import contextlib
from typing import Any

from aiohttp import web

from vitte.dialogs.factbook import EmptyFact, FactView
from vitte.dialogs.facts import FACT_MAX_CHARS, remember_request
from vitte.errors import NoActiveDialog, NotFound
from vitte.webapp.api import (
    LANG_KEY,
    ApiError,
    ctx_of,
    json_response,
    player_state,
    read_object,
    require_user,
)

memory_routes = web.RouteTableDef()
WEB_PAGE_SIZE = 50  # facts per page on the Web App


def fact_json(f: FactView) -> dict[str, Any]:
    return {
        "id": f.id,
        "kind": f.kind,
        "text": f.text,
        "importance": f.importance,
        "origin": f.origin,
        "created_at": f.created_at.isoformat().replace("+00:00", "Z"),
        "updated_at": f.updated_at.isoformat().replace("+00:00", "Z"),
    }


def _fact_text(data: dict[str, Any]) -> str:
    """The body's fact text: a string of 1..FACT_MAX_CHARS characters (400 otherwise)."""
    value = data.get("text")
    if not isinstance(value, str) or not value.strip():
        raise ApiError(400, "fact_empty", "text must be a non-empty string")
    if len(value.strip()) > FACT_MAX_CHARS:
        raise ApiError(400, "fact_too_long", f"text must be at most {FACT_MAX_CHARS} characters")
    return value


def _fact_id(request: web.Request) -> int:
    raw = request.match_info["fact_id"]
    if not raw.isdigit() or len(raw) > 18:
        raise NotFound(raw[:20])
    return int(raw)


async def _language(request: web.Request, user_id: int) -> None:
    """Answer in the player's language."""
    ctx = ctx_of(request)
    with contextlib.suppress(NotFound):
        request[LANG_KEY] = (await ctx.core.players.get(user_id)).language


@memory_routes.get("/api/me/memory")
async def get_memory(request: web.Request) -> web.Response:
    ctx = ctx_of(request)
    user = require_user(request)
    state = await player_state(ctx.core, user)
    request[LANG_KEY] = state.language
    raw = request.query.get("page", "0")
    page = int(raw) if raw.isdigit() and len(raw) < 7 else 0
    shown = await ctx.core.dialogs.memory_page(user.id, page, WEB_PAGE_SIZE)
    return json_response(
        {
            "dialog_id": shown.dialog_id,
            "persona": state.dialog.persona_name if state.dialog is not None else None,
            "facts": [fact_json(f) for f in shown.facts],
            "total": shown.total,
            "page": shown.page,
            "pages": shown.pages,
            "summary": shown.summary,
            "max_chars": FACT_MAX_CHARS,
        }
    )


@memory_routes.post("/api/me/memory")
async def add_fact(request: web.Request) -> web.Response:
    ctx = ctx_of(request)
    user = require_user(request)
    await _language(request, user.id)
    text = _fact_text(await read_object(request))
    text = remember_request(text) or text  # "запомни: …" typed into the field: the fact itself
    try:
        fact = await ctx.core.dialogs.facts.add(user.id, text)
    except EmptyFact:
        raise ApiError(400, "fact_empty") from None
    except NotFound:  # no active dialog
        raise NoActiveDialog() from None
    return json_response({"fact": fact_json(fact)}, status=201)


@memory_routes.patch("/api/me/memory/{fact_id}")
async def edit_fact(request: web.Request) -> web.Response:
    ctx = ctx_of(request)
    user = require_user(request)
    await _language(request, user.id)
    fact_id = _fact_id(request)
    text = _fact_text(await read_object(request))
    try:
        fact = await ctx.core.dialogs.facts.edit(user.id, fact_id, text)
    except EmptyFact:
        raise ApiError(400, "fact_empty") from None
    return json_response({"fact": fact_json(fact)})


@memory_routes.delete("/api/me/memory/{fact_id}")
async def forget_fact(request: web.Request) -> web.Response:
    ctx = ctx_of(request)
    user = require_user(request)
    await _language(request, user.id)
    await ctx.core.dialogs.facts.forget(user.id, _fact_id(request))
    return json_response({"deleted": True})
