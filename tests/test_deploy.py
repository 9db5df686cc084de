"""The production recipe in deploy/ (README "Production"), checked with the tools that run it.

- The systemd units pass Debian's `systemd-analyze verify` with no warning at all, and their
  offline security review stays "OK"; the stop timeout outlasts the shutdown grace; the example
  env file is a valid configuration for webhook mode and agrees with the nginx site.
- The backup unit's command, run as systemd would run it, leaves a complete, restorable dump
  and prunes old ones.
- The nginx site, rendered for loopback (a self-signed certificate, high ports, a temporary
  prefix), passes `nginx -t` and serves, in front of two real `vitte run-bot` webhook processes
  and a `vitte serve-webapp` started from the units' own command lines and environment: the
  Web App's page, a static file and initData-signed API calls; webhook updates with the secret
  header, spread over both bot processes and answered; the secret, the method and the body
  limits enforced; `/metrics` refused from outside and answered on loopback; and with one bot
  process stopped (a rolling restart), an update still lands on the other one.

The systemd sandbox itself (DynamicUser, ProtectSystem=…) is not exercised: no systemd runs
as PID 1 here. What is run is the units' ExecStart with their Environment=/EnvironmentFile=.
Under CI=true a missing systemd-analyze, nginx, openssl or pg_dump is a failure, not a skip.
"""

from __future__ import annotations

import asyncio
import contextlib
import getpass
import os
import re
import secrets
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn
from urllib.parse import urlparse

import aiohttp
import pytest

from tests.conftest import IN_CI
from tests.support.bot_api_server import FakeBotAPI
from tests.support.bot_harness import PERSONA, STORY, cards, drop_redis_keys, wait_until
from tests.support.initdata import auth_header, make_init_data
from tests.support.llm_server import FakeLLMServer
from tests.support.players import messages_of
from vitte.bot.runner import check_webhook_settings
from vitte.catalog.seed import seed_cards
from vitte.config import Settings, load_settings
from vitte.core import Core
from vitte.models import ASSISTANT, MSG_OK, USER, Message, User

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"
UNITS = DEPLOY / "systemd"
SITE = DEPLOY / "nginx" / "vitte.conf"
ENV_FILE = DEPLOY / "vitte.env"
INSTALLED_VITTE = "/opt/vitte/bin/vitte"  # where README "Production" installs the venv
TOKEN = "42:LOCAL-TEST-TOKEN-0123456789abcdef"
HOST = "vitte.example.com"
PLAYER = 5101
SHUTDOWN_GRACE_DEFAULT = 20.0


def _missing(what: str) -> NoReturn:
    """A tool this test needs is not there: a skip, or a failure under CI=true (as conftest
    treats a missing PostgreSQL or Redis)."""
    if IN_CI:
        pytest.fail(f"{what} (CI=true: a missing tool is a failure)", pytrace=False)
    pytest.skip(what)


def _tool(name: str) -> str:
    """The path of a Debian tool."""
    found = shutil.which(name) or next(
        (str(p) for p in (Path("/usr/sbin") / name, Path("/usr/bin") / name) if p.exists()), None
    )
    if found is None:
        _missing(f"{name} is not installed (Debian's; scripts/test.sh installs nginx)")
    return found


def _vitte_bin() -> str:
    """The `vitte` entry point of the interpreter running the tests (the test venv's)."""
    path = Path(sys.executable).parent / "vitte"
    assert path.exists(), f"{path} missing: install the project into the venv (pip install -e .)"
    return str(path)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# ---------------------------------------------------------------------- reading the recipe


def unit_entries(path: Path) -> list[tuple[str, str, str]]:
    """(section, key, value) of a unit file, in order (a key may repeat)."""
    entries: list[tuple[str, str, str]] = []
    section = ""
    for raw in path.read_text("utf-8").splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("[") and line.endswith("]"):
            section = line[1:-1]
            continue
        key, sep, value = line.partition("=")
        assert sep, f"{path.name}: not a key=value line: {raw!r}"
        entries.append((section, key.strip(), value.strip()))
    return entries


def unit_values(path: Path, key: str, section: str = "Service") -> list[str]:
    return [v for s, k, v in unit_entries(path) if s == section and k == key]


