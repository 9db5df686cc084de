"""`vitte doctor`'s checks: what is wrong with this deployment, before the players notice.

No CLI and no Rich here (the face is cli/doctor.py): `run_doctor(settings, options)` returns a
`Report` of `Check` rows, each with a status (ok / warn / fail / skipped), a one-line detail and,
for a problem, a one-line fix. The independent checks run concurrently, each bounded by
`options.timeout`, so a dead host cannot hang the command.

Nothing secret leaves this module: every string of the report (details, fixes, data) has the
configured secrets (bot token, API key, webhook/metrics/payload secrets, passwords inside URLs)
replaced by ``***``, and URLs are shown with their password masked.

The checks, by name (stable: the JSON output and monitoring depend on them):

- ``config``: the settings loaded (the caller already turned an unloadable configuration into
  exit code 2) and consistent (a webhook needs its secret);
- ``database``: reachable, and at the migrations' head;
- ``redis``: PING answered (or the in-process cache stated);
- ``llm_models``: ``GET {VITTE_LLM_BASE_URL}/models`` answered with the key, the model listed
  (or the offline demo writer stated);
- ``llm_completion``: with ``deep``, a one-token ``/chat/completions``;
- ``media``: the voice and photo models (`vitte.media_doctor`; asked only with ``deep``);
- ``bot_token``: ``getMe``; ``webhook``: ``getWebhookInfo`` (URL, pending updates, last error);
- ``webapp``: VITTE_WEBAPP_URL over https with a certificate this machine trusts (when set);
- ``disk``: free space where the spool lives (the working directory), and that it is writable;
- ``spool``: messages kept while the database was away (`vitte.spool`: the file and, with Redis,
  the shared list) and not answered yet: how many, since when (a warning: the bot answers them
  when it runs and the database is up; older than VITTE_SPOOL_MAX_AGE, they are given up);
- ``clock``: the local clock against the ``Date`` header of an HTTP server the doctor contacted
  (the Bot API server first, then the LLM API, then the Web App).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import shutil
import ssl
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any, Literal, cast
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from vitte.config import ConfigError, Settings

Status = Literal["ok", "warn", "fail", "skipped"]
STATUSES: tuple[Status, ...] = ("ok", "warn", "fail", "skipped")

# every check, in the order shown; the names are the JSON output's stable keys
CHECKS: dict[str, str] = {
    "config": "configuration",
    "database": "database",
    "redis": "cache (Redis)",
    "llm_models": "LLM API",
    "llm_completion": "LLM completion",
    "media": "voice and photo models",
    "bot_token": "bot token (getMe)",
    "webhook": "webhook",
    "webapp": "Web App (https)",
    "disk": "disk space",
    "spool": "kept messages (spool)",
    "clock": "clock",
}

MASK = "***"
CERT_WARN_DAYS = 14  # a Web App certificate that expires sooner is a warning
WEBHOOK_ERROR_RECENT = 3600.0  # a webhook error younger than this is a failure, older a warning
_SENSITIVE_QUERY = re.compile(r"pass|secret|token|key|auth|sig", re.IGNORECASE)

FIX_DB_REACH = "start PostgreSQL, or correct VITTE_DATABASE_URL (host, port, user, password, database)"
FIX_DB_UPGRADE = "run `vitte db upgrade`"
FIX_REDIS = (
    "start Redis, or correct VITTE_REDIS_URL (unset it for the in-process cache: one bot process only)"
)
FIX_LLM_REACH = "start the LLM server, or correct VITTE_LLM_BASE_URL (the API's base with its /v1)"
FIX_LLM_KEY = "set VITTE_LLM_API_KEY to a key this API accepts"
FIX_TOKEN = "set VITTE_BOT_TOKEN from @BotFather (/mybots → API Token)"
FIX_BOT_API = "check the network to the Bot API server, or VITTE_TELEGRAM_API_URL"
FIX_WEBHOOK_REACH = (
    "make VITTE_WEBHOOK_URL reachable from Telegram (https, a valid certificate, the proxy in front "
    "of `vitte run-bot`)"
)
FIX_WEBAPP_TLS = "serve the Web App over https (a TLS reverse proxy) and set VITTE_WEBAPP_URL=https://…"
FIX_WEBAPP_CERT = "install a certificate from a public CA (e.g. Let's Encrypt) for the Web App's host"
FIX_CLOCK = "synchronise the clock (systemd-timesyncd or chrony: `timedatectl set-ntp true`)"


@dataclass(frozen=True)
class Options:
    """What `vitte doctor`'s options change."""

    timeout: float = 5.0  # seconds each check may take
    deep: bool = False  # also ask the LLM for a one-token completion
    min_free_mb: float = 500.0  # less free disk than this is a failure (twice this: a warning)
    max_clock_offset: float = 3.0  # seconds; a larger offset is a warning
    pending_warn: int = 100  # this many updates waiting at Telegram is a warning
    spool_dir: Path | None = None  # default: the working directory


