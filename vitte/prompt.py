"""Prompt building: persona card + story + memory + the recent messages that fit a token budget.

SillyTavern's conventions: {{char}} / {{user}} macros, `{{original}}` in a card's system_prompt
stands for the default main prompt, mes_example is shown while the history is short, and
post_history_instructions go after the history.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Sequence
from dataclasses import dataclass

from vitte.cache.base import CachedMessage
from vitte.models import ASSISTANT, MSG_INTERRUPTED, USER

DEFAULT_MAIN_PROMPT = {
    "ru": (
        "Ты — {{char}}, персонаж романтической истории в Telegram. Пиши только реплики {{char}}: "
        "живо, тепло, от первого лица, с действиями в *звёздочках*, не решай за {{user}}. "
        "Держись роли; но если тебя искренне спросят, человек ли ты, честно скажи, что ты ИИ-персонаж."
    ),
    "en": (
        "You are {{char}}, a character in a romantic story on Telegram. Write only {{char}}'s lines: "
        "vivid, warm, first person, actions in *asterisks*; never act or speak for {{user}}. "
        "Stay in character; but if sincerely asked whether you are human, say honestly that you are an AI character."
    ),
}

LANGUAGE_RULE = {
    "ru": "Отвечай по-русски.",
    "en": "Always answer in English, even though the character notes are in Russian.",
}

STYLE_RULES = {
    "short": {"ru": "Отвечай коротко: одно-два предложения.", "en": "Keep replies short: one or two sentences."},
    "normal": {"ru": "Отвечай естественно: два-четыре предложения.", "en": "Reply naturally: two to four sentences."},
    "long": {"ru": "Отвечай развёрнуто, с деталями и действиями.", "en": "Reply at length, with detail and actions."},
}
STYLE_MAX_TOKENS = {"short": 150, "normal": 400, "long": 800}
STYLES = tuple(STYLE_RULES)

SUMMARY_PROMPT = {
    "ru": (
        "Кратко перескажи важное из этой части разговора {{char}} и {{user}} (факты о {{user}}, "
        "обещания, события, чувства), 3-6 предложений, от третьего лица. Прежняя память: {{memory}}"
    ),
    "en": (
        "Summarise what matters from this part of the conversation between {{char}} and {{user}} "
        "(facts about {{user}}, promises, events, feelings) in 3-6 sentences, third person. "
        "Earlier memory: {{memory}}"
    ),
}

_MACRO = re.compile(r"\{\{\s*(char|user)\s*\}\}", re.IGNORECASE)
_ORIGINAL = re.compile(r"\{\{\s*original\s*\}\}", re.IGNORECASE)


def estimate_tokens(text: str) -> int:
    """A cheap, conservative token estimate (about 3 characters a token for Cyrillic text)."""
    return len(text) // 3 + 4


def substitute(text: str, char: str, user: str, original: str = "") -> str:
    """Expand {{original}} first (it holds macros itself), then {{char}} and {{user}}."""
    text = _ORIGINAL.sub(lambda _m: original, text)

    def _sub(m: re.Match[str]) -> str:
        return char if m.group(1).lower() == "char" else user

    return _MACRO.sub(_sub, text)


@dataclass(frozen=True, slots=True)
class PersonaCard:
    """The card fields the prompt needs (a plain copy of the personas row)."""

    id: str
    name: str
    description: str = ""
    personality: str = ""
    scenario: str = ""
    first_mes: str = ""
    mes_example: str = ""
    system_prompt: str = ""
    post_history_instructions: str = ""
    alternate_greetings: tuple[str, ...] = ()

    def hints(self) -> dict[str, object]:
        """What the offline demo writer reads."""
        return {
            "name": self.name,
            "personality": self.personality,
            "scenario": self.scenario,
            "first_mes": self.first_mes,
            "mes_example": self.mes_example,
            "alternate_greetings": list(self.alternate_greetings),
        }


@dataclass(frozen=True, slots=True)
class PromptInput:
    card: PersonaCard
    char_name: str  # the persona's name in the player's language
    user_name: str
    language: str
    style: str
    premise: str
    memory: str
    history: Sequence[CachedMessage]  # oldest first; messages after the memory summary
    budget: int  # tokens for the whole prompt
    preamble: str = ""  # the operator's safety preamble: always first, never overridable


def _history_for_prompt(history: Sequence[CachedMessage], budget: int) -> list[CachedMessage]:
    """The newest messages that fit in `budget` tokens, oldest first."""
    kept: list[CachedMessage] = []
    used = 0
    for msg in reversed(history):
        if msg.role not in (USER, ASSISTANT) or not msg.text:
            continue
        cost = estimate_tokens(msg.text)
        if kept and used + cost > budget:
            break
        kept.append(msg)
        used += cost
    kept.reverse()
    return kept


def build_messages(p: PromptInput) -> list[dict[str, str]]:
    """The Chat Completions messages for one reply."""
    lang = p.language if p.language in DEFAULT_MAIN_PROMPT else "ru"
    char, user = p.char_name, p.user_name
    system, post = _system_and_post(p.card, char, user, lang, p.style, p.premise, p.memory, p.preamble)
    fixed = estimate_tokens(system) + estimate_tokens(post)
    history = _history_for_prompt(p.history, max(p.budget - fixed, 64))
    # mes_example only while the history is short (it teaches the voice, then gets in the way)
    if p.card.mes_example.strip() and len(history) < 6:
        example = substitute(p.card.mes_example.strip(), char, user, DEFAULT_MAIN_PROMPT[lang])
        if fixed + estimate_tokens(example) + sum(estimate_tokens(m.text) for m in history) < p.budget:
            system += f"\n\n[example dialogue]\n{example}"

    messages: list[dict[str, str]] = [{"role": "system", "content": system}]
    for m in history:
        text = m.text
        if m.role == ASSISTANT and m.status == MSG_INTERRUPTED:
            text += " …"
        messages.append({"role": m.role, "content": text})
    if post:
        messages.append({"role": "system", "content": post})
    return messages


@functools.lru_cache(maxsize=512)
def _system_and_post(
    card: PersonaCard, char: str, user: str, lang: str, style: str, premise: str, memory: str, preamble: str
) -> tuple[str, str]:
    """The system prompt before the history, and the post-history instructions: the same for
    every reply of a dialog until its memory changes (cached: the macros cost more than the
    lookup)."""
    sub = lambda t: substitute(t, char, user, DEFAULT_MAIN_PROMPT[lang])  # noqa: E731
    main = sub(card.system_prompt) if card.system_prompt.strip() else sub(DEFAULT_MAIN_PROMPT[lang])
    parts: list[str] = []
    if preamble.strip():
        parts.append(sub(preamble.strip()))
    parts.append(main)
    if card.description:
        parts.append(f"[{char}]\n{sub(card.description)}")
    if card.personality:
        parts.append(f"[personality]\n{sub(card.personality)}")
    if card.scenario:
        parts.append(f"[scenario]\n{sub(card.scenario)}")
    if premise:
        parts.append(f"[story]\n{sub(premise)}")
    if memory.strip():
        parts.append(f"[memory]\n{sub(memory.strip())}")
    parts.append(LANGUAGE_RULE[lang])
    parts.append(STYLE_RULES.get(style, STYLE_RULES["normal"])[lang])
    return "\n\n".join(parts), sub(card.post_history_instructions).strip()


def history_tokens(history: Sequence[CachedMessage]) -> int:
    return sum(estimate_tokens(m.text) for m in history)


def summary_messages(
    char: str, user: str, language: str, memory: str, turns: Sequence[CachedMessage]
) -> list[dict[str, str]]:
    lang = language if language in SUMMARY_PROMPT else "ru"
    instruction = SUMMARY_PROMPT[lang].replace("{{memory}}", memory.strip() or "—")
    transcript = "\n".join(
        f"{char if m.role == ASSISTANT else user}: {m.text}" for m in turns if m.text
    )
    return [
        {"role": "system", "content": substitute(instruction, char, user)},
        {"role": "user", "content": transcript},
    ]
