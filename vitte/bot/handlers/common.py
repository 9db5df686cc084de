"""Pieces several handlers share: the player's language, the "Начать общение" answer, and
writing a reply with progress (used by chat text and by [Повторить])."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

from aiogram import Bot
from aiogram.types import InlineKeyboardButton, InlineKeyboardMarkup, User

from vitte.bot.keyboards import choose_kb, continue_kb, regen_kb, retry_kb
from vitte.bot.refusals import REFUSALS, after_reply, answer_refusal, crisis_care
from vitte.bot.runtime import Runtime
from vitte.bot.streaming import ReplyStream, call_with_retry
from vitte.bot.texts import t
from vitte.core import Core
from vitte.dialogs import DialogView, OnText, ReplyOutcome, Turn
from vitte.errors import (
    NoActiveDialog,
    NotFound,
    NothingToRegenerate,
    PlayerBlocked,
    ReplyFailed,
    StaleDialog,
    UnknownUser,
)
from vitte.players import PlayerView

log = logging.getLogger("vitte.bot")

Writer = Callable[[OnText, asyncio.Event], Awaitable[ReplyOutcome]]
# a reply delivered as a voice note (vitte.bot.speaking): the Telegram id of its last message,
# or None when it could not be made (then the text goes as usual)
Speaker = Callable[[ReplyStream, ReplyOutcome, InlineKeyboardMarkup], Awaitable[int | None]]



async def seen(core: Core, runtime: Runtime, user: User, *, refuse_blocked: bool = False) -> str:
    """Record the player (created on first sight); their language. `refuse_blocked`: a blocked
    player gets PlayerBlocked (the middleware's one polite line)."""
    return (await seen_player(core, runtime, user, refuse_blocked=refuse_blocked)).language


async def seen_player(core: Core, runtime: Runtime, user: User, *, refuse_blocked: bool = False) -> PlayerView:
    """`seen`, the player's row (their language, the name they are called by …)."""
    player = await core.players.seen(
        user.id, language_code=user.language_code, first_name=user.first_name, username=user.username
    )
    runtime.remember_lang(user.id, player.language)
    if refuse_blocked and player.blocked_at is not None:
        raise PlayerBlocked(player.blocked_reason)
    return player


async def player_lang(core: Core, runtime: Runtime, user: User) -> str:
    try:
        lang = (await core.players.get(user.id)).language
    except UnknownUser:
        return await seen(core, runtime, user)
    runtime.remember_lang(user.id, lang)
    return lang


async def current_dialog(core: Core, who: Turn | int, *, optimistic: bool = False) -> DialogView | None:
    """The active dialog, or None; a dialog whose persona left the catalog counts as none.
    `optimistic`: the handler goes on to `reply`, which confirms the row (`DialogEngine.current`)."""
    try:
        return await core.dialogs.current(who, optimistic=optimistic)
    except NotFound:
        return None


async def persona_names(core: Core, lang: str) -> str:
    return ", ".join(p.name_in(lang) for p in await core.catalog.personas())


async def entry_answer(core: Core, runtime: Runtime, user: User) -> tuple[str, InlineKeyboardMarkup | None]:
    """The "💕 Начать общение" / /chat answer, exactly as the seed draws it."""
    view = await current_dialog(core, user.id)
    if view is not None:
        runtime.remember_lang(user.id, view.language)
        return t(view.language, "continue_q", persona=view.persona_name), continue_kb(view.language, view.id)
    lang = await seen(core, runtime, user)
    url = core.settings.webapp_url
    if url:
        return t(lang, "choose_prompt"), choose_kb(lang, url)
    text = t(lang, "webapp_missing")
    names = await persona_names(core, lang)
    if names:
        text += "\n\n" + t(lang, "personas_list", names=names)
    return text, None


async def send_entry(core: Core, runtime: Runtime, bot: Bot, chat_id: int, user: User) -> None:
    text, markup = await entry_answer(core, runtime, user)
    await call_with_retry(lambda: bot.send_message(chat_id=chat_id, text=text, reply_markup=markup))


async def write_reply(
    core: Core,
    runtime: Runtime,
    bot: Bot,
    *,
    chat_id: int,
    user: User,
    lang: str,
    dialog_id: int,
    write: Writer,
    user_message_id: int | None = None,
    replaces: int | None = None,
    more_buttons: Callable[[], list[InlineKeyboardButton]] | None = None,
    speak: Speaker | None = None,
) -> None:
    """Run `write` (engine.reply or engine.regenerate) with progress in the chat, then deliver:
    the one streaming path of a new reply, [Повторить] and 🔄 (`replaces`: the reply message
    the new one rewrites in place).

    The stop button sets the stream's stop event (the engine keeps what was written, and that
    is what the player gets). A failed reply gets a short message with [Повторить] (a failed
    🔄 a short "could not rewrite"; the reply stays). `more_buttons`: more buttons beside 🔄. A reply cut by shutdown is stored by the
    engine as interrupted; the player gets what was written with a note.
    """
    stream = runtime.new_stream(bot, chat_id, replaces=replaces).start()
    try:
        try:
            outcome = await write(stream.on_text, stream.stop)
        except (NoActiveDialog, StaleDialog, NothingToRegenerate) as exc:
            await stream.abort()
            if replaces is not None:  # a 🔄 finds nothing to rewrite (the dialog moved on meanwhile)
                await bot.send_message(chat_id=chat_id, text=t(lang, "nothing_to_regen"))
                return
            if not isinstance(exc, NoActiveDialog):
                raise
            await send_entry(core, runtime, bot, chat_id, user)
            await crisis_care(core, bot, chat_id, lang, exc.crisis)
            return
        except ReplyFailed as exc:
            await stream.abort()
            log.warning("reply failed for user %s (dialog %s): %s", user.id, dialog_id, exc)
            if replaces is not None:  # the reply it was to rewrite stays
                await bot.send_message(chat_id=chat_id, text=t(lang, "regen_failed"))
                return
            failed_id = exc.user_message_id or user_message_id or 0
            await call_with_retry(
                lambda: bot.send_message(
                    chat_id=chat_id,
                    text=t(lang, "reply_failed"),
                    reply_markup=retry_kb(lang, dialog_id, failed_id),
                )
            )
            await crisis_care(core, bot, chat_id, lang, exc.crisis)
            return
        except REFUSALS as exc:
            await stream.abort()
            await answer_refusal(core, bot, chat_id, lang, exc)
            return
        except asyncio.CancelledError:
            await _interrupted(stream, lang)
            raise
        except BaseException:
            await stream.abort()
            raise
        if outcome.text:
            markup = regen_kb(outcome.dialog_id, outcome.message_id)
            if more_buttons is not None:  # e.g. 📝 under the reply to a voice message
                markup = InlineKeyboardMarkup(inline_keyboard=[[*markup.inline_keyboard[0], *more_buttons()]])
            spoken = await speak(stream, outcome, markup) if speak is not None else None
            message_id = spoken if spoken is not None else await stream.finish(outcome.text, markup)
            await runtime.set_last_reply(bot, chat_id, message_id)
        elif replaces is not None:  # a rewrite stopped before its first word: the reply stays
            await stream.abort()
            return
        else:  # stopped before the first word
            await stream.finish(t(lang, "stopped_empty"))
        await after_reply(core, bot, chat_id, lang, outcome)
    finally:
        runtime.end_stream(stream)


async def _interrupted(stream: ReplyStream, lang: str) -> None:
    """Shutdown cancelled the reply: show what was written, briefly, without waiting long."""
    partial = stream.written.strip()
    note = t(lang, "interrupted")
    text = f"{partial}…\n\n{note}" if partial else note
    task = asyncio.create_task(stream.finish(text))
    with contextlib.suppress(Exception):
        await asyncio.wait({task}, timeout=3.0)
    if not task.done():
        task.cancel()
