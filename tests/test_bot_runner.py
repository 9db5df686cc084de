"""`run_bot`: configuration errors, polling and webhook modes, graceful shutdown; and the real
`vitte run-bot` process against a fake Bot API server."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sys
from pathlib import Path

import aiohttp
import pytest
from pydantic import SecretStr

from tests.support.bot_api_server import FakeBotAPI
from tests.support.bot_harness import PERSONA, STORY, WEBAPP_URL, cards, drop_redis_keys, wait_until
from tests.support.llm_server import FakeLLMServer
from vitte import serve
from vitte.bot.callbacks import DialogCb
from vitte.bot.runner import run_bot
from vitte.bot.runtime import Runtime
from vitte.catalog.seed import seed_cards
from vitte.config import ConfigError, Settings, load_settings
from vitte.core import Core
from vitte.localapi import LocalBotSession, LocalPlayer, make_local_bot
from vitte.models import ACTIVE, ASSISTANT, MSG_INTERRUPTED, MSG_OK, MSG_STREAMING, Dialog, Message

TOKEN = "42:LOCAL-TEST-TOKEN-0123456789abcdef"
REPLY = " ".join(f"Sentence number {i} is here and it goes on." for i in range(40))
SHORT_REPLY = " ".join(f"Sentence number {i} is here and it goes on." for i in range(16))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# ---------------------------------------------------------------------- configuration


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({}, "VITTE_BOT_TOKEN is not set"),
        ({"bot_token": "not-a-token"}, "VITTE_BOT_TOKEN is malformed"),
        ({"bot_token": TOKEN, "webhook_url": "https://bot.vitte.test/hook"}, "VITTE_WEBHOOK_SECRET is required"),
        (
            {"bot_token": TOKEN, "webhook_url": "https://bot.vitte.test/hook", "webhook_secret": "no spaces!"},
            "VITTE_WEBHOOK_SECRET may contain only",
        ),
    ],
)
async def test_configuration_errors(sqlite_url: str, overrides: dict[str, object], message: str) -> None:
    settings = load_settings(database_url=sqlite_url, **overrides)
    with pytest.raises(ConfigError, match=message):
        await run_bot(settings)


async def test_a_rejected_token_is_a_configuration_error(sqlite_url: str) -> None:
    async with FakeBotAPI(token=TOKEN) as api:
        other = "43:ANOTHER-TOKEN-0123456789abcdef"
        settings = load_settings(database_url=sqlite_url, bot_token=other, telegram_api_url=api.base_url)
        with pytest.raises(ConfigError, match="rejected by Telegram"):
            await asyncio.wait_for(run_bot(settings), 10)


# ---------------------------------------------------------------------- in-process runs


async def _prepare(settings: Settings) -> None:
    core = await Core.open(settings)
    try:
        await seed_cards(core.db, cards())
    finally:
        await core.close()


async def _rows(settings: Settings, user_id: int) -> list[Message]:
    from sqlalchemy import select

    core = await Core.open(settings)
    try:
        async with core.db.session() as s:
            return list(
                (
                    await s.execute(
                        select(Message)
                        .join(Dialog, Dialog.id == Message.dialog_id)
                        .where(Dialog.user_id == user_id)
                        .order_by(Message.id)
                    )
                ).scalars()
            )
    finally:
        await core.close()


async def test_polling_round_trip_and_startup(backend_settings: Settings) -> None:
    async with FakeLLMServer() as llm:
        settings = backend_settings.model_copy(
            update={
                "bot_token": SecretStr(TOKEN),
                "llm_base_url": llm.base_url,
                "webapp_url": WEBAPP_URL,
                "shutdown_grace": 5.0,
            }
        )
        await _prepare(settings)
        # a reply a crash left half-written
        core = await Core.open(settings)
        await core.players.confirm_adult(1001)
        opening = await core.dialogs.choose(1001, PERSONA, STORY)
        async with core.db.session() as s:
            s.add(Message(dialog_id=opening.dialog.id, role=ASSISTANT, text="cut", status=MSG_STREAMING))
            await s.commit()
        await core.close()

        session = LocalBotSession()
        bot = make_local_bot(session, token=TOKEN)
        stop = asyncio.Event()
        runtime = Runtime(draft_interval=0.05)
        running = asyncio.create_task(run_bot(settings, bot=bot, stop=stop, runtime=runtime))
        try:
            await session.wait_for("getUpdates", timeout=10)
            assert session.commands[("type=default", "ru")][0]["command"] == "start"
            assert session.commands[("type=default", "en")][1]["description"] == "Start chatting"
            assert session.default_menu_button["web_app"]["url"] == WEBAPP_URL
            rows = await _rows(settings, 1001)
            assert (rows[-1].text, rows[-1].status) == ("cut", MSG_INTERRUPTED)

            p = LocalPlayer(None, bot, session, deliver="queue")  # type: ignore[arg-type]
            await p.send("/start")
            await session.wait_for("sendMessage", lambda c: "💕" in str(c.params.get("text")))
            await p.send("Привет")
            await session.wait_for("sendMessage", lambda c: c.params.get("text") == "You said: Привет")
        finally:
            stop.set()
            await asyncio.wait_for(running, 10)
        assert session.pending_updates == 0  # confirmed before exiting
    await drop_redis_keys(settings)


async def _bot_mid_reply(
    settings: Settings, runtime: Runtime | None = None
) -> tuple[LocalPlayer, asyncio.Event, asyncio.Task[None]]:
    """`run_bot` polling the local Bot API, player 1001 chatting, a reply streaming (> 10 chars
    drafted): the player, the stop event and the bot's task."""
    await _prepare(settings)
    session = LocalBotSession()
    bot = make_local_bot(session, token=TOKEN)
    stop = asyncio.Event()
    running = asyncio.create_task(run_bot(settings, bot=bot, stop=stop, runtime=runtime))
    core = await Core.open(settings)
    await core.players.confirm_adult(1001)
    await core.dialogs.choose(1001, PERSONA, STORY)
    await core.close()
    await session.wait_for("getUpdates", timeout=10)
    p = LocalPlayer(None, bot, session, deliver="queue")  # type: ignore[arg-type]
    await p.send("Рассказывай")
    await wait_until(lambda: p.current_draft is not None and len(p.current_draft.text) > 10)
    return p, stop, running


