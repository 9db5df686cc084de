"""The player speaks (issue 19, item 1): a voice note, audio file or round video goes through
the real Dispatcher and the local Bot API (getFile + download), is transcribed by a loopback
OpenAI-compatible server (/v1/audio/transcriptions), stored as the player's message (the
transcript, marked spoken, with its duration) and answered like text; on PostgreSQL + Redis
and SQLite + the in-process cache, in Russian and English."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from sqlalchemy import select

from tests.support.bot_harness import BotEnv, cards, drop_redis_keys
from vitte.bot.factory import build_dispatcher
from vitte.bot.runtime import Runtime
from vitte.catalog.seed import seed_cards
from vitte.config import Settings
from vitte.core import Core
from vitte.devtools.media_server import FakeMediaServer, speech_ogg, wav_bytes
from vitte.localapi import LocalBotSession, make_local_bot
from vitte.models import ASSISTANT, MSG_OK, MSG_UNHEARD, USER, Message

VOICE = speech_ogg(1.5)  # real OGG/Opus bytes


@pytest.fixture
async def voice_env(backend_settings: Settings) -> AsyncIterator[tuple[BotEnv, FakeMediaServer]]:
    async with FakeMediaServer(replies=[]) as server:
        settings = backend_settings.model_copy(
            update={
                "llm_base_url": server.base_url,
                "llm_retries": 0,
                "llm_timeout": 10.0,
                "stt_model": "whisper-1",
                "media_timeout": 5.0,
                "webapp_url": "https://vitte.example/app",
            }
        )
        core = await Core.open(settings)
        await seed_cards(core.db, cards())
        core.catalog.invalidate()
        session = LocalBotSession()
        bot = make_local_bot(session)
        runtime = Runtime(draft_interval=0.05, edit_interval=0.1)
        dp = build_dispatcher(core, runtime)
        try:
            yield BotEnv(settings, core, session, bot, dp, runtime, server), server
        finally:
            await runtime.drain(0)
            await core.close()
            await drop_redis_keys(settings)


async def _rows(env: BotEnv, user_id: int) -> list[Message]:
    async with env.core.db.session() as s:
        from vitte.models import Dialog

        return list(
            (
                await s.execute(
                    select(Message)
                    .join(Dialog, Dialog.id == Message.dialog_id)  # type: ignore[arg-type]
                    .where(Dialog.user_id == user_id)
                    .order_by(Message.id)  # type: ignore[arg-type]
                )
            ).scalars()
        )


@pytest.mark.parametrize("lang", ["ru", "en"])
async def test_a_voice_note_is_heard_stored_and_answered(
    voice_env: tuple[BotEnv, FakeMediaServer], lang: str
) -> None:
    env, server = voice_env
    p = env.player(language_code=lang)
    await env.choose(p)
    server.transcripts.append("Мне сегодня грустно" if lang == "ru" else "I feel sad today")
    await p.send_voice(VOICE, duration=7)

    (stt,) = server.of("/audio/transcriptions")
    assert stt.file == VOICE  # the bytes the player sent, through getFile and the file URL
    assert stt.filename == "voice.ogg"
    assert stt.fields["model"] == "whisper-1"
    assert stt.fields["language"] == lang
    assert stt.fields["response_format"] == "verbose_json"
    assert env.sent("getFile")

    heard = "Мне сегодня грустно" if lang == "ru" else "I feel sad today"
    rows = await _rows(env, p.user_id)
    spoken = next(r for r in rows if r.role == USER)
    assert (spoken.text, spoken.status, spoken.media_kind, spoken.media_seconds) == (heard, MSG_OK, "voice", 7)
    assert spoken.media_ref  # the Telegram file id, never a path
    reply = rows[-1]
    assert reply.role == ASSISTANT and reply.status == MSG_OK
    assert reply.text == f"You said: {heard}"  # the LLM was asked with the transcript
    assert p.last_bot_text() == f"You said: {heard}"
    # a confident transcript is not shown unasked; 📝 beside 🔄 shows it
    assert not any("📝" in (m.text or "") for m in p.bot_messages())
    assert p.buttons() == ["🔄", "📝"]
    await p.click("📝")
    note = "📝 Расслышано: «Мне сегодня грустно»" if lang == "ru" else "📝 What I heard: “I feel sad today”"
    assert p.last_bot_text() == note


async def test_audio_files_and_round_videos_are_heard_too(voice_env: tuple[BotEnv, FakeMediaServer]) -> None:
    env, server = voice_env
    p = env.player()
    await env.choose(p)
    wav = wav_bytes(0.3)
    server.transcripts.extend(["из аудиофайла", "из кружочка"])
    await p.send_audio(wav, duration=4, mime_type="audio/wav", filename="note.wav")
    await p.send_video_note(b"\x00\x00\x00\x18ftypmp42 round video", duration=5)
    audio, note = server.of("/audio/transcriptions")
    assert (audio.file, audio.filename) == (wav, "audio.wav")
    assert note.filename == "video_note.mp4"
    spoken = [r for r in await _rows(env, p.user_id) if r.role == USER]
    assert [(r.text, r.media_kind, r.media_seconds) for r in spoken] == [
        ("из аудиофайла", "audio", 4),
        ("из кружочка", "video_note", 5),
    ]
    assert p.last_bot_text() == "You said: из кружочка"


async def test_an_unsure_transcript_is_shown_before_the_reply(voice_env: tuple[BotEnv, FakeMediaServer]) -> None:
    env, server = voice_env
    p = env.player()
    await env.choose(p)
    server.media_modes.append("unsure")
    server.transcripts.append("купи молоко")
    update = await p.send_voice(VOICE, duration=2)
    texts = [m.text for m in p.bot_messages()]
    note_at = texts.index("📝 Расслышано: «купи молоко»")
    assert texts[-1] == "You said: купи молоко" and note_at < len(texts) - 1
    note = p.bot_messages()[note_at]
    assert update.message is not None and note.reply_to == update.message.message_id


@pytest.mark.parametrize("fault", ["500", "malformed", "empty", "hang"])
async def test_a_voice_note_not_made_out_is_kept_and_heard_again(
    voice_env: tuple[BotEnv, FakeMediaServer], fault: str
) -> None:
    env, server = voice_env
    if fault == "hang":
        env.core.dialogs.media.timeout = 0.3  # type: ignore[union-attr]
    p = env.player()
    await env.choose(p)
    server.media_modes.append(fault)
    await p.send_voice(VOICE, duration=3)
    assert p.last_bot_text() == "Не получилось разобрать голосовое 😔 Нажмите «Повторить» или напишите словами."
    assert p.buttons() == ["Повторить"]
    rows = await _rows(env, p.user_id)
    kept = rows[-1]
    assert (kept.role, kept.status, kept.text, kept.media_kind) == (USER, MSG_UNHEARD, "", "voice")
    assert not env.llm.completions  # the LLM was not asked with nothing

    # a text message meanwhile would not see the empty message (history skips it)
    server.transcripts.append("вот теперь слышно")
    await p.click("Повторить")
    rows = await _rows(env, p.user_id)
    again = next(r for r in rows if r.id == kept.id)
    assert (again.text, again.status) == ("вот теперь слышно", MSG_OK)
    assert len([r for r in rows if r.role == USER]) == 1  # the same message, not a second one
    assert p.last_bot_text() == "You said: вот теперь слышно"
    assert len(server.of("/audio/transcriptions")) == 2


@pytest.mark.parametrize(("lang", "status"), [("ru", "400"), ("en", "415"), ("ru", "422")])
async def test_a_file_the_endpoint_refuses_gets_its_own_line_without_retry(
    voice_env: tuple[BotEnv, FakeMediaServer], lang: str, status: str
) -> None:
    """A 4xx from /audio/transcriptions (400 "unsupported format"): asking again cannot help,
    so no [Повторить]; the line names what works. The message stays stored (nothing lost)."""
    env, server = voice_env
    p = env.player(language_code=lang)
    await env.choose(p)
    server.media_modes.append(status)
    await p.send_audio(b"\x1a\x45\xdf\xa3 matroska audio", duration=4, mime_type="audio/x-matroska", filename="a.mka")
    expected = (
        "Такой файл я не могу разобрать 😔 Подойдёт голосовое или аудио в OGG, MP3, M4A или WAV — или напишите словами."
        if lang == "ru"
        else "I can't make out this kind of file 😔 A voice message or an OGG, MP3, M4A or WAV file works, or just type it."
    )
    assert p.last_bot_text() == expected
    assert p.buttons() == []  # no [Повторить]
    assert len(server.of("/audio/transcriptions")) == 1
    kept = (await _rows(env, p.user_id))[-1]
    assert (kept.role, kept.status, kept.media_kind, kept.media_seconds) == (USER, MSG_UNHEARD, "audio", 4)
    assert not env.llm.completions


async def test_an_unheard_message_stays_out_of_the_prompt(voice_env: tuple[BotEnv, FakeMediaServer]) -> None:
    env, server = voice_env
    p = env.player()
    await env.choose(p)
    server.media_modes.append("500")
    await p.send_voice(VOICE, duration=3)
    await env.core.cache.recent_drop(int((await env.dialogs(p.user_id))[-1].id or 0))  # rebuilt from the DB
    await p.send("а теперь текстом")
    (completion,) = env.llm.completions
    users = [m["content"] for m in completion.json["messages"] if m["role"] == "user"]
    assert "" not in users and users[-1].endswith("а теперь текстом")
    # the old [Повторить] is stale now: the voice message is no longer the latest
    before = len(server.of("/audio/transcriptions"))
    retry = next(m for m in p.bot_messages() if "Повторить" in m.button_texts())
    await p.click("Повторить", retry)
    assert len(server.of("/audio/transcriptions")) == before


@pytest.mark.parametrize("lang", ["ru", "en"])
async def test_too_long_voice_is_refused_with_the_limit(voice_env: tuple[BotEnv, FakeMediaServer], lang: str) -> None:
    env, server = voice_env
    p = env.player(language_code=lang)
    await env.choose(p)
    await p.send_voice(VOICE, duration=121)
    expected = (
        "Это голосовое длиннее 120 секунд. Запишите покороче или напишите словами."
        if lang == "ru"
        else "That voice message is longer than 120 seconds. Please record a shorter one or type it."
    )
    assert p.last_bot_text() == expected
    assert not server.of("/audio/transcriptions") and not env.sent("getFile")
    assert not [r for r in await _rows(env, p.user_id) if r.role == USER]


BIG = 20 * 1024 * 1024 + 1  # one byte over what getFile allows


@pytest.mark.parametrize("lang", ["ru", "en"])
async def test_a_file_found_too_big_while_downloading_gets_the_limit(
    voice_env: tuple[BotEnv, FakeMediaServer], lang: str
) -> None:
    """Telegram told no size (neither in the message nor in getFile): the download is cut off
    at 20 MB, and the player is told the limit, not "could not make out" with a useless retry."""
    env, server = voice_env
    p = env.player(language_code=lang)
    await env.choose(p)
    update = await p.send_voice(b"OggS" + bytes(BIG - 4), duration=60, size_known=False)
    assert update.message is not None and update.message.voice is not None
    assert update.message.voice.file_size is None
    expected = (
        "Файл больше 20 МБ — такой я не могу скачать. Пришлите покороче или напишите словами."
        if lang == "ru"
        else "That file is over 20 MB, more than I can download. Please send a shorter one or type it."
    )
    assert p.last_bot_text() == expected
    assert p.buttons() == []  # no [Повторить]: it would be cut off again
    (get_file,) = env.sent("getFile")
    assert get_file.result is not None and "file_size" not in get_file.result
    assert not server.of("/audio/transcriptions")
    kept = (await _rows(env, p.user_id))[-1]
    assert (kept.role, kept.status, kept.media_kind) == (USER, MSG_UNHEARD, "voice")  # nothing lost
    assert not env.llm.completions


@pytest.mark.parametrize("lang", ["ru", "en"])
async def test_a_file_declared_too_big_is_refused_with_the_limit(
    voice_env: tuple[BotEnv, FakeMediaServer], lang: str
) -> None:
    """Telegram told the size (over the 20 MB getFile allows): refused before anything is
    stored or downloaded, the limit named."""
    env, server = voice_env
    p = env.player(language_code=lang)
    await env.choose(p)
    update = await p.send_voice(b"OggS" + bytes(BIG - 4), duration=30)
    assert update.message is not None and update.message.voice is not None
    assert update.message.voice.file_size == BIG
    expected = (
        "Файл больше 20 МБ — такой я не могу скачать. Пришлите покороче или напишите словами."
        if lang == "ru"
        else "That file is over 20 MB, more than I can download. Please send a shorter one or type it."
    )
    assert p.last_bot_text() == expected
    assert p.buttons() == []
    assert not env.sent("getFile") and not server.of("/audio/transcriptions")
    assert not [r for r in await _rows(env, p.user_id) if r.role == USER]  # nothing stored


async def test_without_an_stt_model_voice_gets_the_text_only_answer(
    voice_env: tuple[BotEnv, FakeMediaServer],
) -> None:
    env, server = voice_env
    env.core.dialogs.hearing.media.stt_model = None  # type: ignore[union-attr]
    p = env.player()
    await env.choose(p)
    await p.send_voice(VOICE, duration=3)
    assert p.last_bot_text() == "Я пока понимаю только текст 🙂 Напишите словами — и я отвечу."
    assert not server.of("/audio/transcriptions")


async def test_the_transcript_button_shows_only_the_players_own_message(
    voice_env: tuple[BotEnv, FakeMediaServer],
) -> None:
    env, server = voice_env
    p = env.player()
    other = env.player(2002)
    await env.choose(p)
    await env.choose(other)
    server.transcripts.append("секрет")
    await p.send_voice(VOICE, duration=2)
    rows = await _rows(env, p.user_id)
    voice_id = next(r.id for r in rows if r.role == USER)
    from tests.support.bot_harness import press
    from vitte.bot.callbacks import NoteCb

    await other.send("привет")
    target = other.last_bot_message()
    assert target is not None
    await press(other, target, NoteCb(message_id=int(voice_id or 0)).pack())
    assert not any("секрет" in (m.text or "") for m in other.bot_messages())


# ---------------------------------------------------------------------- the persona speaks (item 2)


def _tts_on(env: BotEnv) -> None:
    env.core.dialogs.media.tts_model = "tts-1"  # type: ignore[union-attr]


@pytest.mark.parametrize("lang", ["ru", "en"])
async def test_settings_offer_voice_replies_and_keep_the_choice(
    voice_env: tuple[BotEnv, FakeMediaServer], lang: str
) -> None:
    env, _server = voice_env
    p = env.player(language_code=lang)
    await p.send("/settings")
    assert "Голосом отвечать" not in (p.last_bot_text() or "")  # no TTS model: not offered
    _tts_on(env)
    await p.send("/settings")
    text = p.last_bot_text() or ""
    if lang == "ru":
        assert "Голосом отвечать: никогда" in text
        modes = [b for b in p.buttons() if b.endswith(("никогда", "на голосовые", "всегда"))]
        assert modes == ["✓ никогда", "на голосовые", "всегда"]
        await p.click("на голосовые")
        assert "Голосом отвечать: на голосовые" in (p.last_bot_text() or "")
        assert "✓ на голосовые" in p.buttons()
    else:
        assert "Answer by voice: never" in text
        await p.click("to voice messages")
        assert "Answer by voice: to voice messages" in (p.last_bot_text() or "")
    assert (await env.core.players.get(p.user_id)).voice_replies == "voice"


async def test_a_reply_comes_as_a_voice_note_when_asked(voice_env: tuple[BotEnv, FakeMediaServer]) -> None:
    env, server = voice_env
    _tts_on(env)
    p = env.player()
    await env.choose(p)
    await env.core.players.update_settings(p.user_id, voice_replies="voice")
    env.llm.replies.append("Я тоже по тебе скучала.")  # type: ignore[union-attr]
    await p.send("привет")  # typed: "на голосовые" answers it with text
    assert not env.sent("sendVoice")
    assert p.last_bot_text() == "Я тоже по тебе скучала."

    env.llm.replies.append("Слышу тебя, милый.")  # type: ignore[union-attr]
    await p.send_voice(VOICE, duration=2)
    (speech,) = server.of("/audio/speech")
    assert speech.fields["input"] == "Слышу тебя, милый."
    assert (speech.fields["model"], speech.fields["voice"], speech.fields["response_format"]) == ("tts-1", "alloy", "opus")
    assert any(c.params.get("action") == "record_voice" for c in env.sent("sendChatAction"))
    (voice_call,) = env.sent("sendVoice")
    assert voice_call.params["chat_id"] == p.user_id
    message = p.last_bot_message()
    assert message is not None and message.kind == "voice"
    assert message.file is not None and message.file.data is not None and message.file.data.startswith(b"OggS")
    assert message.text == "Слышу тебя, милый."  # the caption
    assert p.buttons() == ["🔄", "📝"]
    rows = await _rows(env, p.user_id)
    assert rows[-1].role == ASSISTANT and rows[-1].text == "Слышу тебя, милый."  # the text kept in the history


async def test_the_drafts_show_the_reply_text_while_the_voice_is_made(
    voice_env: tuple[BotEnv, FakeMediaServer],
) -> None:
    """sendMessageDraft shows the reply's text as it is written; the voice is made after it
    ("record_voice"), and sendVoice comes last: the text was on screen meanwhile."""
    env, server = voice_env
    _tts_on(env)
    p = env.player()
    await env.choose(p)
    await env.core.players.update_settings(p.user_id, voice_replies="always")
    reply = " ".join(f"Фраза номер {i} про наш вечер." for i in range(1, 13))
    env.llm.replies.append(reply)  # type: ignore[union-attr]
    env.llm.tps = 150  # type: ignore[union-attr]  # streamed for a while: past the first-show delay
    await p.send("расскажи про вечер")
    (voice,) = env.sent("sendVoice", p.user_id)
    drafts = [d for d in env.sent("sendMessageDraft", p.user_id) if d.params.get("text")]
    assert drafts, "the reply's text was never shown as a draft"
    assert all(reply.startswith(d.params["text"]) for d in drafts)  # the reply as it was written
    assert all(d.seq < voice.seq for d in drafts)
    (recording,) = [a for a in env.sent("sendChatAction", p.user_id) if a.params.get("action") == "record_voice"]
    assert drafts[0].seq < recording.seq < voice.seq  # the text was shown while the voice was made
    assert server.of("/audio/speech")[0].fields["input"] == reply
    message = p.last_bot_message()
    assert message is not None and message.kind == "voice" and message.text == reply


async def test_a_long_reply_is_spoken_up_to_the_cap_and_the_rest_sent_as_text(
    voice_env: tuple[BotEnv, FakeMediaServer],
) -> None:
    env, server = voice_env
    _tts_on(env)
    env.core.settings.tts_max_chars = 40
    p = env.player()
    await env.choose(p)
    await env.core.players.update_settings(p.user_id, voice_replies="always")
    env.llm.replies.append("Первое предложение тут. Второе предложение подлиннее, его не скажу.")  # type: ignore[union-attr]
    await p.send("расскажи")
    (speech,) = server.of("/audio/speech")
    assert speech.fields["input"] == "Первое предложение тут."
    kinds = [m.kind for m in p.bot_messages()[-2:]]
    assert kinds == ["voice", "text"]
    assert p.last_bot_text() == "Второе предложение подлиннее, его не скажу."
    assert p.buttons() == ["🔄"]


@pytest.mark.parametrize("fault", ["500", "malformed", "hang"])
async def test_when_the_voice_cannot_be_made_the_reply_comes_as_text(
    voice_env: tuple[BotEnv, FakeMediaServer], fault: str
) -> None:
    env, server = voice_env
    _tts_on(env)
    p = env.player()
    await env.choose(p)
    await env.core.players.update_settings(p.user_id, voice_replies="always")
    if fault == "hang":
        env.core.dialogs.media.timeout = 0.3  # type: ignore[union-attr]
    server.media_modes.append(fault)
    env.llm.replies.append("Вот мой ответ.")  # type: ignore[union-attr]
    await p.send("привет")
    assert server.of("/audio/speech") and not env.sent("sendVoice")
    assert p.last_bot_text() == "Вот мой ответ."
    assert p.buttons() == ["🔄"]


async def test_the_persona_speaks_in_the_voice_its_card_names(voice_env: tuple[BotEnv, FakeMediaServer]) -> None:
    from sqlalchemy import update

    from vitte.models import Persona

    env, server = voice_env
    _tts_on(env)
    p = env.player()
    opening = await env.choose(p)
    await env.core.players.update_settings(p.user_id, voice_replies="always")
    async with env.core.db.session() as s:
        persona = await s.get(Persona, opening.dialog.persona_id)
        assert persona is not None
        card = dict(persona.card)
        data = dict(card.get("data") or {})
        data["extensions"] = {**(data.get("extensions") or {}), "vitte": {"voice": "nova"}}
        card["data"] = data
        await s.execute(update(Persona).where(Persona.id == persona.id).values(card=card))  # type: ignore[arg-type]
        await s.commit()
    await p.send("скажи что-нибудь")
    assert server.of("/audio/speech")[-1].fields["voice"] == "nova"


async def test_a_server_without_opus_is_transcoded(voice_env: tuple[BotEnv, FakeMediaServer]) -> None:
    from vitte.llm.media import opus_seconds

    env, server = voice_env
    _tts_on(env)
    p = env.player()
    await env.choose(p)
    await env.core.players.update_settings(p.user_id, voice_replies="always")
    server.media_modes.append("wav")  # the server answers WAV whatever was asked
    await p.send("привет")
    (voice_call,) = env.sent("sendVoice")
    message = p.last_bot_message()
    assert message is not None and message.kind == "voice" and message.file is not None
    data = message.file.data
    assert data is not None and data.startswith(b"OggS") and b"OpusHead" in data[:100]
    assert voice_call.params["duration"] == opus_seconds(data)


async def test_voice_replies_on_cost_a_typed_message_no_sql(voice_env: tuple[BotEnv, FakeMediaServer]) -> None:
    """With VITTE_TTS_MODEL set, a typed reply reads the player's choice from the turn's row."""
    from vitte.bench import SqlCounter

    env, server = voice_env
    p = env.player()
    await env.choose(p)
    await p.send("разогрев")  # connections, prepared statements, caches
    await p.send("ещё разогрев")

    async def cost(text: str) -> int:
        sql = SqlCounter(env.core.db.engine, env.core.db.raw_statements)
        try:
            before = sql.snapshot()
            await p.send(text)
            return sql.snapshot().minus(before).round_trips
        finally:
            sql.close()

    off = await cost("без голоса")
    _tts_on(env)
    on = await cost("голос включён, но игрок выбрал никогда")
    assert on == off
    assert not server.of("/audio/speech")


async def test_a_heard_message_whose_reply_failed_is_answered_on_retry(
    voice_env: tuple[BotEnv, FakeMediaServer],
) -> None:
    env, server = voice_env
    p = env.player()
    await env.choose(p)
    server.transcripts.append("ты тут?")
    server.modes.append("500")  # the LLM fails once
    await p.send_voice(VOICE, duration=2)
    assert p.buttons() == ["Повторить"]
    spoken = [r for r in await _rows(env, p.user_id) if r.role == USER]
    assert [(r.text, r.status) for r in spoken] == [("ты тут?", MSG_OK)]  # heard and kept
    await p.click("Повторить")
    assert p.last_bot_text() == "You said: ты тут?"
    assert len(server.of("/audio/transcriptions")) == 1  # not heard again: it was heard


async def test_rewriting_a_voice_reply_gives_a_new_voice_note_in_its_place(
    voice_env: tuple[BotEnv, FakeMediaServer],
) -> None:
    env, server = voice_env
    _tts_on(env)
    p = env.player()
    await env.choose(p)
    await env.core.players.update_settings(p.user_id, voice_replies="always")
    env.llm.replies.extend(["Первый ответ.", "Второй ответ."])  # type: ignore[union-attr]
    await p.send("привет")
    first = p.last_bot_message()
    assert first is not None and first.kind == "voice"
    await p.click("🔄")
    live = [m for m in p.chat.messages if m.from_bot and not m.deleted and m.kind == "voice"]
    assert [m.text for m in live] == ["Второй ответ."]  # the old voice note is gone
    assert first.deleted
    assert [r.fields["input"] for r in server.of("/audio/speech")] == ["Первый ответ.", "Второй ответ."]
    rows = await _rows(env, p.user_id)
    assert rows[-1].text == "Второй ответ."


CRISIS = {"ru": "мне так плохо, не хочу жить", "en": "I don't want to live anymore"}


@pytest.mark.parametrize("lang", ["ru", "en"])
async def test_a_crisis_said_aloud_brings_the_resources_and_is_counted(
    voice_env: tuple[BotEnv, FakeMediaServer], lang: str
) -> None:
    """Said or typed, a crisis signal is the same: the reply, then the crisis resources, and one
    safety event (the text itself is never stored with it)."""
    from vitte.models import SafetyEvent
    from vitte.safety import crisis_resources

    env, server = voice_env
    p = env.player(language_code=lang)
    await env.choose(p)
    before = len(p.bot_messages())
    server.transcripts.append(CRISIS[lang])
    await p.send_voice(VOICE, duration=3)
    texts = [m.text for m in p.bot_messages()[before:]]
    assert texts == [f"You said: {CRISIS[lang]}", crisis_resources(lang, env.settings)]
    async with env.core.db.session() as s:
        kinds = [(e.kind, e.language) for e in (await s.execute(select(SafetyEvent))).scalars()]
    assert kinds == [("crisis", lang)]


async def test_remember_that_said_aloud_is_remembered(voice_env: tuple[BotEnv, FakeMediaServer]) -> None:
    env, server = voice_env
    p = env.player(language_code="ru")
    await env.choose(p)
    server.transcripts.append("Запомни, что моего кота зовут Барсик")
    await p.send_voice(VOICE, duration=3)
    dialog = await env.core.dialogs.current(p.user_id)
    assert dialog is not None
    live = await env.core.dialogs.facts.store.live(dialog.id)
    assert [f.text for f in live] == ["моего кота зовут Барсик"]
