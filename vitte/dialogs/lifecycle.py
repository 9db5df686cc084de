"""The dialog's lifecycle, the seed's rules: one active dialog per player (the database's
partial unique index enforces it too); choose a persona and story (a double click gets the
first click's dialog; the same persona and story with `restart` start over); continue;
start over (memory cleared, a new dialog with the same persona and story); reset (no active
dialog, no active persona). And the reads the faces show: the current dialog, whether a
button still applies, a dialog, the latest one, its messages."""

from __future__ import annotations

import asyncio

from sqlalchemy.exc import IntegrityError

from vitte.cache.base import Cache, CachedMessage
from vitte.catalog.lookup import Catalog, PersonaInfo, StoryInfo
from vitte.catalog.shown import pick_seed, player_macros, shown
from vitte.dialogs.store import DialogStore
from vitte.dialogs.turn import Turn, Turns, admit, player_of, turn_of
from vitte.dialogs.views import DialogView, MessageView, Opening, view_of
from vitte.errors import NoActiveDialog, StaleDialog, UnknownPersona
from vitte.models import ASSISTANT, MSG_OK, Dialog, User, utcnow
from vitte.players import player_view, zone_of

# a double click within this window returns the dialog the first click opened
DOUBLE_CLICK_SECONDS = 10.0
OPEN_ATTEMPTS = 5  # a concurrent opening elsewhere makes ours fail on the unique index: again