def unit_value(path: Path, key: str, section: str = "Service") -> str:
    values = unit_values(path, key, section)
    assert len(values) == 1, f"{path.name}: {key}= appears {len(values)} times"
    return values[0]


def seconds(value: str) -> float:
    match = re.fullmatch(r"(\d+(?:\.\d+)?)\s*(ms|s|min|m)?", value)
    assert match, f"not a simple time span: {value!r}"
    number, unit = float(match.group(1)), match.group(2) or "s"
    return number * {"ms": 0.001, "s": 1.0, "min": 60.0, "m": 60.0}[unit]


def env_file(path: Path = ENV_FILE) -> dict[str, str]:
    """An EnvironmentFile= as systemd reads it (KEY=value lines, # comments)."""
    values: dict[str, str] = {}
    for raw in path.read_text("utf-8").splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        key, sep, value = line.partition("=")
        assert sep and key == key.strip() and re.fullmatch(r"[A-Z_][A-Z0-9_]*", key), f"bad line {raw!r}"
        values[key] = value
    return values


def unit_environment(path: Path, instance: str = "") -> dict[str, str]:
    """The unit's Environment= lines, %i replaced by the instance name."""
    env: dict[str, str] = {}
    for value in unit_values(path, "Environment"):
        for item in value.split():
            key, _, val = item.partition("=")
            env[key] = val.replace("%i", instance)
    return env


def exec_start(path: Path) -> list[str]:
    """The unit's ExecStart with the installed venv's `vitte` replaced by the test venv's."""
    words = unit_value(path, "ExecStart").split()
    assert words[0] == INSTALLED_VITTE, f"{path.name}: ExecStart runs {words[0]}"
    return [_vitte_bin(), *words[1:]]


def render_units(target: Path) -> Path:
    """The units in `target`, ExecStart pointed at the test venv's `vitte` (verify checks that
    the binary exists and is executable; /opt/vitte is not installed here)."""
    target.mkdir(parents=True, exist_ok=True)
    for unit in UNITS.iterdir():
        text = unit.read_text("utf-8")
        if INSTALLED_VITTE in text:
            text = text.replace(INSTALLED_VITTE, _vitte_bin())
        (target / unit.name).write_text(text, "utf-8")
    return target


# ---------------------------------------------------------------------- systemd


def _verify(analyze: str, *paths: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [analyze, "verify", *map(str, paths)],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "SYSTEMD_LOG_COLOR": "0", "SYSTEMD_PAGER": ""},
    )


def test_units_pass_systemd_analyze_verify(tmp_path: Path) -> None:
    analyze = _tool("systemd-analyze")
    units = render_units(tmp_path / "units")
    names = sorted(p.name for p in UNITS.iterdir())
    assert names == [
        "vitte-backup.service",
        "vitte-backup.timer",
        "vitte-bot@.service",
        "vitte-webapp.service",
    ]
    # the template is verified as an instance (vitte-bot@8081 from vitte-bot@.service)
    targets = [
        units / "vitte-bot@8081.service",
        units / "vitte-webapp.service",
        units / "vitte-backup.service",
        units / "vitte-backup.timer",
    ]
    done = _verify(analyze, *targets)
    assert done.returncode == 0, done.stderr
    # verify returns 0 on unknown keys and unparsable values (it only warns): no output at all
    assert done.stdout.strip() == "" and done.stderr.strip() == "", done.stderr

    # ... and it does read these files: a typo and a bad value in a copy are reported
    broken = tmp_path / "broken"
    broken.mkdir()
    text = (units / "vitte-webapp.service").read_text("utf-8")
    text = text.replace("ProtectSystem=strict", "ProtectSytem=strict").replace("RestartSec=3s", "RestartSec=soon")
    (broken / "vitte-webapp.service").write_text(text, "utf-8")
    done = _verify(analyze, broken / "vitte-webapp.service")
    assert "Unknown key" in done.stderr and "ProtectSytem" in done.stderr, done.stderr
    assert "RestartSec" in done.stderr or "soon" in done.stderr, done.stderr