@dataclass
class Check:
    name: str
    status: Status
    detail: str
    fix: str | None = None
    data: dict[str, Any] = field(default_factory=dict)
    duration_ms: int = 0

    @property
    def title(self) -> str:
        return CHECKS.get(self.name, self.name)

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "title": self.title,
            "status": self.status,
            "detail": self.detail,
            "fix": self.fix,
            "data": self.data,
            "duration_ms": self.duration_ms,
        }


@dataclass
class Report:
    checks: list[Check]

    def count(self, status: Status) -> int:
        return sum(1 for c in self.checks if c.status == status)

    @property
    def ok(self) -> bool:
        """No check failed (warnings allowed)."""
        return self.count("fail") == 0

    def exit_code(self, *, strict: bool = False) -> int:
        """0 when all is well, 1 when a check failed (with `strict`, also when one warned)."""
        return 1 if self.count("fail") or (strict and self.count("warn")) else 0

    def as_dict(self, *, strict: bool = False) -> dict[str, Any]:
        return {
            "ok": self.exit_code(strict=strict) == 0,
            "exit_code": self.exit_code(strict=strict),
            "summary": {status: self.count(status) for status in STATUSES},
            "checks": [c.as_dict() for c in self.checks],
        }


# ---------------------------------------------------------------------- secrets


def mask_url(url: str | None) -> str | None:
    """The URL with its password (and secret-looking query values) replaced by ***."""
    if not url:
        return url
    try:
        parts = urlsplit(url)
        if parts.password is None and not any(_SENSITIVE_QUERY.search(k) for k, _ in parse_qsl(parts.query)):
            return url  # nothing to hide: as written (urlunsplit would rewrite sqlite:///path)
        netloc = parts.netloc
        if parts.password is not None:
            userinfo, _, hostport = netloc.rpartition("@")
            user = userinfo.split(":", 1)[0]
            netloc = f"{user}:{MASK}@{hostport}"
        query = parts.query
        if query:
            pairs = parse_qsl(query, keep_blank_values=True)
            query = urlencode([(k, MASK if _SENSITIVE_QUERY.search(k) else v) for k, v in pairs], safe="*")
        return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))
    except ValueError:
        return MASK


def secrets_of(settings: Settings) -> list[str]:
    """Every secret value the settings hold, longest first (for `redact`)."""
    found: set[str] = set()
    for secret in (
        settings.bot_token,
        settings.llm_api_key,
        settings.webhook_secret,
        settings.metrics_token,
        settings.payload_secret,
    ):
        if secret is not None and secret.get_secret_value().strip():
            value = secret.get_secret_value().strip()
            found.add(value)
            if secret is settings.bot_token and ":" in value:
                found.add(value.split(":", 1)[1])  # the token's secret half alone
    for url in (
        settings.database_url,
        settings.redis_url,
        settings.llm_base_url,
        settings.webapp_url,
        settings.webhook_url,
        settings.telegram_api_url,
    ):
        if not url:
            continue
        with contextlib.suppress(ValueError):
            parts = urlsplit(url)
            password = parts.password
            if password:
                from urllib.parse import unquote

                found.update({password, unquote(password)})
            for key, value in parse_qsl(parts.query):
                if value and _SENSITIVE_QUERY.search(key):
                    found.add(value)
    return sorted((s for s in found if len(s) >= 3), key=len, reverse=True)


def redact(value: Any, secrets: list[str]) -> Any:
    """`value` (a string, or lists/dicts of them) with every secret replaced by ***."""
    if isinstance(value, str):
        for secret in secrets:
            if secret in value:
                value = value.replace(secret, MASK)
        return value
    if isinstance(value, dict):
        return {k: redact(v, secrets) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [redact(v, secrets) for v in value]
    return value


def _first_line(exc: BaseException, limit: int = 160) -> str:
    text = str(exc).strip()
    line = text.splitlines()[0].strip() if text else type(exc).__name__
    return line if len(line) <= limit else line[: limit - 1] + "…"


def _short(text: str, limit: int = 120) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


# ---------------------------------------------------------------------- HTTP


@dataclass
class _Clock:
    """One clock reading: the server's Date against the local clock around the request."""

    role: str  # telegram / llm / webapp
    host: str
    offset: float  # seconds the server is ahead of us
    uncertainty: float


@dataclass
class _Http:
    """The doctor's HTTP client (the LLM API, the Web App, the clock probe): one aiohttp
    session; every response's Date header is read for the clock check."""

    timeout: float
    session: Any = None
    readings: list[_Clock] = field(default_factory=list)

    async def __aenter__(self) -> _Http:
        import aiohttp

        self.session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(ssl=_ssl_context()),
            timeout=aiohttp.ClientTimeout(total=self.timeout),
            trust_env=True,  # HTTPS_PROXY / NO_PROXY as the LLM client honours them
        )
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self.session is not None:
            await self.session.close()

    @contextlib.asynccontextmanager
    async def request(self, role: str, method: str, url: str, **kw: Any) -> Any:
        started = time.time()
        async with self.session.request(method, url, allow_redirects=False, **kw) as resp:
            self._read_date(role, url, resp.headers.get("Date"), started, time.time())
            yield resp

    def _read_date(self, role: str, url: str, header: str | None, started: float, ended: float) -> None:
        if not header:
            return
        try:
            server = parsedate_to_datetime(header).timestamp()
        except (TypeError, ValueError, IndexError):
            return
        # Date has whole seconds: the server's clock was somewhere in [server, server + 1)
        middle = (started + ended) / 2
        offset = server + 0.5 - middle
        uncertainty = 0.5 + (ended - started) / 2
        self.readings.append(_Clock(role, urlsplit(url).hostname or "?", offset, uncertainty))


