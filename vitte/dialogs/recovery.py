"""Crash recovery: replies a crash left 'streaming' are marked interrupted (never shown as
complete), and the players still waiting for an answer are found, to be told once."""

from __future__ import annotations

import asyncio
import logging

from vitte.cache.base import Cache
from vitte.dialogs.store import RECOVER_CHUNK, DialogStore
from vitte.dialogs.views import InterruptedReply, Recovery
from vitte.i18n import normalize_language
from vitte.models import ASSISTANT, USER

log = logging.getLogger("vitte.dialogs")


async def recover_interrupted(store: DialogStore, cache: Cache) -> Recovery:
    """After a crash: replies left 'streaming' are marked interrupted; placeholders without a
    word stored are deleted.

    Only rows whose player's lock nobody holds: a reply streaming in another process (it holds
    the lock from before its placeholder is stored until the reply is) is left alone, and so is
    one whose crashed holder's lease has not run out yet: those are counted in `deferred` (call
    again after the lease). With Redis unreachable nothing is recovered (another process may be
    streaming them).

    Returns the number of replies marked and `notices`: one per active dialog of a player not
    blocked (nor unreachable: Telegram said they blocked the bot and they have not written in
    the dialog since, as the nudges judge it) whose last message is now their own unanswered
    message or the interrupted reply, i.e. a player still waiting for an answer (the bot tells
    them, once: a second call finds nothing left 'streaming'). A few statements however many
    rows. The recovered dialogs'
    cached recent messages are dropped: a crash mid-reply leaves the player's message out of
    the cache (it reaches the cache with the reply), and `regenerate` must answer it.
    """
    candidates = await store.streaming_replies()
    if not candidates:
        return Recovery()
    held = await cache.locked_users(sorted({u for _m, u in candidates}))
    if held is None:
        log.warning("crash recovery postponed: the cache cannot tell which players are being answered")
        return Recovery(deferred=len(candidates))
    orphans = sorted(m for m, u in candidates if u not in held)
    done = await store.recover(orphans)
    marked_ids = {m for m, _d in done.marked}
    notices = []
    for dialog_id, user_id, language, last_id, role in done.waiting:
        partial = role == ASSISTANT and last_id in marked_ids
        if role == USER or partial:
            notices.append(
                InterruptedReply(
                    user_id=user_id,
                    dialog_id=dialog_id,
                    language=normalize_language(language),  # as players.player_view
                    message_id=last_id,
                    partial=partial,
                )
            )
    ids = done.dialog_ids
    for i in range(0, len(ids), RECOVER_CHUNK):
        await asyncio.gather(*(cache.recent_drop(d) for d in ids[i : i + RECOVER_CHUNK]))
    return Recovery(len(done.marked), tuple(notices), deferred=len(candidates) - len(orphans))
