"""The Web App's JSON API: thin routes over the core (no dialog rules live here).

Personas, stories and plans are readable without initData; everything about a player
needs `Authorization: tma <initData>` and acts only for the user id it vouches for.
Errors are JSON `{"error": <localized text>, "code": <machine code>}`, never a traceback.
"""

from __future__ import annotations

import asyncio
import colorsys
import hashlib
import json
import logging
import re
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, tzinfo
from functools import partial
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from aiogram import Bot
from aiogram.exceptions import TelegramAPIError, TelegramForbiddenError
from aiohttp import web

from vitte.catalog.blurbs import reads_as_prose
from vitte.catalog.lookup import PersonaInfo
from vitte.catalog.shown import pick_seed, player_macros, shown
from vitte.config import ConfigError
from vitte.core import Core
from vitte.dialogs import DialogView, Opening, Turn
from vitte.errors import (
    AgeNotConfirmed,
    NoActiveDialog,
    NotFound,
    PlayerBlocked,
    RateLimited,
    StaleDialog,
    StoreUnavailable,
    UnknownPersona,
    UnknownPlan,
    UnknownStory,
    UnknownUser,
)
from vitte.i18n import Texts, normalize_language
from vitte.initiative.rules import default_zone
from vitte.pace import DELETE_CONFIRMATIONS, DIALOG_OPENINGS, INVOICES, keep_pace
from vitte.player_names import BadName, clean_name, set_name
from vitte.players import LANGUAGES, VOICE_REPLIES, BadSetting, PlayerView, language_from_telegram, zone_of
from vitte.prompt import STYLES
from vitte.telegram.messages import (
    ExportThrottled,
    export_filename,
    send_delete_confirmation,
    send_opening,
    send_player_data,
)
from vitte.telegram.payments import create_invoice_link
from vitte.webapp.auth import InitDataError, WebAppUser, init_data_from_header, validate_init_data
from vitte.webapp.portraits import LIST_SIZE, PAGE_SIZE, portrait_url

log = logging.getLogger("vitte.webapp")

__all__ = ["ApiError", "WebContext", "error_middleware", "routes"]

CTX: web.AppKey[WebContext] = web.AppKey("vitte_webapp_ctx")
LANG_KEY: web.RequestKey[str] = web.RequestKey("vitte_lang", str)

MAX_ID_LEN = 130
# a card's texts on the page: never unbounded, whatever the card holds (a longer one ends in "…")
MAX_PAGE_TEXT = {"description": 4000, "premise": 2000, "title": 200}

# code -> what the player reads (the `api` part of the catalogues, vitte/locales: msgid = the
# code); `code` is for programs
MESSAGES = Texts("api")
_AUTH_MESSAGE = {
    "auth_missing": "auth_missing",
    "auth_expired": "auth_expired",
    "auth_stale": "auth_stale",
}


def message(code: str, lang: str | None) -> str:
    text = MESSAGES.get(lang, code)
    return text if text is not None else MESSAGES.t(lang, "internal")


class ApiError(Exception):
    """An answer other than 200, with a localized message looked up by `code`."""

    def __init__(self, status: int, code: str, detail: str | None = None, **extra: Any) -> None:
        super().__init__(detail or code)
        self.status = status
        self.code = code
        self.detail = detail
        self.extra = extra


_dumps = partial(json.dumps, ensure_ascii=False, separators=(",", ":"))


def json_response(data: Any, status: int = 200) -> web.Response:
    resp = web.json_response(data, status=status, dumps=_dumps)
    resp.headers["Cache-Control"] = "no-store"
    if resp.body is not None and len(resp.body) > 1024:  # type: ignore[arg-type]
        resp.enable_compression()  # gzip/deflate when the client asks for it
    return resp


def _error_body(code: str, lang: str, detail: str | None = None, **extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"error": message(code, lang), "code": code}
    if detail:
        body["detail"] = detail
    body.update(extra)
    return body


def _query_lang(request: web.Request) -> str:
    return normalize_language(request.query.get("lang"))


