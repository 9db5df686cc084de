"""`vitte bench memory` runs end to end (small sizes), reports stable keys, cleans up after itself."""

from __future__ import annotations

import asyncio
import json

from typer.testing import CliRunner

from cli.main import app
from vitte.bench_memory import (
    LANGUAGES,
    MODES,
    PLAYER_BASE,
    TOPICS,
    RecordingLLM,
    fact_text,
    planted_text,
    question_text,
    shared_prefix_tokens,
)
from vitte.config import Settings
from vitte.textsearch import terms

runner = CliRunner()
MODE_KEYS = {
    "questions", "recall_percent", "prompt_tokens_mean", "prompt_tokens_max", "within_context",
    "reused_prefix_percent", "reused_prefix_percent_p10", "reply_ms_p50", "reply_ms_p99",
    "recall_ms_p50", "recall_ms_p99", "sql_round_trips_per_reply",
    "reused_prefix_tokens_percent", "reused_prefix_tokens_percent_p10", "recall_messages_percent",
    "recall_facts_percent", "facts_stored", "facts_prompt_tokens_mean", "facts_prompt_tokens_max",
    "facts_ms_p50", "facts_ms_p99", "facts_reloads", "facts_extractions",
    "facts_extraction_sql_round_trips_per_reply",
}  # fmt: skip


def env(settings: Settings) -> dict[str, str]:
    out = {"VITTE_DATABASE_URL": settings.database_url}
    if settings.redis_url:
        out |= {"VITTE_REDIS_URL": settings.redis_url, "VITTE_REDIS_PREFIX": settings.redis_prefix}
    return out


def test_each_question_names_its_fact_in_another_word_form() -> None:
    for lang in LANGUAGES:
        for i, (a, b) in enumerate(TOPICS[lang]):
            assert a not in question_text(lang, i).split()  # another form, not the same word
            assert set(terms(planted_text(lang, i, 1), lang)) & set(terms(question_text(lang, i), lang)), (a, b)


def test_the_reused_prefix_is_counted_in_prompt_tokens() -> None:
    a = [{"role": "system", "content": "x" * 300}, {"role": "user", "content": "y" * 90 + "old"}]
    b = [{"role": "system", "content": "x" * 300}, {"role": "user", "content": "y" * 90 + "new!"}]
    # the system message whole (300 // 3 + 4), the user message's 90 shared characters (90 // 3 + 4)
    assert shared_prefix_tokens(a, b) == (104 + 34, 104 + 35)
    assert shared_prefix_tokens([], b) == (0, 139)
    assert shared_prefix_tokens(b, b) == (139, 139)
    assert shared_prefix_tokens([{"role": "user", "content": "x" * 300}], b)[0] == 0  # another role


def test_the_bench_llm_extracts_the_planted_lines_as_facts_the_parser_reads() -> None:
    from vitte.cache.base import CachedMessage
    from vitte.dialogs.facts import extraction_messages, parse_extraction

    llm = RecordingLLM()
    planted = planted_text("ru", 12, 1042)
    llm.facts = {planted: (fact_text("ru", 12, 1042), 4)}
    turns = [CachedMessage(7, "user", "Обними меня."), CachedMessage(8, "user", planted), CachedMessage(9, "assistant", "Как интересно!")]
    facts = parse_extraction(llm.extraction_answer(extraction_messages("Мила", "Аня", "ru", [], turns)))
    assert [(f.text, f.importance, f.sources) for f in facts] == [(fact_text("ru", 12, 1042), 4, (8,))]
    assert parse_extraction(llm.extraction_answer(extraction_messages("Мила", "Аня", "ru", [], turns[:1]))) == []


