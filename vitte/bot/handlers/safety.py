"""Trust and safety in the chat (issue #8): /mydata for every player; /block and /unblock for
admins (VITTE_ADMIN_IDS). The age gate, blocked players, the rate limit and crisis care are
answered where the engine refuses (vitte/bot/refusals.py); deleting the data is in /settings.

/mydata      the player's data as a JSON file (vitte-data-<id>.json), `core.players.export`;
             the Web App's "Download my data" sends the same file (vitte.telegram.messages).
/block <id or @username> [reason]   block a player; or `/block [reason]` as a reply to a
             message forwarded from the player (a private chat has no other way to point at
             somebody's message). The reason is the operator's note, never shown to the player.
/unblock <id or @username>          (or as a reply to a forwarded message) lift the block.
For anybody but an admin /block and /unblock are unknown commands.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

from aiogram import Bot, F, Router
from aiogram.filters import Command, CommandObject
from aiogram.types import Message, MessageOriginHiddenUser, MessageOriginUser

from vitte.bot.handlers.common import player_lang
from vitte.bot.runtime import Runtime
from vitte.bot.texts import t
from vitte.core import Core
from vitte.errors import UnknownUser
from vitte.players import PlayerView
from vitte.telegram.messages import ExportThrottled, send_player_data


async def mydata_command(message: Message, core: Core, runtime: Runtime, bot: Bot) -> None:
    assert message.from_user is not None
    user = message.from_user
    lang = await player_lang(core, runtime, user)  # records an unseen player, like any command
    try:
        await send_player_data(core, bot, message.chat.id, user.id, lang)
    except ExportThrottled as exc:
        await message.answer(t(lang, "mydata_too_often", seconds=max(1, math.ceil(exc.retry_after_seconds))))


async def block_command(message: Message, command: CommandObject, core: Core, runtime: Runtime) -> None:
    lang, target = await _admin_target(core, runtime, message, command)
    if target is None:
        return
    user_id, reason = target
    try:
        player = await core.players.block(user_id, reason)
    except UnknownUser:
        await message.answer(t(lang, "block_unknown", who=user_id))
        return
    reason_text = player.blocked_reason or t(lang, "no_reason")
    await message.answer(t(lang, "block_done", who=_who(player), reason=reason_text))


async def unblock_command(message: Message, command: CommandObject, core: Core, runtime: Runtime) -> None:
    lang, target = await _admin_target(core, runtime, message, command)
    if target is None:
        return
    try:
        player = await core.players.unblock(target[0])
    except UnknownUser:
        await message.answer(t(lang, "block_unknown", who=target[0]))
        return
    await message.answer(t(lang, "unblock_done", who=_who(player)))


def router(admin_ids: Iterable[int]) -> Router:
    """A fresh Router with this module's handlers; /block and /unblock for these admins only."""
    r = Router(name="safety")
    r.message.filter(F.chat.type == "private", F.from_user)
    r.message.register(mydata_command, Command("mydata"))
    admin = Router(name="safety-admin")
    admin.message.filter(F.from_user.id.in_(frozenset(admin_ids)))
    admin.message.register(block_command, Command("block"))
    admin.message.register(unblock_command, Command("unblock"))
    r.include_router(admin)
    return r


async def _admin_target(
    core: Core, runtime: Runtime, message: Message, command: CommandObject
) -> tuple[str, tuple[int, str] | None]:
    """The admin's language and (player id, reason); None when there is nobody to act on (the
    admin has been told why)."""
    assert message.from_user is not None
    lang = await player_lang(core, runtime, message.from_user)
    target = await _target(core, message, command.args, lang)
    if isinstance(target, str):
        await message.answer(target)
        return lang, None
    return lang, target


async def _target(core: Core, message: Message, args: str | None, lang: str) -> tuple[int, str] | str:
    """(player id, the rest of the arguments) or, when there is nobody to act on, the answer.

    A reply to a forwarded message points at the forward's author, and the arguments are all
    the reason; otherwise the first argument is the player (a Telegram id or @username).
    """
    args = (args or "").strip()
    replied = message.reply_to_message
    origin = replied.forward_origin if replied is not None else None
    if isinstance(origin, MessageOriginUser):
        return origin.sender_user.id, args
    if isinstance(origin, MessageOriginHiddenUser) and not args:
        return t(lang, "block_hidden")
    if not args:
        return t(lang, "block_usage")
    ref, _, rest = args.partition(" ")
    try:
        return await core.players.resolve(ref), rest.strip()
    except UnknownUser:
        return t(lang, "block_unknown", who=ref)


def _who(player: PlayerView) -> str:
    name = f"@{player.username}" if player.username else player.display_name
    return name if name == str(player.id) else f"{name} ({player.id})"
