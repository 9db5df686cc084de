"""`vitte bench memory`: how well recall brings back what was said long ago, and what it costs.

For each language (ru, en) and each of two memories — `memory` (recall on: the window and the
recalled block; and the facts, below) and `summary_only` (today's memory before recall and
facts: the recent messages and the summary) — the bench writes a long synthetic dialog to the configured store: `turns` exchanges
of ordinary chatter with `facts` planted player messages at random points (the same dialog for
both memories), a summary folded up to the last few messages (as the fold leaves it), then asks,
for each planted fact, a question that names its subject in another word form ("кошка" →
"о кошке", "dog" → "dogs") with other words around it. Each question is a real reply through
the engine (`DialogEngine.reply`: the turn, the store, the cache, the prompt) with an instant
in-process LLM that records the prompt it gets. Reported per language and memory:

- recall: the share of questions whose prompt holds the planted message or its fact (the
  issue's definition), and each apart (`recall_messages_percent`, `recall_facts_percent`);
- prompt tokens (mean, max; `estimate_tokens`) against VITTE_LLM_CONTEXT_TOKENS;
- reused prefix: the share of each prompt's tokens (`estimate_tokens`, message by message as
  the provider sees them) identical to the start of the previous reply's prompt
  (`reused_prefix_tokens_percent`); `reused_prefix_percent` is the same in characters (kept for
  JSON readers);
- reply time p50/p99 (the engine's whole reply, LLM instant) and the memory step's own time
  (the facts' part, the window, the recall query, the block: what memory adds to the handler,
  `added_ms_*`; `facts_ms_*` the facts' part alone);
- SQL round trips per reply (`vitte.bench.SqlCounter`: statements, BEGIN/COMMIT/ROLLBACK, pings),
  and apart, those of the background fact extractions the replies started.

Facts (VITTE_MEMORY_FACTS_EVERY, default 8) are on in the `memory` mode unless `facts_on` is
off (`--no-facts`): the history is written in steps of that many exchanges, each followed by
the real extraction (`Factbook.extract`), whose LLM call the bench's LLM answers as a model
would: each planted line becomes a fact in other words, chatter none; so the prompts carry the
pinned facts and the facts relevant to each question, and what they cost is reported
(`facts_*`). During the questions, extractions run in the background as in production (drained
after each reply, outside its timing and its round trips). `summary_only` has no facts (today's
memory before recall and facts). Bench players have ids from `PLAYER_BASE` (beyond any
Telegram id); they, their dialogs, messages and facts are deleted at the end unless `keep`.
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from vitte.bench import BENCH_ID_BASE, SqlCounter, _pct
from vitte.config import Settings
from vitte.dialogs.facts import extraction_lines
from vitte.llm.base import LLMRequest
from vitte.prompt import estimate_tokens

PLAYER_BASE = BENCH_ID_BASE + 2**30  # apart from `vitte bench`'s players
LANGUAGES = ("ru", "en")
MODES = ("memory", "summary_only")
KEEP_UNFOLDED = 16  # messages after the summary's end, as a fold leaves them
TARGETS = {
    "recall_percent": 90.0,  # memory on, each language (lexical recall alone)
    "reused_prefix_percent": 80.0,
    "added_ms_p99": 5.0,
    "extra_sql_round_trips_per_reply": 1.0,
}

# a subject named one way in the planted message and another way in the question
TOPICS: dict[str, list[tuple[str, str]]] = {
    "ru": [
        ("собака", "собаке"), ("машина", "машине"), ("бабушка", "бабушке"), ("квартира", "квартире"),
        ("книга", "книге"), ("гитара", "гитаре"), ("дача", "даче"), ("сестра", "сестре"), ("школа", "школе"),
        ("подруга", "подруге"), ("поездка", "поездке"), ("картина", "картине"), ("кошка", "кошке"),
        ("лодка", "лодке"), ("свадьба", "свадьбе"), ("выставка", "выставке"), ("операция", "операции"),
        ("учительница", "учительнице"), ("татуировка", "татуировке"), ("рыбалка", "рыбалке"),
        ("пекарня", "пекарне"), ("библиотека", "библиотеке"), ("тренировка", "тренировке"),
        ("соседка", "соседке"), ("фотография", "фотографии"), ("скрипка", "скрипке"),
        ("велосипед", "велосипеде"), ("концерт", "концерте"), ("отпуск", "отпуске"), ("юбилей", "юбилее"),
        ("брат", "брате"), ("дедушка", "дедушке"), ("аквариум", "аквариуме"), ("огород", "огороде"),
        ("ремонт", "ремонте"), ("сертификат", "сертификате"), ("попугай", "попугае"),
        ("компьютер", "компьютере"), ("балкон", "балконе"), ("театр", "театре"), ("музей", "музее"),
        ("поезд", "поезде"), ("рюкзак", "рюкзаке"), ("начальник", "начальнике"), ("кофейня", "кофейне"),
        ("кольцо", "кольце"), ("письмо", "письме"), ("озеро", "озере"), ("люстра", "люстре"),
        ("ноутбук", "ноутбуке"),
    ],
    "en": [
        ("dog", "dogs"), ("car", "cars"), ("grandmother", "grandmothers"), ("apartment", "apartments"),
        ("book", "books"), ("guitar", "guitars"), ("cottage", "cottages"), ("sister", "sisters"),
        ("school", "schools"), ("friend", "friends"), ("journey", "journeys"), ("painting", "paintings"),
        ("cat", "cats"), ("boat", "boats"), ("wedding", "weddings"), ("exhibition", "exhibitions"),
        ("operation", "operations"), ("teacher", "teachers"), ("tattoo", "tattoos"),
        ("fishing trip", "fishing trips"), ("bakery", "bakeries"), ("library", "libraries"),
        ("workout", "workouts"), ("neighbour", "neighbours"), ("photograph", "photographs"),
        ("violin", "violins"), ("bicycle", "bicycles"), ("concert", "concerts"), ("holiday", "holidays"),
        ("diploma", "diplomas"), ("brother", "brothers"), ("grandfather", "grandfathers"),
        ("aquarium", "aquariums"), ("garden", "gardens"), ("renovation", "renovations"), ("exam", "exams"),
        ("parrot", "parrots"), ("computer", "computers"), ("balcony", "balconies"), ("theatre", "theatres"),
        ("museum", "museums"), ("train", "trains"), ("suitcase", "suitcases"), ("boss", "bosses"),
        ("restaurant", "restaurants"), ("ring", "rings"), ("letter", "letters"), ("lake", "lakes"),
        ("mirror", "mirrors"), ("piano", "pianos"),
    ],
}  # fmt: skip
PLANTED = {
    "ru": "Расскажу тебе одну вещь: {a} — это для меня история номер {code}.",
    "en": "Here is something personal: my {a} has a story, number {code}.",
}
FACT = {  # what the extraction makes of a planted line: the same subject, other words
    "ru": "У Ани есть {a}; с этим связана её история под номером {code}.",
    "en": "Ann has a {a}; it comes with her story numbered {code}.",
}
QUESTION = {"ru": "Помнишь, что я говорила о {b}?", "en": "Do you recall what I said about my {b}?"}
CHATTER = {
    "ru": (
        "Как прошёл твой вечер?", "Мне сегодня немного грустно.", "Ты умеешь поднять настроение.",
        "Расскажи что-нибудь смешное.", "Я только что вернулась домой.", "На улице идёт дождь.",
        "Хочется тепла и уюта.", "Ты сегодня особенно милая.", "Я пью горячий чай.", "Давай просто поболтаем.",
        "Мне нравится твой голос.", "Устала за день.", "Что ты делаешь?", "Обними меня.", "Скоро выходные!",
        "Люблю такие тихие вечера.", "Мне снился странный сон.", "Ты самая добрая.",
        "Я улыбаюсь, когда ты пишешь.", "Уже почти ночь.",
    ),
    "en": (
        "How was your evening?", "I feel a bit sad today.", "You always cheer me up.", "Tell me something funny.",
        "I just got home.", "It is raining outside.", "I want something warm and cozy.", "You look lovely today.",
        "I am drinking hot tea.", "Let us just chat.", "I like your voice.", "Tired after the day.",
        "What are you doing?", "Hug me.", "The weekend is coming!", "I love quiet evenings like this.",
        "I had a strange dream.", "You are so kind.", "I smile when you write.", "Almost bedtime.",
    ),
}  # fmt: skip
PERSONA_CHATTER = {
    "ru": ("Я рядом, рассказывай.", "Мне приятно тебя слышать.", "*улыбается* Продолжай.", "Как интересно!", "Я скучала по тебе."),
    "en": ("I am here, go on.", "It is lovely to hear from you.", "*smiles* Go on.", "How interesting!", "I missed you."),
}  # fmt: skip
SUMMARY = {
    "ru": "Они давно переписываются по вечерам: делятся настроением, погодой и мелочами дня; между ними тепло и доверие.",
    "en": "They have been writing to each other in the evenings for a long time: moods, weather, small things; warmth and trust.",
}
REPLY = {"ru": "Конечно помню, расскажи ещё.", "en": "Of course I do, tell me more."}


@dataclass
class MemoryBenchConfig:
    turns: int = 2000
    facts: int = 50
    seed: int = 16
    keep: bool = False
    facts_on: bool = True  # fact extraction in the `memory` mode (`--no-facts`: recall alone)

    def check(self) -> None:
        if self.turns < 20:
            raise ValueError("--turns must be at least 20")
        most = min(len(t) for t in TOPICS.values())
        if not 1 <= self.facts <= most:
            raise ValueError(
                f"--facts must be between 1 and {most} (the issue's size; one distinct subject per fact "
                "and language, so each question names one planted fact)"
            )
        if self.facts > self.turns // 4:
            raise ValueError("--facts must be at most a quarter of --turns")


@dataclass
class ModeResult:
    questions: int = 0
    recalled: int = 0
    recalled_messages: int = 0
    recalled_facts: int = 0
    prompt_tokens: list[int] = field(default_factory=list)
    reused: list[float] = field(default_factory=list)
    reused_tokens: list[float] = field(default_factory=list)
    reply_s: list[float] = field(default_factory=list)
    recall_s: list[float] = field(default_factory=list)  # the memory step: facts + recall
    facts_s: list[float] = field(default_factory=list)
    facts_tokens: list[int] = field(default_factory=list)  # the facts' blocks in each prompt
    round_trips: int = 0
    extraction_round_trips: int = 0
    extractions: int = 0
    facts_reloads: int = 0
    facts_stored: int = 0

    def to_json(self, context: int) -> dict[str, Any]:
        n = max(self.questions, 1)
        return {
            "questions": self.questions,
            "recall_percent": round(100.0 * self.recalled / n, 1),
            "prompt_tokens_mean": round(sum(self.prompt_tokens) / max(len(self.prompt_tokens), 1), 1),
            "prompt_tokens_max": max(self.prompt_tokens, default=0),
            "within_context": max(self.prompt_tokens, default=0) <= context,
            "reused_prefix_percent": round(100.0 * sum(self.reused) / max(len(self.reused), 1), 1),
            "reused_prefix_percent_p10": round(100.0 * _pct(self.reused, 0.10), 1),
            "reused_prefix_tokens_percent": round(
                100.0 * sum(self.reused_tokens) / max(len(self.reused_tokens), 1), 1
            ),
            "reused_prefix_tokens_percent_p10": round(100.0 * _pct(self.reused_tokens, 0.10), 1),
            "reply_ms_p50": round(_pct(self.reply_s, 0.5) * 1000, 3),
            "reply_ms_p99": round(_pct(self.reply_s, 0.99) * 1000, 3),
            "recall_ms_p50": round(_pct(self.recall_s, 0.5) * 1000, 3),
            "recall_ms_p99": round(_pct(self.recall_s, 0.99) * 1000, 3),
            "sql_round_trips_per_reply": round(self.round_trips / n, 2),
            "recall_messages_percent": round(100.0 * self.recalled_messages / n, 1),
            "recall_facts_percent": round(100.0 * self.recalled_facts / n, 1),
            "facts_stored": self.facts_stored,
            "facts_prompt_tokens_mean": round(sum(self.facts_tokens) / max(len(self.facts_tokens), 1), 1),
            "facts_prompt_tokens_max": max(self.facts_tokens, default=0),
            "facts_ms_p50": round(_pct(self.facts_s, 0.5) * 1000, 3),
            "facts_ms_p99": round(_pct(self.facts_s, 0.99) * 1000, 3),
            "facts_reloads": self.facts_reloads,
            "facts_extractions": self.extractions,
            "facts_extraction_sql_round_trips_per_reply": round(self.extraction_round_trips / n, 2),
        }




class RecordingLLM:
    """An instant LLM that keeps the last prompt it was sent, folds summaries, and answers fact
    extractions (the JSON array `vitte.dialogs.facts.parse_extraction` reads) as a model would:
    each planted line in the <new_lines> block becomes its fact (`facts`: planted text → fact
    text and importance), chatter nothing."""

    label = "bench memory writer (in process)"
    is_demo = False

    def __init__(self) -> None:
        self.last: list[dict[str, str]] = []
        self.facts: dict[str, tuple[str, int]] = {}
        self.extractions = 0

    async def stream(self, request: LLMRequest) -> AsyncIterator[str]:
        self.last = request.messages
        yield REPLY.get(request.language, REPLY["en"])

    async def complete(self, request: LLMRequest) -> str:
        if request.purpose == "facts":
            self.extractions += 1
            return self.extraction_answer(request.messages)
        return SUMMARY.get(request.language, SUMMARY["en"])

    def extraction_answer(self, messages: Sequence[dict[str, str]]) -> str:
        found: list[dict[str, Any]] = []
        for ref, line in extraction_lines(messages) or []:
            fact = self.facts.get(line.strip())
            if fact is not None:
                found.append({"kind": "player", "text": fact[0], "importance": fact[1], "sources": [ref]})
        return json.dumps(found, ensure_ascii=False)

    async def aclose(self) -> None:
        return None


class _SummaryOnly:
    """Today's memory before recall: the history as it is, nothing recalled, no query."""

    def __init__(self, real: Any) -> None:
        self.real = real

    async def prompt_parts(
        self, dialog_id: int, summary_upto: int, language: str, history: Sequence[Any], *a: Any, **kw: Any
    ) -> Any:
        from vitte.dialogs.recall import PromptParts

        return PromptParts(list(history))


