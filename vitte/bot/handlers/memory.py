"""/memory: what the persona remembers about the player (facts, newest first, paged, each
with [Забыть] / [Forget]) and the story so far (the dialog's summary). Forgetting takes effect
from the next reply. Fact and summary text is escaped for Telegram's HTML."""

from __future__ import annotations

import html

from aiogram import Bot, F, Router
from aiogram.exceptions import TelegramBadRequest
from aiogram.filters import Command
from aiogram.types import CallbackQuery, InlineKeyboardMarkup, Message

from vitte.bot.callbacks import MemoryCb
from vitte.bot.handlers.common import current_dialog, player_lang, seen
from vitte.bot.keyboards import memory_kb
from vitte.bot.runtime import Runtime
from vitte.bot.streaming import call_with_retry
from vitte.bot.texts import t
from vitte.core import Core
from vitte.dialogs.factbook import PAGE_SIZE, FactNotFound

SUMMARY_SHOWN = 1500  # characters of the summary in the message at most


async def memory_view(
    core: Core, user_id: int, lang: str, page: int
) -> tuple[str, InlineKeyboardMarkup | None]:
    """The /memory message (HTML) and its buttons, for a page of the player's facts."""
    view = await current_dialog(core, user_id)
    if view is None:
        return html.escape(t(lang, "memory_no_dialog")), None
    lang = view.language
    shown = await core.dialogs.memory_page(user_id, page, PAGE_SIZE)
    first = shown.page * PAGE_SIZE + 1  # the number of the page's first fact in the whole list
    if shown.facts:
        lines = [
            f"<b>{html.escape(t(lang, 'memory_title', persona=view.persona_name, count=shown.total))}</b>"
        ]
        lines += [f"{first + i}. {html.escape(f.text)}" for i, f in enumerate(shown.facts)]
        if shown.pages > 1:
            lines.append(
                f"<i>{html.escape(t(lang, 'memory_page', page=shown.page + 1, pages=shown.pages))}</i>"
            )
    else:
        lines = [html.escape(t(lang, "memory_empty", persona=view.persona_name))]
    summary = shown.summary.strip()
    if len(summary) > SUMMARY_SHOWN:
        summary = summary[: SUMMARY_SHOWN - 1].rstrip() + "…"
    lines += ["", f"<b>{html.escape(t(lang, 'memory_summary'))}</b>"]
    lines.append(
        html.escape(summary) if summary else f"<i>{html.escape(t(lang, 'memory_summary_empty'))}</i>"
    )
    markup = memory_kb(
        lang, first, [f.id for f in shown.facts], shown.page, shown.pages, core.settings.webapp_url
    )
    return "\n".join(lines), markup


async def memory_command(message: Message, core: Core, runtime: Runtime) -> None:
    assert message.from_user is not None
    lang = await seen(core, runtime, message.from_user)
    text, markup = await memory_view(core, message.from_user.id, lang, 0)
    await message.answer(text, reply_markup=markup, parse_mode="HTML")


async def memory_button(
    query: CallbackQuery, callback_data: MemoryCb, core: Core, runtime: Runtime, bot: Bot
) -> None:
    user = query.from_user
    lang = await player_lang(core, runtime, user)
    page = max(callback_data.page, 0)
    if callback_data.action == "forget":
        try:
            await core.dialogs.facts.forget(user.id, callback_data.fact_id)
        except FactNotFound:
            await query.answer(t(lang, "stale"))
        else:
            await query.answer(t(lang, "memory_forgotten"))
    elif callback_data.action == "page":
        await query.answer()
    else:
        await query.answer(t(lang, "stale"))
        return
    text, markup = await memory_view(core, user.id, lang, page)
    chat_id = query.message.chat.id if query.message else user.id
    if query.message is not None:
        try:
            await call_with_retry(
                lambda: bot.edit_message_text(
                    chat_id=chat_id,
                    message_id=query.message.message_id,  # type: ignore[union-attr]
                    text=text,
                    reply_markup=markup,
                    parse_mode="HTML",
                )
            )
            return
        except TelegramBadRequest as exc:
            if "not modified" in str(exc).lower():
                return
    await call_with_retry(
        lambda: bot.send_message(chat_id=chat_id, text=text, reply_markup=markup, parse_mode="HTML")
    )


def router() -> Router:
    """A fresh Router with this module's handlers (vitte.bot.handlers explains why fresh)."""
    r = Router(name="memory")
    r.message.filter(F.chat.type == "private", F.from_user)
    r.message.register(memory_command, Command("memory"))
    r.callback_query.register(memory_button, MemoryCb.filter())
    return r
