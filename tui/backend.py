"""What the console runs on: the real core, the real Dispatcher, a local Bot API and the Web App.

Nothing here knows a dialog rule. `ConsoleBackend.open()` does what `vitte run-bot` and
`vitte serve-webapp` do — `Core.open(settings)`, `build_dispatcher(core)`, `make_webapp(core,
bot)` — except that the Bot API is the in-process `LocalBotSession` and the player is a
`LocalPlayer` feeding real `Update` objects to the Dispatcher. The Web App is served on
127.0.0.1 (a random port) and called over HTTP with initData signed for the simulated player
with the bot's token, so its authentication is exercised exactly as in Telegram.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import logging
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlencode, urlsplit

from tui.strings import tr
from vitte.config import Settings
from vitte.i18n import DEFAULT_LANGUAGE

if TYPE_CHECKING:
    from aiogram import Bot, Dispatcher
    from aiohttp import ClientSession, web

    from vitte.core import Core
    from vitte.initiative.nudger import Nudger, RunReport
    from vitte.llm.base import LLM
    from vitte.localapi import LocalBotSession, LocalPlayer

# aiogram, aiohttp and the bot are imported in `open()`: the console's window shows at once
# and says "loading" while they import.

log = logging.getLogger("vitte.console")

# Where a Web App button points when VITTE_WEBAPP_URL is not configured: the console opens
# its own in-process Web App for any web_app button, so the address only has to look right.
LOCAL_WEBAPP_URL = "https://vitte.local/webapp"
DEFAULT_USER_ID = 1001
# The local bot's token: never a real one (nothing leaves the process). Well-formed, so that
# whatever derives keys from VITTE_BOT_TOKEN (invoice payload signing) works when none is set.
LOCAL_BOT_TOKEN = "42:LOCAL-CONSOLE-TOKEN-not-for-telegram"


@dataclass(frozen=True, slots=True)
class Profile:
    """The simulated Telegram user."""

    user_id: int
    first_name: str
    language: str = DEFAULT_LANGUAGE
    username: str | None = None

    def telegram_json(self) -> dict[str, Any]:
        user: dict[str, Any] = {
            "id": self.user_id,
            "first_name": self.first_name,
            "language_code": self.language,
            "allows_write_to_pm": True,
        }
        if self.username:
            user["username"] = self.username
        return user


def default_name(language: str) -> str:
    return tr(language, "guest_name")


# --------------------------------------------------------------------------- initData


def _sign_fallback(fields: dict[str, str], bot_token: str) -> str:
    """Telegram's initData hash (used only if vitte.webapp.auth does not provide one)."""
    secret = hmac.new(b"WebAppData", bot_token.encode(), hashlib.sha256).digest()
    check = "\n".join(f"{k}={fields[k]}" for k in sorted(fields) if k != "hash")
    return hmac.new(secret, check.encode(), hashlib.sha256).hexdigest()


def sign_init_data(user: dict[str, Any], bot_token: str, *, start_param: str | None = None) -> str:
    """initData as Telegram hands it to a Web App opened by `user`, signed with the bot token."""
    try:
        from vitte.webapp.auth import sign_init_data as sign
    except ImportError:  # pragma: no cover - the Web App ships its helper
        sign = _sign_fallback
    fields = {
        "auth_date": str(int(time.time())),
        "query_id": "AAH" + secrets.token_urlsafe(12),
        "user": json.dumps(user, ensure_ascii=False, separators=(",", ":")),
    }
    if start_param:
        fields["start_param"] = start_param
    fields["hash"] = sign(fields, bot_token)
    return urlencode(fields)


def webapp_route(url: str | None) -> str:
    """The page a Web App URL asks for: '#/persona/<id>', '#/settings', '#/premium' or '#/'."""
    if not url:
        return "#/"
    fragment = urlsplit(url).fragment
    if not fragment.startswith("/"):
        return "#/"
    return "#" + fragment.split("?", 1)[0]


# --------------------------------------------------------------------------- Web App over HTTP


