"""Bad input, property-based (issue #7 item 4): hostile payloads to every Web App endpoint
and hostile messages / callback data through the real Dispatcher.

Properties: the server never answers 500 and every 4xx is JSON with an "error" key; a bad
initData is always 401; player A never sees player B's id, name or messages; rows that a
request must not change stay byte-for-byte the same. In the bot: no exception escapes, no
"something went wrong" / traceback reaches the player, every HTML the bot sends parses
(LocalBotSession refuses bad HTML as Telegram does), and a forged button for B's dialog
changes nothing of B's.

Hypothesis runs derandomized with a modest number of examples, so the file is quick and
deterministic in CI.
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import quote

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import text

from tests.support.bot_harness import WEBAPP_URL, BotEnv, cards, drop_redis_keys, press
from tests.support.initdata import OTHER_BOT_TOKEN, TEST_BOT_TOKEN, auth_header, make_init_data
from tests.support.llm_server import FakeLLMServer
from tests.support.webapp import WebAppHarness, running_webapp
from vitte.bot.factory import build_dispatcher
from vitte.bot.runtime import Runtime
from vitte.bot.texts import t
from vitte.catalog.cards import default_fixtures_dir, read_cards
from vitte.catalog.seed import seed_cards
from vitte.config import Settings, load_settings
from vitte.core import Core
from vitte.localapi import LocalBotSession, make_local_bot
from vitte.models import ACTIVE, USER, Message
from vitte.webapp.auth import sign_init_data

FUZZ = settings(
    max_examples=120,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[
        HealthCheck.function_scoped_fixture,
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
    ],
)

A_ID = 1001
B_ID = 7_770_000_042
B_NAME = "Бориславушка"
B_USERNAME = "boris_secret_handle"
B_SECRET = "Секретная фраза Бориса 8472"
PERSONA = "mila"
STORY = "mila.rainy-closing"
SNAPSHOT_TABLES = ("users", "dialogs", "messages", "payments")


@pytest.fixture
def backend() -> str:  # SQLite unless a test parametrizes it
    return "sqlite"


# ---------------------------------------------------------------------- helpers


async def snapshot(core: Core, user_id: int | None = None) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of the tables a request could touch (optionally only one player's)."""
    out: dict[str, list[tuple[Any, ...]]] = {}
    async with core.db.session() as s:
        for table in SNAPSHOT_TABLES:
            if user_id is None:
                sql = f"SELECT * FROM {table}"
            elif table == "users":
                sql = f"SELECT * FROM users WHERE id = {int(user_id)}"
            elif table == "messages":
                sql = (
                    "SELECT m.* FROM messages m JOIN dialogs d ON d.id = m.dialog_id "
                    f"WHERE d.user_id = {int(user_id)}"
                )
            else:
                sql = f"SELECT * FROM {table} WHERE user_id = {int(user_id)}"
            rows = (await s.execute(text(sql))).all()
            out[table] = sorted((tuple(r) for r in rows), key=repr)
    return out


class _Quiet(dict):  # type: ignore[type-arg]
    """Fixture state with a short repr (hypothesis prints the test's arguments on failure)."""

    def __repr__(self) -> str:
        return f"<{', '.join(self)}>"


def _leaks(body: str, markers: list[str]) -> list[str]:
    return [m for m in markers if re.search(rf"(?<!\d){re.escape(m)}(?!\d)", body)]


# ---------------------------------------------------------------------- strategies

_json_leaf = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=40)
    | st.sampled_from(
        [PERSONA, STORY, "kira", "kira.night-watch", "ru", "en", "short", "normal", "free", "premium"]
    )
    | st.just("x" * 5000)
    | st.just("\u202e\u200b\u0000<script>alert(1)</script>\ud7ff💕")
)
json_values = st.recursive(
    _json_leaf,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=12,
)
_keys = st.sampled_from(
    [
        "persona_id",
        "story_id",
        "restart",
        "dialog_id",
        "language",
        "style",
        "confirm",
        "adult",
        "plan_id",
        "user_id",
        "id",
        "user",
    ]
) | st.text(max_size=12)
json_objects = st.dictionaries(_keys, json_values, max_size=6)


