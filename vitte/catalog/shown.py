"""A card's text as a player or an operator sees it: macros expanded (vitte.catalog.macros) with
the persona's name (its V3 nickname when set) and the player's own name — the story opening sent
and stored, the Web App's taglines, descriptions and premises, the console, exports."""

from __future__ import annotations

from datetime import datetime, tzinfo

from vitte.catalog.lookup import PersonaInfo
from vitte.catalog.macros import Macros, expand
from vitte.i18n import COMMON
from vitte.prompt import safe_name

__all__ = ["pick_seed", "player_macros", "shown"]


def pick_seed(dialog_id: int | None, player_id: int | None = None) -> int:
    """{{pick}}'s seed for the card texts a player reads: the id of their dialog with the
    persona — what the chat uses (the stored opening, every reply's prompt), so the Web App
    shows the chat's choice — else one of the player's own (the same on every visit; a story
    not opened yet is a preview: its dialog, once opened, seeds it); 0 for a visitor."""
    if dialog_id:
        return int(dialog_id)
    return -int(player_id) if player_id else 0  # negative: never a dialog's id


def player_macros(
    persona: PersonaInfo,
    language: str,
    player_name: str | None,
    seed: int = 0,
    zone: tzinfo | None = None,
    now: datetime | None = None,
) -> Macros:
    """The macros of `persona`'s texts for a player called `player_name` (the catalogue's
    unnamed-player word when they have none), {{time}}, {{date}} … in their time `zone`
    (`vitte.players.zone_of`; None: UTC) at `now` (None: the current time)."""
    char = safe_name(persona.card.nickname) or safe_name(persona.name_in(language)) or persona.name
    user = safe_name(player_name or "") or COMMON.t(language, "player_unnamed")
    return Macros(char, user, seed=seed, language=language, zone=zone, now=now)


def shown(text: str, macros: Macros) -> str:
    """`text` with its macros expanded, trimmed."""
    return expand(text, macros).strip() if text else ""
