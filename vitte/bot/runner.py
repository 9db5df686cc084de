"""`vitte run-bot`: long polling by default, a webhook server when VITTE_WEBHOOK_URL is set.

Startup: the token is checked (`ConfigError` for a missing, malformed or rejected one),
replies a crash left half-written are marked interrupted and their players are told so, once,
with [Повторить] (in the background), the bot commands (ru + en) and, with VITTE_WEBAPP_URL,
the chat menu button are set.

Shutdown (SIGINT/SIGTERM): stop taking updates; let the updates in progress finish for up to
`shutdown_grace` seconds; then cancel them (the engine stores a cut reply as interrupted);
confirm the updates taken (polling), close the session and the core.

Polling is Vitte's own small loop rather than `Dispatcher.start_polling`: aiogram confirms
an update only with the next getUpdates call and cancels everything on a signal; this loop
drains first and confirms what it took before exiting.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import signal
from collections.abc import Callable
from typing import Any
from urllib.parse import urlparse

from aiogram import Bot, Dispatcher
from aiogram.exceptions import (
    TelegramAPIError,
    TelegramBadRequest,
    TelegramConflictError,
    TelegramForbiddenError,
    TelegramUnauthorizedError,
)
from aiogram.methods import GetUpdates
from aiogram.types import InlineKeyboardButton, InlineKeyboardMarkup, MenuButtonWebApp, Update, WebAppInfo
from aiogram.types.update import UpdateTypeLookupError
from aiohttp import web

from vitte.bot.callbacks import RegenCb
from vitte.bot.factory import bot_commands, build_dispatcher, warm_up
from vitte.bot.keyboards import retry_kb
from vitte.bot.runtime import Runtime
from vitte.bot.spooling import Drainer, keep
from vitte.bot.streaming import call_with_retry
from vitte.bot.texts import t
from vitte.config import ConfigError, Settings
from vitte.core import Core
from vitte.dialogs import InterruptedReply, Recovery
from vitte.i18n import DEFAULT_LANGUAGE, LANGUAGES
from vitte.initiative.nudger import Nudger
from vitte.logs import quiet_bad_requests, setup_logging
from vitte.metrics import metrics_route
from vitte.perf import freeze_heap
from vitte.spool import Kept, Spool
from vitte.telegram.bot import make_bot
from vitte.telegram.nudges import mark_unreachable_in, nudge_sender
from vitte.text import inert, same_secret

log = logging.getLogger("vitte.bot")

POLL_TIMEOUT = 25  # seconds a getUpdates long poll waits at Telegram
WEBHOOK_ANSWER_WITHIN = 25.0  # a webhook request waits this long for its handling, then 200 anyway
SECRET_HEADER = "X-Telegram-Bot-Api-Secret-Token"
# telling players a restart cut their reply: this many at a time, at most this many a second
# (Telegram allows about 30 messages a second to different chats; 429s are waited out)
NOTICES_AT_ONCE = 10
NOTICES_PER_SECOND = 20.0
_SECRET_RE = re.compile(r"[A-Za-z0-9_-]{1,256}")

# builds an aiohttp application to serve beside the webhook (the Web App: vitte.serve passes
# vitte.webapp.app.make_webapp; this module does not import the Web App)
AppFactory = Callable[[Core, Bot], web.Application]


def check_webhook_settings(settings: Settings) -> str | None:
    """The webhook secret, checked; None in polling mode. Raises ConfigError."""
    if not settings.webhook_url:
        return None
    if settings.webhook_secret is None or not settings.webhook_secret.get_secret_value():
        raise ConfigError("VITTE_WEBHOOK_SECRET is required with VITTE_WEBHOOK_URL (1-256 of A-Z a-z 0-9 _ -)")
    secret = settings.webhook_secret.get_secret_value()
    if not _SECRET_RE.fullmatch(secret):
        raise ConfigError("VITTE_WEBHOOK_SECRET may contain only A-Z, a-z, 0-9, _ and - (1-256 characters)")
    return secret


async def run_bot(
    settings: Settings,
    *,
    bot: Bot | None = None,
    core: Core | None = None,
    stop: asyncio.Event | None = None,
    runtime: Runtime | None = None,
    webapp: AppFactory | None = None,
) -> None:
    """Run the bot until SIGINT/SIGTERM (or until `stop` is set).

    `bot`, `core`, `stop` and `runtime` are for embedding and tests. `webapp`: in webhook mode
    with VITTE_WEBAPP_MOUNT, the application mounted there (`vitte.serve.run_bot`, which
    `vitte run-bot` runs, passes the Web App). Raises ConfigError for a missing, malformed or
    rejected token and for a bad webhook configuration.
    """
    settings.require_bot_token()
    secret = check_webhook_settings(settings)
    _default_logging()
    own_core = core is None
    own_bot = bot is None
    stop = stop or asyncio.Event()
    core = core or await Core.open(settings)
    try:
        bot = bot or make_bot(settings)
        bot.session.middleware(mark_unreachable_in(core.db))  # 403 on any send: unreachable (issue 18)
        runtime = runtime or Runtime()
        dp = build_dispatcher(core, runtime)
        await _startup(bot, core, settings, runtime)
        freeze_heap()  # startup's objects out of every later full GC (vitte.perf)
        restore = _install_signal_handlers(stop)
        if runtime.spool is None:
            runtime.spool = Spool.from_settings(settings, core.cache)
        draining = asyncio.create_task(Drainer(runtime.spool, dp, bot, core).run(stop)) if runtime.spool else None
        # issue 18: the persona writes first; every bot process claims what is due
        nudging = asyncio.create_task(Nudger(core, nudge_sender(bot)).run(stop)) if settings.nudge_after > 0 else None
        try:
            if settings.webhook_url and secret:
                await _serve_webhook(bot, dp, runtime, settings, secret, stop, core, webapp)
            else:
                await _poll(bot, dp, runtime, settings, stop)
        finally:
            restore()
            if nudging is not None:  # the batch being sent finishes (stop is set), within the grace
                with contextlib.suppress(BaseException):
                    await asyncio.wait_for(asyncio.shield(nudging), settings.shutdown_grace)
            for task in (draining, nudging):
                if task is not None:
                    task.cancel()
                    with contextlib.suppress(BaseException):
                        await task
    finally:
        if own_bot and bot is not None:
            with contextlib.suppress(Exception):
                await bot.session.close()
        if own_core:
            await core.close()
    log.info("bot stopped")


# ---------------------------------------------------------------------- startup


async def _startup(bot: Bot, core: Core, settings: Settings, runtime: Runtime | None = None) -> None:
    """`runtime`: the restart notices are sent in a task it tracks (drained on shutdown like
    an update); without one (embedding, tests) they are sent before this returns."""
    await warm_up(core)
    try:
        me = await bot.get_me()
        log.info("bot @%s (id %s) starting; LLM: %s", me.username, me.id, core.llm.label)
    except TelegramUnauthorizedError:
        raise ConfigError("VITTE_BOT_TOKEN was rejected by Telegram (Unauthorized): check it with @BotFather") from None
    except TelegramAPIError as exc:
        log.warning("getMe failed (%s); starting anyway, updates will be retried", exc)
    recovered = await _recover(bot, core, runtime)
    if recovered.deferred and runtime is not None:
        # replies whose player's lock is held: another process's live ones, or the crashed
        # run's whose lease has not run out yet. Look again once such a lease is over.
        later = asyncio.create_task(_recover_later(bot, core, runtime, settings.lock_lease + 2.0))
        runtime.track(later)
        later.add_done_callback(runtime.tasks.discard)
    try:
        # the default scope: the default language for everyone else
        await bot.set_my_commands(bot_commands(DEFAULT_LANGUAGE))
        for lang in LANGUAGES:
            await bot.set_my_commands(bot_commands(lang), language_code=lang)
    except TelegramAPIError as exc:
        log.warning("could not set the bot commands: %s", exc)
    if settings.webapp_url:
        if not settings.webapp_url.startswith("https://"):
            log.warning("VITTE_WEBAPP_URL is not https: Telegram opens Web Apps over https only")
        try:
            await bot.set_chat_menu_button(
                menu_button=MenuButtonWebApp(
                    text=t(DEFAULT_LANGUAGE, "menu_button"), web_app=WebAppInfo(url=settings.webapp_url)
                )
            )
        except TelegramAPIError as exc:
            log.warning("could not set the chat menu button to the Web App: %s", exc)


async def _recover(bot: Bot, core: Core, runtime: Runtime | None) -> Recovery:
    """Replies a crash cut: marked, and their players told (vitte.dialogs.recover_interrupted)."""
    recovered = await core.dialogs.recover_interrupted()
    if recovered.marked:
        log.warning("%d reply(ies) cut by the previous run marked interrupted", recovered.marked)
    if recovered.notices:
        telling = asyncio.create_task(_tell_interrupted(bot, recovered.notices))
        if runtime is None:
            await telling
        else:  # polling starts meanwhile; a shutdown gives it the grace period, then cancels it
            runtime.track(telling)
            telling.add_done_callback(runtime.tasks.discard)
    return recovered


async def _recover_later(bot: Bot, core: Core, runtime: Runtime, delay: float) -> None:
    await asyncio.sleep(delay)
    try:
        await _recover(bot, core, runtime)
    except Exception as exc:  # the next start tries again
        log.warning("crash recovery failed: %s", exc)


def _notice_kb(notice: InterruptedReply) -> InlineKeyboardMarkup:
    """[Повторить], as under a failed reply: it answers the player's unanswered message
    (RetryCb). When the cut reply's first words were stored, that reply is the dialog's last
    message and the same button rewrites it in place (RegenCb: the 🔄 path, which replaces it).
    Either way `DialogEngine.regenerate` writes the answer."""
    if not notice.partial:
        return retry_kb(notice.language, notice.dialog_id, notice.message_id)
    data = RegenCb(dialog_id=notice.dialog_id, message_id=notice.message_id).pack()
    button = InlineKeyboardButton(text=t(notice.language, "btn_retry"), callback_data=data)
    return InlineKeyboardMarkup(inline_keyboard=[[button]])


async def _tell_interrupted(bot: Bot, notices: tuple[InterruptedReply, ...]) -> None:
    """Tell each player whose reply the previous run's crash cut, once, in their language, with
    [Повторить]. A bounded number at a time and per second; 429 and brief network trouble are
    waited out (`call_with_retry`); a player who blocked the bot is skipped quietly; no failure
    goes further than a log line (the bot runs on). Once: the rows are no longer 'streaming',
    so the next start finds nothing to tell (a notice lost to a crash right now is not resent)."""
    sent = blocked = failed = 0

    async def tell(notice: InterruptedReply) -> None:
        nonlocal sent, blocked, failed
        text = t(notice.language, "restart_interrupted")
        markup = _notice_kb(notice)
        try:
            await call_with_retry(
                lambda: bot.send_message(chat_id=notice.user_id, text=text, reply_markup=markup)
            )
        except TelegramForbiddenError:  # blocked the bot, or deactivated
            blocked += 1
        except Exception as exc:
            failed += 1
            log.info("could not tell player %s their reply was cut by a restart: %s", notice.user_id, exc)
        else:
            sent += 1

    loop = asyncio.get_running_loop()
    try:
        for i in range(0, len(notices), NOTICES_AT_ONCE):
            started = loop.time()
            await asyncio.gather(*(tell(n) for n in notices[i : i + NOTICES_AT_ONCE]))
            if i + NOTICES_AT_ONCE < len(notices):
                await asyncio.sleep(started + NOTICES_AT_ONCE / NOTICES_PER_SECOND - loop.time())
    finally:
        log.info(
            "told %d of %d player(s) that a restart cut their reply (%d blocked the bot, %d failed)",
            sent,
            len(notices),
            blocked,
            failed,
        )


def _install_signal_handlers(stop: asyncio.Event) -> Any:
    loop = asyncio.get_running_loop()
    installed: list[signal.Signals] = []

    def on_signal(sig: signal.Signals) -> None:
        if not stop.is_set():
            log.info("%s received: stopping (in-flight replies get a grace period)", sig.name)
        stop.set()

    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(sig, on_signal, sig)
            installed.append(sig)
        except (NotImplementedError, RuntimeError, ValueError):  # not the main thread / Windows
            pass

    def restore() -> None:
        for sig in installed:
            with contextlib.suppress(Exception):
                loop.remove_signal_handler(sig)

    return restore


def _default_logging() -> None:
    setup_logging()  # records carry update and player ids; VITTE_LOG_FORMAT=json for JSON lines
    logging.getLogger("aiogram.event").setLevel(logging.WARNING)
    logging.getLogger("alembic").setLevel(logging.WARNING)


# ---------------------------------------------------------------------- handling


def _known(update: Update) -> bool:
    """Whether aiogram knows the update's type; one INFO line (no traceback) for one it doesn't
    (a kind newer than this aiogram, or a test of the webhook): answered 200 and dropped."""
    try:
        update.event_type  # noqa: B018 (the lookup is the check)
    except UpdateTypeLookupError:
        kinds = sorted(k for k in (update.model_extra or {}) if k != "update_id")[:5]
        shown = ", ".join(inert(k[:40], one_line=True) for k in kinds) or "no content"
        log.info("update %s of a type this bot does not know (%s): ignored", update.update_id, shown)
        return False
    return True


async def _feed(dp: Dispatcher, bot: Bot, update: Update) -> None:
    if not _known(update):
        return
    try:
        await dp.feed_update(bot, update)
    except Exception:  # the middleware answers the player; this is only the log
        log.exception("update %s failed", update.update_id)


def _spawn(dp: Dispatcher, bot: Bot, runtime: Runtime, update: Update, *, polled: bool = False) -> asyncio.Task[None]:
    """Handle the update in a task of its own. `polled`: until its handling begins it is in
    `runtime.waiting`, so that a shutdown that cuts it keeps it (the spool)."""
    task = asyncio.create_task(_feed(dp, bot, update))
    runtime.track(task)
    task.add_done_callback(runtime.tasks.discard)
    if polled and runtime.spool is not None:
        waiting = runtime.waiting
        waiting[task] = update
        task.add_done_callback(lambda t: waiting.pop(t, None))
    return task


async def _keep_cut(runtime: Runtime) -> None:
    """The polled updates shutdown cut before their handling began: kept for the next start."""
    cut, runtime.cut_waiting = runtime.cut_waiting, []
    if runtime.spool is None:
        return
    kept = 0
    for update in cut:
        if await keep(runtime.spool, update) in (Kept.FIRST, Kept.MORE):
            kept += 1
    if kept:
        log.info("%d message(s) cut by the shutdown kept for the next start", kept)


async def _poll(bot: Bot, dp: Dispatcher, runtime: Runtime, settings: Settings, stop: asyncio.Event) -> None:
    with contextlib.suppress(TelegramAPIError):
        await bot.delete_webhook(drop_pending_updates=False)  # getUpdates answers 409 while one is set
    allowed = dp.resolve_used_update_types()
    offset: int | None = None
    backoff = 1.0
    log.info("polling for updates (%s)", ", ".join(allowed))
    stopper = asyncio.create_task(stop.wait())
    try:
        while not stop.is_set():
            request = GetUpdates(offset=offset, timeout=POLL_TIMEOUT, allowed_updates=allowed)
            poll = asyncio.create_task(bot(request, request_timeout=POLL_TIMEOUT + 15))
            await asyncio.wait({poll, stopper}, return_when=asyncio.FIRST_COMPLETED)
            if stop.is_set():
                poll.cancel()
                with contextlib.suppress(BaseException):
                    await poll
                break
            try:
                updates = poll.result()
            except TelegramUnauthorizedError:
                raise ConfigError("VITTE_BOT_TOKEN was rejected by Telegram (Unauthorized)") from None
            except Exception as exc:  # the network, the Bot API server: retry with backoff
                if isinstance(exc, TelegramConflictError):
                    log.error("getUpdates conflict: another instance polls this token, or a webhook is set")
                else:
                    log.warning("getUpdates failed: %s; retrying in %.0f s", exc, backoff)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), backoff)
                backoff = min(backoff * 2, 30.0)
                continue
            backoff = 1.0
            for update in updates:
                if offset is not None and update.update_id < offset:
                    continue
                _spawn(dp, bot, runtime, update, polled=True)
                offset = update.update_id + 1
    finally:
        stopper.cancel()
        await runtime.drain(settings.shutdown_grace)
        await _keep_cut(runtime)
        if offset is not None:  # confirm what was taken, so the next run does not get it again
            with contextlib.suppress(Exception):
                await asyncio.wait_for(bot(GetUpdates(offset=offset, timeout=0, limit=1)), 5.0)


async def _serve_webhook(
    bot: Bot,
    dp: Dispatcher,
    runtime: Runtime,
    settings: Settings,
    secret: str,
    stop: asyncio.Event,
    core: Core,
    webapp: AppFactory | None = None,
) -> None:
    assert settings.webhook_url
    path = urlparse(settings.webhook_url).path or "/"
    mount = settings.webapp_mount
    if mount and (path == mount or path.startswith(mount + "/")):
        raise ConfigError(f"VITTE_WEBAPP_MOUNT ({mount}) must not contain the webhook path ({path})")
    accepting = True

    async def handle(request: web.Request) -> web.Response:
        if not same_secret(request.headers.get(SECRET_HEADER), secret):
            return web.Response(status=401, text="unauthorized")
        if not accepting:
            return web.Response(status=503, text="shutting down")  # Telegram delivers it again later
        try:
            update = Update.model_validate(await request.json(), context={"bot": bot})
        except Exception:
            return web.Response(status=400, text="not an update")
        task = _spawn(dp, bot, runtime, update)
        # answer once handled (a failure before that lets Telegram retry), but never hold
        # Telegram's connection for a long reply
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(task), WEBHOOK_ANSWER_WITHIN)
        return web.Response(status=200)

    app = web.Application(client_max_size=4 * 1024 * 1024)
    app.router.add_post(path, handle)
    metrics_route(app, token=settings.metrics_token.get_secret_value() if settings.metrics_token else None)
    if mount and webapp is not None:
        app.add_subapp(mount, webapp(core, bot))  # the Web App in the same process
        log.info("Web App mounted at %s", mount)
    elif mount:
        log.warning("VITTE_WEBAPP_MOUNT is set but no Web App was given to mount (use vitte.serve.run_bot)")
    quiet_bad_requests()
    runner = web.AppRunner(app, handle_signals=False, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, settings.webhook_host, settings.webhook_port)
    await site.start()
    log.info("webhook listening on %s:%s%s", settings.webhook_host, settings.webhook_port, path)
    try:
        try:
            await bot.set_webhook(
                url=settings.webhook_url,
                secret_token=secret,
                allowed_updates=dp.resolve_used_update_types(),
                drop_pending_updates=False,
            )
        except TelegramBadRequest as exc:
            raise ConfigError(f"VITTE_WEBHOOK_URL was rejected by Telegram: {exc.message}") from None
        except TelegramAPIError as exc:
            log.warning("setWebhook failed (%s); serving anyway (a webhook set before still works)", exc)
        await stop.wait()
    finally:
        accepting = False
        await runtime.drain(settings.shutdown_grace)
        await runner.cleanup()