@st.composite
def bodies(draw: st.DrawFn) -> bytes | None:
    kind = draw(st.sampled_from(["object", "object", "object", "value", "raw", "none", "huge", "forged"]))
    if kind == "object":
        return json.dumps(draw(json_objects)).encode()
    if kind == "value":
        return json.dumps(draw(json_values)).encode()
    if kind == "raw":
        return draw(st.binary(max_size=200))
    if kind == "huge":  # past the 64 KiB client_max_size
        return json.dumps({"persona_id": "a" * draw(st.integers(70_000, 200_000))}).encode()
    if kind == "forged":  # act for B through the body: the API must only trust initData
        return json.dumps({"user_id": B_ID, "user": {"id": B_ID}, "id": B_ID, "confirm": True}).encode()
    return None


_header_text = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=300)


@st.composite
def auths(draw: st.DrawFn) -> tuple[str, dict[str, str]]:
    """(kind, headers): kind "valid" is A's genuine initData; every other kind must get 401."""
    kind = draw(
        st.sampled_from(
            [
                "valid",
                "valid",
                "valid",
                "none",
                "random",
                "truncated",
                "garbled",
                "other_bot",
                "swapped_user",
                "expired",
                "future",
                "no_scheme",
                "empty",
            ]
        )
    )
    valid = make_init_data(A_ID, first_name="Аня")
    if kind == "valid":
        return kind, auth_header(valid)
    if kind == "none":
        return kind, {}
    if kind == "random":
        return kind, {"Authorization": "tma " + draw(_header_text)}
    if kind == "truncated":
        cut = draw(st.integers(0, len(valid) - 1))
        return kind, auth_header(valid[:cut])
    if kind == "garbled":
        i = draw(st.integers(0, len(valid) - 1))
        c = draw(st.sampled_from("0aZ%&=+"))
        garbled = valid[:i] + c + valid[i + 1 :]
        if garbled == valid:
            garbled = valid + "0"
        return kind, auth_header(garbled)
    if kind == "other_bot":  # B's id, signed with another bot's token
        return kind, auth_header(make_init_data(B_ID, OTHER_BOT_TOKEN, first_name=B_NAME))
    if kind == "swapped_user":  # A's genuine hash, B's id in the user field
        fields = {
            "query_id": "AAHdF6IQAAAAAN0XohDhrOrc",
            "user": json.dumps({"id": A_ID, "first_name": "Аня"}),
            "auth_date": str(int(time.time())),
        }
        fields["hash"] = sign_init_data(fields, TEST_BOT_TOKEN)
        fields["user"] = json.dumps({"id": B_ID, "first_name": "Аня"})
        return kind, auth_header("&".join(f"{k}={quote(v)}" for k, v in fields.items()))
    if kind == "expired":
        age = draw(st.integers(2 * 86400, 10**9))
        return kind, auth_header(make_init_data(B_ID, auth_date=int(time.time()) - age))
    if kind == "future":
        return kind, auth_header(
            make_init_data(B_ID, auth_date=int(time.time()) + draw(st.integers(3600, 10**9)))
        )
    if kind == "no_scheme":
        return kind, {"Authorization": valid}
    return kind, {"Authorization": draw(st.sampled_from(["", " ", "tma", "tma ", "Bearer x"]))}


_segment = st.text(max_size=40) | st.sampled_from([PERSONA, "kira", "..", "%00", "a" * 200, "💕"])


# (method, path, auth): "required" / "optional" (401 only for a bad header) / None (no route)
ENDPOINTS = [
    ("GET", "/api/personas", "optional"),
    ("GET", "/api/personas/{}", "optional"),
    ("GET", "/api/plans", "optional"),
    ("GET", "/api/me", "required"),
    ("POST", "/api/me/adult", "required"),
    ("POST", "/api/dialogs", "required"),
    ("POST", "/api/settings", "required"),
    ("POST", "/api/me/delete", "required"),
    ("POST", "/api/me/export", "required"),
    ("POST", "/api/invoice", "required"),
    ("GET", "/api/dialogs", None),  # wrong method
    ("DELETE", "/api/me", None),
    ("GET", "/api/nope", None),
]