def _ssl_context() -> ssl.SSLContext:
    """The CAs the LLM client trusts: SSL_CERT_FILE / SSL_CERT_DIR when set, else certifi's."""
    if os.environ.get("SSL_CERT_FILE"):
        return ssl.create_default_context(cafile=os.environ["SSL_CERT_FILE"])
    if os.environ.get("SSL_CERT_DIR"):
        return ssl.create_default_context(capath=os.environ["SSL_CERT_DIR"])
    try:
        import certifi
    except ImportError:  # pragma: no cover - certifi comes with aiogram
        return ssl.create_default_context()
    return ssl.create_default_context(cafile=certifi.where())


def _error_message(body: Any, fallback: str) -> str:
    """The provider's error text from an OpenAI-style error body."""
    if isinstance(body, dict):
        err = body.get("error")
        if isinstance(err, dict) and err.get("message"):
            return _short(str(err["message"]))
        if isinstance(err, str):
            return _short(err)
        if body.get("message"):
            return _short(str(body["message"]))
    if isinstance(body, str) and body.strip():
        return _short(body)
    return fallback


async def _json_or_text(resp: Any) -> Any:
    text = await resp.text(errors="replace")
    try:
        import json

        return json.loads(text)
    except ValueError:
        return text


def _connection_problem(exc: BaseException) -> str | None:
    """A one-line description when `exc` means the server could not be reached."""
    import aiohttp

    if isinstance(exc, aiohttp.ClientConnectorCertificateError):
        return f"certificate not valid: {_first_line(exc.certificate_error)}"
    if isinstance(exc, aiohttp.ClientSSLError):
        return f"TLS failed: {_first_line(exc)}"
    if isinstance(exc, aiohttp.ClientConnectorError):
        return f"unreachable: {_first_line(exc.os_error) if exc.os_error else _first_line(exc)}"
    if isinstance(exc, aiohttp.ClientError | OSError):
        return f"connection failed: {_first_line(exc)}"
    return None


# ---------------------------------------------------------------------- the checks


def _skipped(name: str, why: str) -> Check:
    return Check(name, "skipped", why)


def check_config(settings: Settings) -> Check:
    """The settings loaded; the combinations the faces would refuse are failures here."""
    data: dict[str, Any] = {
        "database": "sqlite" if settings.is_sqlite else "postgresql",
        "cache": "redis" if settings.redis_url else "memory",
        "llm": "demo" if settings.uses_demo_writer else "openai-compatible",
        "updates": "webhook" if settings.webhook_url else "polling",
        "env_file": Path(".env").is_file(),
    }
    summary = (
        f"{'SQLite' if settings.is_sqlite else 'PostgreSQL'} · "
        f"{'Redis' if settings.redis_url else 'in-process cache'} · "
        f"{'offline demo writer' if settings.uses_demo_writer else 'LLM ' + settings.llm_model} · "
        f"{'webhook' if settings.webhook_url else 'long polling'}"
        f"{' · .env read' if data['env_file'] else ''}"
    )
    if settings.webhook_url:
        from vitte.bot.runner import check_webhook_settings

        try:
            check_webhook_settings(settings)
        except ConfigError as exc:
            return Check(
                "config", "fail", str(exc), "set VITTE_WEBHOOK_SECRET to 1-256 of A-Z a-z 0-9 _ -", data
            )
    return Check("config", "ok", summary, None, data)


