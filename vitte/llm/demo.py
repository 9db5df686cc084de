"""The built-in offline writer, used when no LLM is configured (VITTE_LLM_BASE_URL unset).

It is not a language model: it answers in the persona's voice from the card's hints
(`LLMRequest.persona`: name, personality, mes_example, first_mes, alternate_greetings,
scenario) and the player's last message, deterministically (seeded by a hash of that
message and the turn count), in 1–3 short sentences, Russian unless `language` is English.
The operator sees `label`; the replies themselves stay pleasant and carry no demo marks.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import random
import re
from collections.abc import AsyncGenerator, Mapping, Sequence
from typing import Any

from vitte.llm.base import LLMRequest

__all__ = ["DemoWriter"]

_CYRILLIC = re.compile(r"[а-яё]", re.IGNORECASE)
_LATIN = re.compile(r"[a-z]", re.IGNORECASE)
_WORD = re.compile(r"[^\W\d_]+(?:[-'’][^\W\d_]+)*")
_SENTENCE_END = re.compile(r"(?<=[.!?…])\s+")
_SPEAKER = re.compile(r"^\s*([^:\n]{1,32}):\s*(.*)$")
_FACT_LINE = re.compile(r"^#(\d+) ([^:\n]{1,64}): (.*)$")  # a fact extraction's numbered line
_NAME_IS = re.compile(r"(?:меня зовут|my name is)\s+([^\W\d_]{2,32})", re.IGNORECASE)

# --- what the player's message looks like -------------------------------------------------

_GREETINGS = (
    "привет", "здравствуй", "здравствуйте", "добрый день", "добрый вечер", "доброе утро",
    "хай", "салют", "приветик", "хэй", "hi", "hello", "hey", "good morning", "good evening",
    "good afternoon", "howdy",
)
_FAREWELLS = (
    "пока", "до встречи", "до завтра", "спокойной ночи", "доброй ночи", "споки", "мне пора",
    "bye", "goodbye", "good night", "see you", "gotta go", "goodnight",
)
_AFFECTION = (
    "люблю", "скучаю", "скучал", "скучала", "нравишься", "обнимаю", "целую", "милая", "милый",
    "красивая", "красивый", "love", "miss you", "like you", "hug", "kiss", "beautiful",
    "cute", "sweetheart", "darling",
)
_THANKS = ("спасибо", "благодарю", "спс", "thanks", "thank you", "thx")
_QUESTION_WORDS = (
    "кто", "что", "где", "когда", "почему", "зачем", "как", "какой", "какая", "какие", "сколько",
    "ли", "who", "what", "where", "when", "why", "how", "which", "do", "does", "did", "are", "is",
    "can", "could", "would", "will", "should", "have",
)
_STOPWORDS_TEXT = """
    это этот эта эти того тому только очень когда потом тоже просто чтобы если было была были
    будет есть меня тебя тебе мне себя свой своя свои твой твоя твои мой моя мои сегодня вчера
    завтра сейчас теперь здесь там тут всегда никогда ничего нечего какой какая какие который
    которая которые почему зачем где куда откуда сколько давай ладно хорошо привет пожалуйста
    спасибо можно нужно надо хочу хочешь знаешь думаю думаешь может могу можешь скажи расскажи
    this that these those there their about would could should really just very have with
    what when where which while your yours mine from into them they then than been being
    tell know think want hello thanks please maybe today tonight something anything