# ---------------------------------------------------------------------- Web App API

_UNCHANGED_ON_ERROR_EXCEPT = {409, 429, 502}  # after-the-fact failures (the dialog may exist)


async def _two_players(h: WebAppHarness) -> dict[str, Any]:
    """A and B, both adults with a dialog; B's chat holds a secret line."""
    for uid, name, username in ((A_ID, "Аня", "anya"), (B_ID, B_NAME, B_USERNAME)):
        headers = auth_header(make_init_data(uid, first_name=name, username=username))
        resp = await h.client.post("/api/me/adult", json={"adult": True}, headers=headers)
        assert resp.status == 200, await resp.text()
        resp = await h.client.post(
            "/api/dialogs", json={"persona_id": PERSONA, "story_id": STORY}, headers=headers
        )
        assert resp.status == 200, await resp.text()
    (b_dialog,) = await h.dialogs_of(B_ID)
    async with h.core.db.session() as s:
        s.add(Message(dialog_id=b_dialog.id, role=USER, text=B_SECRET))
        await s.commit()
    return {"b_dialog": b_dialog.id}


async def _fuzz_api(q: _Quiet, data: st.DataObject) -> None:
    h: WebAppHarness = q["h"]
    method, path, auth = data.draw(st.sampled_from(ENDPOINTS), label="endpoint")
    if "{}" in path:
        segment = data.draw(_segment, label="segment")
        path = path.format(quote(segment, safe=""))
        if not segment:
            auth = None  # "/api/personas/" is no route
    kind, headers = data.draw(auths(), label="auth")
    body = data.draw(bodies(), label="body") if method == "POST" else None
    query = data.draw(st.sampled_from(["", "?lang=en", "?lang=" + quote("ру\x00")]), label="query")
    if body is not None:
        headers = {**headers, "Content-Type": data.draw(st.sampled_from(["application/json", "text/plain"]))}

    before_all = await snapshot(h.core)
    before_b = await snapshot(h.core, B_ID)
    resp = await h.client.request(method, path + query, data=body, headers=headers)
    raw = await resp.read()
    status = resp.status
    after_all = await snapshot(h.core)

    assert status < 500 or status in {501, 502, 503}, (status, raw[:500])
    assert status != 500
    if status >= 400:
        assert resp.content_type == "application/json", (status, raw[:300])
        payload = json.loads(raw)
        assert isinstance(payload, dict) and isinstance(payload.get("error"), str) and payload["error"], (
            payload
        )
        assert "Traceback" not in raw.decode("utf-8", "replace")
    if (auth == "required" and kind != "valid") or (auth == "optional" and kind not in {"valid", "none"}):
        assert status == 401, (kind, method, path, status, raw[:300])
    # B's data: never in A's answers, never changed by anything A (or a forger) sends
    text_body = raw.decode("utf-8", "replace")
    assert not _leaks(text_body, [str(B_ID), B_NAME, B_USERNAME, B_SECRET]), text_body[:500]
    assert await snapshot(h.core, B_ID) == before_b
    if (status >= 400 and status not in _UNCHANGED_ON_ERROR_EXCEPT) or method == "GET" or kind != "valid":
        assert after_all == before_all, (method, path, kind, status, raw[:300])


@pytest.fixture
async def api(sqlite_url: str) -> AsyncIterator[_Quiet]:
    async with running_webapp(load_settings(database_url=sqlite_url)) as h:
        await _two_players(h)
        yield _Quiet(h=h)


@FUZZ
@given(data=st.data())
async def test_api_survives_hostile_requests(api: _Quiet, data: st.DataObject) -> None:
    await _fuzz_api(api, data)


