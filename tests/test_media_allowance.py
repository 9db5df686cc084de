"""Voice replies and photos paid like the rest (issue 19, item 4): daily allowances per plan
(VITTE_FREE_DAILY_PHOTOS / VITTE_PREMIUM_DAILY_PHOTOS, the same for voice replies), counted
once per delivered item, given back when it failed, the Premium offer when used up; through the
real Dispatcher and the local Bot API on SQLite and PostgreSQL, ru and en."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import update

from tests.support.bot_harness import BotEnv
from tests.test_voice import _rows, voice_env
from vitte.devtools.media_server import FakeMediaServer
from vitte.media_allowance import PHOTO, VOICE
from vitte.models import USER, User, utcnow

__all__ = ["voice_env"]


def _on(env: BotEnv) -> None:
    env.core.dialogs.media.image_model = "img"  # type: ignore[union-attr]
    env.core.dialogs.media.tts_model = "tts-1"  # type: ignore[union-attr]


async def _premium(env: BotEnv, user_id: int) -> None:
    async with env.core.db.session() as s:
        await s.execute(update(User).where(User.id == user_id).values(premium_until=utcnow() + timedelta(days=30)))  # type: ignore[arg-type]
        await s.commit()


@pytest.mark.parametrize("lang", ["ru", "en"])
async def test_free_photos_run_out_and_premium_is_offered(voice_env: tuple[BotEnv, FakeMediaServer], lang: str) -> None:
    env, server = voice_env
    _on(env)
    env.core.settings.free_daily_photos = 1
    p = env.player(language_code=lang)
    await env.choose(p)
    env.llm.replies.append("Short hair, green eyes.")  # type: ignore[union-attr]
    ask = "Пришли фото" if lang == "ru" else "send me a photo"
    await p.send(ask)
    assert p.last_bot_message().kind == "photo"  # type: ignore[union-attr]
    rows_before = len(await _rows(env, p.user_id))
    await p.send(ask)
    expected = (
        "На сегодня фото закончились (1 в день). С Premium — 20 в день."
        if lang == "ru"
        else "That's all my photos for today (1 a day). With Premium: 20 a day."
    )
    assert p.last_bot_text() == expected
    assert p.buttons()  # the buy buttons of the paywall
    assert len(server.of("/images/generations")) == 1  # nothing asked
    assert len(await _rows(env, p.user_id)) == rows_before  # nothing stored
    assert await env.core.dialogs.allowance.used_today(p.user_id, PHOTO) == 1


async def test_premium_players_get_the_premium_allowance(voice_env: tuple[BotEnv, FakeMediaServer]) -> None:
    env, server = voice_env
    _on(env)
    env.core.settings.free_daily_photos = 0
    env.core.settings.premium_daily_photos = 2
    p = env.player()
    await env.choose(p)
    env.llm.replies.append("Tall, dark hair.")  # type: ignore[union-attr]
    await p.send("Пришли фото")
    assert p.last_bot_text() == "Фото — для Premium: до 2 в день."
    assert not server.of("/images/generations")
    await _premium(env, p.user_id)
    for _ in range(2):
        await p.send("Пришли фото")
        assert p.last_bot_message().kind == "photo"  # type: ignore[union-attr]
    await p.send("Пришли фото")
    assert p.last_bot_text() == "На сегодня фото закончились (2 в день). С Premium — 2 в день."
    assert p.buttons() == []  # already Premium: nothing to sell


async def test_a_failed_photo_is_given_back(voice_env: tuple[BotEnv, FakeMediaServer]) -> None:
    env, server = voice_env
    _on(env)
    env.core.settings.free_daily_photos = 1
    p = env.player()
    await env.choose(p)
    env.llm.replies.append("Freckles.")  # type: ignore[union-attr]
    server.media_modes.append("500")
    await p.send("Пришли фото")
    assert p.buttons() == ["Повторить"]
    assert await env.core.dialogs.allowance.used_today(p.user_id, PHOTO) == 0
    await p.click("Повторить")
    assert p.last_bot_message().kind == "photo"  # type: ignore[union-attr]
    assert await env.core.dialogs.allowance.used_today(p.user_id, PHOTO) == 1


async def test_voice_replies_run_out_into_text_and_failures_are_given_back(
    voice_env: tuple[BotEnv, FakeMediaServer],
) -> None:
    env, server = voice_env
    _on(env)
    env.core.settings.free_daily_voice_replies = 1
    p = env.player()
    await env.choose(p)
    await env.core.players.update_settings(p.user_id, voice_replies="always")
    server.media_modes.append("500")
    await p.send("раз")
    assert p.last_bot_message().kind == "text"  # type: ignore[union-attr]
    assert await env.core.dialogs.allowance.used_today(p.user_id, VOICE) == 0  # given back
    await p.send("два")
    assert p.last_bot_message().kind == "voice"  # type: ignore[union-attr]
    await p.send("три")
    assert p.last_bot_message().kind == "text"  # type: ignore[union-attr]
    assert p.last_bot_text() == "You said: три"
    assert len(server.of("/audio/speech")) == 2  # the third was not asked for
    assert await env.core.dialogs.allowance.used_today(p.user_id, VOICE) == 1
    assert [r.text for r in await _rows(env, p.user_id) if r.role == USER] == ["раз", "два", "три"]


@pytest.mark.parametrize("lang", ["ru", "en"])
async def test_premium_shows_the_photo_and_voice_allowances(voice_env: tuple[BotEnv, FakeMediaServer], lang: str) -> None:
    env, _server = voice_env
    env.core.settings.image_model = "img"
    env.core.settings.tts_model = "tts-1"
    p = env.player(language_code=lang)
    await p.send("/start")
    await p.send("/premium")
    text = "\n".join(m.text or "" for m in p.bot_messages()[-2:])
    if lang == "ru":
        assert "Голосовые ответы: 100 в день" in text and "Фото от персонажа: 20 в день" in text
    else:
        assert "Voice replies: 100 a day" in text and "Photos from the persona: 20 a day" in text
    free, premium = env.core.billing.plans()[:2]
    assert (free.daily_photos, free.daily_voice_replies, premium.daily_photos) == (1, 5, 20)
    env.core.settings.image_model = None
    assert env.core.billing.plans()[1].daily_photos == 0  # photos off: not offered


async def test_media_are_kept_only_in_vitte_media_dir(
    voice_env: tuple[BotEnv, FakeMediaServer], tmp_path_factory: pytest.TempPathFactory
) -> None:
    import os

    from tests.test_voice import VOICE

    env, _server = voice_env
    _on(env)
    p = env.player()
    await env.choose(p)
    await env.core.players.update_settings(p.user_id, voice_replies="voice")
    cwd_before = set(os.listdir("."))
    env.llm.replies.append("Looks.")  # type: ignore[union-attr]
    await p.send("Пришли фото")
    await p.send_voice(VOICE, duration=2)
    assert set(os.listdir(".")) == cwd_before  # nothing written without VITTE_MEDIA_DIR

    media_dir = tmp_path_factory.mktemp("media")
    env.core.settings.media_dir = str(media_dir)
    env.core.settings.free_daily_photos = 5
    await p.send("Пришли фото")
    await p.send_voice(VOICE, duration=2)
    kept = sorted(str(f.relative_to(media_dir)).split("/")[0] for f in media_dir.rglob("*") if f.is_file())
    assert kept == ["heard", "photos", "spoken"]
    heard = next(f for f in media_dir.rglob("*") if f.is_file() and f.parts[-3] == "heard")
    assert heard.read_bytes() == VOICE and heard.name.endswith("voice.ogg")
    photo = next(f for f in media_dir.rglob("*.png"))
    sent = [m for m in p.bot_messages() if m.kind == "photo"][-1]
    assert sent.file is not None and photo.read_bytes() == sent.file.data
    assert not list(media_dir.rglob("*.part"))


async def test_one_more_photo_for_stars_is_bought_spent_and_refunded(voice_env: tuple[BotEnv, FakeMediaServer]) -> None:
    from vitte.billing import PHOTO as PHOTO_PLAN

    env, server = voice_env
    _on(env)
    from pydantic import SecretStr

    env.core.settings.free_daily_photos = 0
    env.core.settings.photo_stars = 25
    env.core.settings.image_model = "img"  # the photo is on sale when photos are on
    env.core.settings.payload_secret = SecretStr("a-test-payload-secret-of-some-length")
    p = env.player()
    await env.choose(p)
    env.llm.replies.append("Curly hair.")  # type: ignore[union-attr]
    await p.send("Пришли фото")
    assert p.last_bot_text() == "Фото — для Premium: до 20 в день."
    assert p.buttons()[0] == "📷 Ещё фото — 25 ⭐"
    await p.click("📷 Ещё фото — 25 ⭐")
    invoice = p.last_bot_message()
    assert invoice is not None and invoice.kind == "invoice" and invoice.invoice is not None
    assert invoice.invoice["total_amount"] == 25
    await p.buy(invoice.message_id)
    assert "Оплачено: попросите фото" in (p.last_bot_text() or "")
    assert (await env.core.players.get(p.user_id)) is not None
    payments = await env.core.billing.list_payments(p.user_id)
    assert [pay.plan for pay in payments] == [PHOTO_PLAN]

    await p.send("Пришли фото")  # the bought photo is spent
    assert p.last_bot_message().kind == "photo"  # type: ignore[union-attr]
    await p.send("Пришли фото")
    assert p.last_bot_text() == "Фото — для Premium: до 20 в день."
    assert len(server.of("/images/generations")) == 1

    # a refund of a photo not taken yet takes it back
    await p.click("📷 Ещё фото — 25 ⭐")
    await p.buy(p.last_bot_message().message_id)  # type: ignore[union-attr]
    latest = (await env.core.billing.list_payments(p.user_id))[0]
    await env.core.billing.mark_refunded(latest)
    async with env.core.db.session() as s:
        user = await s.get(User, p.user_id)
        assert user is not None and user.extra_photos == 0


async def test_one_more_voice_reply_for_stars_is_offered_bought_spent_and_refunded(
    voice_env: tuple[BotEnv, FakeMediaServer],
) -> None:
    """VITTE_VOICE_STARS: the voice replies of the day used up, the player is told once a day
    (the text still comes) with '🎤 Ещё голосовое — 10 ⭐'; the invoice is checked at pre-checkout,
    recorded once, the bought one spent on the next reply; /premium sells it too; a refund of an
    unspent one takes it back."""
    from pydantic import SecretStr

    from vitte.billing import VOICE as VOICE_PLAN
    from vitte.billing import WRONG_PRICE, sign_payload

    env, server = voice_env
    _on(env)
    env.core.settings.tts_model = "tts-1"  # voice replies are on sale while TTS is on
    env.core.settings.image_model = "img"  # and photos while images are on
    env.core.settings.free_daily_voice_replies = 0
    env.core.settings.voice_stars = 10
    env.core.settings.payload_secret = SecretStr("a-test-payload-secret-of-some-length")
    buy_text = "🎤 Ещё голосовое — 10 ⭐"
    offer_text = "Голосовые ответы — в Премиуме: до 100 в день. Пока отвечаю текстом."
    p = env.player()
    await env.choose(p)
    await env.core.players.update_settings(p.user_id, voice_replies="always")
    await p.send("раз")
    assert p.last_bot_text() == "You said: раз"  # the reply still comes, as text
    offers = [m for m in p.bot_messages() if m.text == offer_text]
    assert len(offers) == 1 and p.buttons(offers[0])[0] == buy_text
    await p.send("два")
    assert p.last_bot_text() == "You said: два"
    assert len([m for m in p.bot_messages() if m.text == offer_text]) == 1  # once a day
    assert not server.of("/audio/speech")

    await p.click(buy_text, offers[0])
    invoice = p.last_bot_message()
    assert invoice is not None and invoice.kind == "invoice" and invoice.invoice is not None
    assert invoice.invoice["total_amount"] == 10
    assert env.core.billing.validate_pre_checkout(
        p.user_id, invoice.invoice["payload"], "XTR", 9
    ) == (False, WRONG_PRICE)
    await p.buy(invoice.message_id)
    assert "Оплачено: следующий ответ пришлю голосом 🎤" in (p.last_bot_text() or "")
    assert [pay.plan for pay in await env.core.billing.list_payments(p.user_id)] == [VOICE_PLAN]
    async with env.core.db.session() as s:
        user = await s.get(User, p.user_id)
        assert user is not None and user.extra_voice == 1 and user.extra_photos == 0
    await p.send("/premium")  # what is bought and not spent yet is shown
    assert "Куплено голосовых в запас: 1" in (p.last_bot_text() or "")
    assert (await env.core.billing.entitlement(p.user_id)).to_json()["extra_voice"] == 1

    await p.send("три")  # the bought one is spent
    assert p.last_bot_message().kind == "voice"  # type: ignore[union-attr]
    await p.send("четыре")
    assert p.last_bot_message().kind == "text"  # type: ignore[union-attr]
    assert len(server.of("/audio/speech")) == 1

    # /premium sells it beside the photo; a refund of one not spent yet takes it back
    await p.send("/premium")
    assert "Одно голосовое — 10 ⭐" in (p.last_bot_text() or "")
    assert buy_text in p.buttons() and "📷 Ещё фото — 25 ⭐" in p.buttons()
    await p.click(buy_text)
    await p.buy(p.last_bot_message().message_id)  # type: ignore[union-attr]
    latest = (await env.core.billing.list_payments(p.user_id))[0]
    assert latest.plan == VOICE_PLAN
    await env.core.billing.mark_refunded(latest)
    async with env.core.db.session() as s:
        user = await s.get(User, p.user_id)
        assert user is not None and user.extra_voice == 0

    # not on sale: no button, and an invoice for it is refused at pre-checkout
    env.core.settings.voice_stars = 0
    assert env.core.billing.item_plan(VOICE_PLAN) is None
    await p.send("/premium")
    assert buy_text not in p.buttons()
    payload = sign_payload(env.core.billing.secret, VOICE_PLAN, p.user_id)
    assert env.core.billing.validate_pre_checkout(p.user_id, payload, "XTR", 10)[0] is False


@pytest.mark.parametrize("lang", ["ru", "en"])
async def test_voice_replies_used_up_are_told_once_with_the_offer(
    voice_env: tuple[BotEnv, FakeMediaServer], lang: str
) -> None:
    env, _server = voice_env
    _on(env)
    env.core.settings.tts_model = "tts-1"
    env.core.settings.free_daily_voice_replies = 1
    env.core.settings.voice_stars = 10
    p = env.player(language_code=lang)
    await env.choose(p)
    await env.core.players.update_settings(p.user_id, voice_replies="always")
    await p.send("раз")
    assert p.last_bot_message().kind == "voice"  # type: ignore[union-attr]
    before = len(p.bot_messages())
    await p.send("два")
    told, reply = p.bot_messages()[before:]
    expected = (
        "Голосовые ответы на сегодня закончились (1 в день) — пока отвечаю текстом. В Премиуме: 100 в день."
        if lang == "ru"
        else "That's all my voice replies for today (1 a day), so I'll write for now. With Premium: 100 a day."
    )
    assert told.text == expected and reply.kind == "text" and reply.text == "You said: два"
    buy = "🎤 Ещё голосовое — 10 ⭐" if lang == "ru" else "🎤 One more voice reply — 10 ⭐"
    assert p.buttons(told)[0] == buy and len(p.buttons(told)) > 1  # and Premium
    await p.send("три")
    assert len(p.bot_messages()) == before + 3  # told once a day: only the reply this time