async def check_database(settings: Settings) -> Check:
    from vitte.db import Database, is_unavailable

    shown = mask_url(settings.database_url) or ""
    data: dict[str, Any] = {"url": shown}
    if settings.is_sqlite:
        path = settings.sqlite_path()
        if path is None:
            return Check(
                "database",
                "warn",
                "an in-memory SQLite database: nothing is kept",
                "set VITTE_DATABASE_URL",
                data,
            )
        if not path.exists():
            data.update(current=None, head=None)
            return Check(
                "database",
                "ok",
                f"SQLite {path} does not exist yet: created and migrated on first use",
                None,
                data,
            )
    db = Database(settings)
    try:
        try:
            current = await db.current_revision()
        except Exception as exc:
            if not is_unavailable(exc):
                raise
            why = _first_line(getattr(exc, "orig", None) or exc)  # without SQLAlchemy's "(psycopg…)"
            return Check("database", "fail", f"{shown}: cannot connect: {why}", FIX_DB_REACH, data)
    finally:
        await db.dispose()
    head = Database.head_revision()
    data.update(current=current, head=head)
    if current == head:
        return Check("database", "ok", f"{shown} at revision {current} (the newest)", None, data)
    sqlite_note = " (SQLite upgrades itself on first use)" if settings.is_sqlite else ""
    status: Status = "warn" if settings.is_sqlite else "fail"
    if current is None:
        return Check(
            "database", status, f"{shown} is not migrated (empty){sqlite_note}", FIX_DB_UPGRADE, data
        )
    if current not in _known_revisions():
        return Check(
            "database",
            "fail",
            f"{shown} is at revision {current}, unknown to this version (a newer release migrated it?)",
            "run the release that wrote it, or restore the matching backup",
            data,
        )
    return Check(
        "database", status, f"{shown} is at {current}, behind {head}{sqlite_note}", FIX_DB_UPGRADE, data
    )


def _known_revisions() -> set[str]:
    from alembic.script import ScriptDirectory

    from vitte.db import alembic_config

    return {rev.revision for rev in ScriptDirectory.from_config(alembic_config()).walk_revisions()}


@contextlib.contextmanager
def _captured(logger_name: str) -> Iterator[list[str]]:
    """Log records of one logger, kept for the report instead of reaching stderr."""
    messages: list[str] = []

    class _Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            messages.append(record.getMessage())

    logger = logging.getLogger(logger_name)
    handler, propagate = _Keep(), logger.propagate
    logger.addHandler(handler)
    logger.propagate = False
    try:
        yield messages
    finally:
        logger.removeHandler(handler)
        logger.propagate = propagate


async def check_redis(settings: Settings) -> Check:
    from vitte.cache import make_cache

    if not settings.redis_url:
        return _skipped("redis", "VITTE_REDIS_URL unset: the in-process cache (fine for one bot process)")
    shown = mask_url(settings.redis_url) or ""
    with _captured("vitte.cache.redis") as logged:
        cache = make_cache(settings)
        try:
            answered = await cache.ping()
        finally:
            await cache.close()
    if answered:
        return Check("redis", "ok", f"{shown} answered PING", None, {"url": shown})
    # the cache logs "… in-process locks: <ExceptionType>: <message>"
    why = logged[-1].split(": ", 1)[-1].strip().rstrip(":") if logged else ""
    return Check(
        "redis",
        "fail",
        f"{shown} unreachable: {_short(why or 'no answer to PING')}",
        FIX_REDIS,
        {"url": shown},
    )


def _llm_url(settings: Settings, endpoint: str) -> str:
    """`{base}/{endpoint}`; a base already naming /chat/completions is cut back to its root."""
    base = (settings.llm_base_url or "").rstrip("/")
    base = base.removesuffix("/chat/completions")
    return f"{base}/{endpoint}"


def _llm_headers(settings: Settings) -> dict[str, str]:
    if settings.llm_api_key is None or not settings.llm_api_key.get_secret_value():
        return {}
    return {"Authorization": f"Bearer {settings.llm_api_key.get_secret_value()}"}


def _llm_http_problem(settings: Settings, status: int, message: str) -> tuple[str, str]:
    """(detail, fix) for an LLM API's error answer."""
    if status in (401, 403):
        if not _llm_headers(settings):
            return f"the API wants a key (HTTP {status}: {message})", FIX_LLM_KEY
        return f"the API key was refused (HTTP {status}: {message})", FIX_LLM_KEY
    if status == 429:
        return (
            f"rate-limited or out of quota (HTTP 429: {message})",
            "check the account's limits and billing at the provider",
        )
    if status == 404:
        return (
            f"not found (HTTP 404: {message})",
            "check VITTE_LLM_BASE_URL (with its /v1) and VITTE_LLM_MODEL",
        )
    return f"HTTP {status}: {message}", "the provider is failing: check its status page or the server's logs"


async def _llm_call(
    name: str, settings: Settings, http: _Http, method: str, url: str, data: dict[str, Any], **kwargs: Any
) -> tuple[int, Any] | Check:
    """One request to the LLM API: its status (also in `data`) and body, or the failed check
    when it cannot be reached."""
    try:
        async with http.request("llm", method, url, headers=_llm_headers(settings), **kwargs) as resp:
            status, body = resp.status, await _json_or_text(resp)
    except TimeoutError:
        raise
    except Exception as exc:
        problem = _connection_problem(exc)
        if problem is None:
            raise
        return Check(name, "fail", f"{mask_url(url)} {problem}", FIX_LLM_REACH, data)
    data["http_status"] = status
    return status, body