@pytest.fixture
async def pg_api(
    pg_url: str, redis_url: str, redis_prefix: str, redis_cleanup: None
) -> AsyncIterator[_Quiet]:
    settings = load_settings(database_url=pg_url, redis_url=redis_url, redis_prefix=redis_prefix)
    async with running_webapp(settings) as h:
        await _two_players(h)
        yield _Quiet(h=h)


@settings(FUZZ, max_examples=40)
@given(data=st.data())
async def test_api_survives_hostile_requests_on_postgres(pg_api: _Quiet, data: st.DataObject) -> None:
    await _fuzz_api(pg_api, data)


# ---------------------------------------------------------------------- the bot


class _Errors(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture
async def bot_env(backend_settings: Settings) -> AsyncIterator[BotEnv]:
    """tests.support.bot_harness.env without the quotas, so every example reaches the LLM path."""
    async with FakeLLMServer() as llm:
        settings = backend_settings.model_copy(
            update={
                "llm_base_url": llm.base_url,
                "llm_retries": 0,
                "llm_timeout": 10.0,
                "webapp_url": WEBAPP_URL,
                "free_daily_replies": 1_000_000,
                "rate_limit_per_minute": 0,
            }
        )
        core = await Core.open(settings)
        await seed_cards(core.db, cards() or read_cards(default_fixtures_dir()))
        core.catalog.invalidate()
        session = LocalBotSession()
        bot = make_local_bot(session)
        runtime = Runtime(draft_interval=0.0, edit_interval=0.0)
        dp = build_dispatcher(core, runtime)
        try:
            yield BotEnv(settings, core, session, bot, dp, runtime, llm)
        finally:
            await runtime.drain(0)
            await core.close()
            await drop_redis_keys(settings)


_hostile_text = st.one_of(
    st.text(min_size=1, max_size=200),
    st.text(st.characters(codec="utf-8", categories=["Cc", "Cf", "Zs", "So", "Mn"]), min_size=1, max_size=60),
    st.sampled_from(
        [
            "<b>",
            "I <3 you",
            "</i>",
            "a & b &amp; <c>",
            '<a href="javascript:alert(1)">x</a>',
            "<tg-spoiler>",
            "\u202eRTL override\u202c",
            "זה טקסט בעברית 💕",
            "\u200b\u200d\ufeff",
            "👩‍❤️‍💋‍👨" * 50,
            "/start <b>",
            "/settings ../../etc",
            "```<pre>```",
            "x" * 2001,
            "я" * 4096,
        ]
    ),
).filter(lambda s: s.strip() != "")


def _forged_callbacks(b_dialog: int, b_msg: int, a_dialog: int) -> st.SearchStrategy[str]:
    big = st.integers(min_value=-(2**80), max_value=2**80)
    ids = st.sampled_from([b_dialog, b_msg, 0, -1, 2**63, 2**63 - 1, -(2**63)]) | big
    own = st.sampled_from([a_dialog]) | ids
    return st.one_of(
        st.text(max_size=64).filter(lambda s: len(s.encode()) <= 64),
        st.builds(lambda a, d: f"d:{a}:{d}", st.sampled_from(["cont", "over", "x", ""]), ids),
        st.builds(lambda d, m: f"rg:{d}:{m}", ids, ids),
        st.builds(lambda d, m: f"rt:{d}:{m}", ids, ids),
        st.builds(lambda d, m: f"rg:{d}:{m}", own, ids),
        st.builds(lambda v: f"st:lang:{v}", st.text(max_size=20)),
        st.builds(lambda v: f"st:style:{v}", st.text(max_size=20)),
        st.builds(lambda v: f"pay:{v}", st.text(max_size=30)),
        st.builds(lambda v: f"age:{v}", st.sampled_from(["1", "2", "-1", "true", "", "x" * 50])),
        st.sampled_from(["go", "go:1", "d", "rg", "rg::", "d:cont", "st", "age", "pay", ":", "::::"]),
    ).map(lambda s: s.encode()[:64].decode("utf-8", "ignore"))


async def _fuzz_bot(ctx: _Quiet, data: st.DataObject) -> None:
    env: BotEnv = ctx["env"]
    a = ctx["a"]
    if not [d for d in await env.dialogs(A_ID) if d.status == ACTIVE]:
        await env.choose(a)  # an earlier example ended or deleted A's dialog
    calls_before = len(list(env.session.calls))
    b_before = await snapshot(env.core, B_ID)
    a_user_texts = [r.text for r in await env.rows(A_ID) if r.role == USER]
    errors_before = len(ctx["errors"].records)

    if data.draw(st.booleans(), label="message?"):
        sent = data.draw(_hostile_text, label="text")
        await a.send(sent)
    else:
        a_dialog = max(d.id for d in await env.dialogs(A_ID))
        cb = data.draw(_forged_callbacks(ctx["b_dialog"], ctx["b_msg"], a_dialog), label="callback")
        target = a.last_bot_message()
        assert target is not None
        await press(a, target, cb)
        sent = None

    new_calls = list(env.session.calls)[calls_before:]
    oops = {t("ru", "oops"), t("en", "oops")}
    for call in new_calls:
        assert not (call.error and "parse" in call.error), (call.method, call.params, call.error)
        said = " ".join(str(call.params.get(k, "")) for k in ("text", "caption"))
        assert "Traceback" not in said and 'File "' not in said, said[:500]
        assert said.strip() not in oops, (call.method, call.params)
    assert ctx["errors"].records[errors_before:] == [], [r.getMessage() for r in ctx["errors"].records]
    # B is untouched by anything A sends or presses
    assert await snapshot(env.core, B_ID) == b_before
    assert env.session.chat(B_ID).bot_messages() == ctx["b_chat"]
    # A's earlier messages stay; a message A sent is stored verbatim (or refused, not mangled)
    a_after = [r.text for r in await env.rows(A_ID) if r.role == USER]
    if a_after[: len(a_user_texts)] != a_user_texts:  # a deletion (st:delete_yes) removes all
        assert a_after == [] or a_after[0] != a_user_texts[0], (a_user_texts[-3:], a_after[-3:])
    if sent is not None and len(a_after) > len(a_user_texts):
        # trimmed and without U+0000, otherwise verbatim
        assert a_after[-1] == sent.replace("\x00", "").strip(), (sent, a_after[-1])


async def _bot_ctx(env: BotEnv) -> _Quiet:
    a = env.player(A_ID, first_name="Аня")
    b = env.player(B_ID, first_name=B_NAME, username=B_USERNAME)
    for p in (a, b):
        await p.send("/start")
        await env.choose(p)
    await b.send(B_SECRET)
    await a.send("привет")
    b_rows = await env.rows(B_ID)
    errors = _Errors()
    return _Quiet(
        env=env,
        a=a,
        b=b,
        b_dialog=b_rows[-1].dialog_id,
        b_msg=b_rows[-1].id,
        b_chat=list(env.session.chat(B_ID).bot_messages()),
        errors=errors,
    )


@pytest.fixture
async def bot_ctx(bot_env: BotEnv) -> AsyncIterator[_Quiet]:
    ctx = await _bot_ctx(bot_env)
    root = logging.getLogger()
    root.addHandler(ctx["errors"])
    try:
        yield ctx
    finally:
        root.removeHandler(ctx["errors"])


@settings(FUZZ, max_examples=150)
@given(data=st.data())
async def test_bot_survives_hostile_messages_and_callbacks(bot_ctx: _Quiet, data: st.DataObject) -> None:
    await _fuzz_bot(bot_ctx, data)


@pytest.mark.parametrize("backend", ["postgres"])
@settings(FUZZ, max_examples=30)
@given(data=st.data())
async def test_bot_survives_hostile_input_on_postgres(bot_ctx: _Quiet, data: st.DataObject) -> None:
    await _fuzz_bot(bot_ctx, data)