class WebAppError(Exception):
    """The Web App answered an error: `message` is its localized text for the player."""

    def __init__(self, status: int, code: str, message: str, body: Any = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.body = body


class WebAppClient:
    """Calls the real Web App JSON API on loopback, as the page in Telegram would."""

    def __init__(self, base_url: str, init_data: Callable[[], str]) -> None:
        self.base_url = base_url.rstrip("/")
        self._init_data = init_data
        self._http: ClientSession | None = None

    async def _session(self) -> ClientSession:
        if self._http is None:
            import aiohttp

            self._http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30))
        return self._http

    async def call(
        self, method: str, path: str, body: dict[str, Any] | None = None, *, auth: bool = True
    ) -> Any:
        http = await self._session()
        headers = {"Authorization": f"tma {self._init_data()}"} if auth else {}
        async with http.request(
            method, f"{self.base_url}/{path.lstrip('/')}", json=body, headers=headers
        ) as resp:
            try:
                data = await resp.json(content_type=None)
            except ValueError:
                data = None
            if resp.status >= 400:
                code = data.get("code", "error") if isinstance(data, dict) else "error"
                text = (
                    data.get("error", f"HTTP {resp.status}")
                    if isinstance(data, dict)
                    else f"HTTP {resp.status}"
                )
                raise WebAppError(resp.status, str(code), str(text), data)
            return data

    async def personas(self) -> dict[str, Any]:
        return await self.call("GET", "api/personas")

    async def persona(self, persona_id: str) -> dict[str, Any]:
        return await self.call("GET", f"api/personas/{quote(persona_id, safe='')}")

    async def me(self) -> dict[str, Any]:
        return await self.call("GET", "api/me")

    async def open_dialog(
        self, persona_id: str, story_id: str, *, restart: bool = False, dialog_id: int | None = None
    ) -> dict[str, Any]:
        body: dict[str, Any] = {"persona_id": persona_id, "story_id": story_id}
        if restart:
            body["restart"] = True
            if dialog_id:
                body["dialog_id"] = dialog_id
        return await self.call("POST", "api/dialogs", body)

    async def confirm_adult(self, adult: bool) -> dict[str, Any]:
        return await self.call("POST", "api/me/adult", {"adult": adult})

    async def save_settings(self, *, language: str | None = None, style: str | None = None) -> dict[str, Any]:
        body = {k: v for k, v in (("language", language), ("style", style)) if v is not None}
        return await self.call("POST", "api/settings", body)

    async def export_me(self) -> dict[str, Any]:
        return await self.call("POST", "api/me/export", {})

    async def delete_me(self) -> dict[str, Any]:
        return await self.call("POST", "api/me/delete", {"confirm": True})

    async def memory(self) -> dict[str, Any]:
        """The memory page: the player's facts and summary (vitte.webapp.memory_api)."""
        return await self.call("GET", "api/me/memory")

    async def add_fact(self, text: str) -> dict[str, Any]:
        return await self.call("POST", "api/me/memory", {"text": text})

    async def forget_fact(self, fact_id: int) -> dict[str, Any]:
        return await self.call("DELETE", f"api/me/memory/{int(fact_id)}")

    async def plans(self) -> dict[str, Any]:
        return await self.call("GET", "api/plans")

    async def invoice(self, plan_id: str) -> dict[str, Any]:
        return await self.call("POST", "api/invoice", {"plan_id": plan_id})

    async def close(self) -> None:
        if self._http is not None:
            await self._http.close()
            self._http = None


