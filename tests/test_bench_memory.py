"""`vitte bench memory` runs end to end (small sizes), reports stable keys, cleans up after itself."""

from __future__ import annotations

import asyncio
import json

from typer.testing import CliRunner

from cli.main import app
from vitte.bench_memory import LANGUAGES, MODES, PLAYER_BASE, TOPICS, planted_text, question_text
from vitte.config import Settings
from vitte.textsearch import terms

runner = CliRunner()
MODE_KEYS = {
    "questions", "recall_percent", "prompt_tokens_mean", "prompt_tokens_max", "within_context",
    "reused_prefix_percent", "reused_prefix_percent_p10", "reply_ms_p50", "reply_ms_p99",
    "recall_ms_p50", "recall_ms_p99", "sql_round_trips_per_reply",
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


def test_bench_memory_reports_both_memories_in_both_languages(backend_settings: Settings, redis_cleanup_if_any: None) -> None:
    res = runner.invoke(app, ["bench", "memory", "--turns", "200", "--facts", "5", "--json"], env=env(backend_settings))
    assert res.exit_code == 0, res.output
    data = json.loads(res.stdout)
    assert data["turns"] == 200 and data["facts"] == 5 and data["messages_per_dialog"] == 401
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
            assert modes[mode]["within_context"] is True
        # the planted facts lie before the window: only recall brings them back
        assert modes["summary_only"]["recall_percent"] == 0.0, lang
        assert modes["memory"]["recall_percent"] > modes["summary_only"]["recall_percent"], lang
        if not backend_settings.is_sqlite:  # the one allowed extra round trip: the recall query
            assert modes["extra_sql_round_trips_per_reply"] == 1.0
    assert {k.split(".", 1)[1] for k in data["targets"]} == {
        "recall_percent", "prompt_tokens_max", "reused_prefix_percent", "added_ms_p99", "extra_sql_round_trips_per_reply"
    }

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
