"""🔄 under a reply that went as a voice note (issue 19): the buttons beside it that still hold
come back under the new reply — 📝 of the player's voice message, 📝 of the new voice note's own
text when it has no caption (never the old one's); through the real Dispatcher and the local Bot
API on SQLite and PostgreSQL."""

from __future__ import annotations

from tests.support.bot_harness import BotEnv
from tests.test_voice import VOICE, _tts_on, voice_env
from vitte.devtools.media_server import FakeMediaServer

__all__ = ["voice_env"]


async def test_the_transcript_is_offered_again_after_a_voice_reply_is_rewritten(
    voice_env: tuple[BotEnv, FakeMediaServer],
) -> None:
    env, server = voice_env
    _tts_on(env)
    p = env.player()
    await env.choose(p)
    await env.core.players.update_settings(p.user_id, voice_replies="voice")
    server.transcripts.append("как прошёл твой день?")
    env.llm.replies.extend(["Чудесно, милый.", "Спокойно и тепло."])  # type: ignore[union-attr]
    await p.send_voice(VOICE, duration=2)
    first = p.last_bot_message()
    assert first is not None and first.kind == "voice" and p.buttons() == ["🔄", "📝"]
    await p.click("🔄")
    second = p.last_bot_message()
    assert second is not None and second.kind == "voice" and second.text == "Спокойно и тепло."
    assert first.deleted
    assert p.buttons() == ["🔄", "📝"]  # 📝 is back under the new voice note
    await p.click("📝")
    assert p.last_bot_text() == "📝 Расслышано: «как прошёл твой день?»"
    await p.click("🔄", second)  # and again after a second rewrite
    assert p.buttons() == ["🔄", "📝"] and len(server.of("/audio/speech")) == 3


async def test_a_rewritten_voice_note_without_a_caption_offers_its_own_text(
    voice_env: tuple[BotEnv, FakeMediaServer],
) -> None:
    env, _server = voice_env
    _tts_on(env)
    env.core.settings.tts_max_chars = 4000  # spoken whole; too long for a caption (1024)
    p = env.player()
    await env.choose(p)
    await env.core.players.update_settings(p.user_id, voice_replies="always")
    old, new = "Первый. " * 200, "Второй. " * 200
    env.llm.replies.extend([old, new])  # type: ignore[union-attr]
    await p.send("расскажи длинную историю")
    first = p.last_bot_message()
    assert first is not None and first.kind == "voice" and not first.text and p.buttons() == ["🔄", "📝"]
    await p.click("🔄")
    second = p.last_bot_message()
    assert second is not None and second.kind == "voice" and not second.text
    assert p.buttons() == ["🔄", "📝"]  # one 📝: the new reply's, not the old one's
    await p.click("📝")
    shown = p.last_bot_text() or ""
    assert "Второй." in shown and "Первый." not in shown


async def test_retry_of_a_heard_message_answers_it_as_heard(voice_env: tuple[BotEnv, FakeMediaServer]) -> None:
    """[Повторить] after the reply to a voice message failed: the reply comes as a voice note
    (the player's setting "на голосовые") with 📝 of what was heard, as the first try would have."""
    env, server = voice_env
    _tts_on(env)
    p = env.player()
    await env.choose(p)
    await env.core.players.update_settings(p.user_id, voice_replies="voice")
    server.transcripts.append("ты тут?")
    server.modes.append("500")  # the LLM fails once
    await p.send_voice(VOICE, duration=2)
    assert p.buttons() == ["Повторить"]
    await p.click("Повторить")
    reply = p.last_bot_message()
    assert reply is not None and reply.kind == "voice" and reply.text == "You said: ты тут?"
    assert p.buttons() == ["🔄", "📝"]
    await p.click("📝")
    assert p.last_bot_text() == "📝 Расслышано: «ты тут?»"


async def test_retry_of_a_typed_message_stays_text(voice_env: tuple[BotEnv, FakeMediaServer]) -> None:
    env, server = voice_env
    _tts_on(env)
    p = env.player()
    await env.choose(p)
    await env.core.players.update_settings(p.user_id, voice_replies="voice")
    server.modes.append("500")
    await p.send("ты тут?")
    await p.click("Повторить")
    assert p.last_bot_message().kind == "text"  # type: ignore[union-attr]
    assert p.buttons() == ["🔄"] and not server.of("/audio/speech")
