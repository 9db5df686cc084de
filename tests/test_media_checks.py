"""Observability of voice and photos (issue 19, item 7): `vitte doctor`'s ``media`` check
against a loopback server with the media endpoints (answering, failing, not asked without
--deep), and the /metrics counters and latency of transcriptions, syntheses and images."""

from __future__ import annotations

import pytest
from prometheus_client import REGISTRY

from tests.conftest import make_settings
from vitte.devtools.media_server import FakeMediaServer
from vitte.doctor import CHECKS, check_media
from vitte.llm.media import MediaAPI, MediaError
from vitte.metrics import render


async def test_the_doctor_asks_each_configured_model_with_deep() -> None:
    assert "media" in CHECKS
    async with FakeMediaServer(api_key="k") as server:
        settings = make_settings(
            llm_base_url=server.base_url, llm_api_key="k", stt_model="whisper-1", tts_model="tts-1", image_model="img"
        )
        check = await check_media(settings, deep=True)
        assert check.status == "ok", check.detail
        assert check.detail.startswith("answered: stt whisper-1 in ")
        assert "tts tts-1" in check.detail and "image img" in check.detail
        paths = [r.path for r in server.media_requests]
        assert paths == ["/v1/audio/transcriptions", "/v1/audio/speech", "/v1/images/generations"]
        assert all(r.headers.get("Authorization") == "Bearer k" for r in server.media_requests)

        shallow = await check_media(settings, deep=False)
        assert shallow.status == "skipped" and "--deep" in shallow.detail
        assert len(server.media_requests) == 3  # nothing asked without --deep


@pytest.mark.parametrize(("mode", "failed"), [("500", "stt"), ("hang", "stt")])
async def test_the_doctor_names_the_model_that_does_not_answer(mode: str, failed: str) -> None:
    async with FakeMediaServer(media_mode=mode) as server:
        settings = make_settings(
            llm_base_url=server.base_url, stt_model="whisper-1", tts_model="tts-1", media_timeout=0.5
        )
        check = await check_media(settings, deep=True)
        assert check.status == "fail"
        assert check.detail.startswith(f"{failed} whisper-1: ")
        assert check.fix is not None and "/audio/transcriptions" in check.fix
        assert check.data["failed"] == failed


async def test_the_doctor_without_media_models_or_without_a_base_url() -> None:
    none = await check_media(make_settings(), deep=True)
    assert none.status == "ok" and none.detail.startswith("voice and photos off")
    orphan = await check_media(make_settings(tts_model="tts-1"), deep=True)
    assert orphan.status == "warn" and "VITTE_LLM_BASE_URL is unset" in orphan.detail


def _count(kind: str, outcome: str) -> float:
    return REGISTRY.get_sample_value("vitte_media_total", {"kind": kind, "outcome": outcome}) or 0.0


async def test_metrics_count_media_calls_their_latency_and_errors() -> None:
    async with FakeMediaServer() as server:
        api = MediaAPI(server.base_url, None, stt_model="whisper-1", tts_model="tts-1", image_model="img")
        before = {k: _count(k, "ok") for k in ("transcription", "synthesis", "image")}
        errors_before = _count("synthesis", "error")
        seconds_before = REGISTRY.get_sample_value("vitte_media_seconds_count", {"kind": "image"}) or 0.0
        try:
            await api.transcribe(b"RIFF fake", "a.wav")
            await api.speak("hi")
            await api.draw("x")
            server.media_modes.append("500")
            with pytest.raises(MediaError):
                await api.speak("hi")
        finally:
            await api.aclose()
        for kind in before:
            assert _count(kind, "ok") == before[kind] + 1
        assert _count("synthesis", "error") == errors_before + 1
        assert REGISTRY.get_sample_value("vitte_media_seconds_count", {"kind": "image"}) == seconds_before + 1
        assert 'vitte_media_total{kind="transcription",outcome="ok"}' in render()[0].decode()