async def check_llm_models(settings: Settings, http: _Http) -> Check:
    if settings.uses_demo_writer:
        return _skipped("llm_models", "VITTE_LLM_BASE_URL unset: replies come from the offline demo writer")
    url = _llm_url(settings, "models")
    data: dict[str, Any] = {"url": mask_url(url), "model": settings.llm_model}
    answered = await _llm_call("llm_models", settings, http, "GET", url, data)
    if isinstance(answered, Check):
        return answered
    status, body = answered
    if status == 404:
        return Check(
            "llm_models",
            "warn",
            f"{mask_url(url)}: no model list here (HTTP 404)",
            "check that VITTE_LLM_BASE_URL ends with the API's /v1; `--deep` tries a completion",
            data,
        )
    if status >= 400:
        detail, fix = _llm_http_problem(settings, status, _error_message(body, "no message"))
        return Check("llm_models", "fail", detail, fix, data)
    items = body.get("data") if isinstance(body, dict) else None
    if not isinstance(items, list):
        return Check("llm_models", "warn", f"{mask_url(url)} answered, but not with a model list", None, data)
    ids = [str(m.get("id")) for m in items if isinstance(m, dict) and m.get("id")]
    data["models"] = len(ids)
    if ids and settings.llm_model not in ids:
        some = ", ".join(ids[:5]) + (", …" if len(ids) > 5 else "")
        return Check(
            "llm_models",
            "warn",
            f"VITTE_LLM_MODEL {settings.llm_model} is not among the {len(ids)} models listed",
            f"set VITTE_LLM_MODEL to one of: {some}",
            data,
        )
    return Check("llm_models", "ok", f"{len(ids)} models listed, {settings.llm_model} among them", None, data)


async def check_llm_completion(settings: Settings, http: _Http, deep: bool) -> Check:
    if settings.uses_demo_writer:
        return _skipped("llm_completion", "the offline demo writer needs no LLM")
    if not deep:
        return _skipped("llm_completion", "run with --deep for a one-token completion")
    url = _llm_url(settings, "chat/completions")
    body = {
        "model": settings.llm_model,
        "messages": [{"role": "user", "content": "Reply with one word: OK."}],
        "max_tokens": 1,
        "temperature": 0,
        "stream": False,
    }
    data: dict[str, Any] = {"url": mask_url(url), "model": settings.llm_model}
    started = time.monotonic()
    answered = await _llm_call("llm_completion", settings, http, "POST", url, data, json=body)
    if isinstance(answered, Check):
        return answered
    status, answer = answered
    if status >= 400:
        detail, fix = _llm_http_problem(settings, status, _error_message(answer, "no message"))
        return Check("llm_completion", "fail", detail, fix, data)
    choices = answer.get("choices") if isinstance(answer, dict) else None
    if not isinstance(choices, list) or not choices:
        return Check(
            "llm_completion",
            "fail",
            "the answer is not a chat completion (no choices)",
            "point VITTE_LLM_BASE_URL at an OpenAI-compatible Chat Completions API",
            data,
        )
    elapsed = time.monotonic() - started
    return Check(
        "llm_completion", "ok", f"{settings.llm_model} answered in {elapsed * 1000:.0f} ms", None, data
    )


async def check_telegram(settings: Settings, options: Options, http: _Http) -> tuple[Check, Check]:
    """(bot_token, webhook): getMe, then getWebhookInfo with the same bot."""
    if settings.bot_token is None or not settings.bot_token.get_secret_value().strip():
        return (
            Check("bot_token", "warn", "VITTE_BOT_TOKEN is not set: getMe skipped", FIX_TOKEN),
            _skipped("webhook", "no bot token"),
        )
    try:
        settings.require_bot_token()
    except ConfigError as exc:
        return Check("bot_token", "fail", str(exc), FIX_TOKEN), _skipped("webhook", "no usable bot token")

    from vitte.telegram.bot import make_bot  # first: vitte.telegram prepares aiogram's models

    from aiogram.exceptions import (  # isort: skip
        TelegramAPIError,
        TelegramNetworkError,
        TelegramUnauthorizedError,
    )

    api = settings.telegram_api_url.rstrip("/")
    data: dict[str, Any] = {"api": mask_url(api)}
    bot = make_bot(settings)
    try:
        try:
            async with asyncio.timeout(options.timeout):
                me = await bot.get_me()
        except TimeoutError:
            return (
                Check(
                    "bot_token",
                    "fail",
                    f"{mask_url(api)}: no answer within {options.timeout:g} s",
                    FIX_BOT_API,
                    data,
                ),
                _skipped("webhook", "getMe did not answer"),
            )
        except TelegramUnauthorizedError:
            await _probe_clock(http, api)
            return (
                Check("bot_token", "fail", "Telegram refused the token (401 Unauthorized)", FIX_TOKEN, data),
                _skipped("webhook", "the token was refused"),
            )
        except TelegramNetworkError as exc:
            return (
                Check(
                    "bot_token",
                    "fail",
                    f"{mask_url(api)} unreachable: {_short(exc.message)}",
                    FIX_BOT_API,
                    data,
                ),
                _skipped("webhook", "the Bot API server is unreachable"),
            )
        except TelegramAPIError as exc:
            await _probe_clock(http, api)
            return (
                Check("bot_token", "fail", f"getMe: {_short(exc.message)}", FIX_TOKEN, data),
                _skipped("webhook", "getMe failed"),
            )
        await _probe_clock(http, api)
        data.update(id=me.id, username=me.username)
        token_check = Check("bot_token", "ok", f"@{me.username} (id {me.id})", None, data)
        try:
            async with asyncio.timeout(options.timeout):
                info = await bot.get_webhook_info()
        except TimeoutError:
            return token_check, Check(
                "webhook", "fail", f"getWebhookInfo: no answer within {options.timeout:g} s", FIX_BOT_API
            )
        except TelegramAPIError as exc:
            return token_check, Check(
                "webhook", "fail", f"getWebhookInfo: {_short(exc.message)}", FIX_BOT_API
            )
        return token_check, _judge_webhook(settings, options, info)
    finally:
        with contextlib.suppress(Exception):
            await bot.session.close()