"""
_STOPWORDS = frozenset(_STOPWORDS_TEXT.split())

# --- the writer's phrases (present tense and neutral forms: no guessing anyone's gender) ----

_PHRASES: dict[str, dict[str, tuple[str, ...]]] = {
    "ru": {
        "greeting": (
            "Привет! Как хорошо, что ты здесь.",
            "Ну привет. Тебя здесь очень не хватало.",
            "Здравствуй! С тобой день сразу становится лучше.",
            "Привет-привет! Я как раз думаю о тебе.",
        ),
        "farewell": (
            "Уже уходишь? Тогда до встречи — я буду ждать.",
            "Спокойной ночи. Пусть тебе приснится что-нибудь хорошее.",
            "Пока! Возвращайся скорее, ладно?",
        ),
        "affection": (
            "Ох… Ты умеешь сказать так, что сердце замирает.",
            "Мне тоже с тобой очень хорошо.",
            "Знаешь, от таких слов хочется улыбаться весь вечер.",
        ),
        "thanks": (
            "Всегда пожалуйста. Для тебя — что угодно.",
            "Не за что — мне это только в радость.",
            "Пустяки. Главное, что тебе хорошо.",
        ),
        "question": (
            "Хороший вопрос. Думаю, да — но мне интересно, что думаешь ты.",
            "Ты спрашиваешь про «{kw}»? Отвечу так: всё зависит от того, кто рядом.",
            "Хм, дай подумать… Мне кажется, ответ ближе, чем кажется.",
            "Честно? Ответ где-то рядом — давай поищем его вместе.",
        ),
        "statement": (
            "«{kw}»… Расскажи об этом подробнее, мне правда интересно.",
            "Слушаю тебя внимательно. И что было дальше?",
            "Знаешь, мне нравится, как ты об этом говоришь.",
            "«{kw}» — звучит интригующе. Продолжай, не останавливайся.",
        ),
        "statement_plain": (
            "Слушаю тебя внимательно. И что было дальше?",
            "Знаешь, мне нравится, как ты об этом говоришь.",
            "Мм, понимаю. Мне приятно, что ты этим делишься.",
        ),
        "follow_up": (
            "А как прошёл твой день?",
            "О чём думаешь прямо сейчас?",
            "Расскажешь ещё что-нибудь?",
            "Останешься со мной ещё немного?",
        ),
        "introduce": ("Я {name}.", "Меня зовут {name}."),
        "remembered": ("Запомню. *кивает*", "Я это запомню, обещаю.", "*улыбается* Теперь не забуду."),
        "warm": ("*улыбается*", "*тепло смотрит на тебя*", "*придвигается чуть ближе*"),
        "playful": ("*хитро прищуривается*", "*смеётся*", "*подмигивает*"),
        "shy": ("*смущённо отводит взгляд*", "*краснеет*", "*тихо улыбается*"),
    },
    "en": {
        "greeting": (
            "Hi! I'm so glad you're here.",
            "Hey, you. I was hoping you'd come by.",
            "Hello! The day just got better.",
            "Hi there! I was just thinking about you.",
        ),
        "farewell": (
            "Leaving already? Then see you soon — I'll be waiting.",
            "Good night. Dream of something nice.",
            "Bye for now! Come back soon, okay?",
        ),
        "affection": (
            "Oh… you know just what to say to make my heart skip.",
            "I feel the same way when I'm with you.",
            "Words like that make me smile all evening.",
        ),
        "thanks": (
            "Anytime. For you — anything.",
            "You're welcome. It makes me happy too.",
            "Don't mention it. I just want you to feel good.",
        ),
        "question": (
            "Good question. I think so — but I'd love to hear what you think.",
            "You're asking about “{kw}”? Honestly, it depends on who's beside me.",
            "Hmm, let me think… I'd say the answer is closer than it seems.",
            "Honestly? The answer is somewhere near — let's look for it together.",
        ),
        "statement": (
            "“{kw}”… Tell me more, I'm really curious.",
            "I'm listening. What happened next?",
            "You know, I like the way you talk about it.",
            "“{kw}” — that sounds intriguing. Go on.",
        ),
        "statement_plain": (
            "I'm listening. What happened next?",
            "You know, I like the way you talk about it.",
            "Mm, I see. I'm glad you're telling me.",
        ),
        "follow_up": (
            "How was your day?",
            "What are you thinking about right now?",
            "Tell me something more?",
            "Will you stay with me a little longer?",
        ),
        "introduce": ("I'm {name}.", "My name is {name}."),
        "remembered": ("I'll remember that. *nods*", "Noted — I won't forget it.", "*smiles* I'll keep that close."),
        "warm": ("*smiles*", "*looks at you warmly*", "*leans a little closer*"),
        "playful": ("*grins*", "*laughs*", "*winks*"),
        "shy": ("*glances away, blushing*", "*smiles softly*", "*tucks a strand of hair away*"),
    },
}

# endings that mostly mark verbs: a noun makes a better echo ("дождь", not "пойдёт")
_VERB_ENDINGS = (
    "ть", "ться", "ет", "ёт", "ит", "ют", "ут", "ат", "ят", "ешь", "ёшь", "ишь", "ал", "ала",
    "ил", "ила", "ел", "ела", "ся", "сь", "ing", "ed",
)

_TONES = {
    "playful": ("playful", "teas", "flirt", "mischiev", "cheek", "sassy", "witty", "игрив",
                "дерз", "кокет", "озорн", "шутл", "насмеш"),
    "shy": ("shy", "timid", "quiet", "bashful", "reserved", "застенч", "робк", "тих", "скромн",
            "стеснит"),
}

_SUMMARY = {
    "ru": ("Что игрок говорил недавно: {items}.", "Разговор только начался."),
    "en": ("What the player said recently: {items}.", "The conversation has just begun."),
}
_SUMMARY_BOTH = {"ru": "Из недавнего разговора: {items}.", "en": "From the recent talk: {items}."}
_QUOTES = {"ru": ("«", "»"), "en": ("“", "”")}


def _language(language: str) -> str:
    return "en" if (language or "").strip().lower().startswith("en") else "ru"


def _fits(text: str, lang: str) -> bool:
    """Whether a line from the card is written in the reply's language."""
    if lang == "ru":
        return bool(_CYRILLIC.search(text))
    return bool(_LATIN.search(text)) and not _CYRILLIC.search(text)