async def test_shutdown_lets_a_reply_finish_within_the_grace(sqlite_url: str) -> None:
    async with FakeLLMServer(default_reply=SHORT_REPLY, tps=150) as llm:  # ~1 s
        settings = load_settings(
            database_url=sqlite_url, bot_token=TOKEN, llm_base_url=llm.base_url, shutdown_grace=10
        )
        p, stop, running = await _bot_mid_reply(settings)
        stop.set()
        await asyncio.wait_for(running, 15)
        rows = await _rows(settings, 1001)
        assert (rows[-1].text, rows[-1].status) == (SHORT_REPLY, MSG_OK)
        assert p.last_bot_text() == SHORT_REPLY


async def test_shutdown_cancels_a_reply_after_the_grace(backend_settings: Settings) -> None:
    async with FakeLLMServer(default_reply=REPLY, tps=40) as llm:  # ~9 s
        settings = backend_settings.model_copy(
            update={"bot_token": SecretStr(TOKEN), "llm_base_url": llm.base_url, "shutdown_grace": 0.3}
        )
        p, stop, running = await _bot_mid_reply(settings, Runtime(draft_interval=0.05))
        stop.set()
        await asyncio.wait_for(running, 10)
        rows = await _rows(settings, 1001)
        assert rows[-2].text == "Рассказывай"
        assert rows[-1].status == MSG_INTERRUPTED
        assert rows[-1].text and REPLY.startswith(rows[-1].text)
        assert "бот перезапускается" in (p.last_bot_text() or "")
    await drop_redis_keys(settings)


async def test_webhook_checks_the_secret_and_handles_updates(sqlite_url: str) -> None:
    port = _free_port()
    settings = load_settings(
        database_url=sqlite_url,
        bot_token=TOKEN,
        webhook_url="https://bot.vitte.test/tg/hook",
        webhook_secret="s3cret_token-1",
        webhook_port=port,
        webapp_mount="/app",
        metrics_token="m-token",
    )
    await _prepare(settings)
    session = LocalBotSession()
    bot = make_local_bot(session, token=TOKEN)
    stop = asyncio.Event()
    # `vitte run-bot`'s composition: the bot with the Web App mounted (vitte.serve)
    running = asyncio.create_task(serve.run_bot(settings, bot=bot, stop=stop))
    try:
        hook = await session.wait_for("setWebhook", timeout=10)
        assert hook.params["secret_token"] == "s3cret_token-1"
        assert "stopped_message_generation" in hook.params["allowed_updates"]
        p = LocalPlayer(None, bot, session, deliver="queue")  # type: ignore[arg-type]
        sent = await p.send("/start")  # queued for polling (not used in webhook mode); we post it
        update = sent.model_dump(mode="json", by_alias=True, exclude_none=True)
        url = f"http://127.0.0.1:{port}/tg/hook"
        async with aiohttp.ClientSession() as http:
            async with http.post(url, json=update) as r:
                assert r.status == 401
            async with http.post(url, json=update, headers={"X-Telegram-Bot-Api-Secret-Token": "wrong"}) as r:
                assert r.status == 401
            assert session.calls_of("sendMessage") == []
            headers = {"X-Telegram-Bot-Api-Secret-Token": "s3cret_token-1"}
            async with http.post(url, json=update, headers=headers) as r:
                assert r.status == 200
            assert p.last_bot_text().startswith("Привет, Player!")
            async with http.post(url, json=update, headers=headers) as r:  # Telegram retrying
                assert r.status == 200
            assert len(session.calls_of("sendMessage")) == 1
            async with http.post(url, data=b"garbage", headers=headers) as r:
                assert r.status == 400
            # the Web App mounted in the same process (VITTE_WEBAPP_MOUNT)
            async with http.get(f"http://127.0.0.1:{port}/app/api/personas") as r:
                assert r.status == 200
                assert len((await r.json())["personas"]) >= 4
            async with http.get(f"http://127.0.0.1:{port}/app/api/me") as r:
                assert r.status == 401  # user data still needs initData
            # Prometheus metrics on the webhook server, behind VITTE_METRICS_TOKEN
            async with http.get(f"http://127.0.0.1:{port}/metrics") as r:
                assert r.status == 401
            async with http.get(f"http://127.0.0.1:{port}/metrics", headers={"Authorization": "Bearer m-token"}) as r:
                assert r.status == 200
                body = await r.text()
                assert "vitte_updates" in body
    finally:
        stop.set()
        await asyncio.wait_for(running, 10)