async def _probe_clock(http: _Http, api: str) -> None:
    """One request to the Bot API server's root (no token in it), for its Date header."""
    with contextlib.suppress(Exception):
        async with asyncio.timeout(http.timeout):
            async with http.request("telegram", "HEAD", api + "/"):
                pass


def _ago(seconds: float) -> str:
    seconds = max(0.0, seconds)
    if seconds < 90:
        return f"{seconds:.0f} s ago"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min ago"
    if seconds < 2 * 86400:
        return f"{seconds / 3600:.0f} h ago"
    return f"{seconds / 86400:.0f} days ago"


def _judge_webhook(settings: Settings, options: Options, info: Any) -> Check:
    url = info.url or ""
    pending = int(info.pending_update_count or 0)
    error_at: datetime | None = info.last_error_date
    if error_at is not None and error_at.tzinfo is None:
        error_at = error_at.replace(tzinfo=UTC)
    age = (datetime.now(UTC) - error_at).total_seconds() if error_at is not None else None
    data: dict[str, Any] = {
        "mode": "webhook" if settings.webhook_url else "polling",
        "url": mask_url(url) or None,
        "pending_update_count": pending,
        "last_error_date": error_at.isoformat() if error_at is not None else None,
        "last_error_message": info.last_error_message,
    }
    waiting = f"{pending} update{'s' if pending != 1 else ''} pending"
    if error_at is not None and age is not None:
        said = f"Telegram's last delivery error {_ago(age)}: {_short(info.last_error_message or 'unknown')}"
        if age <= WEBHOOK_ERROR_RECENT:
            return Check("webhook", "fail", f"{said}; {waiting}", FIX_WEBHOOK_REACH, data)
    else:
        said = ""
    if settings.webhook_url:
        if not url:
            return Check(
                "webhook",
                "warn",
                f"no webhook is set at Telegram; {waiting}",
                "start `vitte run-bot` (it sets VITTE_WEBHOOK_URL at Telegram)",
                data,
            )
        if url != settings.webhook_url:
            return Check(
                "webhook",
                "warn",
                f"Telegram delivers to {mask_url(url)}, not to VITTE_WEBHOOK_URL; {waiting}",
                "restart `vitte run-bot` (it sets VITTE_WEBHOOK_URL), or correct VITTE_WEBHOOK_URL",
                data,
            )
    elif url:
        return Check(
            "webhook",
            "warn",
            f"a webhook is set at Telegram ({mask_url(url)}) but this deployment polls; {waiting}",
            "`vitte run-bot` (polling) deletes it on start; set VITTE_WEBHOOK_URL to use webhook mode",
            data,
        )
    if pending >= options.pending_warn:
        return Check(
            "webhook",
            "warn",
            f"{waiting} at Telegram{'; ' + said if said else ''}",
            "start `vitte run-bot` (or more webhook processes) to take them",
            data,
        )
    if said:
        return Check("webhook", "warn", f"{said}; {waiting}", None, data)
    where = f"webhook {mask_url(url)}" if url else "long polling (no webhook set)"
    return Check("webhook", "ok", f"{where}; {waiting}", None, data)