class WebAppServer:
    """`make_webapp(core, bot)` served by aiohttp on 127.0.0.1 at a free port."""

    def __init__(self, app: web.Application) -> None:
        self.app = app
        self.runner: web.AppRunner | None = None
        self.port = 0

    async def start(self) -> str:
        from aiohttp import web

        self.runner = web.AppRunner(self.app, handle_signals=False, access_log=None)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        self.port = int(self.runner.addresses[0][1])
        return self.url

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def close(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()
            self.runner = None


# --------------------------------------------------------------------------- the backend


class ConsoleBackend:
    """The core, a local bot on the real Dispatcher, the simulated players and the Web App."""

    def __init__(
        self,
        settings: Settings,
        *,
        llm: LLM | None = None,
        runtime: Any = None,
        update_id_start: int | None = None,
        serve_webapp: bool = True,
    ) -> None:
        local: dict[str, Any] = {}
        if not settings.webapp_url:
            local["webapp_url"] = LOCAL_WEBAPP_URL
        if settings.bot_token is None or not settings.bot_token.get_secret_value().strip():
            from pydantic import SecretStr

            local["bot_token"] = SecretStr(LOCAL_BOT_TOKEN)
        if local:
            settings = settings.model_copy(update=local)
        self.settings = settings
        self._llm = llm
        self._runtime = runtime
        # Update ids must not repeat across console runs: with Redis the de-duplication keys
        # outlive the process, and a reused id would be dropped as a duplicate.
        self._update_id_start = update_id_start or int(time.time() * 1000)
        self._serve_webapp = serve_webapp
        self.core: Core | None = None
        self._session: LocalBotSession | None = None
        self._bot: Bot | None = None
        self.dp: Dispatcher | None = None
        self.players: dict[int, LocalPlayer] = {}
        self.profiles: dict[int, Profile] = {}
        self.player: LocalPlayer | None = None
        self.profile: Profile | None = None
        self.webapp: WebAppServer | None = None
        self.web: WebAppClient | None = None
        self.webapp_error: str | None = None
        # the persona writes first (issue 18): the scheduler on a clock the operator moves
        from vitte.initiative.clock import Clock

        self.clock = Clock(ages_marks=True)
        self.nudger: Nudger | None = None

    @property
    def session(self) -> LocalBotSession:
        assert self._session is not None, "ConsoleBackend.open() first"
        return self._session

    @property
    def bot(self) -> Bot:
        assert self._bot is not None, "ConsoleBackend.open() first"
        return self._bot

    # ------------------------------------------------------------------ lifecycle
    async def open(self) -> None:
        from vitte.bot.factory import build_dispatcher
        from vitte.core import Core
        from vitte.localapi import LocalBotSession, make_local_bot

        self._session = LocalBotSession(
            bot_first_name="Vitte", update_id_start=self._update_id_start, max_messages_per_chat=20_000
        )
        self._bot = make_local_bot(self._session, token=LOCAL_BOT_TOKEN)
        self.core = await Core.open(self.settings, llm=self._llm, seed_if_empty=True)
        self.dp = build_dispatcher(self.core, self._runtime) if self._runtime else build_dispatcher(self.core)
        from vitte.initiative.nudger import Nudger
        from vitte.telegram.nudges import nudge_sender

        self.nudger = Nudger(self.core, nudge_sender(self._bot), clock=self.clock)
        if self._serve_webapp:
            try:
                from vitte.webapp.app import make_webapp

                self.webapp = WebAppServer(make_webapp(self.core, self.bot))
                url = await self.webapp.start()
                self.web = WebAppClient(url, self.init_data)
            except Exception as exc:  # the chat works without the Web App
                log.warning("web app unavailable in the console: %s", exc)
                self.webapp_error = f"{type(exc).__name__}: {exc}"
                self.webapp = None
                self.web = None

    async def close(self) -> None:
        if self.web is not None:
            await self.web.close()
        if self.webapp is not None:
            await self.webapp.close()
        if self.dp is not None:
            runtime = self.dp.get("runtime")
            if runtime is not None and hasattr(runtime, "drain"):
                with contextlib.suppress(Exception):
                    await runtime.drain(0.5)  # quitting the console: cut replies short
        if self.core is not None:
            await self.core.close()
            self.core = None

    # ------------------------------------------------------------------ the clock (issue 18)
    async def advance_clock(self, seconds: float) -> RunReport:
        """Move the scheduler's clock forward and send the nudges due by then (into the
        local chats, through the local Bot API, as `vitte run-bot` would)."""
        assert self.nudger is not None, "ConsoleBackend.open() first"
        self.clock.advance(seconds)
        await self.nudger.backfill()
        return await self.nudger.run_due()

    # ------------------------------------------------------------------ players
    async def use_player(
        self,
        user_id: int,
        *,
        first_name: str | None = None,
        language: str | None = None,
        username: str | None = None,
    ) -> LocalPlayer:
        """Play as `user_id`: a player known to the store keeps their name and language."""
        assert self.core is not None and self.dp is not None
        from vitte.errors import UnknownUser
        from vitte.localapi import LocalPlayer

        known = self.profiles.get(user_id)
        stored = None
        with contextlib.suppress(UnknownUser):
            stored = await self.core.players.get(user_id)
        lang = (
            language or (known.language if known else None) or (stored.language if stored else None) or DEFAULT_LANGUAGE
        )
        name = (
            first_name
            or (known.first_name if known else None)
            or (stored.first_name if stored else None)
            or default_name(lang)
        )
        uname = username or (known.username if known else None) or (stored.username if stored else None)
        profile = Profile(user_id=user_id, first_name=name, language=lang, username=uname)
        player = self.players.get(user_id)
        if player is None or profile != known:
            player = LocalPlayer(
                self.dp,
                self.bot,
                self.session,
                user_id=user_id,
                first_name=profile.first_name,
                username=profile.username,
                language_code=profile.language,
            )
            self.players[user_id] = player
        self.profiles[user_id] = profile
        self.player, self.profile = player, profile
        return player

    def init_data(self, start_param: str | None = None) -> str:
        assert self.profile is not None
        return sign_init_data(self.profile.telegram_json(), self.bot.token, start_param=start_param)

    def browser_url(self) -> str | None:
        """The real Web App page for the simulated player (initData in the URL hash)."""
        if self.webapp is None or self.profile is None:
            return None
        params = urlencode(
            {"tgWebAppData": self.init_data(), "tgWebAppVersion": "8.0", "tgWebAppPlatform": "tdesktop"},
            quote_via=quote,
        )
        return f"{self.webapp.url}/#{params}"

    @property
    def llm_label(self) -> str:
        if self.core is None:
            return ""
        llm = self.core.llm
        return str(getattr(llm, "label", "") or type(llm).__name__)

    @property
    def is_demo(self) -> bool:
        return bool(self.core is not None and getattr(self.core.llm, "is_demo", False))

    def store_label(self) -> str:
        s = self.settings
        store = "SQLite" if s.is_sqlite else "PostgreSQL"
        if s.is_sqlite and s.sqlite_path() is not None:
            store += f" {s.sqlite_path()}"
        cache = "Redis" if s.redis_url else "in-process cache"
        return f"{store} · {cache}"
