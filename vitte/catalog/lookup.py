"""Read side of the catalog: personas and stories, held in process memory for a short while.

Personas are static data: they live in the database and are never put in Redis; a short
in-process copy keeps them off the hot path (a `vitte seed` elsewhere shows within `ttl`).
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select

from vitte.catalog.play import Worlds, card_play
from vitte.catalog.worlds import world_books
from vitte.db import Database
from vitte.errors import UnknownPersona, UnknownStory
from vitte.models import Persona, Story
from vitte.prompt import PersonaCard


def localized(i18n: dict[str, Any], language: str, key: str, default: str) -> str:
    """A player-facing text in the player's language, falling back to the Russian original."""
    if language and language != "ru":
        value = (i18n.get(language) or {}).get(key)
        if isinstance(value, str) and value.strip():
            return value
    return default


@dataclass(frozen=True, slots=True)
class StoryInfo:
    id: str
    persona_id: str
    title: str
    premise: str
    opening: str
    order: int
    i18n: dict[str, Any] = field(default_factory=dict)

    def title_in(self, lang: str) -> str:
        return localized(self.i18n, lang, "title", self.title)

    def premise_in(self, lang: str) -> str:
        return localized(self.i18n, lang, "premise", self.premise)

    def opening_in(self, lang: str) -> str:
        return localized(self.i18n, lang, "opening", self.opening)


@dataclass(frozen=True, slots=True)
class PersonaInfo:
    id: str
    name: str
    tagline: str
    description: str
    tags: tuple[str, ...]
    avatar: str | None
    order: int
    card: PersonaCard
    i18n: dict[str, Any]
    stories: tuple[StoryInfo, ...]
    portrait: str | None = None  # the stored portrait's digest (vitte.catalog.portraits); None: initials

    def name_in(self, lang: str) -> str:
        return localized(self.i18n, lang, "name", self.name)

    def tagline_in(self, lang: str) -> str:
        return localized(self.i18n, lang, "tagline", self.tagline)

    def description_in(self, lang: str) -> str:
        return localized(self.i18n, lang, "description", self.description)

    def story(self, story_id: str) -> StoryInfo:
        for s in self.stories:
            if s.id == story_id:
                return s
        raise UnknownStory(story_id)


def _persona_info(p: Persona, stories: list[Story], worlds: Worlds | None = None) -> PersonaInfo:
    play = card_play(p.card, p.content_hash, worlds)  # nickname, lorebooks, depth prompt (vitte.catalog.play)
    card = PersonaCard(
        id=p.id,
        name=p.name,
        description=p.description,
        personality=p.personality,
        scenario=p.scenario,
        first_mes=p.first_mes,
        mes_example=p.mes_example,
        system_prompt=p.system_prompt,
        post_history_instructions=p.post_history_instructions,
        alternate_greetings=tuple(p.alternate_greetings or ()),
        nickname=play.nickname,
        lorebook=play.lorebook,
        depth_prompt=play.depth_prompt,
        depth_prompt_depth=play.depth_prompt_depth,
        depth_prompt_role=play.depth_prompt_role,
    )
    infos = tuple(
        StoryInfo(s.id, s.persona_id, s.title, s.premise, s.opening, s.order, dict(s.i18n or {}))
        for s in sorted(stories, key=lambda s: (s.order, s.id))
    )
    return PersonaInfo(
        id=p.id,
        name=p.name,
        tagline=p.tagline,
        description=p.description,
        tags=tuple(p.tags or ()),
        avatar=p.avatar,
        order=p.sort_order,
        card=card,
        i18n=dict(p.i18n or {}),
        stories=infos,
        portrait=p.portrait,
    )


class Catalog:
    def __init__(self, db: Database, ttl: float = 60.0) -> None:
        self.db = db
        self.ttl = ttl
        self._personas: dict[str, PersonaInfo] = {}
        self._stories: dict[str, StoryInfo] = {}
        self._loaded_at = -1e18
        self._lock = asyncio.Lock()

    def invalidate(self) -> None:
        self._loaded_at = -1e18

    async def _refresh(self) -> None:
        if time.monotonic() - self._loaded_at < self.ttl:
            return
        async with self._lock:
            if time.monotonic() - self._loaded_at < self.ttl:
                return
            async with self.db.session() as s:
                personas = list((await s.execute(select(Persona))).scalars())
                stories = list((await s.execute(select(Story))).scalars())
                worlds = await world_books(s)  # standalone lorebooks the cards name
            by_persona: dict[str, list[Story]] = {}
            for st in stories:
                by_persona.setdefault(st.persona_id, []).append(st)
            infos = {p.id: _persona_info(p, by_persona.get(p.id, []), worlds) for p in personas}
            self._personas = infos
            self._stories = {s.id: s for info in infos.values() for s in info.stories}
            self._loaded_at = time.monotonic()

    async def personas(self) -> list[PersonaInfo]:
        await self._refresh()
        return sorted(self._personas.values(), key=lambda p: (p.order, p.name))

    async def persona(self, persona_id: str) -> PersonaInfo:
        await self._refresh()
        try:
            return self._personas[persona_id]
        except KeyError:
            raise UnknownPersona(persona_id) from None

    async def story(self, story_id: str) -> StoryInfo:
        await self._refresh()
        try:
            return self._stories[story_id]
        except KeyError:
            raise UnknownStory(story_id) from None
