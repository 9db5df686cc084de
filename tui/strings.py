"""The console's own words, in the simulated player's language (what their Telegram would say).

Only the chrome lives here (status line, placeholders, the Web App's labels as its page shows
them); everything the bot or the Web App says comes from them, verbatim.
"""

from __future__ import annotations

from typing import Any

STRINGS: dict[str, dict[str, str]] = {
    "ru": {
        "online": "в сети",
        "connecting": "подключение…",
        "typing": "печатает…",
        "thinking": "думает…",
        "bot": "бот",
        "placeholder": "Сообщение",
        "empty_title": "Здесь пока пусто",
        "empty_hint": "Нажмите «СТАРТ» или напишите /start",
        "start_button": "СТАРТ",
        "edited": "изменено",
        "stop_hint": "esc — остановить",
        "stopped": "остановлено",
        "pay": "Оплатить ⭐ {amount}",
        "paid": "Оплачено: ⭐ {amount}",
        "open_file": "Открыть файл",
        "older": "↑ ещё {count} сообщ. выше — прокрутите вверх",
        "newer": "↓ есть новые сообщения — End",
        "history": "Ранее в этом диалоге (из базы): {persona}",
        "file_kind_photo": "🖼 Фото",
        "file_kind_sticker": "Стикер",
        "file_kind_voice": "🎤 Голосовое сообщение",
        "file_kind_audio": "🎵 Аудио",
        "file_kind_video": "🎬 Видео",
        "file_kind_animation": "GIF",
        "file_kind_video_note": "⏺ Видеосообщение",
        # Web App (as the page says it)
        "wa_title": "Vitte",
        "wa_list_title": "С кем поговорим?",
        "wa_list_lead": "Выберите персонажа и историю — разговор продолжится в чате с ботом.",
        "wa_now": "Ваш диалог",
        "wa_current": "Сейчас общаетесь",
        "wa_about": "О персонаже",
        "wa_stories": "Истории",
        "wa_start": "Начать разговор",
        "wa_refresh": "Обновить и продолжить",
        "wa_current_story": "Текущая история",
        "wa_confirm_restart": "Начать эту историю заново? Память текущего диалога будет очищена.",
        "wa_confirm_switch": (
            "Текущий диалог с персонажем «{name}» завершится, а новая история начнётся "
            "с чистого листа. Продолжить?"
        ),
        "wa_sent": "Готово! Сообщение уже в чате с ботом",
        "wa_settings": "Настройки",
        "wa_language": "Язык",
        "wa_style": "Стиль ответов",
        "wa_style_short": "Коротко",
        "wa_style_short_hint": "Одна-две фразы, как в живой переписке",
        "wa_style_normal": "Обычно",
        "wa_style_normal_hint": "Несколько предложений с действиями и эмоциями",
        "wa_style_long": "Подробно",
        "wa_style_long_hint": "Развёрнутые, атмосферные ответы",
        "wa_data": "Ваши данные",
        "wa_export": "Скачать мои данные",
        "wa_export_hint": "Файл со всеми вашими данными придёт в чат с ботом.",
        "wa_export_sent": "Файл с данными отправлен в чат с ботом",
        "wa_delete": "Удалить мои данные",
        "wa_delete_hint": "Диалоги и память персонажей будут удалены безвозвратно.",
        "wa_confirm_delete": "Удалить все ваши диалоги и память персонажей? Это нельзя отменить.",
        "wa_deleted": "Ваши данные удалены",
        "wa_saved": "Сохранено",
        "wa_premium": "Премиум",
        "wa_premium_title": "Vitte Премиум",
        "wa_premium_lead": "Больше тепла, памяти и слов в каждом ответе.",
        "wa_your_plan": "Ваш план",
        "wa_active_until": "Действует до {date}",
        "wa_free_forever": "Бесплатно, без ограничений по времени",
        "wa_free": "Бесплатно",
        "wa_price": "{price} ⭐ · {days} дней",
        "wa_buy": "Оформить за {price} ⭐",
        "wa_you_have": "Ваш текущий план",
        "wa_coming_soon": "Оплата появится совсем скоро ✨",
        "wa_paid": "Спасибо! Премиум активирован",
        "wa_back": "Назад",
        "wa_close": "Закрыть",
        "wa_yes": "Да",
        "wa_no": "Отмена",
        "wa_loading": "Загрузка…",
        "wa_stories_1": "история",
        "wa_stories_2": "истории",
        "wa_stories_5": "историй",
        "wa_unavailable": "Web App недоступен: {error}",
        "lang_ru": "Русский",
        "lang_en": "English",
    },
    "en": {
        "online": "online",
        "connecting": "connecting…",
        "typing": "typing…",
        "thinking": "thinking…",
        "bot": "bot",
        "placeholder": "Message",
        "empty_title": "No messages here yet",
        "empty_hint": "Press START or type /start",
        "start_button": "START",
        "edited": "edited",
        "stop_hint": "esc — stop",
        "stopped": "stopped",
        "pay": "Pay ⭐ {amount}",
        "paid": "Paid: ⭐ {amount}",
        "open_file": "Open file",
        "older": "↑ {count} more above — scroll up",
        "newer": "↓ newer messages — End",
        "history": "Earlier in this dialog (from the store): {persona}",
        "file_kind_photo": "🖼 Photo",
        "file_kind_sticker": "Sticker",
        "file_kind_voice": "🎤 Voice message",
        "file_kind_audio": "🎵 Audio",
        "file_kind_video": "🎬 Video",
        "file_kind_animation": "GIF",
        "file_kind_video_note": "⏺ Video message",
        "wa_title": "Vitte",
        "wa_list_title": "Who shall we talk to?",
        "wa_list_lead": "Pick a persona and a story — the conversation continues in the bot's chat.",
        "wa_now": "Your dialog",
        "wa_current": "Talking now",
        "wa_about": "About",
        "wa_stories": "Stories",
        "wa_start": "Start the conversation",
        "wa_refresh": "Refresh and continue",
        "wa_current_story": "Current story",
        "wa_confirm_restart": "Start this story over? The memory of the current dialog will be cleared.",
        "wa_confirm_switch": (
            "Your dialog with {name} will end and the new story starts from a clean slate. Continue?"
        ),
        "wa_sent": "Done! The message is waiting in the bot's chat",
        "wa_settings": "Settings",
        "wa_language": "Language",
        "wa_style": "Reply style",
        "wa_style_short": "Short",
        "wa_style_short_hint": "A line or two, like a real chat",
        "wa_style_normal": "Normal",
        "wa_style_normal_hint": "A few sentences with actions and feelings",
        "wa_style_long": "Long",
        "wa_style_long_hint": "Rich, atmospheric replies",
        "wa_data": "Your data",
        "wa_export": "Download my data",
        "wa_export_hint": "A file with all your data arrives in the bot's chat.",
        "wa_export_sent": "Your data file has been sent to the bot's chat",
        "wa_delete": "Delete my data",
        "wa_delete_hint": "Dialogs and the personas' memory are erased for good.",
        "wa_confirm_delete": "Delete all your dialogs and the personas' memory? This cannot be undone.",
        "wa_deleted": "Your data has been deleted",
        "wa_saved": "Saved",
        "wa_premium": "Premium",
        "wa_premium_title": "Vitte Premium",
        "wa_premium_lead": "More warmth, memory and words in every reply.",
        "wa_your_plan": "Your plan",
        "wa_active_until": "Active until {date}",
        "wa_free_forever": "Free, no time limit",
        "wa_free": "Free",
        "wa_price": "{price} ⭐ · {days} days",
        "wa_buy": "Get it for {price} ⭐",
        "wa_you_have": "Your current plan",
        "wa_coming_soon": "Payments are coming very soon ✨",
        "wa_paid": "Thank you! Premium is active",
        "wa_back": "Back",
        "wa_close": "Close",
        "wa_yes": "Yes",
        "wa_no": "Cancel",
        "wa_loading": "Loading…",
        "wa_stories_1": "story",
        "wa_stories_2": "stories",
        "wa_stories_5": "stories",
        "wa_unavailable": "The Web App is unavailable: {error}",
        "lang_ru": "Русский",
        "lang_en": "English",
    },
}


def tr(lang: str | None, key: str, **kw: Any) -> str:
    table = STRINGS["en" if lang == "en" else "ru"]
    text = table.get(key) or STRINGS["ru"].get(key) or key
    return text.format(**kw) if kw else text


def stories_label(lang: str, n: int) -> str:
    if lang == "en":
        return f"{n} " + tr(lang, "wa_stories_1" if n == 1 else "wa_stories_2")
    m10, m100 = n % 10, n % 100
    if m10 == 1 and m100 != 11:
        key = "wa_stories_1"
    elif 2 <= m10 <= 4 and not 12 <= m100 <= 14:
        key = "wa_stories_2"
    else:
        key = "wa_stories_5"
    return f"{n} {tr(lang, key)}"