async def check_webapp(settings: Settings, http: _Http) -> Check:
    url = settings.webapp_url
    if not url:
        return _skipped("webapp", "VITTE_WEBAPP_URL unset: the bot offers no Web App button")
    shown = mask_url(url) or ""
    data: dict[str, Any] = {"url": shown}
    if not url.startswith("https://"):
        return Check(
            "webapp",
            "fail",
            f"{shown} is plain http: Telegram opens Web Apps only over https",
            FIX_WEBAPP_TLS,
            data,
        )
    try:
        async with http.request("webapp", "GET", url) as resp:
            status = resp.status
            await resp.read()
    except TimeoutError:
        raise
    except Exception as exc:
        problem = _connection_problem(exc)
        if problem is None:
            raise
        fix = (
            FIX_WEBAPP_CERT
            if "certificate" in problem
            else "start the Web App and its https proxy, or correct VITTE_WEBAPP_URL"
        )
        return Check("webapp", "fail", f"{shown} {problem}", fix, data)
    data["http_status"] = status
    if status >= 400:
        return Check(
            "webapp",
            "fail",
            f"{shown} answered HTTP {status}",
            "check the proxy in front of `vitte serve-webapp`, and that it runs",
            data,
        )
    days_left = await _certificate_days_left(url)
    data["certificate_days_left"] = None if days_left is None else round(days_left, 1)
    if days_left is not None and days_left < CERT_WARN_DAYS:
        return Check(
            "webapp",
            "warn",
            f"{shown}: the certificate expires in {max(days_left, 0):.0f} days",
            "renew the certificate (certbot renew)",
            data,
        )
    valid = f", certificate valid {days_left:.0f} more days" if days_left is not None else ""
    return Check("webapp", "ok", f"{shown} over https (HTTP {status}){valid}", None, data)