def serialized(messages: Sequence[dict[str, str]]) -> str:
    """The prompt as a provider's prefix cache sees it: the messages in order."""
    return "".join(f"\x00{m['role']}\x00{m['content']}" for m in messages)


def shared_prefix(a: str, b: str) -> int:
    """How many characters the two strings share at their start."""
    n, i = min(len(a), len(b)), 0
    while i < n and a[i : i + 256] == b[i : i + 256]:
        i += 256
    i = min(i, n)
    while i < n and a[i] == b[i]:
        i += 1
    return i


def shared_prefix_tokens(
    previous: Sequence[dict[str, str]], prompt: Sequence[dict[str, str]]
) -> tuple[int, int]:
    """(the tokens of `prompt` identical to the start of `previous`, all its tokens), counted
    as the bench counts prompt tokens: `estimate_tokens` per message; the first message that
    differs counts the tokens of its shared start (same role) and ends the prefix."""
    total = sum(estimate_tokens(m["content"]) for m in prompt)
    shared = 0
    for old, new in zip(previous, prompt, strict=False):
        if old["role"] != new["role"]:
            break
        if old["content"] == new["content"]:
            shared += estimate_tokens(new["content"])
            continue
        common = shared_prefix(old["content"], new["content"])
        if common:
            shared += min(estimate_tokens(new["content"][:common]), estimate_tokens(new["content"]))
        break
    return shared, total


