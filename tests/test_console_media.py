"""The console's voice and photo bubbles (issue 19, item 6), driven with Pilot against the real
core, the local Bot API and a loopback STT/TTS/image server: the local player sends a WAV file
as a voice message (F6, a path prompt), it shows as "🎤 0:02", the persona answers with a voice
note ("🎤 0:0N" and its caption) and a photo (a thumbnail, "Открыть файл"); and snapshots."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from textual.pilot import Pilot

from tests.test_console import (
    _database,
    _template_db,
    _with_dialog,
    bubble_texts,
    button_labels,
    make_app,
    started,
    until,
    wait_idle,
)
from tui.app import VitteConsole
from tui.screens import DocumentScreen, PathScreen
from vitte.devtools.media_server import FakeMediaServer, png_bytes, speech_ogg, wav_bytes
from vitte.llm.media import opus_seconds

__all__ = ["_database", "_template_db"]


async def test_voice_in_voice_out_and_a_photo_in_the_console(tmp_path: Path) -> None:
    voice_file = tmp_path / "hello.wav"
    voice_file.write_bytes(wav_bytes(2.0))
    async with FakeMediaServer() as server:
        server.transcripts.append("Привет, это мой голос")
        app = make_app(llm_base_url=server.base_url, stt_model="whisper-1", tts_model="tts-1", image_model="img")
        async with app.run_test(size=(100, 40)) as pilot:
            await _with_dialog(pilot, message=None)
            await app.backend.core.players.update_settings(1001, voice_replies="voice")
            await pilot.press("f6")
            await until(pilot, lambda: isinstance(app.screen, PathScreen), what="path prompt")
            await pilot.pause()
            await pilot.press(*str(voice_file))
            await pilot.press("enter")
            await wait_idle(pilot)
            mine = [m for m in app.player.chat.user_messages() if m.kind == "voice"]
            assert mine and mine[-1].file is not None and mine[-1].file.data == voice_file.read_bytes()
            assert server.of("/audio/transcriptions")[0].filename == "voice.wav"
            reply = await until(
                pilot,
                lambda: (m := app.player.chat.last_bot_message()) and m.kind == "voice" and m,
                what="voice reply",
            )
            await until(pilot, lambda: reply.message_id in app.chat_view.rows, what="voice bubble")
            texts = bubble_texts(app)
            assert any(t.startswith("🎤 0:02") for t in texts)  # the player's voice note
            seconds = opus_seconds(reply.file.data)  # type: ignore[union-attr]
            spoken = str(app.chat_view.rows[reply.message_id].bubble.render())
            assert spoken.startswith(f"🎤 0:{seconds:02d}\n")
            assert reply.text and reply.text in spoken  # the caption: what was said
            assert "📝" in button_labels(app)

            await app.backend.core.players.update_settings(1001, voice_replies="never")
            app.composer.value = "Пришли фото"
            await pilot.press("enter")
            await wait_idle(pilot)
            photo = await until(
                pilot,
                lambda: (m := app.player.chat.last_bot_message()) and m.kind == "photo" and m,
                what="photo",
            )
            await until(pilot, lambda: photo.message_id in app.chat_view.rows, what="photo bubble")
            bubble = str(app.chat_view.rows[photo.message_id].bubble.render())
            assert "▀" * 16 in bubble  # the thumbnail's cells
            assert photo.text and photo.text in bubble  # the caption
            assert "Открыть файл" in button_labels(app)
            await pilot.press(f"alt+{button_labels(app).index('Открыть файл') + 1}")
            await until(pilot, lambda: isinstance(app.screen, DocumentScreen), what="opened")
            assert app.screen.data == photo.file.data  # type: ignore[attr-defined,union-attr]


async def test_a_bad_voice_file_is_one_line(tmp_path: Path) -> None:
    bad = tmp_path / "notes.txt"
    bad.write_text("not audio")
    app = make_app()
    shown: list[str] = []
    notify = app.notify

    def spy(message: str, *args: Any, **kwargs: Any) -> None:
        shown.append(message)
        notify(message, *args, **kwargs)

    app.notify = spy  # type: ignore[method-assign]
    async with app.run_test(size=(80, 24)) as pilot:
        await started(pilot)
        for path in (str(bad), str(tmp_path / "missing.ogg")):
            await pilot.press("f6")
            await until(pilot, lambda: isinstance(app.screen, PathScreen), what="prompt")
            await pilot.pause()
            await pilot.press(*path)
            await pilot.press("enter")
            await until(pilot, lambda: not isinstance(app.screen, PathScreen), what="closed")
        assert any(m.startswith("notes.txt: not a WAV or OGG file") for m in shown)
        assert any("missing.ogg" in m for m in shown)
        assert not [m for m in app.player.chat.user_messages() if m.kind == "voice"]


def test_snapshot_voice_and_photo_bubbles(snap_compare: Any) -> None:
    async def run_before(pilot: Pilot[Any]) -> None:
        app = await _with_dialog(pilot, message=None)
        assert isinstance(app, VitteConsole)
        from aiogram.types import BufferedInputFile

        await app.player.send_voice(speech_ogg(0.2), duration=7)
        await wait_idle(pilot)
        bot = app.backend.bot
        await bot.send_voice(1001, BufferedInputFile(speech_ogg(0.2), "v.ogg"), duration=12, caption="Слышу тебя 💕")
        await bot.send_photo(1001, BufferedInputFile(png_bytes("snapshot"), "p.png"), caption="Это я сейчас 📸")
        await until(pilot, lambda: len(app.chat_view.rows) >= 4, what="bubbles")
        await pilot.pause()
        app.clear_notifications()

    assert snap_compare(make_app(), terminal_size=(100, 40), run_before=run_before)