async def _certificate_days_left(url: str) -> float | None:
    """Days until the certificate the host serves expires (a TLS handshake of its own: aiohttp
    lets the connection go as soon as a small answer is read); None when it cannot be read."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    writer = None
    try:
        _reader, writer = await asyncio.open_connection(
            host, parts.port or 443, ssl=_ssl_context(), server_hostname=host
        )
        cert = writer.get_extra_info("peercert")
        if isinstance(cert, dict) and cert.get("notAfter"):
            return (ssl.cert_time_to_seconds(str(cert["notAfter"])) - time.time()) / 86400
    except (OSError, ValueError):  # ssl.SSLError is an OSError
        return None
    finally:
        if writer is not None:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()
    return None


def check_disk(options: Options) -> Check:
    path = (options.spool_dir or Path.cwd()).resolve()
    usage = shutil.disk_usage(path)
    minimum = int(options.min_free_mb * 1024 * 1024)
    data = {"path": str(path), "free_bytes": usage.free, "min_free_bytes": minimum}
    free = _size(usage.free)
    if not os.access(path, os.W_OK):
        return Check(
            "disk",
            "fail",
            f"{path} is not writable (the spool lives there)",
            "run from a writable working directory (systemd: WorkingDirectory= with StateDirectory=)",
            data,
        )
    if usage.free < minimum:
        return Check(
            "disk",
            "fail",
            f"{free} free in {path}, below {_size(minimum)}",
            f"free disk space on {path}'s filesystem",
            data,
        )
    if usage.free < 2 * minimum:
        return Check(
            "disk",
            "warn",
            f"{free} free in {path}, close to {_size(minimum)}",
            f"free disk space on {path}'s filesystem",
            data,
        )
    return Check("disk", "ok", f"{free} free in {path}", None, data)


async def check_spool(settings: Settings) -> Check:
    """What the spool holds: the file (VITTE_SPOOL_PATH) and the shared list (Redis)."""
    from vitte.cache import make_cache
    from vitte.spool import Spool

    if settings.spool_max_age <= 0:
        return _skipped("spool", "VITTE_SPOOL_MAX_AGE=0: the spool is off")
    cache = make_cache(settings)
    try:
        spool = Spool(cache, Path(settings.spool_path), max_age=settings.spool_max_age, max_items=1)
        with _captured("vitte.spool"):
            kept = await spool.entries()
    finally:
        await cache.close()
    data: dict[str, Any] = {"path": settings.spool_path, "kept": len(kept), "oldest_at": None}
    if not kept:
        return Check("spool", "ok", "no messages waiting", None, data)
    oldest = min(e.at for e in kept)
    data["oldest_at"] = datetime.fromtimestamp(oldest, UTC).isoformat()
    age = time.time() - oldest
    detail = f"{len(kept)} message(s) kept, the oldest {_ago(age)}"
    if age > settings.spool_max_age:
        return Check(
            "spool",
            "fail",
            f"{detail}: older than VITTE_SPOOL_MAX_AGE ({settings.spool_max_age:g} s), they will be given up",
            "start the bot (and the database): each player is then asked to write again",
            data,
        )
    return Check("spool", "warn", detail, "the bot answers them once it runs and the database is up", data)


def _size(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(n) < 1024 or unit == "TB":
            return f"{n:.0f} {unit}" if unit in ("B", "KB") else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TB"  # pragma: no cover


def check_clock(options: Options, http: _Http) -> Check:
    """The first reading by preference: the Bot API server, the LLM API, the Web App."""
    order = {"telegram": 0, "llm": 1, "webapp": 2}
    readings = sorted(http.readings, key=lambda r: order.get(r.role, 9))
    if not readings:
        return _skipped("clock", "no HTTP server answered with a Date header to compare with")
    r = readings[0]
    data = {
        "server": r.host,
        "offset_seconds": round(r.offset, 2),
        "uncertainty_seconds": round(r.uncertainty, 2),
    }
    said = f"{r.offset:+.1f} s against {r.host} (±{r.uncertainty:.1f} s)"
    if abs(r.offset) - r.uncertainty > options.max_clock_offset:
        return Check(
            "clock",
            "warn",
            f"{said}: more than {options.max_clock_offset:g} s (initData freshness and lock leases use the clock)",
            FIX_CLOCK,
            data,
        )
    return Check("clock", "ok", said, None, data)


# ---------------------------------------------------------------------- running them


async def _bounded(name: str, fn: Callable[[], Awaitable[Check]], seconds: float, fix: str) -> Check:
    """One check within `seconds`; a check that raises is a failure, not a crash."""
    started = time.monotonic()
    try:
        async with asyncio.timeout(seconds):
            check = await fn()
    except TimeoutError:
        check = Check(name, "fail", f"no answer within {seconds:g} s", fix)
    except Exception as exc:
        check = Check(name, "fail", f"{type(exc).__name__}: {_first_line(exc)}", fix)
    check.duration_ms = round((time.monotonic() - started) * 1000)
    return check


def _preload() -> None:
    """Import what the checks use before they start: an import inside a running check blocks
    the event loop for the others and eats into their timeouts."""
    import aiohttp  # noqa: F401
    import alembic.script  # noqa: F401
    import sqlalchemy.ext.asyncio  # noqa: F401

    import vitte.cache
    import vitte.db
    import vitte.telegram.bot  # noqa: F401  (first: vitte.telegram prepares aiogram's models)

    import aiogram.exceptions  # noqa: F401  # isort: skip


async def run_doctor(settings: Settings, options: Options | None = None) -> Report:
    """Every check, the independent ones concurrently; secrets redacted from the result."""
    options = options or Options()
    _preload()
    t = options.timeout
    started = time.monotonic()
    async with _Http(timeout=t) as http:
        config = await _bounded(
            "config", lambda: _now(check_config(settings)), t, "check the VITTE_* settings"
        )

        async def telegram() -> tuple[Check, Check]:
            begun = time.monotonic()
            try:
                # getMe and getWebhookInfo bound themselves; this bounds the whole pair
                async with asyncio.timeout(2 * t + 1):
                    pair = await check_telegram(settings, options, http)
            except TimeoutError:
                pair = (
                    Check("bot_token", "fail", f"no answer within {t:g} s", FIX_BOT_API),
                    _skipped("webhook", "getMe did not answer"),
                )
            except Exception as exc:
                pair = (
                    Check("bot_token", "fail", f"{type(exc).__name__}: {_first_line(exc)}", FIX_BOT_API),
                    _skipped("webhook", "getMe failed"),
                )
            for check in pair:
                check.duration_ms = round((time.monotonic() - begun) * 1000)
            return pair

        singles = [
            _bounded("database", lambda: check_database(settings), t, FIX_DB_REACH),
            _bounded("redis", lambda: check_redis(settings), t, FIX_REDIS),
            _bounded("llm_models", lambda: check_llm_models(settings, http), t, FIX_LLM_REACH),
            _bounded(
                "llm_completion", lambda: check_llm_completion(settings, http, options.deep), t, FIX_LLM_REACH
            ),
            _bounded("webapp", lambda: check_webapp(settings, http), t, FIX_WEBAPP_TLS),
            _bounded("media", lambda: check_media(settings, options.deep), 3 * t, "check the media models"),
            _bounded(
                "disk", lambda: asyncio.to_thread(check_disk, options), t, "check the working directory"
            ),
            _bounded("spool", lambda: check_spool(settings), t, "check VITTE_SPOOL_PATH and Redis"),
        ]
        pair, done = await asyncio.gather(telegram(), asyncio.gather(*singles))
        by_name = {c.name: c for c in [config, *pair, *done]}
        by_name["clock"] = check_clock(options, http)
    checks = [by_name[name] for name in CHECKS]
    secrets = secrets_of(settings)
    for check in checks:
        check.detail = redact(check.detail, secrets)
        check.fix = redact(check.fix, secrets)
        check.data = redact(check.data, secrets)
    logging.getLogger(__name__).debug("doctor done in %.2f s", time.monotonic() - started)
    return Report(checks)


async def check_media(settings: Settings, deep: bool) -> Check:
    from vitte.media_doctor import probe_media

    status, detail, fix, data = await probe_media(settings, deep)
    return Check("media", cast(Status, status), detail, fix, data)


async def _now(check: Check) -> Check:
    """A check computed without waiting, as the awaitable `_bounded` takes (its errors caught)."""
    return check