# ---------------------------------------------------------------------- the real process


@pytest.mark.slow
async def test_run_bot_subprocess_round_trip(tmp_path: Path) -> None:
    db_url = f"sqlite+aiosqlite:///{tmp_path / 'bot.sqlite3'}"
    user = 1001
    async with FakeBotAPI(token=TOKEN) as api, FakeLLMServer(tps=0, ttft=0.5) as llm:  # slow enough to show a draft
        settings = load_settings(database_url=db_url)
        await _prepare(settings)
        env = {k: v for k, v in os.environ.items() if not k.startswith("VITTE_")}
        env.update(
            VITTE_BOT_TOKEN=TOKEN,
            VITTE_TELEGRAM_API_URL=api.base_url,
            VITTE_DATABASE_URL=db_url,
            VITTE_LLM_BASE_URL=llm.base_url,
            VITTE_SHUTDOWN_GRACE="5",
            PYTHONUNBUFFERED="1",
        )
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "cli",
            "run-bot",
            cwd=str(tmp_path),
            env=env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        try:
            await api.wait_for("getUpdates", timeout=30)
            assert api.commands["en"][0]["command"] == "start"

            # /start
            api.push_update({"message": api.user_message(user, "/start")})
            greeting = await api.wait_for("sendMessage", lambda c: "Привет" in c.params["text"])
            markup = greeting.params["reply_markup"]["inline_keyboard"]
            assert markup[0][0]["text"] == "💕 Начать общение"

            # the Web App's path: the engine, on the same database
            core = await Core.open(settings)
            try:
                await core.players.confirm_adult(user)
                opening = await core.dialogs.choose(user, PERSONA, STORY)
            finally:
                await core.close()

            # chat
            mark = len(api.calls)
            api.push_update({"message": api.user_message(user, "Привет!")})
            reply = await api.wait_for("sendMessage", lambda c: c.params["text"] == "You said: Привет!", after=mark)
            assert reply.params["reply_markup"]["inline_keyboard"][0][0]["text"] == "🔄"
            drafts = [c for c in api.calls_of("sendMessageDraft") if api.calls.index(c) >= mark]
            assert drafts and drafts[0].params.get("can_stop") is True

            # start over
            mark = len(api.calls)
            api.push_update({"message": api.user_message(user, "/chat")})
            question = await api.wait_for(
                "sendMessage", lambda c: c.params["text"] == "Продолжить с Кира?", after=mark
            )
            buttons = question.params["reply_markup"]["inline_keyboard"][0]
            assert [b["text"] for b in buttons] == ["Продолжить общение", "Начать заново"]
            assert buttons[1]["callback_data"] == DialogCb(action="over", dialog_id=opening.dialog.id).pack()
            message = {
                "message_id": question.result["message_id"],
                "date": question.result["date"],
                "chat": {"id": user, "type": "private"},
                "text": question.params["text"],
            }
            mark = len(api.calls)
            api.push_update({"callback_query": api.callback_query(user, message, buttons[1]["callback_data"])})
            await api.wait_for("answerCallbackQuery", after=mark)
            await api.wait_for("sendMessage", lambda c: c.params["text"] == opening.text.strip(), after=mark)
            core = await Core.open(settings)
            try:
                current = await core.dialogs.current(user)
            finally:
                await core.close()
            assert current is not None and current.id != opening.dialog.id and current.status == ACTIVE
        except BaseException:
            if proc.returncode is None:
                proc.send_signal(signal.SIGTERM)
            _out, err = await asyncio.wait_for(proc.communicate(), 20)
            print("calls:", [(c.method, c.params.get("text")) for c in api.calls])  # shown on failure
            print("stderr:", err.decode()[-5000:])
            raise
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
        _out, err = await asyncio.wait_for(proc.communicate(), 20)
        stderr = err.decode()
        assert proc.returncode == 0, stderr
        assert "Traceback" not in stderr
        assert api.pending_updates == 0  # the updates taken were confirmed before exiting


@pytest.mark.slow
async def test_run_bot_subprocess_config_error_is_one_line(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("VITTE_")}
    env.update(VITTE_BOT_TOKEN="garbage", VITTE_DATABASE_URL=f"sqlite+aiosqlite:///{tmp_path / 'x.sqlite3'}")
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "cli",
        "run-bot",
        cwd=str(tmp_path),
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 2, err.decode()
    text = (out + err).decode().strip()
    assert "VITTE_BOT_TOKEN is malformed" in text
    assert "Traceback" not in text