@web.middleware
async def error_middleware(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """Every failure under /api/ becomes JSON with a code; nothing leaks a traceback."""
    is_api = request.path.startswith("/api/") or request.path == "/api" or "/api/" in request.path
    request[LANG_KEY] = _query_lang(request)
    try:
        return await handler(request)
    except InitDataError as exc:
        lang = request[LANG_KEY]
        key = _AUTH_MESSAGE.get(exc.code, "auth_invalid")
        body = {"error": message(key, lang), "code": exc.code, "detail": exc.message}
        resp = json_response(body, status=401)
        resp.headers["WWW-Authenticate"] = "tma"
        return resp
    except ApiError as exc:
        return json_response(_error_body(exc.code, request[LANG_KEY], exc.detail, **exc.extra), exc.status)
    except UnknownPersona:
        return json_response(_error_body("unknown_persona", request[LANG_KEY]), 404)
    except UnknownStory:
        return json_response(_error_body("unknown_story", request[LANG_KEY]), 404)
    except UnknownPlan:
        return json_response(_error_body("unknown_plan", request[LANG_KEY]), 404)
    except AgeNotConfirmed:
        return json_response(_error_body("age_unconfirmed", request[LANG_KEY]), 403)
    except PlayerBlocked:
        return json_response(_error_body("blocked", request[LANG_KEY]), 403)
    except RateLimited as exc:
        retry_after = max(1, int(-(-exc.retry_after_seconds // 1)))
        resp = json_response(_error_body("rate_limited", request[LANG_KEY], retry_after=retry_after), 429)
        resp.headers["Retry-After"] = str(retry_after)
        return resp
    except NotFound:
        return json_response(_error_body("not_found", request[LANG_KEY]), 404)
    except BadSetting as exc:
        return json_response(_error_body("bad_setting", request[LANG_KEY], str(exc)), 400)
    except StaleDialog:
        return json_response(_error_body("stale_dialog", request[LANG_KEY]), 409)
    except NoActiveDialog:
        return json_response(_error_body("no_active_dialog", request[LANG_KEY]), 409)
    except StoreUnavailable:
        return json_response(_error_body("store_unavailable", request[LANG_KEY]), 503)
    except web.HTTPException as exc:
        if not is_api or exc.status < 400:
            raise
        code = {404: "not_found", 405: "method_not_allowed", 413: "too_large"}.get(exc.status, "bad_request")
        resp = json_response(_error_body(code, request[LANG_KEY]), exc.status)
        if exc.status == 405 and "Allow" in exc.headers:
            resp.headers["Allow"] = exc.headers["Allow"]
        return resp
    except asyncio.CancelledError:
        raise
    except Exception:
        log.exception("web app request %s %s failed", request.method, request.path)
        if not is_api:
            return web.Response(status=500, text="Internal Server Error")
        return json_response(_error_body("internal", request[LANG_KEY]), 500)


# ---------------------------------------------------------------------- context


_HEX_RE = re.compile(r"#([0-9a-fA-F]{6}|[0-9a-fA-F]{3})\b")


def _hex(rgb: tuple[float, float, float]) -> str:
    return "#" + "".join(f"{round(max(0.0, min(1.0, c)) * 255):02x}" for c in rgb)


def _fallback_colors(key: str) -> tuple[str, str]:
    hue = int(hashlib.sha256(key.encode()).hexdigest()[:4], 16) / 0xFFFF
    return (
        _hex(colorsys.hls_to_rgb(hue, 0.62, 0.72)),
        _hex(colorsys.hls_to_rgb((hue + 0.09) % 1.0, 0.5, 0.65)),
    )


def svg_colors(text: str) -> list[str]:
    """The first distinct saturated colours of an SVG, for the card's gradient."""
    found: list[str] = []
    for m in _HEX_RE.finditer(text):
        raw = m.group(1)
        if len(raw) == 3:
            raw = "".join(c * 2 for c in raw)
        r, g, b = (int(raw[i : i + 2], 16) / 255 for i in (0, 2, 4))
        _h, light, sat = colorsys.rgb_to_hls(r, g, b)
        if sat < 0.25 or light < 0.12 or light > 0.92:
            continue
        color = "#" + raw.lower()
        if color not in found:
            found.append(color)
        if len(found) == 2:
            break
    return found


@dataclass
class WebContext:
    core: Core
    bot: Bot
    avatars_dir: Path
    _colors: dict[str, tuple[str, str]] = field(default_factory=dict)

    def avatar_colors(self, persona: PersonaInfo) -> tuple[str, str]:
        key = persona.avatar or persona.id
        cached = self._colors.get(key)
        if cached is not None:
            return cached
        colors: list[str] = []
        path = self.avatar_path(persona.avatar)
        if path is not None and path.suffix.lower() == ".svg":
            try:
                colors = svg_colors(path.read_text("utf-8", errors="replace")[:200_000])
            except OSError:
                colors = []
        fallback = _fallback_colors(persona.id)
        if len(colors) == 1:
            colors.append(fallback[1])
        result = (colors[0], colors[1]) if len(colors) >= 2 else fallback
        self._colors[key] = result
        return result

    def avatar_path(self, avatar: str | None) -> Path | None:
        name = _avatar_name(avatar)
        if name is None:
            return None
        path = (self.avatars_dir / name).resolve()
        try:
            path.relative_to(self.avatars_dir.resolve())
        except ValueError:
            return None
        return path if path.is_file() else None


def _avatar_name(avatar: str | None) -> str | None:
    if not avatar or not avatar.startswith("avatars/"):
        return None
    name = avatar.removeprefix("avatars/")
    if not name or ".." in name.split("/") or "\\" in name:
        return None
    return name


def avatar_url(request: web.Request, avatar: str | None) -> str | None:
    if not avatar:
        return None
    if avatar.startswith(("https://", "http://")):  # served from here, never the card's URL
        from vitte.webapp.avatars import remote_key

        try:
            return str(request.app.router["remote_avatars"].url_for(key=remote_key(avatar)))
        except (KeyError, ValueError):
            return None
    name = _avatar_name(avatar)
    if name is None:
        return None
    try:
        return str(request.app.router["avatars"].url_for(filename=name))
    except (KeyError, ValueError):
        return None


def ctx_of(request: web.Request) -> WebContext:
    return request.config_dict[CTX]


# ---------------------------------------------------------------------- auth and input


def optional_user(request: web.Request) -> WebAppUser | None:
    """The Telegram user of a valid initData; None without one; 401 for a bad one."""
    header = request.headers.get("Authorization")
    if header is None:
        return None
    return require_user(request)


def require_user(request: web.Request) -> WebAppUser:
    ctx = ctx_of(request)
    init_data = init_data_from_header(request.headers.get("Authorization"))
    return validate_init_data(
        init_data, ctx.bot.token, max_age=ctx.core.settings.webapp_auth_max_age
    )


def require_fresh_user(request: web.Request) -> WebAppUser:
    """`require_user` for a destructive action (deleting data, withdrawing the age
    confirmation): the initData must be younger than VITTE_WEBAPP_FRESH_AUTH, so a leaked
    initData is not a day-long bearer token for them. Older: 401 `auth_stale` (the page asks
    the player to open the app again from the bot's chat, which signs a fresh one)."""
    user = require_user(request)
    settings = ctx_of(request).core.settings
    if time.time() - user.auth_date > min(settings.webapp_fresh_auth, settings.webapp_auth_max_age):
        raise InitDataError("auth_stale", "this action needs a fresh initData: reopen the app from the bot")
    return user


async def read_object(request: web.Request) -> dict[str, Any]:
    """The request's JSON object body; 400 for anything else (never a 500)."""
    try:
        raw = await request.read()
    except web.HTTPRequestEntityTooLarge:
        raise ApiError(413, "too_large") from None
    if not raw.strip():
        return {}
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise ApiError(400, "bad_json", "the body is not valid JSON") from None
    except RecursionError:  # deeper than the parser goes: a 400, not a 500 with a traceback
        raise ApiError(400, "bad_json", f"the body nests deeper than {MAX_JSON_DEPTH} levels") from None
    if not isinstance(data, dict):
        raise ApiError(400, "bad_json", "the body must be a JSON object")
    if _deeper_than(data, MAX_JSON_DEPTH):
        raise ApiError(400, "bad_json", f"the body nests deeper than {MAX_JSON_DEPTH} levels")
    return data


MAX_JSON_DEPTH = 16  # the API's bodies are flat objects; room to spare, none for abuse


def _deeper_than(value: Any, limit: int) -> bool:
    """Whether a parsed JSON value nests more than `limit` arrays/objects deep (no recursion)."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict | list):
            if depth > limit:
                return True
            stack.extend((child, depth + 1) for child in (item.values() if isinstance(item, dict) else item))
    return False


def _text_field(data: dict[str, Any], key: str, *, required: bool) -> str | None:
    value = data.get(key)
    if value is None:
        if required:
            raise ApiError(400, "bad_request", f"{key} is required")
        return None
    if not isinstance(value, str):
        raise ApiError(400, "bad_request", f"{key} must be a string")
    value = value.strip()
    if not value or len(value) > MAX_ID_LEN:
        raise ApiError(400, "bad_request", f"{key} must be 1..{MAX_ID_LEN} characters")
    return value


def _bool_field(data: dict[str, Any], key: str) -> bool:
    value = data.get(key, False)
    if value is None:
        return False
    if not isinstance(value, bool):
        raise ApiError(400, "bad_request", f"{key} must be true or false")
    return value


def _int_field(data: dict[str, Any], key: str) -> int | None:
    value = data.get(key)
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or not (0 < value < 2**63):
        raise ApiError(400, "bad_request", f"{key} must be a positive integer")
    return value


# ---------------------------------------------------------------------- player state


@dataclass(frozen=True, slots=True)
class PlayerState:
    language: str
    player: PlayerView | None  # None: never seen (or their data was deleted)
    dialog: DialogView | None


async def _visitor_state(
    request: web.Request, ctx: WebContext, user: WebAppUser | None
) -> tuple[PlayerState | None, str]:
    """The player's state (None for a visitor without initData) and the language the answer
    is in: the player's, else the request's."""
    state = await player_state(ctx.core, user) if user else None
    lang = state.language if state else request[LANG_KEY]
    request[LANG_KEY] = lang
    return state, lang


async def _answering(request: web.Request, ctx: WebContext, user: WebAppUser) -> PlayerState:
    """The player's state; the answer is in their language."""
    state = await player_state(ctx.core, user)
    request[LANG_KEY] = state.language
    return state


async def player_state(core: Core, user: WebAppUser) -> PlayerState:
    """Read-only: never creates the player (a deleted player stays deleted until they act)."""
    try:
        player = await core.players.get(user.id)
    except UnknownUser:
        return PlayerState(language_from_telegram(user.language_code), None, None)
    dialog = await core.dialogs.current(user.id)
    return PlayerState(player.language, player, dialog)


def _iso(value: datetime | None) -> str | None:
    return value.isoformat().replace("+00:00", "Z") if value else None


def _current_persona_id(state: PlayerState | None) -> str | None:
    if state is None:
        return None
    if state.dialog is not None:
        return state.dialog.persona_id
    return state.player.active_persona_id if state.player else None


def tags_in(p: PersonaInfo, lang: str) -> list[str]:
    if lang != "ru":
        tags = (p.i18n.get(lang) or {}).get("tags")
        if isinstance(tags, list) and tags and all(isinstance(t, str) for t in tags):
            return list(tags)
    return list(p.tags)


def _player_name(state: PlayerState | None, user: WebAppUser | None, lang: str) -> str:
    """The player's name for {{user}} in card texts: the one they set, their stored Telegram
    one, Telegram's from initData, or the catalogue's word for a visitor without one."""
    name = (state.player.called if state and state.player else None) or (user.first_name if user else None)
    return name or MESSAGES.t(lang, "user_placeholder")


def _zone(core: Core, state: PlayerState | None, lang: str) -> ZoneInfo:
    """{{time}}, {{date}} … in card texts: the player's time zone (a visitor: the language's)."""
    if state is not None and state.player is not None:
        return zone_of(state.player, core.settings.default_timezone)
    return default_zone(lang, core.settings.default_timezone)


def _cut(text: str, kind: str) -> str:
    limit = MAX_PAGE_TEXT[kind]
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


def persona_summary(
    request: web.Request,
    p: PersonaInfo,
    lang: str,
    current_id: str | None,
    player_name: str | None = None,
    zone: tzinfo | None = None,
) -> dict[str, Any]:
    """A persona in the list; its tagline's {{user}} is `player_name`, its {{time}} … in `zone`."""
    colors = ctx_of(request).avatar_colors(p)
    tagline = shown(p.tagline_in(lang), player_macros(p, lang, player_name, zone=zone))
    return {
        "id": p.id,
        "name": p.name_in(lang),
        "tagline": tagline or MESSAGES.t(lang, "tagline_neutral"),
        "tags": tags_in(p, lang),
        # the card's own picture (stored, vitte.webapp.portraits) before a fixture's or a URL's
        "avatar_url": portrait_url(request, p.id, p.portrait, LIST_SIZE) or avatar_url(request, p.avatar),
        "portrait_url": portrait_url(request, p.id, p.portrait, PAGE_SIZE),
        "colors": list(colors),
        "story_count": len(p.stories),
        "current": current_id is not None and p.id == current_id,
    }


async def me_payload(core: Core, user: WebAppUser, state: PlayerState) -> dict[str, Any]:
    player = state.player
    dialog = state.dialog
    ent = await core.billing.entitlement(user.id)
    return {
        "id": user.id,
        "first_name": (player.first_name if player else None) or user.first_name,
        # what the player asked to be called ("" = their Telegram first name)
        "name": (player.name if player else None) or "",
        "registered": player is not None,
        "language": state.language,
        "style": player.style if player else "normal",
        # voice replies (issue 19): offered only with VITTE_TTS_MODEL
        "voice_replies": player.voice_replies if player else "never",
        "voice_available": core.dialogs.speech.on,
        "adult_confirmed": bool(player and player.adult_confirmed_at is not None),
        "persona_id": _current_persona_id(state),
        "persona_name": dialog.persona_name if dialog else None,
        "story_id": dialog.story_id if dialog else None,
        "story_title": dialog.story_title if dialog else None,
        "dialog_id": dialog.id if dialog else None,
        "plan": ent.plan_id,
        "plan_title": core.billing.plan(ent.plan_id).title(state.language),
        "is_premium": ent.is_premium,
        "premium_until": _iso(ent.premium_until),
        "renews": ent.renews,
        "subscription_state": ent.subscription_state,
        "daily_limit": ent.daily_limit,
        "used_today": ent.used_today,
        "left_today": ent.left_today,
        "extra_replies": ent.extra_replies,
        # bought for Stars (VITTE_PHOTO_STARS / VITTE_VOICE_STARS) and not spent yet (issue 19)
        "extra_photos": ent.extra_photos,
        "extra_voice": ent.extra_voice,
    }


# ---------------------------------------------------------------------- routes

routes = web.RouteTableDef()


@routes.get("/api/personas")
async def list_personas(request: web.Request) -> web.Response:
    ctx = ctx_of(request)
    user = optional_user(request)
    state, lang = await _visitor_state(request, ctx, user)
    current_id = _current_persona_id(state)
    personas = await ctx.core.catalog.personas()
    name, zone = _player_name(state, user, lang), _zone(ctx.core, state, lang)
    return json_response(
        {
            "language": lang,
            "authenticated": user is not None,
            "personas": [persona_summary(request, p, lang, current_id, name, zone) for p in personas],
        }
    )


@routes.get("/api/personas/{persona_id}")
async def get_persona(request: web.Request) -> web.Response:
    ctx = ctx_of(request)
    user = optional_user(request)
    state, lang = await _visitor_state(request, ctx, user)
    persona_id = request.match_info["persona_id"]
    if len(persona_id) > MAX_ID_LEN:
        raise UnknownPersona(persona_id[:MAX_ID_LEN])
    p = await ctx.core.catalog.persona(persona_id)
    dialog = state.dialog if state and state.dialog and state.dialog.persona_id == p.id else None
    player_name, zone = _player_name(state, user, lang), _zone(ctx.core, state, lang)
    body = persona_summary(request, p, lang, _current_persona_id(state), player_name, zone)
    # {{char}}, {{user}} … as this player reads them; {{pick}} as their chat with the persona chose
    seed = pick_seed(dialog.id if dialog else None, user.id if user else None)
    macros = player_macros(p, lang, player_name, seed=seed, zone=zone)
    description = shown(p.description_in(lang), macros)
    body.update(
        {
            # never W++ or brackets; never unbounded
            "description": _cut(description, "description") if reads_as_prose(description) else "",
            "stories": [
                {
                    "id": s.id,
                    "title": _cut(shown(s.title_in(lang), macros), "title"),
                    "premise": _cut(shown(s.premise_in(lang), macros), "premise"),
                    "current": dialog is not None and dialog.story_id == s.id,
                }
                for s in p.stories
            ],
            "current_story_id": dialog.story_id if dialog else None,
            "dialog_id": dialog.id if dialog else None,
            "language": lang,
            "authenticated": user is not None,
        }
    )
    return json_response(body)


@routes.get("/api/me")
async def get_me(request: web.Request) -> web.Response:
    ctx = ctx_of(request)
    user = require_user(request)
    state = await _answering(request, ctx, user)
    return json_response(await me_payload(ctx.core, user, state))


async def _seen(core: Core, user: WebAppUser) -> PlayerView:
    return await core.players.seen(
        user.id, language_code=user.language_code, first_name=user.first_name, username=user.username
    )


@routes.post("/api/me/adult")
async def post_adult(request: web.Request) -> web.Response:
    """The age gate: {"adult": true} is "Мне есть 18", {"adult": false} is "Мне нет 18"."""
    ctx = ctx_of(request)
    user = require_user(request)
    data = await read_object(request)
    adult = data.get("adult")
    if not isinstance(adult, bool):
        raise ApiError(400, "bad_request", "adult must be true or false")
    if not adult:
        require_fresh_user(request)  # withdrawing the confirmation is destructive
    async with ctx.core.dialogs.turn(user.id):
        if adult:
            await ctx.core.players.confirm_adult(user.id, language_code=user.language_code)
            await _seen(ctx.core, user)
        else:
            await ctx.core.players.decline_adult(user.id)
        state = await _answering(request, ctx, user)
    return json_response(await me_payload(ctx.core, user, state))


async def _send(ctx: WebContext, turn: Turn, opening: Opening) -> None:
    if opening.delivered:
        return  # a double click: the first click's opening is already in the chat
    with _sending("opening", turn.user_id, "send_failed", dialog_id=opening.dialog.id):
        message_id = await send_opening(ctx.bot, turn.user_id, opening)
    await ctx.core.dialogs.opening_sent(opening, message_id)


@contextmanager
def _sending(what: str, user_id: int, failed: str, **extra: Any) -> Iterator[None]:
    """A message the bot sends into the player's chat for the Web App: a player who blocked
    the bot gets 409 bot_blocked, any other Telegram or network failure 502 `failed`."""
    try:
        yield
    except TelegramForbiddenError as exc:
        log.info("%s for user %s not sent: %s", what, user_id, exc)
        raise ApiError(409, "bot_blocked", **extra) from None
    except (TelegramAPIError, OSError, TimeoutError) as exc:
        log.warning("%s for user %s not sent: %s", what, user_id, exc)
        raise ApiError(502, failed, **extra) from None


@routes.post("/api/dialogs")
async def open_dialog(request: web.Request) -> web.Response:
    """Choose persona + story (or refresh the current one); the bot sends the opening."""
    ctx = ctx_of(request)
    core = ctx.core
    user = require_user(request)
    data = await read_object(request)
    persona_id = _text_field(data, "persona_id", required=True) or ""
    story_id = _text_field(data, "story_id", required=True) or ""
    restart = _bool_field(data, "restart")
    dialog_id = _int_field(data, "dialog_id")
    persona = await core.catalog.persona(persona_id)
    persona.story(story_id)  # 404 before anything changes
    await keep_pace(core.cache, user.id, DIALOG_OPENINGS)  # each choice makes the bot send
    async with core.dialogs.turn(user.id) as turn:
        player = await _seen(core, user)
        request[LANG_KEY] = player.language
        opening = await core.dialogs.choose(
            turn, persona_id, story_id, language_code=user.language_code, restart=restart, dialog_id=dialog_id
        )
        await _send(ctx, turn, opening)
    return json_response(
        {
            "dialog_id": opening.dialog.id,
            "persona_id": opening.dialog.persona_id,
            "story_id": opening.dialog.story_id,
            "reused": opening.reused,
            "restarted": opening.restarted,
            "sent": True,
        }
    )


@routes.post("/api/settings")
async def post_settings(request: web.Request) -> web.Response:
    ctx = ctx_of(request)
    user = require_user(request)
    data = await read_object(request)
    language = _text_field(data, "language", required=False)
    style = _text_field(data, "style", required=False)
    voice = _text_field(data, "voice_replies", required=False)
    name = data.get("name")  # what to call the player; "" = their Telegram first name
    if name is not None and not isinstance(name, str):
        raise ApiError(400, "bad_request", "name must be a string")
    if language is None and style is None and voice is None and name is None:
        raise ApiError(400, "bad_request", "nothing to change: send language, style, voice_replies and/or name")
    if voice is not None and voice not in VOICE_REPLIES:
        raise ApiError(400, "bad_setting", f"voice_replies must be one of {', '.join(VOICE_REPLIES)}")
    if language is not None and language not in LANGUAGES:
        raise ApiError(400, "bad_setting", f"language must be one of {', '.join(LANGUAGES)}")
    if style is not None and style not in STYLES:
        raise ApiError(400, "bad_setting", f"style must be one of {', '.join(STYLES)}")
    if name is not None:
        try:
            name = clean_name(name)  # refused before anything changes
        except BadName as exc:
            raise ApiError(400, f"name_{exc.reason}", str(exc)) from None
    async with ctx.core.dialogs.turn(user.id):
        await _seen(ctx.core, user)
        if language is not None or style is not None or voice is not None:
            await ctx.core.players.update_settings(user.id, language=language, style=style, voice_replies=voice)
        if name is not None:
            await set_name(ctx.core.db, user.id, name)
        state = await _answering(request, ctx, user)
    return json_response(await me_payload(ctx.core, user, state))


async def _confirm_in_chat(ctx: Any, user: WebAppUser, lang: str) -> None:
    """The deletion asked with a stale proof: the question goes to the chat (ApiError 401
    auth_stale_chat once sent; nothing sent, the caller's auth_stale stands)."""
    try:
        await keep_pace(ctx.core.cache, user.id, DELETE_CONFIRMATIONS)
        player = await ctx.core.players.get(user.id)
        await send_delete_confirmation(ctx.bot, user.id, player.language)
    except (UnknownUser, RateLimited, TelegramAPIError, OSError, TimeoutError) as exc:
        log.info("deletion confirmation for user %s not sent to the chat: %s", user.id, exc)
        return
    raise ApiError(401, "auth_stale_chat")


@routes.post("/api/me/delete")
async def delete_me(request: web.Request) -> web.Response:
    """Delete the player's data. With initData older than VITTE_WEBAPP_FRESH_AUTH the deletion
    is confirmed in the chat instead: the bot sends /settings' question with its buttons there
    (401 `auth_stale_chat`; a player who blocked the bot gets `auth_stale`: reopen the app)."""
    ctx = ctx_of(request)
    try:
        user = require_fresh_user(request)
    except InitDataError as exc:
        if exc.code != "auth_stale":
            raise
        await _confirm_in_chat(ctx, require_user(request), request[LANG_KEY])
        raise
    data = await read_object(request)
    if data.get("confirm") is not True:
        raise ApiError(400, "confirm_required", "send {\"confirm\": true}")
    async with ctx.core.dialogs.turn(user.id):
        try:
            report = await ctx.core.players.delete_data(user.id)
            dialogs, payments = report.dialogs, report.payments_anonymised
        except UnknownUser:
            dialogs, payments = 0, 0
    return json_response({"deleted": True, "dialogs": dialogs, "payments_anonymised": payments})


@routes.post("/api/me/export")
async def export_me(request: web.Request) -> web.Response:
    """The "Download my data" button: the bot sends the file (the same one as /mydata) into the chat.

    A Telegram Web App cannot reliably download a file; the chat can show and keep it.
    """
    ctx = ctx_of(request)
    user = require_user(request)
    await read_object(request)  # no fields; a body, if any, must still be a JSON object
    state = await _answering(request, ctx, user)
    if state.player is None:
        raise ApiError(404, "no_data")
    async with ctx.core.dialogs.turn(user.id):
        try:
            with _sending("data export", user.id, "export_failed"):
                await send_player_data(ctx.core, ctx.bot, user.id, user.id, state.language)
        except UnknownUser:  # deleted in the meantime
            raise ApiError(404, "no_data") from None
        except ExportThrottled as exc:
            raise RateLimited(exc.retry_after_seconds) from None
    return json_response({"sent": True, "filename": export_filename(user.id)})


@routes.get("/api/plans")
async def get_plans(request: web.Request) -> web.Response:
    ctx = ctx_of(request)
    user = optional_user(request)
    _state, lang = await _visitor_state(request, ctx, user)
    current = (await ctx.core.billing.entitlement(user.id)).plan_id if user else None
    return json_response(
        {
            "language": lang,
            "plans": [p.to_json(lang) for p in ctx.core.billing.plans()],
            # one photo / one voice reply for Stars (issue 19), when on sale: kind "item"
            "items": [p.to_json(lang) for p in ctx.core.billing.item_plans()],
            "current_plan": current,
        }
    )


@routes.post("/api/invoice")
async def post_invoice(request: web.Request) -> web.Response:
    """An invoice link for a plan (Telegram.WebApp.openInvoice opens it); Stars only."""
    ctx = ctx_of(request)
    user = require_user(request)
    data = await read_object(request)
    plan_id = _text_field(data, "plan_id", required=True) or ""
    lang = (await _answering(request, ctx, user)).language
    plan = ctx.core.billing.plan(plan_id)  # 404 for an unknown plan
    if not plan.purchasable:
        raise ApiError(400, "bad_request", f"the {plan_id} plan is not for sale")
    player = await _seen(ctx.core, user)
    if player.blocked_at is not None:  # 403 "blocked": a blocked player is sold nothing
        raise PlayerBlocked(player.blocked_reason)
    await keep_pace(ctx.core.cache, user.id, INVOICES)
    try:
        link = await create_invoice_link(ctx.core.billing, ctx.bot, user.id, plan.id, lang)
    except ConfigError as exc:
        log.warning("invoice for user %s: %s", user.id, exc)
        raise ApiError(501, "payments_not_ready") from None
    except (TelegramAPIError, OSError, TimeoutError) as exc:
        log.warning("invoice for user %s failed: %s", user.id, exc)
        raise ApiError(502, "invoice_failed") from None
    return json_response({"plan_id": plan.id, "invoice_link": link})
