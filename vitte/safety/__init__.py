"""Trust and safety (issue #8): the rules live in the core; the faces only render them.

For bot handlers / Web App endpoints — what to call and what to catch
====================================================================

Age gate (18+)
    ``await core.players.confirm_adult(user_id)``   the "Мне есть 18" button; stores the time
                                                    once (idempotent), creates the player if unseen
    ``await core.players.decline_adult(user_id)``   the "Мне нет 18" button; stores nothing (and
                                                    withdraws an earlier confirmation)
    ``PlayerView.adult_confirmed_at``               None = not confirmed (show the gate first)
    The engine enforces it whatever the face: ``DialogEngine.choose / start_over / reply /
    regenerate`` raise ``vitte.errors.AgeNotConfirmed`` while ``users.adult_confirmed_at`` is
    NULL (an unseen player counts as not confirmed). Catch it and show the age question.

Blocking
    ``vitte.errors.PlayerBlocked`` (``.reason`` is the operator's note, not for the player) from
    the same four engine calls, before any storage or LLM call: answer one polite line.
    Operators: ``core.players.block(user_id, reason)`` / ``unblock(user_id)``, or
    ``vitte user block USER [--reason]`` / ``vitte user unblock USER`` (cli/safety.py).

Rate limit
    ``vitte.errors.RateLimited`` (``.retry_after_seconds``, a float) from ``reply`` and
    ``regenerate`` when a player asks for more than VITTE_RATE_LIMIT_PER_MINUTE (default 20,
    0 = off) replies in a minute; nothing was stored. Answer "slow down, try again in N s".

Crisis care
    ``ReplyOutcome.crisis`` is True when the player's message signalled suicide or self-harm:
    send the persona's reply (written with extra care) AND then a plain, separate message::

        from vitte.safety import crisis_resources
        await bot.send_message(chat_id, crisis_resources(player.language, core.settings))

    If ``reply`` raised instead (``ReplyFailed``, ``QuotaExceeded``, ``RateLimited``,
    ``PlayerBlocked``, ``AgeNotConfirmed``, ``NoActiveDialog`` …), the error has
    ``exc.crisis = True`` for such a message: send the resources all the same.
    The engine counts the event (safety_events: kind "crisis", language), never the text.
    ``detect(text, language)`` is available to faces that need it before calling the engine.

Persona boundaries
    Nothing to do in the faces: the operator's preamble (``preamble.{ru,en}.txt`` or
    VITTE_SAFETY_PREAMBLE_FILE) is first in every reply's system prompt; cards cannot remove it.

The player's data
    ``await core.players.export(user_id) -> dict`` (JSON-serializable: format, version,
    exported_at, profile, settings, dialogs with messages, payments, usage) and
    ``await core.players.delete_data(user_id)`` (dialogs, messages, usage and cache entries gone;
    payments kept, anonymised). Operators: ``vitte user export USER [--output FILE]``,
    ``vitte user delete USER --yes``.

Configuration: VITTE_SAFETY_PREAMBLE_FILE, VITTE_CRISIS_PHRASES_FILE, VITTE_CRISIS_RESOURCES_FILE
(paths, optionally with ``{lang}`` in them; unset = the files shipped here),
VITTE_RATE_LIMIT_PER_MINUTE.
"""

from __future__ import annotations

from vitte.safety.crisis import CrisisCare, crisis_resources, detect, load_crisis_care, normalize
from vitte.safety.preamble import SafetyPreamble, load_preamble

__all__ = [
    "CrisisCare",
    "SafetyPreamble",
    "crisis_resources",
    "detect",
    "load_crisis_care",
    "load_preamble",
    "normalize",
]