@pytest.mark.parametrize("unit", ["vitte-bot@8081.service", "vitte-webapp.service", "vitte-backup.service"])
def test_units_security_review_is_ok(tmp_path: Path, unit: str) -> None:
    analyze = _tool("systemd-analyze")
    units = render_units(tmp_path / "units")
    done = subprocess.run(
        [analyze, "security", "--offline=yes", "--no-pager", str(units / unit)],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "SYSTEMD_LOG_COLOR": "0", "SYSTEMD_COLORS": "0"},
    )
    match = re.search(r"Overall exposure level for \S+: (\d+\.\d+) (\w+)", done.stdout)
    assert match, done.stdout[-2000:] + done.stderr
    # systemd's scale: 0-10, "OK" below 2.5 (a plain unit with no hardening scores 9.6)
    assert float(match.group(1)) < 2.5 and match.group(2) == "OK", match.group(0)


@pytest.mark.parametrize("name", ["vitte-bot@.service", "vitte-webapp.service"])
def test_units_hardening_and_stop_timeout(name: str) -> None:
    unit = UNITS / name
    expected = {
        "DynamicUser": "yes",
        "User": "vitte",
        "StateDirectory": "vitte",
        "WorkingDirectory": "/var/lib/vitte",
        "ProtectSystem": "strict",
        "ProtectHome": "yes",
        "PrivateTmp": "yes",
        "NoNewPrivileges": "yes",
        "RestrictAddressFamilies": "AF_INET AF_INET6 AF_UNIX",
        "Restart": "on-failure",
        "KillSignal": "SIGTERM",
        "EnvironmentFile": "/etc/vitte/vitte.env",
    }
    for key, value in expected.items():
        assert unit_value(unit, key) == value, f"{name}: {key}"
    assert seconds(unit_value(unit, "RestartSec")) >= 1
    # systemd's SIGKILL must not cut replies the bot would finish within its grace
    grace = float(env_file().get("VITTE_SHUTDOWN_GRACE", SHUTDOWN_GRACE_DEFAULT))
    assert seconds(unit_value(unit, "TimeoutStopSec")) >= grace + 5
    assert unit_value(unit, "WantedBy", "Install") == "multi-user.target"
    words = unit_value(unit, "ExecStart").split()
    assert words == [INSTALLED_VITTE, "run-bot" if name.startswith("vitte-bot") else "serve-webapp"]


def test_bot_template_takes_its_port_from_the_instance() -> None:
    unit = UNITS / "vitte-bot@.service"
    env = unit_environment(unit, "8083")
    assert env["VITTE_WEBHOOK_PORT"] == "8083" and env["VITTE_WEBHOOK_HOST"] == "127.0.0.1"
    # EnvironmentFile= overrides Environment=: the shared file must not set them
    assert not {"VITTE_WEBHOOK_PORT", "VITTE_WEBHOOK_HOST"} & set(env_file())


def test_journald_drop_in_names_journald_settings() -> None:
    """journald ignores a misspelt key with a warning nobody reads: every key must be one that
    Debian's /etc/systemd/journald.conf lists (it shows each setting, commented out)."""
    shipped = Path("/etc/systemd/journald.conf")
    if not shipped.exists():
        _missing(f"{shipped} is missing (Debian's systemd package)")
    known = set(re.findall(r"^#?([A-Za-z]+)=", shipped.read_text("utf-8"), flags=re.M))
    assert {"SystemMaxUse", "MaxRetentionSec", "Storage"} <= known
    entries = unit_entries(DEPLOY / "journald" / "vitte.conf")
    assert entries and {s for s, _k, _v in entries} == {"Journal"}
    assert {k for _s, k, _v in entries} <= known, entries


# ---------------------------------------------------------------------- the env file and nginx


