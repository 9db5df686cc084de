"""/memory in the bot (issue 16, item 4), through the real Dispatcher and the local Bot API, on
PostgreSQL + Redis and on SQLite: facts newest first, paged, each with [Забыть] / [Forget], the
story so far; forgetting takes effect from the next reply; fact text cannot inject Telegram
HTML; a forged button cannot forget another player's fact."""

from __future__ import annotations

from tests.support.bot_harness import WEBAPP_URL, BotEnv, env, press  # noqa: F401
from vitte.bot.callbacks import MemoryCb
from vitte.bot.texts import t


async def test_memory_lists_pages_and_forgets_in_russian(env: BotEnv) -> None:  # noqa: F811
    p = env.player(5101, language_code="ru")
    await p.send("/memory")
    assert p.last_bot_text() == t("ru", "memory_no_dialog")

    opening = await env.choose(p)
    await p.send("/memory")
    text = p.last_bot_text() or ""
    assert "пока не запомнил(а)" in text and "История до сих пор" in text and "пока пусто" in text
    assert p.buttons() == ["✏️ Изменить в приложении"]
    (button,) = p.last_bot_message().iter_buttons()
    assert button.web_app is not None and button.web_app.url == f"{WEBAPP_URL}/#/memory"

    facts = env.core.dialogs.facts
    added = [await facts.add(p.user_id, f"факт номер {i}") for i in range(1, 7)]
    hostile = await facts.add(p.user_id, "<b>жирный</b> & <a href='https://evil.example'>ссылка</a>")
    assert await env.core.dialogs.store.save_summary(opening.dialog.id, 0, "Они встретились <i>ночью</i>.", 0)

    await p.send("/memory")
    message = p.last_bot_message()
    text = message.text or ""
    assert "Что Кира помнит о тебе (7):" in text
    # newest first, the markup-like text shown literally (escaped), no link or bold made of it
    assert "1. <b>жирный</b> & <a href='https://evil.example'>ссылка</a>" in text
    assert "2. факт номер 6" in text and "5. факт номер 3" in text and "факт номер 2" not in text
    assert "Страница 1 из 2" in text and "Они встретились <i>ночью</i>." in text
    assert not any(e.get("type") in ("text_link", "url") for e in (message.entities or []))
    assert p.buttons() == [
        "1 · Забыть", "2 · Забыть", "3 · Забыть", "4 · Забыть", "5 · Забыть", "▶", "✏️ Изменить в приложении"
    ]  # fmt: skip

    await p.click("▶")
    text = p.last_bot_text() or ""
    assert "6. факт номер 2" in text and "7. факт номер 1" in text and "Страница 2 из 2" in text
    assert p.buttons() == ["6 · Забыть", "7 · Забыть", "◀", "✏️ Изменить в приложении"]
    assert len(p.bot_messages()) == 3  # the page was edited in place

    update = await p.click("6 · Забыть")
    assert (p.callback_answer(update) or {}).get("text") == t("ru", "memory_forgotten")
    page = await env.core.dialogs.memory_page(p.user_id, 1)
    assert page.total == 6 and [f.id for f in page.facts] == [added[0].id]
    assert "факт номер 2" not in (p.last_bot_text() or "")

    # forgetting takes effect from the next reply
    await p.send("Привет!")
    prompt = env.llm.completions[-1].json["messages"][0]["content"]
    assert "факт номер 1" in prompt and "факт номер 2" not in prompt
    assert "&lt;b&gt;жирный&lt;/b&gt;" in prompt  # in the prompt, escaped inside the fenced block
    assert hostile.id


async def test_memory_in_english_and_a_forged_button(env: BotEnv) -> None:  # noqa: F811
    p = env.player(5102, language_code="en")
    other = env.player(5103, language_code="en")
    await env.choose(p)
    await env.choose(other)
    theirs = await env.core.dialogs.facts.add(other.user_id, "The other player's secret")
    await env.core.dialogs.facts.add(p.user_id, "Loves thunderstorms")
    await p.send("/memory")
    assert "What Kira remembers about you (1):" in (p.last_bot_text() or "")
    assert "The story so far:" in (p.last_bot_text() or "") and "nothing yet" in (p.last_bot_text() or "")
    assert p.buttons() == ["1 · Forget", "✏️ Edit in the app"]

    # a button forged with another player's fact id: refused, nothing forgotten, nothing shown
    update = await press(p, p.last_bot_message(), MemoryCb(action="forget", page=0, fact_id=theirs.id).pack())
    assert (p.callback_answer(update) or {}).get("text") == t("en", "stale")
    assert [f.text for f in (await env.core.dialogs.memory_page(other.user_id)).facts] == [theirs.text]
    assert "secret" not in (p.last_bot_text() or "")
    update = await press(p, p.last_bot_message(), MemoryCb(action="explode").pack())
    assert (p.callback_answer(update) or {}).get("text") == t("en", "stale")
