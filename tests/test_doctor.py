"""`vitte doctor`: every problem it reports, against real parts.

Real PostgreSQL and Redis (tests/conftest.py), the fake OpenAI-compatible server
(vitte.devtools.llm_server), the fake Bot API server (tests/support/bot_api_server.py), aiohttp
servers on loopback (https with a self-signed certificate made by `openssl`, a skewed `Date`
header), closed ports and a port that accepts and never answers. The command runs through
Typer's CliRunner in a worker thread while the servers run on the test's event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import socket
import sqlite3
import ssl
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from email.utils import formatdate
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from typer.testing import CliRunner, Result

from cli.main import app
from tests.conftest import create_pg_database, drop_pg_database
from tests.support.bot_api_server import FakeBotAPI
from tests.support.llm_server import FakeLLMServer
from tests.support.redis_keys import drop_redis_prefix
from vitte.doctor import CHECKS

TOKEN = "4242:AAF-doctor-token-secret-0123456789"
OTHER_TOKEN = "4343:AAF-another-token-secret-98765432"
KEY = "sk-doctor-key-0123456789"
NAMES = list(CHECKS)
CHECK_KEYS = {"name", "title", "status", "detail", "fix", "data", "duration_ms"}

runner = CliRunner()


async def doctor(*args: str, env: dict[str, str] | None = None) -> Result:
    """`vitte doctor ARGS` in a worker thread (it runs its own event loop); a wide terminal."""
    env = {"COLUMNS": "240", **(env or {})}
    return await asyncio.to_thread(runner.invoke, app, ["doctor", *args], env=env)


def report(res: Result) -> dict[str, Any]:
    data = json.loads(res.stdout)
    assert isinstance(data, dict)
    return data


def checks(res: Result) -> dict[str, dict[str, Any]]:
    return {c["name"]: c for c in report(res)["checks"]}


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def silent_port() -> Iterator[int]:
    """A port that accepts connections (the kernel's backlog) and never answers."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(16)
        yield int(s.getsockname()[1])


@contextlib.asynccontextmanager
async def serve(app_: web.Application, tls: ssl.SSLContext | None = None) -> AsyncIterator[str]:
    """An aiohttp application on loopback; yields its base URL."""
    runner_ = web.AppRunner(app_, access_log=None, shutdown_timeout=0.2)
    await runner_.setup()
    site = web.TCPSite(runner_, "127.0.0.1", 0, ssl_context=tls)
    await site.start()
    port = int(runner_.addresses[0][1])
    try:
        yield f"{'https' if tls else 'http'}://127.0.0.1:{port}"
    finally:
        await runner_.cleanup()


def page_app() -> web.Application:
    app_ = web.Application()

    async def index(_request: web.Request) -> web.Response:
        return web.Response(text="<html>Vitte</html>", content_type="text/html")

    app_.router.add_get("/", index)
    return app_


def make_cert(folder: Path, days: int) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 (EC P-256: quick to make)."""
    if shutil.which("openssl") is None:
        pytest.skip("the openssl command is not installed")
    cert, key = folder / f"cert{days}.pem", folder / f"key{days}.pem"
    subprocess.run(
        [
            "openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
            "-nodes", "-keyout", str(key), "-out", str(cert), "-days", str(days),
            "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
        ],
        check=True,
        capture_output=True,
    )  # fmt: skip
    return cert, key


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, Path]]:
    folder = tmp_path_factory.mktemp("certs")
    return {"year": make_cert(folder, 365), "days": make_cert(folder, 3)}


def tls_context(cert: tuple[Path, Path]) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(str(cert[0]), str(cert[1]))
    return ctx


# ---------------------------------------------------------------------- all well


async def test_all_well_exits_0_with_every_check_ok_and_stable_json(
    pg_url: str,
    redis_url: str,
    redis_prefix: str,
    certs: dict[str, tuple[Path, Path]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(
        "SSL_CERT_FILE", str(certs["year"][0])
    )  # this machine trusts the Web App's certificate
    async with (
        FakeLLMServer(api_key=KEY) as llm,
        FakeBotAPI(token=TOKEN) as api,
        serve(page_app(), tls_context(certs["year"])) as webapp,
    ):
        env = {
            "VITTE_DATABASE_URL": pg_url,
            "VITTE_REDIS_URL": redis_url,
            "VITTE_REDIS_PREFIX": redis_prefix,
            "VITTE_LLM_BASE_URL": llm.base_url,
            "VITTE_LLM_API_KEY": KEY,
            "VITTE_LLM_MODEL": llm.model,
            "VITTE_BOT_TOKEN": TOKEN,
            "VITTE_TELEGRAM_API_URL": api.base_url,
            "VITTE_WEBAPP_URL": webapp + "/",
        }
        res = await doctor("--json", "--deep", "--min-free-mb", "1", env=env)
        assert res.exit_code == 0, res.output
        data = report(res)
        assert set(data) == {"ok", "exit_code", "summary", "checks"}
        assert data["ok"] is True and data["exit_code"] == 0
        assert data["summary"] == {"ok": len(NAMES), "warn": 0, "fail": 0, "skipped": 0}
        assert [c["name"] for c in data["checks"]] == NAMES
        assert all(set(c) == CHECK_KEYS and c["fix"] is None for c in data["checks"])
        by = checks(res)
        assert by["database"]["data"]["current"] == by["database"]["data"]["head"] is not None
        assert by["bot_token"]["data"]["username"] == api.username
        assert by["webhook"]["data"] == {
            "mode": "polling",
            "url": None,
            "pending_update_count": 0,
            "last_error_date": None,
            "last_error_message": None,
        }
        assert by["webapp"]["data"]["certificate_days_left"] > 300
        assert by["clock"]["data"]["server"] == "127.0.0.1" and abs(by["clock"]["data"]["offset_seconds"]) < 3
        # the LLM was asked as the bot asks it: the key as Bearer, one token only
        [completion] = llm.completions
        assert completion.headers["Authorization"] == f"Bearer {KEY}"
        assert completion.json["max_tokens"] == 1 and completion.json["model"] == llm.model
        assert [r.path for r in llm.requests if r.method == "GET"] == ["/v1/models"]
        assert {"getMe", "getWebhookInfo"} <= {c.method for c in api.calls}

        table = await doctor("--min-free-mb", "1", env=env)
        assert table.exit_code == 0, table.output
        assert "All checks passed." in table.stdout
        for title in CHECKS.values():
            assert title in table.stdout


async def test_offline_defaults_state_the_demo_writer_and_in_process_cache(tmp_path: Path) -> None:
    """Nothing configured: nothing contacted, nothing created; the token's absence is a warning."""
    here = str(await asyncio.to_thread(tmp_path.resolve))
    res = await doctor("--json", "--min-free-mb", "1")
    assert res.exit_code == 0, res.output
    by = checks(res)
    assert by["config"]["status"] == "ok"
    assert by["database"]["status"] == "ok" and "does not exist yet" in by["database"]["detail"]
    assert not (tmp_path / "vitte.sqlite3").exists()
    assert by["redis"]["status"] == "skipped" and "in-process cache" in by["redis"]["detail"]
    assert by["llm_models"]["status"] == "skipped" and "offline demo writer" in by["llm_models"]["detail"]
    assert by["llm_completion"]["status"] == "skipped"
    assert by["bot_token"]["status"] == "warn" and "VITTE_BOT_TOKEN" in by["bot_token"]["fix"]
    assert by["webhook"]["status"] == "skipped" and by["webapp"]["status"] == "skipped"
    assert by["clock"]["status"] == "skipped"
    assert by["disk"]["status"] == "ok" and by["disk"]["data"]["path"] == here
    assert by["spool"]["status"] == "ok" and by["spool"]["data"]["kept"] == 0
    assert not (tmp_path / "vitte-spool.jsonl").exists()
    strict = await doctor("--strict", "--min-free-mb", "1")
    assert strict.exit_code == 1 and "warn" in strict.stdout  # --strict: a warning is a problem


# ---------------------------------------------------------------------- configuration


async def test_configuration_that_cannot_load_and_bad_options_exit_2() -> None:
    res = await doctor(env={"VITTE_DATABASE_URL": "mysql://db/vitte"})
    assert res.exit_code == 2
    assert (
        res.stdout == "" and "VITTE_DATABASE_URL" in res.stderr and len(res.stderr.strip().splitlines()) == 1
    )
    for args in (["--timeout", "0"], ["--timeout", "soon"], ["--min-free-mb", "-1"], ["--nope"]):
        assert (await doctor(*args)).exit_code == 2, args


async def test_a_webhook_without_its_secret_is_a_configuration_failure() -> None:
    res = await doctor(
        "--json", "--min-free-mb", "1", env={"VITTE_WEBHOOK_URL": "https://bot.example.com/hook"}
    )
    assert res.exit_code == 1
    config = checks(res)["config"]
    assert config["status"] == "fail" and "VITTE_WEBHOOK_SECRET" in config["detail"] + config["fix"]


# ---------------------------------------------------------------------- database


async def test_an_empty_database_is_not_migrated(pg_server: str) -> None:
    name = f"vitte_doctor_empty_{int(time.time() * 1000) % 10**9}"
    url = create_pg_database(pg_server, name)
    try:
        res = await doctor("--json", "--min-free-mb", "1", env={"VITTE_DATABASE_URL": url})
        assert res.exit_code == 1
        db = checks(res)["database"]
        assert db["status"] == "fail" and "not migrated" in db["detail"]
        assert db["fix"] == "run `vitte db upgrade`"
        assert db["data"]["current"] is None and db["data"]["head"]
        table = await doctor("--min-free-mb", "1", env={"VITTE_DATABASE_URL": url})
        assert (
            table.exit_code == 1 and "run `vitte db upgrade`" in table.stdout and "1 failed" in table.stdout
        )
    finally:
        drop_pg_database(pg_server, name)


async def test_an_unmigrated_sqlite_file_is_a_warning(tmp_path: Path) -> None:
    """The embedded SQLite upgrades itself on first use: behind is a warning there, not a failure."""
    path = tmp_path / "old.sqlite3"
    sqlite3.connect(path).close()
    res = await doctor("--json", "--min-free-mb", "1", env={"VITTE_DATABASE_URL": f"sqlite:///{path}"})
    assert res.exit_code == 0
    db = checks(res)["database"]
    assert db["status"] == "warn" and "not migrated" in db["detail"] and "vitte db upgrade" in db["fix"]


async def test_a_database_migrated_by_a_newer_release_fails(pg_url: str) -> None:
    import psycopg
    from sqlalchemy.engine import make_url

    u = make_url(pg_url)
    dsn = f"host={u.host} port={u.port or 5432} user={u.username} dbname={u.database}"
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
        await conn.execute("UPDATE alembic_version SET version_num = 'f00dfeed1234'")
    res = await doctor("--json", "--min-free-mb", "1", env={"VITTE_DATABASE_URL": pg_url})
    assert res.exit_code == 1
    db = checks(res)["database"]
    assert db["status"] == "fail" and "f00dfeed1234" in db["detail"] and "unknown" in db["detail"]
    assert db["fix"]


async def test_an_unreachable_database_port_fails_fast() -> None:
    url = f"postgresql+psycopg://vitte@127.0.0.1:{closed_port()}/vitte"
    started = time.monotonic()
    res = await doctor("--json", "--min-free-mb", "1", env={"VITTE_DATABASE_URL": url})
    assert time.monotonic() - started < 5
    assert res.exit_code == 1
    db = checks(res)["database"]
    assert db["status"] == "fail" and "cannot connect" in db["detail"]
    assert "VITTE_DATABASE_URL" in db["fix"]


# ---------------------------------------------------------------------- Redis


async def test_redis_on_a_closed_port_fails() -> None:
    url = f"redis://127.0.0.1:{closed_port()}/0"
    res = await doctor("--json", "--min-free-mb", "1", env={"VITTE_REDIS_URL": url})
    assert res.exit_code == 1
    redis = checks(res)["redis"]
    assert (
        redis["status"] == "fail" and "unreachable" in redis["detail"] and "VITTE_REDIS_URL" in redis["fix"]
    )
    assert "Redis cache unavailable" not in res.stderr  # the cache's log line went into the report


async def test_redis_answering_is_ok(redis_url: str) -> None:
    res = await doctor("--json", "--min-free-mb", "1", env={"VITTE_REDIS_URL": redis_url})
    assert res.exit_code == 0 and checks(res)["redis"]["status"] == "ok"


# ---------------------------------------------------------------------- the LLM API


async def test_the_llm_api_down_fails_both_llm_checks() -> None:
    env = {"VITTE_LLM_BASE_URL": f"http://127.0.0.1:{closed_port()}/v1", "VITTE_LLM_API_KEY": KEY}
    res = await doctor("--json", "--deep", "--min-free-mb", "1", env=env)
    assert res.exit_code == 1
    by = checks(res)
    for name in ("llm_models", "llm_completion"):
        assert by[name]["status"] == "fail" and "unreachable" in by[name]["detail"], by[name]
        assert "VITTE_LLM_BASE_URL" in by[name]["fix"]
    shallow = checks(await doctor("--json", "--min-free-mb", "1", env=env))
    assert (
        shallow["llm_completion"]["status"] == "skipped" and "--deep" in shallow["llm_completion"]["detail"]
    )


async def test_the_llm_api_answering_401() -> None:
    async with FakeLLMServer(api_key="the-right-key-123") as llm:
        env = {"VITTE_LLM_BASE_URL": llm.base_url, "VITTE_LLM_MODEL": llm.model, "VITTE_LLM_API_KEY": KEY}
        res = await doctor("--json", "--deep", "--min-free-mb", "1", env=env)
        assert res.exit_code == 1
        by = checks(res)
        for name in ("llm_models", "llm_completion"):
            assert by[name]["status"] == "fail" and "HTTP 401" in by[name]["detail"]
            assert by[name]["fix"] == "set VITTE_LLM_API_KEY to a key this API accepts"
        # the fake API echoes the key it got, as some providers do: the report masks it
        assert "***" in by["llm_completion"]["detail"] and KEY not in res.output
        no_key = checks(await doctor("--json", "--min-free-mb", "1", env={**env, "VITTE_LLM_API_KEY": ""}))
        assert "wants a key" in no_key["llm_models"]["detail"]


async def test_an_llm_failing_completions_and_a_model_not_listed() -> None:
    async with FakeLLMServer(mode="500") as llm:
        env = {"VITTE_LLM_BASE_URL": llm.base_url, "VITTE_LLM_MODEL": llm.model}
        res = await doctor("--json", "--deep", "--min-free-mb", "1", env=env)
        assert res.exit_code == 1
        by = checks(res)
        assert by["llm_models"]["status"] == "ok"  # the API answers, its completions fail
        assert by["llm_completion"]["status"] == "fail" and "HTTP 500" in by["llm_completion"]["detail"]
        other = checks(await doctor("--json", "--min-free-mb", "1", env={**env, "VITTE_LLM_MODEL": "gpt-9"}))
        assert other["llm_models"]["status"] == "warn" and "gpt-9" in other["llm_models"]["detail"]
        assert llm.model in other["llm_models"]["fix"]


async def test_an_llm_base_url_without_its_v1_and_an_answer_that_is_no_completion() -> None:
    async with FakeLLMServer(mode="badshape") as llm:
        root = llm.base_url.removesuffix("/v1")  # the operator forgot the /v1
        env = {"VITTE_LLM_BASE_URL": root, "VITTE_LLM_MODEL": llm.model}
        models = checks(await doctor("--json", "--min-free-mb", "1", env=env))["llm_models"]
        assert models["status"] == "warn" and "HTTP 404" in models["detail"] and "/v1" in models["fix"]
        res = await doctor(
            "--json", "--deep", "--min-free-mb", "1", env={**env, "VITTE_LLM_BASE_URL": llm.base_url}
        )
        assert res.exit_code == 1
        completion = checks(res)["llm_completion"]
        assert completion["status"] == "fail" and "not a chat completion" in completion["detail"]


# ---------------------------------------------------------------------- Telegram


async def test_a_token_telegram_refuses() -> None:
    async with FakeBotAPI(token=TOKEN) as api:
        env = {"VITTE_BOT_TOKEN": OTHER_TOKEN, "VITTE_TELEGRAM_API_URL": api.base_url}
        res = await doctor("--json", "--min-free-mb", "1", env=env)
        assert res.exit_code == 1
        by = checks(res)
        assert by["bot_token"]["status"] == "fail" and "401" in by["bot_token"]["detail"]
        assert "@BotFather" in by["bot_token"]["fix"]
        assert by["webhook"]["status"] == "skipped"
        assert by["clock"]["status"] == "ok"  # the server answered, with its Date
        assert OTHER_TOKEN.split(":")[1] not in res.output


async def test_a_malformed_token_fails_without_a_request() -> None:
    async with FakeBotAPI(token=TOKEN) as api:
        env = {"VITTE_BOT_TOKEN": "not-a-token", "VITTE_TELEGRAM_API_URL": api.base_url}
        res = await doctor("--json", "--min-free-mb", "1", env=env)
        assert res.exit_code == 1
        bot = checks(res)["bot_token"]
        assert bot["status"] == "fail" and "malformed" in bot["detail"] and "@BotFather" in bot["fix"]
        assert api.calls == []


async def test_a_webhook_with_a_recent_error_and_pending_updates() -> None:
    async with FakeBotAPI(token=TOKEN) as api:
        api.webhook_info = {
            "url": "https://bot.example.com/hook",
            "pending_update_count": 42,
            "last_error_date": int(time.time()) - 120,
            "last_error_message": "Connection timed out",
        }
        env = {
            "VITTE_BOT_TOKEN": TOKEN,
            "VITTE_TELEGRAM_API_URL": api.base_url,
            "VITTE_WEBHOOK_URL": "https://bot.example.com/hook",
            "VITTE_WEBHOOK_SECRET": "hook-secret-1234",
        }
        res = await doctor("--json", "--min-free-mb", "1", env=env)
        assert res.exit_code == 1
        hook = checks(res)["webhook"]
        assert hook["status"] == "fail"
        assert "Connection timed out" in hook["detail"] and "42 updates pending" in hook["detail"]
        assert "VITTE_WEBHOOK_URL" in hook["fix"]
        assert hook["data"]["pending_update_count"] == 42 and hook["data"]["mode"] == "webhook"
        assert hook["data"]["url"] == "https://bot.example.com/hook" and hook["data"]["last_error_date"]

        # an error of two days ago, long resolved: a warning
        api.webhook_info.update(last_error_date=int(time.time()) - 2 * 86400, pending_update_count=0)
        res = await doctor("--json", "--min-free-mb", "1", env=env)
        assert res.exit_code == 0 and checks(res)["webhook"]["status"] == "warn"
        assert "2 days ago" in checks(res)["webhook"]["detail"]


async def test_webhook_state_that_does_not_match_the_configuration() -> None:
    async with FakeBotAPI(token=TOKEN) as api:
        base = {"VITTE_BOT_TOKEN": TOKEN, "VITTE_TELEGRAM_API_URL": api.base_url}
        # polling, but a webhook is set at Telegram (getUpdates would get 409)
        api.webhook_info = {"url": "https://elsewhere.example.com/hook"}
        hook = checks(await doctor("--json", "--min-free-mb", "1", env=base))["webhook"]
        assert hook["status"] == "warn" and "polls" in hook["detail"]
        # webhook mode, but Telegram has no webhook yet
        api.webhook_info = {}
        env = {
            **base,
            "VITTE_WEBHOOK_URL": "https://bot.example.com/hook",
            "VITTE_WEBHOOK_SECRET": "s3cret-hook",
        }
        hook = checks(await doctor("--json", "--min-free-mb", "1", env=env))["webhook"]
        assert hook["status"] == "warn" and "no webhook" in hook["detail"] and "run-bot" in hook["fix"]
        # many updates waiting
        api.webhook_info = {"url": "https://bot.example.com/hook", "pending_update_count": 500}
        hook = checks(await doctor("--json", "--min-free-mb", "1", env=env))["webhook"]
        assert hook["status"] == "warn" and "500 updates pending" in hook["detail"]


# ---------------------------------------------------------------------- the Web App


async def test_a_web_app_over_plain_http_fails() -> None:
    async with serve(page_app()) as url:
        res = await doctor("--json", "--min-free-mb", "1", env={"VITTE_WEBAPP_URL": url})
        assert res.exit_code == 1
        webapp = checks(res)["webapp"]
        assert webapp["status"] == "fail" and "plain http" in webapp["detail"] and "https" in webapp["fix"]


async def test_a_web_app_with_a_self_signed_certificate_fails(
    certs: dict[str, tuple[Path, Path]], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("SSL_CERT_FILE", raising=False)
    monkeypatch.delenv("SSL_CERT_DIR", raising=False)
    async with serve(page_app(), tls_context(certs["year"])) as url:
        res = await doctor("--json", "--min-free-mb", "1", env={"VITTE_WEBAPP_URL": url})
        assert res.exit_code == 1
        webapp = checks(res)["webapp"]
        assert webapp["status"] == "fail" and "certificate not valid" in webapp["detail"]
        assert "self-signed" in webapp["detail"] and "certificate" in webapp["fix"]


async def test_a_web_app_certificate_about_to_expire_warns(
    certs: dict[str, tuple[Path, Path]], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SSL_CERT_FILE", str(certs["days"][0]))
    async with serve(page_app(), tls_context(certs["days"])) as url:
        res = await doctor("--json", "--min-free-mb", "1", env={"VITTE_WEBAPP_URL": url})
        assert res.exit_code == 0
        webapp = checks(res)["webapp"]
        assert webapp["status"] == "warn" and "expires in" in webapp["detail"]
        assert webapp["data"]["certificate_days_left"] < 4


async def test_a_web_app_answering_an_error_fails(
    certs: dict[str, tuple[Path, Path]], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SSL_CERT_FILE", str(certs["year"][0]))
    broken = web.Application()

    async def bad_gateway(_request: web.Request) -> web.Response:
        return web.Response(status=502, text="Bad Gateway")

    broken.router.add_get("/", bad_gateway)
    async with serve(broken, tls_context(certs["year"])) as url:
        res = await doctor("--json", "--min-free-mb", "1", env={"VITTE_WEBAPP_URL": url})
        assert res.exit_code == 1
        webapp = checks(res)["webapp"]
        assert (
            webapp["status"] == "fail" and "HTTP 502" in webapp["detail"] and "serve-webapp" in webapp["fix"]
        )


# ---------------------------------------------------------------------- disk and clock


async def test_low_disk_space_fails_by_the_threshold() -> None:
    res = await doctor("--json", "--min-free-mb", str(10**12))
    assert res.exit_code == 1
    disk = checks(res)["disk"]
    assert disk["status"] == "fail" and "below" in disk["detail"] and disk["fix"]
    assert disk["data"]["free_bytes"] < disk["data"]["min_free_bytes"]


async def test_messages_kept_in_the_spool_warn_and_too_old_ones_fail(
    tmp_path: Path, redis_url: str, redis_prefix: str
) -> None:
    """The spool's file and its shared list (Redis) hold messages the bot has not answered yet."""
    from vitte.cache.memory import MemoryCache
    from vitte.cache.redis import RedisCache
    from vitte.spool import Spool

    def update(n: int) -> dict[str, Any]:
        chat = {"id": 5, "type": "private"}
        return {"update_id": n, "message": {"message_id": n, "date": 0, "chat": chat, "text": "hi"}}

    path = tmp_path / "kept.jsonl"
    await Spool(MemoryCache(), path, max_age=600, max_items=10).keep(5, update(1), at=time.time() - 120)
    shared = RedisCache(redis_url, prefix=redis_prefix)
    try:
        await Spool(shared, tmp_path / "unused.jsonl", max_age=600, max_items=10).keep(6, update(2))
    finally:
        await shared.close()
    env = {"VITTE_SPOOL_PATH": str(path), "VITTE_REDIS_URL": redis_url, "VITTE_REDIS_PREFIX": redis_prefix}
    try:
        res = await doctor("--json", "--min-free-mb", "1", env=env)
        spool = checks(res)["spool"]
        assert spool["status"] == "warn" and spool["data"]["kept"] == 2, spool
        assert "2 message(s) kept, the oldest 2 min ago" in spool["detail"] and spool["fix"]
        old = await doctor("--json", "--min-free-mb", "1", env={**env, "VITTE_SPOOL_MAX_AGE": "60"})
        assert old.exit_code == 1
        spool = checks(old)["spool"]
        assert spool["status"] == "fail" and "given up" in spool["detail"]
        assert path.exists()  # the doctor takes nothing
    finally:
        await drop_redis_prefix(redis_url, redis_prefix)


async def test_a_clock_offset_against_the_servers_date_header_warns() -> None:
    skew = 120

    async def models(_request: web.Request) -> web.Response:
        headers = {"Date": formatdate(time.time() + skew, usegmt=True)}
        return web.json_response({"object": "list", "data": [{"id": "m"}]}, headers=headers)

    skewed = web.Application()
    skewed.router.add_get("/v1/models", models)
    async with serve(skewed) as url:
        env = {"VITTE_LLM_BASE_URL": url + "/v1", "VITTE_LLM_MODEL": "m"}
        res = await doctor("--json", "--min-free-mb", "1", env=env)
        assert res.exit_code == 0, res.output  # a warning: the command still exits 0 …
        clock = checks(res)["clock"]
        assert clock["status"] == "warn" and "timedatectl" in clock["fix"]
        assert abs(clock["data"]["offset_seconds"] - skew) < 3
        assert (await doctor("--strict", "--min-free-mb", "1", env=env)).exit_code == 1  # … unless --strict
        relaxed = await doctor("--json", "--max-clock-offset", "600", "--min-free-mb", "1", env=env)
        assert checks(relaxed)["clock"]["status"] == "ok"


# ---------------------------------------------------------------------- bounded, and secret


async def test_a_host_that_never_answers_does_not_hang_the_command() -> None:
    with silent_port() as port:
        env = {
            "VITTE_LLM_BASE_URL": f"http://127.0.0.1:{port}/v1",
            "VITTE_WEBAPP_URL": f"https://127.0.0.1:{port}/",
            "VITTE_BOT_TOKEN": TOKEN,
            "VITTE_TELEGRAM_API_URL": f"http://127.0.0.1:{port}",
        }
        started = time.monotonic()
        res = await doctor("--json", "--deep", "--timeout", "1", "--min-free-mb", "1", env=env)
        elapsed = time.monotonic() - started
    assert res.exit_code == 1
    assert elapsed < 6, elapsed  # the checks ran side by side, each bounded
    by = checks(res)
    for name in ("llm_models", "llm_completion", "webapp", "bot_token"):
        assert by[name]["status"] == "fail" and "no answer within 1 s" in by[name]["detail"], by[name]
    assert by["webhook"]["status"] == "skipped"


async def test_no_secret_is_ever_printed(pg_url: str) -> None:
    db_password, redis_password, webapp_password = "dbpass-s3cret", "redis-s3cret", "webapp-s3cret"
    wrong_key, hook_secret, metrics, payload = (
        "sk-wrong-key-4567890",
        "hook-s3cret-value",
        "metrics-s3cret",
        "payload-s3cret",
    )
    async with FakeLLMServer(api_key="the-right-key-123") as llm, FakeBotAPI(token=TOKEN) as api:
        # people put the token in the webhook path; Telegram reports the URL back
        api.webhook_info = {
            "url": f"https://bot.example.com/{TOKEN}?secret={hook_secret}",
            "last_error_date": int(time.time()) - 5,
            "last_error_message": f"Wrong response from the webhook: 401 {hook_secret}",
        }
        env = {
            "VITTE_DATABASE_URL": pg_url.replace(
                "postgres@", f"postgres:{db_password}@"
            ),  # trust auth: accepted
            "VITTE_REDIS_URL": f"redis://:{redis_password}@127.0.0.1:{closed_port()}/0",
            "VITTE_LLM_BASE_URL": llm.base_url,
            "VITTE_LLM_MODEL": llm.model,
            "VITTE_LLM_API_KEY": wrong_key,  # refused; the fake API echoes it back
            "VITTE_BOT_TOKEN": TOKEN,
            "VITTE_TELEGRAM_API_URL": api.base_url,
            "VITTE_WEBHOOK_URL": f"https://bot.example.com/{TOKEN}?secret={hook_secret}",
            "VITTE_WEBHOOK_SECRET": hook_secret,
            "VITTE_METRICS_TOKEN": metrics,
            "VITTE_PAYLOAD_SECRET": payload,
            "VITTE_WEBAPP_URL": f"http://admin:{webapp_password}@127.0.0.1:{closed_port()}/",
        }
        secrets = [db_password, redis_password, webapp_password, wrong_key, hook_secret, metrics, payload]
        secrets += [TOKEN, TOKEN.split(":")[1]]
        for args in (["--json"], []):
            res = await doctor(*args, "--deep", "--min-free-mb", "1", env=env)
            assert res.exit_code == 1
            for secret in secrets:
                assert secret not in res.stdout and secret not in res.stderr, secret
            assert "***" in res.stdout
        by = checks(await doctor("--json", "--deep", "--min-free-mb", "1", env=env))
        assert by["database"]["status"] == "ok" and "postgres:***@" in by["database"]["detail"]
        assert by["webhook"]["status"] == "fail" and by["webhook"]["data"]["url"].startswith(
            "https://bot.example.com/***"
        )
        assert by["webapp"]["data"]["url"].startswith("http://admin:***@127.0.0.1")