class Lifecycle:
    def __init__(self, store: DialogStore, cache: Cache, catalog: Catalog, turns: Turns) -> None:
        self.store = store
        self.cache = cache
        self.catalog = catalog
        self.turns = turns

    # ------------------------------------------------------------------ reads
    async def current(self, who: Turn | int, *, optimistic: bool = False) -> DialogView | None:
        """The player's active dialog, or None (the faces then offer the persona choice).

        `optimistic`: for a face about to call `reply` in this turn, which confirms the row
        (see `Turns.active_row`)."""
        user_id, turn = player_of(who), turn_of(who)
        row = await self.turns.active_row(user_id, turn, optimistic=optimistic)
        if row is None:
            return None
        dialog, user = row
        return await self._view(dialog, user)

    async def pressed(self, who: Turn | int, dialog_id: int, message_id: int, role: str) -> DialogView | None:
        """The active dialog if a button made for (dialog, message) still applies: its dialog
        is the player's active one and its message is still the dialog's latest, by `role`."""
        view = await self.current(who)
        if view is None or view.id != dialog_id:
            return None
        last = await self.store.messages(dialog_id, 1)
        if not last or last[0].id != message_id or last[0].role != role:
            return None
        return view

    async def dialog(self, dialog_id: int) -> DialogView | None:
        row = await self.store.dialog_with_player(dialog_id)
        return await self._view(row[0], row[1]) if row else None

    async def latest(self, user_id: int) -> DialogView | None:
        """The active dialog, else the most recent ended one (for operators)."""
        row = await self.store.latest_with_player(user_id)
        return await self._view(row[0], row[1]) if row else None

    async def messages(self, dialog_id: int, limit: int = 50) -> list[MessageView]:
        """The newest `limit` messages of a dialog, oldest first."""
        rows = await self.store.messages(dialog_id, limit)
        return [MessageView(int(m.id or 0), m.role, m.text, m.status, m.created_at) for m in reversed(rows)]

    async def continue_dialog(self, who: Turn | int, dialog_id: int | None = None) -> tuple[DialogView, str]:
        """'Продолжить общение': the dialog and the persona's last line, to remind where it stopped."""
        view = await self.current(who)
        if view is None:
            raise NoActiveDialog()
        if dialog_id is not None and view.id != dialog_id:
            raise StaleDialog()
        return view, await self.store.last_persona_line(view.id)

    # ------------------------------------------------------------------ choose / start over / reset
    async def choose(
        self,
        who: Turn | int,
        persona_id: str,
        story_id: str,
        *,
        language_code: str | None = None,
        restart: bool = False,
        dialog_id: int | None = None,
    ) -> Opening:
        """Open a dialog with this persona and story; any active dialog ends.

        A repeated request for the same persona and story within a few seconds (a double
        click) returns the dialog the first one opened. `restart` (the Web App's "start this
        story again"): when the active dialog already is this persona and story, it starts
        over (`start_over(dialog_id)`, `Opening.restarted`).
        """
        persona = await self.catalog.persona(persona_id)
        story = persona.story(story_id)
        async with self.turns.of(who) as turn:
            row = await self.turns.active_row(turn.user_id, turn)
            if row is None:
                return await self._open(turn, persona, story, language_code)
            dialog, user = row
            admit(user)
            same = dialog.persona_id == persona_id and dialog.story_id == story_id
            if same and restart:
                opening = await self.start_over(turn, dialog_id)
                return Opening(opening.dialog, opening.text, opening.message_id, restarted=True)
            age = (utcnow() - dialog.created_at).total_seconds()
            if (
                same
                and age < DOUBLE_CLICK_SECONDS
                and not await self.store.has_player_messages(int(dialog.id or 0))
            ):
                view = await self._view(dialog, user)
                first = await self.store.first_message(view.id)
                return Opening(
                    view,
                    first.text if first is not None else self._opening_text(persona, story, user, view.id),
                    int(first.id or 0) if first is not None else 0,
                    reused=True,
                    delivered=first is not None and first.telegram_message_id is not None,
                )
            return await self._open(turn, persona, story, language_code)

    async def start_over(self, who: Turn | int, dialog_id: int | None = None) -> Opening:
        """'Начать заново': memory cleared, a new dialog with the same persona and story."""
        async with self.turns.of(who) as turn:
            dialog, _user = await self.turns.admitted_active(turn, turn.user_id)
            if dialog_id is not None and int(dialog.id or 0) != dialog_id:
                raise StaleDialog()
            persona = await self.catalog.persona(dialog.persona_id)
            if dialog.story_id:
                story = persona.story(dialog.story_id)
            elif persona.stories:
                story = persona.stories[0]
            else:
                raise NoActiveDialog()
            return await self._open(turn, persona, story, None)

    async def reset(self, who: Turn | int) -> DialogView | None:
        """No active dialog and no active persona afterwards; returns what was ended."""
        async with self.turns.of(who) as turn:
            row = await self.turns.active_row(turn.user_id, turn)
            await self.store.end_active(turn.user_id)
            self.turns.forget(turn.user_id, turn)
            if row is None:
                return None
            await self.cache.recent_drop(int(row[0].id or 0))
            return await self._view(row[0], row[1])

    async def opening_sent(self, opening: Opening, telegram_message_id: int) -> None:
        """The opening reached the chat: a double click's reused opening is not sent again."""
        if opening.message_id:
            await self.store.mark_delivered(opening.message_id, telegram_message_id)

    async def _view(self, dialog: Dialog, user: User) -> DialogView:
        """`view_of` for the dialog's player (their language, their name and time zone in the
        story's title)."""
        player = player_view(user)
        zone = zone_of(player, self.turns.settings.default_timezone)
        return await view_of(self.catalog, dialog, player.language, player.called, zone=zone)

    def _opening_text(self, persona: PersonaInfo, story: StoryInfo, user: User, dialog_id: int) -> str:
        """The story's opening as the player reads it (macros expanded, the player's name, their
        time zone; {{pick}} per dialog, as the prompt and the Web App choose): stored so, so the
        LLM sees the same text."""
        player = player_view(user)
        text = story.opening_in(player.language) or persona.card.first_mes
        zone = zone_of(player, self.turns.settings.default_timezone)
        seed = pick_seed(dialog_id)
        return shown(text, player_macros(persona, player.language, player.called, seed, zone, utcnow()))

    async def _open(
        self, turn: Turn, persona: PersonaInfo, story: StoryInfo, language_code: str | None
    ) -> Opening:
        """End the active dialog (memory goes with it) and open a new one, atomically.

        The partial unique index makes a concurrent second opening fail; it is retried, so
        exactly one dialog stays active whatever the interleaving.
        """

        def first_words(user: User, dialog_id: int) -> str:
            admit(user)  # the stored row decides; a refusal rolls the insert back
            return self._opening_text(persona, story, user, dialog_id)

        user_id = turn.user_id
        for attempt in range(OPEN_ATTEMPTS):
            self.turns.forget(user_id, turn)
            try:
                dialog, user, first, ended = await self.store.open_dialog(
                    user_id, persona.id, story.id, language_code, first_words
                )
                break
            except IntegrityError as exc:
                if _names_a_missing_row(exc):  # the persona (or story) was removed meanwhile
                    self.catalog.invalidate()
                    raise UnknownPersona(persona.id) from None
                if attempt == OPEN_ATTEMPTS - 1:
                    raise
                await asyncio.sleep(0.01 * (attempt + 1))
        self.turns.forget(user_id, turn)
        for old in ended:
            await self.cache.recent_drop(old)
        dialog_id, first_id = int(dialog.id or 0), int(first.id or 0)
        await self.cache.recent_fill(dialog_id, [CachedMessage(first_id, ASSISTANT, first.text, MSG_OK)])
        view = await self._view(dialog, user)
        return Opening(view, first.text, first_id)




def _names_a_missing_row(exc: IntegrityError) -> bool:
    """A foreign key violation (PostgreSQL 23503; SQLite says so): the row it names is gone.
    (The other integrity error here is a concurrent opening, retried.)"""
    orig = exc.orig
    return getattr(orig, "sqlstate", None) == "23503" or "FOREIGN KEY constraint failed" in str(orig)