def planted_text(lang: str, i: int, code: int) -> str:
    return PLANTED[lang].format(a=TOPICS[lang][i][0], code=code)


def fact_text(lang: str, i: int, code: int) -> str:
    return FACT[lang].format(a=TOPICS[lang][i][0], code=code)


def question_text(lang: str, i: int) -> str:
    return QUESTION[lang].format(b=TOPICS[lang][i][1])


class _MemoryBench:
    def __init__(
        self, settings: Settings, config: MemoryBenchConfig, progress: Callable[[str], None]
    ) -> None:
        self.settings = settings.model_copy(
            update={
                "memory_facts_every": (settings.memory_facts_every or 8) if config.facts_on else 0,
                "rate_limit_per_minute": 0,
                "free_daily_replies": 1_000_000,
                "memory_recall": settings.memory_recall or 4,
            }
        )
        self.config = config
        self.progress = progress
        self.llm = RecordingLLM()

    async def run(self) -> dict[str, Any]:
        from vitte.core import Core

        core = await Core.open(self.settings, llm=self.llm, seed_if_empty=True)
        try:
            await self._cleanup(core)
            languages: dict[str, Any] = {}
            for li, lang in enumerate(LANGUAGES):
                rng = random.Random(f"{self.config.seed}:{lang}")
                plan = self._plan(rng, lang)
                per_mode: dict[str, Any] = {}
                for mi, mode in enumerate(MODES):
                    user_id = PLAYER_BASE + li * 2 + mi
                    extract = mode == "memory" and self.settings.memory_facts_every > 0
                    self.progress(
                        f"{lang}/{mode}: writing {self.config.turns} turns{' (facts extracted)' if extract else ''} …"
                    )
                    dialog_id, planted = await self._write_dialog(core, user_id, lang, plan, extract)
                    self.progress(f"{lang}/{mode}: asking {self.config.facts} questions …")
                    result = await self._ask(core, user_id, dialog_id, lang, mode, plan, planted)
                    per_mode[mode] = result.to_json(self.settings.llm_context_tokens)
                mem, base = per_mode["memory"], per_mode["summary_only"]
                # the handler time memory adds: its own step on the reply's path (the window, the
                # recall query, the block), timed per reply; the difference of the two modes'
                # whole-reply percentiles is reported too, but on a busy machine it is mostly noise
                per_mode["added_ms_p50"] = mem["recall_ms_p50"]
                per_mode["added_ms_p99"] = mem["recall_ms_p99"]
                per_mode["reply_ms_p50_difference"] = round(mem["reply_ms_p50"] - base["reply_ms_p50"], 3)
                per_mode["reply_ms_p99_difference"] = round(mem["reply_ms_p99"] - base["reply_ms_p99"], 3)
                per_mode["extra_sql_round_trips_per_reply"] = round(
                    mem["sql_round_trips_per_reply"] - base["sql_round_trips_per_reply"], 2
                )
                languages[lang] = per_mode
            result_json = {
                "store": core.db.engine.dialect.name,
                "cache": core.cache.name,
                "turns": self.config.turns,
                "facts": self.config.facts,
                "messages_per_dialog": 2 * self.config.turns + 1,
                "context_tokens": self.settings.llm_context_tokens,
                "recall_limit": self.settings.memory_recall,
                "facts_every": self.settings.memory_facts_every,
                "facts_on": self.settings.memory_facts_every > 0,
                "languages": languages,
            }
            result_json["targets"] = targets(result_json)
            return result_json
        finally:
            if not self.config.keep:
                await self._cleanup(core)
            await core.close()

    def _plan(self, rng: random.Random, lang: str) -> dict[str, Any]:
        """Where each fact is planted (a turn in the first 90 %), in which order the questions come."""
        turns, facts = self.config.turns, self.config.facts
        at = rng.sample(range(turns * 9 // 10), facts)
        topics = rng.sample(range(len(TOPICS[lang])), facts)
        chatter = [rng.randrange(len(CHATTER[lang])) for _ in range(turns)]
        replies = [rng.randrange(len(PERSONA_CHATTER[lang])) for _ in range(turns)]
        order = list(range(facts))
        rng.shuffle(order)
        importance = {topic: rng.randint(2, 4) for topic in topics}  # drawn last: the rest as before
        return {
            "at": dict(zip(at, topics, strict=True)),
            "chatter": chatter,
            "replies": replies,
            "order": order,
            "topics": topics,
            "importance": importance,
        }

    async def _write_dialog(
        self, core: Any, user_id: int, lang: str, plan: dict[str, Any], extract: bool = False
    ) -> tuple[int, dict[int, tuple[str, str]]]:
        """The player, their dialog (through the engine) and the synthetic history (bulk; with
        `extract`, in steps of VITTE_MEMORY_FACTS_EVERY exchanges, each followed by the real fact
        extraction), the summary folded up to KEEP_UNFOLDED messages from the end; the planted
        messages and their facts by topic."""
        from sqlalchemy import insert, select, text, update
        from sqlmodel import col

        from vitte.models import ASSISTANT, USER, Dialog, Message, table_of

        await core.players.seen(user_id, first_name="Ann" if lang == "en" else "Аня", language_code=lang)
        await core.players.confirm_adult(user_id)
        persona = next(p for p in await core.catalog.personas() if p.stories)
        opening = await core.dialogs.choose(user_id, persona.id, persona.stories[0].id, language_code=lang)
        dialog_id = int(opening.dialog.id)
        start = datetime.now(UTC) - timedelta(days=60)
        step = timedelta(days=59) / max(self.config.turns, 1)
        rows: list[dict[str, Any]] = []
        for t in range(self.config.turns):
            topic = plan["at"].get(t)
            code = 1000 + t
            player = (
                planted_text(lang, topic, code) if topic is not None else CHATTER[lang][plan["chatter"][t]]
            )
            when = start + step * t
            rows.append(
                {"dialog_id": dialog_id, "role": USER, "text": player, "status": "ok", "created_at": when}
            )
            rows.append(
                {"dialog_id": dialog_id, "role": ASSISTANT, "text": PERSONA_CHATTER[lang][plan["replies"][t]],
                 "status": "ok", "created_at": when + timedelta(seconds=20)}
            )  # fmt: skip
        messages = table_of(Message)
        planted = {
            topic: (planted_text(lang, topic, 1000 + t), fact_text(lang, topic, 1000 + t))
            for t, topic in plan["at"].items()
        }
        self.llm.facts = {text: (fact, plan["importance"][topic]) for topic, (text, fact) in planted.items()}
        factbook = core.dialogs.replies.facts
        chunk = 2 * self.settings.memory_facts_every if extract and factbook is not None else 1000
        for i in range(0, len(rows), chunk):
            async with core.db.session() as s:
                await s.execute(insert(messages), rows[i : i + chunk])
                await s.commit()
            if extract and factbook is not None:
                await factbook.extract(dialog_id)
        async with core.db.session() as s:
            ids = [
                int(i)
                for (i,) in (
                    await s.execute(
                        select(col(Message.id))
                        .where(col(Message.dialog_id) == dialog_id)
                        .order_by(col(Message.id))
                    )
                ).all()
            ]
            upto = ids[-KEEP_UNFOLDED - 1]
            await s.execute(
                update(Dialog)
                .where(col(Dialog.id) == dialog_id)
                .values(summary=SUMMARY[lang], summary_upto=upto)
            )
            await s.commit()
        await core.cache.recent_drop(dialog_id)
        core.dialogs.turns.forget(user_id)
        if core.db.engine.dialect.name == "sqlite":
            # the FTS5 index caught up, as `vitte memory reindex` does
            await core.dialogs.replies.recall.store.reindex_dialog(dialog_id, lang)
        else:
            # after a bulk load: statistics and the visibility map as autovacuum keeps them for a
            # live table (and no autovacuum of the load competing with the measurement)
            async with core.db.engine.connect() as conn:
                live = await conn.execution_options(isolation_level="AUTOCOMMIT")
                await live.execute(text("VACUUM ANALYZE messages"))
        return dialog_id, planted

    async def _ask(
        self,
        core: Any,
        user_id: int,
        dialog_id: int,
        lang: str,
        mode: str,
        plan: dict[str, Any],
        planted_texts: dict[int, tuple[str, str]],
    ) -> ModeResult:
        replies = core.dialogs.replies
        real = replies.recall
        factbook = replies.facts
        result = ModeResult()
        step = {"recall": 0.0, "facts": 0.0, "facts_tokens": 0}  # the current reply's memory step
        deferred: list[tuple[tuple[Any, ...], dict[str, Any]]] = []
        if mode == "summary_only":
            replies.recall = _SummaryOnly(real)
            replies.facts = None  # today's memory before recall and facts
        else:
            original = real.prompt_parts

            async def timed(*a: Any, **kw: Any) -> Any:
                started = time.perf_counter()
                try:
                    return await original(*a, **kw)
                finally:
                    step["recall"] += time.perf_counter() - started

            real.prompt_parts = timed
            if factbook is not None:
                facts_original = factbook.prompt_parts

                async def facts_timed(*a: Any, **kw: Any) -> Any:
                    started = time.perf_counter()
                    try:
                        parts = await facts_original(*a, **kw)
                    finally:
                        step["facts"] += time.perf_counter() - started
                    step["facts_tokens"] += sum(estimate_tokens(p) for p in parts if p)
                    return parts

                factbook.prompt_parts = facts_timed
                # the extraction a reply starts runs in the background, off the reply's path: the
                # bench starts it once the reply is measured (else its first statements, run while
                # the reply releases its turn, would count as the reply's round trips)
                maybe_extract = factbook.maybe_extract

                def extract_after_the_reply(*a: Any, **kw: Any) -> None:
                    deferred.append((a, kw))

                factbook.maybe_extract = extract_after_the_reply
        counter = SqlCounter(core.db.engine, core.db.raw_statements)
        hot = getattr(core.db, "hot_engine", None)
        hot_counter = SqlCounter(hot, [0]) if hot is not None else None

        def round_trips() -> int:
            return counter.snapshot().round_trips + (hot_counter.snapshot().round_trips if hot_counter else 0)

        async def drain() -> None:
            if factbook is not None and mode != "summary_only":
                for a, kw in deferred:
                    maybe_extract(*a, **kw)
                deferred.clear()
                await factbook.drain()

        previous = ""
        previous_prompt: list[dict[str, str]] = []
        try:
            # warm: the first reply opens connections and compiles statements (and reads the facts)
            await core.dialogs.reply(user_id, CHATTER[lang][0])
            await drain()
            previous, previous_prompt = serialized(self.llm.last), list(self.llm.last)
            reloads = factbook.reloads if factbook is not None else 0
            extractions = self.llm.extractions
            for q in plan["order"]:
                topic = plan["topics"][q]
                step.update(recall=0.0, facts=0.0, facts_tokens=0)
                before = round_trips()
                started = time.perf_counter()
                await core.dialogs.reply(user_id, question_text(lang, topic))
                result.reply_s.append(time.perf_counter() - started)
                after = round_trips()
                result.round_trips += after - before
                # the extraction a reply started runs in the background: its round trips apart
                await drain()
                result.extraction_round_trips += round_trips() - after
                result.recall_s.append(step["recall"] + step["facts"])
                result.facts_s.append(step["facts"])
                result.facts_tokens.append(int(step["facts_tokens"]))
                prompt = list(self.llm.last)
                text = serialized(prompt)
                result.questions += 1
                planted, fact = planted_texts[topic]
                message_in = any(planted in m["content"] for m in prompt)
                fact_in = any(fact in m["content"] for m in prompt)
                result.recalled += int(message_in or fact_in)
                result.recalled_messages += int(message_in)
                result.recalled_facts += int(fact_in)
                result.prompt_tokens.append(sum(estimate_tokens(m["content"]) for m in prompt))
                result.reused.append(shared_prefix(previous, text) / max(len(text), 1))
                shared, total = shared_prefix_tokens(previous_prompt, prompt)
                result.reused_tokens.append(shared / max(total, 1))
                previous, previous_prompt = text, prompt
            if factbook is not None and mode != "summary_only":
                result.facts_reloads = factbook.reloads - reloads
                result.facts_stored = len(await factbook.store.live(dialog_id))
            result.extractions = self.llm.extractions - extractions
        finally:
            counter.close()
            if hot_counter is not None:
                hot_counter.close()
            replies.recall = real
            replies.facts = factbook
            if mode != "summary_only":
                del real.prompt_parts
                for name in ("prompt_parts", "maybe_extract"):
                    if factbook is not None and name in vars(factbook):
                        delattr(factbook, name)
        return result

    async def _cleanup(self, core: Any) -> None:
        from sqlalchemy import delete, select
        from sqlmodel import col

        from vitte.models import Dialog, User

        lo, hi = PLAYER_BASE, PLAYER_BASE + 1000
        async with core.db.session() as s:
            dialogs = list(
                (await s.execute(select(col(Dialog.id)).where(col(Dialog.user_id).between(lo, hi)))).scalars()
            )
            await s.execute(delete(User).where(col(User.id).between(lo, hi)))  # dialogs, messages cascade
            await s.commit()
        for d in dialogs:
            await core.cache.recent_drop(int(d or 0))
        for u in range(lo, lo + 2 * len(LANGUAGES)):
            core.dialogs.turns.forget(u)


def targets(result: dict[str, Any]) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for lang, modes in result["languages"].items():
        mem = modes["memory"]
        out[f"{lang}.recall_percent"] = {
            "value": mem["recall_percent"],
            "target": TARGETS["recall_percent"],
            "kind": "min",
        }
        out[f"{lang}.prompt_tokens_max"] = {
            "value": mem["prompt_tokens_max"],
            "target": result["context_tokens"],
            "kind": "max",
        }
        out[f"{lang}.reused_prefix_percent"] = {
            "value": mem["reused_prefix_percent"],
            "target": TARGETS["reused_prefix_percent"],
            "kind": "min",
        }
        out[f"{lang}.reused_prefix_tokens_percent"] = {
            "value": mem["reused_prefix_tokens_percent"],
            "target": TARGETS["reused_prefix_percent"],
            "kind": "min",
        }
        out[f"{lang}.added_ms_p99"] = {
            "value": modes["added_ms_p99"],
            "target": TARGETS["added_ms_p99"],
            "kind": "max",
        }
        out[f"{lang}.extra_sql_round_trips_per_reply"] = {
            "value": modes["extra_sql_round_trips_per_reply"],
            "target": TARGETS["extra_sql_round_trips_per_reply"],
            "kind": "max",
        }
    for check in out.values():
        check["ok"] = (
            check["value"] >= check["target"] if check["kind"] == "min" else check["value"] <= check["target"]
        )
    return out


async def run_memory_bench(
    settings: Settings, config: MemoryBenchConfig | None = None, progress: Callable[[str], None] | None = None
) -> dict[str, Any]:
    """Run the memory benchmark on the configured store and cache; see the module docstring."""
    return await _MemoryBench(settings, config or MemoryBenchConfig(), progress or (lambda _m: None)).run()