def test_example_env_file_is_a_valid_webhook_configuration(monkeypatch: pytest.MonkeyPatch) -> None:
    values = env_file()
    fields = {f"VITTE_{name.upper()}" for name in Settings.model_fields} | {"VITTE_LOG_FORMAT"}  # vitte/logs.py
    assert set(values) <= fields, f"unknown variables: {sorted(set(values) - fields)}"
    for key, value in values.items():
        monkeypatch.setenv(key, value)
    settings = load_settings()
    settings.require_bot_token()
    assert check_webhook_settings(settings)  # webhook mode, the secret well-formed
    assert settings.database_url.startswith("postgresql+psycopg://") and settings.redis_url
    assert settings.webapp_url and settings.webapp_url.startswith("https://")

    site = SITE.read_text("utf-8")
    hook = urlparse(settings.webhook_url or "")
    assert hook.scheme == "https" and hook.hostname == HOST
    assert f"location = {hook.path} {{" in site  # the webhook location is the URL's path
    assert urlparse(settings.webapp_url).hostname == HOST and f"server_name {HOST};" in site
    webapp_upstream = re.search(r"upstream vitte_webapp \{\s*server 127\.0\.0\.1:(\d+);", site)
    assert webapp_upstream and int(webapp_upstream.group(1)) == settings.webapp_port
    bot_ports = re.findall(r"server 127\.0\.0\.1:(\d+);", site.split("upstream vitte_bot", 1)[1].split("}", 1)[0])
    assert bot_ports == ["8081", "8082"]  # the README's `systemctl enable vitte-bot@8081 vitte-bot@8082`


@dataclass
class Rendered:
    prefix: Path
    conf: Path
    https_port: int
    http_port: int
    cert: Path
    access_log: Path
    error_log: Path