def _card(persona: Mapping[str, Any] | None) -> dict[str, Any]:
    """Card fields, from a flat dict or a V2/V3 envelope (`{"data": {...}}`)."""
    card: dict[str, Any] = dict(persona or {})
    data = card.get("data")
    if isinstance(data, Mapping):
        card = {**dict(data), **{k: v for k, v in card.items() if k != "data"}}
    return card


def _text(value: Any) -> str:
    return value.strip() if isinstance(value, str) else ""


def _has_any(text: str, needles: Sequence[str]) -> bool:
    """Whole-word (or whole-phrase) match of any needle in lower-cased text."""
    return any(re.search(rf"(?<!\w){re.escape(n)}(?!\w)", text) for n in needles)


def _first_sentences(text: str, count: int = 2, limit: int = 200) -> str:
    parts = [p.strip() for p in _SENTENCE_END.split(" ".join(text.split())) if p.strip()]
    out = ""
    for part in parts[:count]:
        candidate = f"{out} {part}".strip()
        if out and len(candidate) > limit:
            break
        out = candidate
    if len(out) > limit:
        out = out[: limit - 1].rsplit(" ", 1)[0].rstrip(",;:—- ") + "…"
    return out


def _condense(text: str, limit: int = 80) -> str:
    text = " ".join(text.split()).strip(" .!?…,;")
    if len(text) > limit:
        text = text[: limit - 1].rsplit(" ", 1)[0].rstrip(",;:—- ") + "…"
    return text