def test_bench_memory_reports_both_memories_in_both_languages(backend_settings: Settings, redis_cleanup_if_any: None) -> None:
    res = runner.invoke(app, ["bench", "memory", "--turns", "200", "--facts", "5", "--json"], env=env(backend_settings))
    assert res.exit_code == 0, res.output
    data = json.loads(res.stdout)
    assert data["turns"] == 200 and data["facts"] == 5 and data["messages_per_dialog"] == 401
    assert data["facts_on"] is True and data["facts_every"] == 8
    assert data["store"] == ("sqlite" if backend_settings.is_sqlite else "postgresql")
    assert set(data["languages"]) == set(LANGUAGES)
    for lang, modes in data["languages"].items():
        assert set(modes) == {
            *MODES, "added_ms_p50", "added_ms_p99", "reply_ms_p50_difference", "reply_ms_p99_difference",
            "extra_sql_round_trips_per_reply",
        }  # fmt: skip
        assert modes["added_ms_p99"] == modes["memory"]["recall_ms_p99"] >= modes["added_ms_p50"] >= 0
        for mode in MODES:
            assert set(modes[mode]) == MODE_KEYS and modes[mode]["questions"] == 5
            assert 0.0 <= modes[mode]["recall_percent"] <= 100.0
            assert 0.0 <= modes[mode]["reused_prefix_percent"] <= 100.0
            assert 0.0 < modes[mode]["reused_prefix_tokens_percent"] <= 100.0
            assert modes[mode]["within_context"] is True
        mem, base = modes["memory"], modes["summary_only"]
        # the planted facts lie before the window: only recall (the message) or the facts bring them back
        assert base["recall_percent"] == base["recall_facts_percent"] == 0.0, lang
        assert mem["recall_percent"] > base["recall_percent"], lang
        assert mem["recall_percent"] >= max(mem["recall_messages_percent"], mem["recall_facts_percent"]) > 0.0
        # each planted line was extracted as its fact along the way; they are in the prompts
        assert mem["facts_stored"] == 5 and base["facts_stored"] == 0
        assert mem["facts_prompt_tokens_mean"] > 0 and base["facts_prompt_tokens_mean"] == 0
        assert mem["facts_reloads"] == 0  # read once at the warm reply: no SQL on the replies' path
        assert mem["facts_extractions"] == 0  # 5 questions: fewer than VITTE_MEMORY_FACTS_EVERY
        if not backend_settings.is_sqlite:  # the one allowed extra round trip: the recall query
            assert modes["extra_sql_round_trips_per_reply"] == 1.0
    assert {k.split(".", 1)[1] for k in data["targets"]} == {
        "recall_percent", "prompt_tokens_max", "reused_prefix_percent", "reused_prefix_tokens_percent",
        "added_ms_p99", "extra_sql_round_trips_per_reply",
    }  # fmt: skip
    # without facts: recall of messages alone, no fact stored or in a prompt
    res = runner.invoke(
        app, ["bench", "memory", "--turns", "40", "--facts", "3", "--no-facts", "--json"], env=env(backend_settings)
    )
    assert res.exit_code == 0, res.output
    data = json.loads(res.stdout)
    assert data["facts_on"] is False and data["facts_every"] == 0
    for modes in data["languages"].values():
        mem = modes["memory"]
        assert mem["facts_stored"] == 0 and mem["recall_facts_percent"] == 0.0 and mem["facts_prompt_tokens_max"] == 0
        assert mem["recall_percent"] == mem["recall_messages_percent"] > 0.0

    async def left() -> int:
        from sqlalchemy import func, select
        from sqlmodel import col

        from vitte.core import Core
        from vitte.models import User

        core = await Core.open(backend_settings)
        try:
            async with core.db.session() as s:
                return int((await s.execute(select(func.count()).where(col(User.id) >= PLAYER_BASE))).scalar() or 0)
        finally:
            await core.close()

    assert asyncio.run(left()) == 0


def test_bench_memory_bad_sizes_and_the_hot_path_bench_keeps_its_flags(sqlite_url: str) -> None:
    res = runner.invoke(app, ["bench", "memory", "--facts", "51"], env={"VITTE_DATABASE_URL": sqlite_url})
    assert res.exit_code == 2 and "--facts" in res.output and "Traceback" not in res.output
    res = runner.invoke(app, ["bench", "memory", "--turns", "5"], env={"VITTE_DATABASE_URL": sqlite_url})
    assert res.exit_code == 2
    res = runner.invoke(app, ["bench", "--players", "0"], env={"VITTE_DATABASE_URL": sqlite_url})
    assert res.exit_code == 2  # today's `vitte bench` and its checks are unchanged
    assert "--overhead-messages" in runner.invoke(app, ["bench", "--help"]).output
