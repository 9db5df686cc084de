"""The engine's refusals as the player sees them in Telegram: the 18+ gate, a blocked player,
the rate limit, the daily quota; and the crisis resources after a crisis message."""

from __future__ import annotations

from tests.support.bot_harness import BotEnv, env
from vitte.models import ASSISTANT, USER

__all__ = ["env"]


async def test_age_gate(env: BotEnv) -> None:
    p = env.player()
    await env.choose(p)
    await env.core.players.decline_adult(p.user_id)  # withdrawn: the engine refuses again
    await p.send("привет")
    assert p.last_bot_text() == "Vitte — для взрослых. Вам уже есть 18 лет?"
    assert p.buttons() == ["Мне есть 18", "Мне нет 18"]
    assert env.llm.completions == []

    await p.click("Мне есть 18")
    assert (await env.core.players.get(p.user_id)).adult_confirmed_at is not None
    assert any(m.text == "Спасибо! Можно начинать 💕" for m in p.bot_messages())
    assert p.last_bot_text() == "Продолжить с Кира?"
    await p.send("привет")
    assert p.last_bot_text() == "You said: привет"

    en = env.player(2002, language_code="en")
    await env.choose(en)
    await env.core.players.decline_adult(en.user_id)
    await en.send("/chat")
    await en.click("Start over")  # start over is refused too
    assert en.last_bot_text() == "Vitte is for adults. Are you 18 or older?"
    await en.click("I'm under 18")
    assert en.last_bot_text() == "Sorry, Vitte is for adults only (18+)."
    assert (await env.core.players.get(en.user_id)).adult_confirmed_at is None
    assert len(await env.dialogs(en.user_id)) == 1


async def test_blocked_player_gets_one_polite_line(env: BotEnv) -> None:
    p = env.player()
    await env.choose(p)
    await env.core.players.block(p.user_id, "spam")
    await p.send("привет")
    assert p.last_bot_text() == "Извините, доступ к Vitte для вас закрыт."
    assert "spam" not in p.last_bot_text()
    assert [r.role for r in await env.rows(p.user_id)] == [ASSISTANT]  # nothing stored
    assert env.llm.completions == []
    # /start (a deep link too) greets nobody who is blocked
    for command in ("/start", "/start persona_mila"):
        before = len(p.bot_messages())
        await p.send(command)
        assert [m.text for m in p.bot_messages()[before:]] == ["Извините, доступ к Vitte для вас закрыт."]


async def test_rate_limit(env: BotEnv) -> None:
    env.core.settings.rate_limit_per_minute = 1
    p = env.player(2002)
    await env.choose(p)
    await p.send("раз")
    await p.send("два")
    assert p.last_bot_text().startswith("Не так быстро 🙂 Попробуйте снова через ")
    assert [r.text for r in await env.rows(p.user_id) if r.role == USER] == ["раз"]


async def test_daily_quota(env: BotEnv) -> None:
    env.core.settings.free_daily_replies = 1
    p = env.player()
    await env.choose(p)
    await p.send("раз")
    texts = [m.text for m in p.bot_messages()]
    assert "You said: раз" in texts
    assert "Это был последний ответ на сегодня." in texts  # the low-quota notice
    await p.send("два")
    assert p.last_bot_text().startswith("Бесплатные ответы на сегодня закончились")
    assert len(env.llm.completions) == 1


async def test_crisis_message_gets_the_resources_after_the_reply(env: BotEnv) -> None:
    p = env.player()
    await env.choose(p)
    await p.send("мне так плохо, не хочу жить")
    reply, resources = p.bot_messages()[-2:]
    assert reply.text == "You said: мне так плохо, не хочу жить"
    assert reply.button_texts() == ["🔄"]
    assert "8-800-2000-122" in (resources.text or "")

    env.llm.modes.append("500")  # a failed reply still brings the resources
    await p.send("хочу умереть")
    texts = [m.text or "" for m in p.bot_messages()[-2:]]
    assert texts[0].startswith("Не получилось ответить")
    assert "8-800-2000-122" in texts[1]