class DemoWriter:
    """The offline demo writer (`is_demo=True`): persona-flavoured, deterministic replies."""

    is_demo = True
    label = "offline demo writer (no LLM configured)"

    def __init__(self, delay: float = 0.02) -> None:
        self.delay = max(0.0, float(delay))

    def __repr__(self) -> str:
        return f"<DemoWriter delay={self.delay:g}s>"

    # ---------------------------------------------------------------- the API

    async def stream(self, request: LLMRequest) -> AsyncGenerator[str, None]:
        """The composed text, word by word (each delta is a word with its leading space)."""
        words = re.findall(r"\s*\S+", self.compose(request))
        for i, word in enumerate(words):
            if i:
                await asyncio.sleep(self.delay)  # sleep(0) still lets others run
            yield word

    async def complete(self, request: LLMRequest) -> str:
        return self.compose(request)

    async def aclose(self) -> None:
        return None

    # ---------------------------------------------------------- composition

    def compose(self, request: LLMRequest) -> str:
        """The whole answer; the same request always gets the same answer."""
        lang = _language(request.language)
        card = _card(request.persona)
        name = _text(card.get("name")) or "Vitte"
        user_lines = [
            _text(m.get("content"))
            for m in request.messages
            if m.get("role") == "user" and _text(m.get("content"))
        ]
        if request.purpose == "summary":
            return self._summary(user_lines, lang, name)
        if request.purpose == "facts":
            return self._facts(user_lines, lang, name)
        last = user_lines[-1] if user_lines else ""
        seed = hashlib.sha256(f"{last}\x00{len(user_lines)}\x00{name}\x00{lang}".encode()).digest()
        rng = random.Random(int.from_bytes(seed[:8], "big"))
        if not last:
            return self._opening(card, name, lang, rng)
        reply = self._reply(card, name, lang, last, rng)
        if any("<memory_new>" in _text(m.get("content")) for m in request.messages if m.get("role") == "system"):
            # the player asked to remember something (vitte.dialogs.facts): say so, in character
            return f"{rng.choice(_PHRASES[lang]['remembered'])} {reply}"
        return reply

    @staticmethod
    def _facts(user_lines: list[str], lang: str, name: str) -> str:
        """Fact extraction (vitte.dialogs.facts): a JSON array with the player's name when a
        line of theirs says it ("меня зовут …" / "my name is …"), else []."""
        found: list[dict[str, Any]] = []
        for message in user_lines:
            for raw in message.splitlines():
                line = _FACT_LINE.match(raw.strip())
                if line is None or line.group(2).strip().lower() == name.lower():
                    continue
                said = _NAME_IS.search(line.group(3))
                if said is None:
                    continue
                text = (
                    f"Собеседника зовут {said.group(1)}" if lang == "ru" else f"The player's name is {said.group(1)}"
                )
                found.append({"kind": "player", "text": text, "importance": 5, "sources": [int(line.group(1))]})
        return json.dumps(found[-1:], ensure_ascii=False)

    def _opening(self, card: dict[str, Any], name: str, lang: str, rng: random.Random) -> str:
        phrases = _PHRASES[lang]
        greetings = [_text(card.get("first_mes"))]
        alternates = card.get("alternate_greetings")
        if isinstance(alternates, list):
            greetings += [_text(g) for g in alternates]
        fitting = [g for g in greetings if g and _fits(g, lang)]
        if fitting:
            line = self._adapt(rng.choice(fitting), name, card, lang, sentences=3)
            if line:
                return line
        intro = rng.choice(phrases["introduce"]).format(name=name)
        return f"{rng.choice(phrases['greeting'])} {intro} {rng.choice(phrases['follow_up'])}"

    def _reply(
        self, card: dict[str, Any], name: str, lang: str, last: str, rng: random.Random
    ) -> str:
        phrases = _PHRASES[lang]
        kind = self._kind(last)
        keyword = self._keyword(last)
        if kind == "statement" and not keyword:
            kind = "statement_plain"
        pool = phrases[kind]
        if not keyword:
            pool = tuple(p for p in pool if "{kw}" not in p) or phrases["statement_plain"]
        reaction = rng.choice(pool).format(kw=keyword)

        parts: list[str] = []
        if rng.random() < 0.5:
            parts.append(rng.choice(phrases[self._tone(card)]))
        parts.append(reaction)
        voice = self._voice_lines(card, name, lang)
        roll = rng.random()
        if voice and kind != "farewell" and roll < 0.65:
            parts.append(rng.choice(voice))
        elif kind not in ("question", "farewell") and roll < 0.85:
            parts.append(rng.choice(phrases["follow_up"]))
        return " ".join(parts)

    @staticmethod
    def _kind(message: str) -> str:
        text = " ".join(message.lower().replace("ё", "е").split())
        words = _WORD.findall(text)
        first = words[0] if words else ""
        head = " ".join(words[:3])
        if _has_any(head, _FAREWELLS) or _has_any(text, ("спокойной ночи", "good night")):
            return "farewell"
        if _has_any(head, _GREETINGS):
            return "greeting"
        if _has_any(text, _AFFECTION):
            return "affection"
        if _has_any(head, _THANKS):
            return "thanks"
        if text.rstrip().endswith("?") or first in _QUESTION_WORDS:
            return "question"
        return "statement"

    @staticmethod
    def _keyword(message: str) -> str:
        """The most telling word of the player's message (the longest uncommon one)."""
        best, best_score = "", 0
        for word in _WORD.findall(message):
            low = word.lower()
            if len(word) < 4 or low in _STOPWORDS:
                continue
            score = len(word) - (3 if low.endswith(_VERB_ENDINGS) else 0)
            if score > best_score:
                best, best_score = word, score
        return best[:32]

    @staticmethod
    def _tone(card: dict[str, Any]) -> str:
        text = " ".join(_text(card.get(k)) for k in ("personality", "description")).lower()
        for tone, needles in _TONES.items():
            if any(n in text for n in needles):
                return tone
        return "warm"

    def _voice_lines(self, card: dict[str, Any], name: str, lang: str) -> list[str]:
        """The character's own lines from mes_example, adapted, in the reply's language."""
        example = _text(card.get("mes_example"))
        if not example:
            return []
        speakers = {"{{char}}", "<bot>", name.lower()}
        lines: list[str] = []
        for raw in example.splitlines():
            match = _SPEAKER.match(raw)
            if not match or match.group(1).strip().lower() not in speakers:
                continue
            line = self._adapt(match.group(2), name, card, lang, sentences=2)
            if line and line not in lines:
                lines.append(line)
        return lines

    @staticmethod
    def _adapt(text: str, name: str, card: dict[str, Any], lang: str, sentences: int) -> str:
        """Fill {{char}}/{{user}}, shorten; '' when the line does not suit the reply."""
        user = _text(card.get("user_name")) or _text(card.get("user"))
        text = re.sub(r"\{\{char\}\}|<BOT>", name, text, flags=re.IGNORECASE)
        if user:
            text = re.sub(r"\{\{user\}\}|<USER>", user, text, flags=re.IGNORECASE)
        else:  # drop the player's name where it is only an address ("Hi, {{user}}!")
            text = re.sub(r"^\s*(\{\{user\}\}|<USER>)\s*[,!]\s*", "", text, flags=re.IGNORECASE)
            text = re.sub(
                r"(\s*,|(?<=hi|ey|lo|ет|уй))\s*(\{\{user\}\}|<USER>)(?=\s*[.!?…,]|\s*$)",
                "",
                text,
                flags=re.IGNORECASE,
            )
            if re.search(r"\{\{user\}\}|<USER>", text, flags=re.IGNORECASE):
                if lang != "en":
                    return ""
                text = re.sub(r"\{\{user\}\}|<USER>", "you", text, flags=re.IGNORECASE)
        text = text.strip().strip('"').strip()
        if not text or not _fits(text, lang):
            return ""
        text = _first_sentences(text, count=sentences)
        return text[:1].upper() + text[1:]

    @staticmethod
    def _summary(user_lines: list[str], lang: str, name: str) -> str:
        """Extractive: the last few lines of the conversation, condensed.

        Works on plain player messages and on a transcript ("Name: text" lines). When the
        persona's lines can be told apart (speaker = the card's name), only the player's
        lines are kept; otherwise every speaker's, each labelled.
        """
        persona_labels = {name.lower(), "assistant", "{{char}}", "bot", "system"}
        lines: list[tuple[str, str]] = []  # (speaker or "", text)
        for message in user_lines:
            for raw in message.splitlines():
                line = raw.strip()
                if not line or line.endswith(":"):
                    continue
                speaker = ""
                match = _SPEAKER.match(line)
                if match and len(match.group(1).split()) <= 3:
                    speaker, line = match.group(1).strip(), match.group(2).strip()
                text = _condense(line)
                if text:
                    lines.append((speaker, text))
        speakers = {s.lower() for s, _ in lines if s}
        split = bool(speakers & persona_labels)
        left, right = _QUOTES[lang]
        recent: list[str] = []
        for speaker, text in reversed(lines):
            if speaker.lower() in persona_labels:
                continue
            item = f"{left}{text}{right}"
            if speaker and not split and len(speakers) > 1:
                item = f"{speaker} — {item}"
            if item not in recent:
                recent.append(item)
            if len(recent) == 4:
                break
        template, empty = _SUMMARY[lang]
        if not recent:
            return empty
        if not split and len(speakers) > 1:
            template = _SUMMARY_BOTH[lang]
        return template.format(items="; ".join(reversed(recent)))