def _certificate(directory: Path) -> tuple[Path, Path]:
    openssl = _tool("openssl")
    cert, key = directory / "fullchain.pem", directory / "privkey.pem"
    done = subprocess.run(
        [
            openssl, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
            "-nodes", "-days", "2", "-subj", f"/CN={HOST}",
            "-addext", f"subjectAltName=DNS:{HOST},IP:127.0.0.1",
            "-keyout", str(key), "-out", str(cert),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    return cert, key


def render_site(directory: Path, *, bot_ports: list[int], webapp_port: int) -> Rendered:
    """deploy/nginx/vitte.conf for loopback: every production value replaced, each replacement
    checked to have happened, inside a main config whose files all live in `directory`."""
    prefix = directory / "nginx"
    for sub in ("body", "proxy", "fastcgi", "uwsgi", "scgi", "acme"):
        (prefix / sub).mkdir(parents=True, exist_ok=True)
    cert, key = _certificate(prefix)
    https_port, http_port = _free_port(), _free_port()
    site = SITE.read_text("utf-8")
    bot_lines = re.findall(r"^\s*server 127\.0\.0\.1:808[1-9];\n", site, flags=re.M)
    assert len(bot_lines) == 2
    replacements: list[tuple[str, str, int]] = [
        ("listen 80;", f"listen 127.0.0.1:{http_port};", 1),
        ("listen [::]:80;\n", "", 1),
        ("listen 443 ssl http2;", f"listen 127.0.0.1:{https_port} ssl http2;", 1),
        ("listen [::]:443 ssl http2;\n", "", 1),
        ("server 127.0.0.1:8080;", f"server 127.0.0.1:{webapp_port};", 1),
        ("server 127.0.0.1:8081;", f"server 127.0.0.1:{bot_ports[0]};", 1),
        ("server 127.0.0.1:8082;", f"server 127.0.0.1:{bot_ports[1]};", 1),
        (f"/etc/letsencrypt/live/{HOST}/fullchain.pem", str(cert), 1),
        (f"/etc/letsencrypt/live/{HOST}/privkey.pem", str(key), 1),
        ("root /var/www/letsencrypt;", f"root {prefix / 'acme'};", 1),
    ]
    for old, new, count in replacements:
        assert site.count(old) == count, f"deploy/nginx/vitte.conf: {old!r} found {site.count(old)} times"
        site = site.replace(old, new)
    (prefix / "vitte.conf").write_text(site, "utf-8")
    access_log, error_log = prefix / "access.log", prefix / "error.log"
    user = f"user {getpass.getuser()};" if os.geteuid() == 0 else ""  # as root: workers stay root
    main = f"""
{user}
worker_processes 1;
daemon off;
pid {prefix / 'nginx.pid'};
error_log {error_log} warn;
events {{ worker_connections 256; }}
http {{
    client_body_temp_path {prefix / 'body'};
    proxy_temp_path {prefix / 'proxy'};
    fastcgi_temp_path {prefix / 'fastcgi'};
    uwsgi_temp_path {prefix / 'uwsgi'};
    scgi_temp_path {prefix / 'scgi'};
    log_format vitte '$remote_addr "$request" $status "$upstream_addr"';
    access_log {access_log} vitte;
    include {prefix / 'vitte.conf'};
}}
"""
    conf = prefix / "nginx.conf"
    conf.write_text(main, "utf-8")
    return Rendered(prefix, conf, https_port, http_port, cert, access_log, error_log)


def _nginx_args(nginx: str, r: Rendered) -> list[str]:
    return [nginx, "-p", str(r.prefix), "-e", str(r.error_log), "-c", str(r.conf)]


def test_nginx_site_passes_nginx_t(tmp_path: Path) -> None:
    nginx = _tool("nginx")
    r = render_site(tmp_path, bot_ports=[_free_port(), _free_port()], webapp_port=_free_port())
    done = subprocess.run([*_nginx_args(nginx, r), "-t"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "syntax is ok" in done.stderr and "test is successful" in done.stderr
    assert "[warn]" not in done.stderr and "[emerg]" not in done.stderr, done.stderr
    # and nginx -t does catch a broken site
    (r.prefix / "vitte.conf").write_text(SITE.read_text("utf-8").replace("proxy_pass", "proxy_passs", 1))
    done = subprocess.run([*_nginx_args(nginx, r), "-t"], capture_output=True, text=True, timeout=60)
    assert done.returncode != 0 and "proxy_passs" in done.stderr


# ---------------------------------------------------------------------- backups


def _systemd_unescape(command: str) -> str:
    """systemd's ExecStart escapes: `$$` is `$`, `%%` is `%` (no other specifier is used)."""
    assert re.search(r"%[^%]", command.replace("%%", "")) is None, "an unexpected % specifier"
    return command.replace("$$", "$").replace("%%", "%")


def test_backup_unit_leaves_a_restorable_dump_and_prunes_old_ones(tmp_path: Path, pg_url: str) -> None:
    pg_dump, pg_restore = _tool("pg_dump"), _tool("pg_restore")
    unit = UNITS / "vitte-backup.service"
    command = unit_value(unit, "ExecStart")
    shell, flag, script = command.split(" ", 2)
    assert shell == "/bin/sh" and flag == "-euc" and script.startswith("'") and script.endswith("'")
    script = _systemd_unescape(script[1:-1])
    state = tmp_path / "vitte-backup"
    state.mkdir()
    old = state / "vitte-20000101T000000Z.dump"
    old.write_bytes(b"old")
    os.utime(old, (time.time() - 40 * 86400, time.time() - 40 * 86400))
    db = urlparse(pg_url.replace("postgresql+psycopg", "postgresql"))
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("PG")},
        **unit_environment(unit),
        "STATE_DIRECTORY": str(state),  # what StateDirectory= sets
        "PATH": f"{Path(pg_dump).parent}:{os.environ.get('PATH', '/usr/bin:/bin')}",
        "PGHOST": db.hostname or "127.0.0.1",
        "PGPORT": str(db.port or 5432),
        "PGUSER": db.username or "postgres",
        "PGDATABASE": db.path.lstrip("/"),
    }
    assert unit_environment(unit)["PGDATABASE"] == "vitte"
    done = subprocess.run(["/bin/sh", "-euc", script], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    dumps = sorted(state.iterdir())
    assert not old.exists()  # older than KEEP_DAYS: pruned
    assert len(dumps) == 1 and re.fullmatch(r"vitte-\d{8}T\d{6}Z\.dump", dumps[0].name), dumps
    listing = subprocess.run([pg_restore, "--list", str(dumps[0])], capture_output=True, text=True, timeout=60)
    assert listing.returncode == 0, listing.stderr
    for table in ("users", "dialogs", "messages", "payments", "alembic_version"):
        assert re.search(rf"TABLE DATA public {table} ", listing.stdout), table


# ---------------------------------------------------------------------- the whole recipe, running


@dataclass
class Proc:
    name: str
    proc: asyncio.subprocess.Process
    port: int | None = None
    stderr: bytes = b""
    stopped: bool = False


async def _spawn(name: str, argv: list[str], env: dict[str, str], cwd: Path, port: int | None = None) -> Proc:
    proc = await asyncio.create_subprocess_exec(
        *argv, cwd=str(cwd), env=env, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE
    )
    return Proc(name, proc, port)


async def _listening(p: Proc, port: int, within: float = 40.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while True:
        if p.proc.returncode is not None:
            _out, err = await p.proc.communicate()
            raise AssertionError(f"{p.name} exited with {p.proc.returncode}: {err.decode()[-3000:]}")
        try:
            _r, w = await asyncio.open_connection("127.0.0.1", port)
            w.close()
            return
        except OSError:
            if loop.time() > deadline:
                raise AssertionError(f"{p.name}: nothing listens on {port} within {within} s") from None
            await asyncio.sleep(0.1)


async def _stop(p: Proc, sig: signal.Signals = signal.SIGTERM, within: float = 30.0) -> int:
    if p.proc.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            p.proc.send_signal(sig)
    try:
        _out, err = await asyncio.wait_for(p.proc.communicate(), within)
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            p.proc.kill()
        _out, err = await p.proc.communicate()
    p.stderr, p.stopped = err or b"", True
    assert p.proc.returncode is not None
    return p.proc.returncode


@contextlib.asynccontextmanager
async def _processes() -> AsyncIterator[list[Proc]]:
    procs: list[Proc] = []
    try:
        yield procs
    finally:
        for p in procs:
            if not p.stopped:
                await _stop(p, signal.SIGQUIT if p.name == "nginx" else signal.SIGTERM, within=20)


async def _prepare(settings: Settings) -> None:
    core = await Core.open(settings)
    try:
        await seed_cards(core.db, cards())
    finally:
        await core.close()


async def _chat_rows(settings: Settings, user_id: int) -> tuple[User | None, list[Message]]:
    core = await Core.open(settings)
    try:
        async with core.db.session() as s:
            user = await s.get(User, user_id)
        return user, await messages_of(core, user_id)
    finally:
        await core.close()


def _logged(access_log: Path, request: str, status: int | None = None) -> list[str]:
    """The $upstream_addr of each logged request starting with `request` ("POST /tg/hook"),
    with that status if given ("-": nginx answered itself)."""
    out = []
    for line in access_log.read_text("utf-8").splitlines():
        match = re.match(r'(\S+) "([^"]*)" (\d+) "([^"]*)"', line)
        if match and match.group(2).startswith(request) and status in (None, int(match.group(3))):
            out.append(match.group(4))
    return out


@pytest.mark.slow
async def test_nginx_in_front_of_two_bots_and_the_webapp(
    tmp_path: Path, pg_url: str, redis_url: str, redis_prefix: str
) -> None:
    nginx = _tool("nginx")
    settings = load_settings(database_url=pg_url, redis_url=redis_url, redis_prefix=redis_prefix)
    await _prepare(settings)
    bot_ports, webapp_port = [_free_port(), _free_port()], _free_port()
    r = render_site(tmp_path, bot_ports=bot_ports, webapp_port=webapp_port)
    state = tmp_path / "var-lib-vitte"  # WorkingDirectory=
    state.mkdir()
    secret = secrets.token_hex(16)
    base = f"https://127.0.0.1:{r.https_port}"
    tls = ssl.create_default_context(cafile=str(r.cert))  # the self-signed certificate, verified
    host = {"Host": HOST}
    hook_headers = {**host, "X-Telegram-Bot-Api-Secret-Token": secret}

    async with FakeBotAPI(token=TOKEN) as api, FakeLLMServer() as llm, _processes() as procs:
        # the units' environment: Environment= lines, then the EnvironmentFile= (which wins over
        # them), then what this test must point elsewhere (fake Telegram and LLM, test stores)
        overrides = {
            "VITTE_BOT_TOKEN": TOKEN,
            "VITTE_TELEGRAM_API_URL": api.base_url,
            "VITTE_DATABASE_URL": pg_url,
            "VITTE_REDIS_URL": redis_url,
            "VITTE_REDIS_PREFIX": redis_prefix,
            "VITTE_LLM_BASE_URL": llm.base_url,
            "VITTE_WEBHOOK_SECRET": secret,
            "VITTE_WEBAPP_PORT": str(webapp_port),
            "VITTE_SHUTDOWN_GRACE": "5",
        }
        os_env = {k: v for k, v in os.environ.items() if not k.startswith("VITTE_")}

        def unit_env(unit: Path, instance: str = "") -> dict[str, str]:
            return {**os_env, **unit_environment(unit, instance), **env_file(), **overrides}

        bot_unit, webapp_unit = UNITS / "vitte-bot@.service", UNITS / "vitte-webapp.service"
        for port in bot_ports:
            procs.append(
                await _spawn(f"vitte-bot@{port}", exec_start(bot_unit), unit_env(bot_unit, str(port)), state, port)
            )
        procs.append(await _spawn("vitte-webapp", exec_start(webapp_unit), unit_env(webapp_unit), state, webapp_port))
        ngx = await _spawn("nginx", _nginx_args(nginx, r), dict(os.environ), tmp_path)
        procs.append(ngx)
        bots, webapp = procs[0:2], procs[2]
        try:
            for p, port in [(bots[0], bot_ports[0]), (bots[1], bot_ports[1]), (webapp, webapp_port)]:
                await _listening(p, port)
            await _listening(ngx, r.https_port, within=15)
            first = await api.wait_for("setWebhook", timeout=30)  # one per bot process
            await api.wait_for("setWebhook", timeout=30, after=api.calls.index(first) + 1)
            hooks = api.calls_of("setWebhook")
            assert len(hooks) == 2 and {c.params["url"] for c in hooks} == {env_file()["VITTE_WEBHOOK_URL"]}
            assert all(c.params["secret_token"] == secret for c in hooks)

            init = make_init_data(PLAYER, TOKEN, first_name="Ada", username="ada", language_code="en")
            async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=tls)) as http:
                # plain http: redirected to https
                async with http.get(
                    f"http://127.0.0.1:{r.http_port}/app?x=1", headers=host, allow_redirects=False
                ) as resp:
                    assert resp.status == 301 and resp.headers["Location"] == f"https://{HOST}/app?x=1"

                # the Web App: page, static file (gzip through the proxy), initData-signed API
                async with http.get(f"{base}/", headers=host) as resp:
                    assert resp.status == 200 and resp.content_type == "text/html"
                    page = await resp.text()
                    assert "static/app.js" in page
                    assert resp.headers["Strict-Transport-Security"].startswith("max-age=")
                async with http.get(f"{base}/static/app.js", headers={**host, "Accept-Encoding": "gzip"}) as resp:
                    assert resp.status == 200 and resp.headers.get("Content-Encoding") == "gzip"
                    assert len(await resp.read()) > 1000
                async with http.get(f"{base}/api/me", headers=host) as resp:
                    assert resp.status == 401  # no initData
                async with http.post(
                    f"{base}/api/me/adult", json={"adult": True}, headers={**host, **auth_header(init)}
                ) as resp:
                    assert resp.status == 200, await resp.text()
                mark = len(api.calls)
                async with http.post(
                    f"{base}/api/dialogs",
                    json={"persona_id": PERSONA, "story_id": STORY},
                    headers={**host, **auth_header(init)},
                ) as resp:
                    assert resp.status == 200, await resp.text()
                    opened = await resp.json()
                    assert opened["sent"] is True and opened["persona_id"] == PERSONA
                # the Web App process sent the opening through (fake) Telegram
                await api.wait_for("sendMessage", lambda c: c.params.get("chat_id") == PLAYER, after=mark)
                async with http.get(f"{base}/api/me", headers={**host, **auth_header(init)}) as resp:
                    assert resp.status == 200
                # a body over the Web App's 64 KiB is refused by nginx, before the app
                async with http.post(
                    f"{base}/api/settings", data=b"x" * (80 * 1024), headers={**host, **auth_header(init)}
                ) as resp:
                    assert resp.status == 413
                # nginx's own answer (logged once nginx is done with the connection)
                await wait_until(lambda: _logged(r.access_log, "POST /api/settings", 413) == ["-"], 5)

                # the webhook: the secret header reaches the bots, updates spread over both
                hook = f"{base}/tg/hook"
                async with http.post(hook, json={"update_id": 1}, headers=host) as resp:
                    assert resp.status == 401  # no secret: the bot refuses
                bad = {**host, "X-Telegram-Bot-Api-Secret-Token": "wrong"}
                async with http.post(hook, json={"update_id": 1}, headers=bad) as resp:
                    assert resp.status == 401
                async with http.get(hook, headers=hook_headers) as resp:
                    assert resp.status == 403  # limit_except POST
                async with http.post(hook, data=b"{" + b" " * (2 * 1024 * 1024) + b"}", headers=hook_headers) as resp:
                    assert resp.status == 413  # over the webhook's 1m
                await wait_until(lambda: _logged(r.access_log, "POST /tg/hook", 413) == ["-"], 5)
                texts = ["first through nginx", "second through nginx", "third through nginx", "fourth"]
                mark = len(api.calls)
                for n, text in enumerate(texts):
                    update = {"update_id": 9000 + n, "message": api.user_message(PLAYER, text, language_code="en")}
                    async with http.post(hook, json=update, headers=hook_headers) as resp:
                        assert resp.status == 200
                replies = [
                    c.params["text"] for c in api.calls[mark:]
                    if c.method == "sendMessage" and c.params.get("chat_id") == PLAYER
                ]
                assert replies == [f"You said: {t}" for t in texts]
                # (nginx logs a request just after its answer is sent)
                await wait_until(lambda: len(_logged(r.access_log, "POST /tg/hook", 200)) == len(texts), 5)
                used = _logged(r.access_log, "POST /tg/hook", 200)
                assert len(used) == len(texts) and set(used) == {f"127.0.0.1:{p}" for p in bot_ports}, used

                # /metrics: refused to anyone but loopback; each process answers on loopback
                outside = aiohttp.TCPConnector(ssl=tls, local_addr=("127.0.0.2", 0))
                async with aiohttp.ClientSession(connector=outside) as far:
                    async with far.get(f"{base}/metrics", headers=host) as resp:
                        assert resp.status == 403
                    async with far.get(f"{base}/", headers=host) as resp:
                        assert resp.status == 200  # the rest of the site is open to them
                async with http.get(f"{base}/metrics", headers=host) as resp:
                    assert resp.status == 200 and "vitte_" in await resp.text()
                for port in bot_ports:
                    async with http.get(f"http://127.0.0.1:{port}/metrics") as resp:
                        assert resp.status == 200 and "vitte_updates" in await resp.text()

                # a rolling restart: one bot process stopped, an update still lands, on the other
                assert await _stop(bots[0]) == 0, bots[0].stderr.decode()[-3000:]
                mark = len(api.calls)
                update = {"update_id": 9100, "message": api.user_message(PLAYER, "while one restarts", language_code="en")}
                async with http.post(hook, json=update, headers=hook_headers) as resp:
                    assert resp.status == 200
                await api.wait_for(
                    "sendMessage", lambda c: c.params.get("text") == "You said: while one restarts", after=mark
                )
                # nginx tried the stopped one (refused), or skipped it, and passed the update on
                await wait_until(lambda: len(_logged(r.access_log, "POST /tg/hook", 200)) == len(texts) + 1, 5)
                last = _logged(r.access_log, "POST /tg/hook", 200)[-1]
                assert last.endswith(f"127.0.0.1:{bot_ports[1]}"), last
        except BaseException:
            for p in procs:
                if not p.stopped:
                    await _stop(p, signal.SIGQUIT if p is ngx else signal.SIGTERM, within=20)
                print(f"--- {p.name} stderr:\n{p.stderr.decode()[-4000:]}")  # shown on failure
            with contextlib.suppress(OSError):
                print("--- nginx error.log:\n" + r.error_log.read_text()[-4000:])
            raise

        # everything stops cleanly: the Python processes on SIGTERM with 0, nginx on SIGQUIT
        for p in procs:
            if not p.stopped:
                code = await _stop(p, signal.SIGQUIT if p is ngx else signal.SIGTERM)
                assert code == 0, f"{p.name}: {code}\n{p.stderr.decode()[-3000:]}"
        for p in procs:
            assert b"Traceback" not in p.stderr, f"{p.name}:\n{p.stderr.decode()[-3000:]}"

    # the database saw it all once, in order
    user, rows = await _chat_rows(settings, PLAYER)
    assert user is not None and user.adult_confirmed_at is not None
    chat = [(m.role, m.text, m.status) for m in rows[1:]]
    want: list[tuple[str, str, str]] = []
    for text in [*texts, "while one restarts"]:
        want += [(USER, text, MSG_OK), (ASSISTANT, f"You said: {text}", MSG_OK)]
    assert rows[0].role == ASSISTANT and chat == want
    await drop_redis_keys(settings)
