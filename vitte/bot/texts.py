"""Everything the bot says, in Russian (the default) and English.

The Russian button and message texts quoted in seed/chat-architecture.ru.md are the
product's interface and are kept exactly: "💕 Начать общение", "Продолжить с …?",
"Продолжить общение", "Начать заново", "Выбрать персонажа".
"""

from __future__ import annotations

from typing import Any

LANGS = ("ru", "en")
DEFAULT_LANG = "ru"

TEXTS: dict[str, dict[str, str]] = {
    "ru": {
        # /start
        "greet_named": "Привет, {name}! 💕",
        "greet_anon": "Привет! 💕",
        "greet_body": (
            "Я Vitte — здесь живут персонажи, с которыми можно поговорить по душам. "
            "Выберите героя и историю, а дальше просто пишите в этот чат."
        ),
        "btn_start": "💕 Начать общение",
        # the "Начать общение" flow (seed)
        "continue_q": "Продолжить с {persona}?",
        "btn_continue": "Продолжить общение",
        "btn_over": "Начать заново",
        "btn_choose": "Выбрать персонажа",
        "choose_prompt": "Выберите персонажа и историю — и начнём.",
        "webapp_missing": (
            "Приложение для выбора персонажа пока не подключено: администратор ещё не указал "
            "его адрес, поэтому выбрать персонажа сейчас нельзя. Загляните чуть позже."
        ),
        "personas_list": "Персонажи: {names}.",
        "continue_reminder": "Продолжаем с {persona}. Вы остановились здесь:\n\n«{last}»\n\nНапишите, что ответите 💬",
        "continue_empty": "Продолжаем с {persona}. Напишите что-нибудь — вас ждут 💬",
        "started_over": "Начинаем заново с {persona}: память очищена.",
        "stale": "Эта кнопка устарела.",
        # deep link /start persona_<id>
        "persona_card": "{persona} — {tagline}\n\nОткройте карточку, чтобы выбрать историю.",
        "persona_card_short": "{persona}\n\nОткройте карточку, чтобы выбрать историю.",
        "btn_open_persona": "Открыть: {persona}",
        "persona_unknown": "Такого персонажа у нас нет.",
        # chat
        "non_text": "Я пока понимаю только текст 🙂 Напишите словами — и я отвечу.",
        "edited": "Исправленное сообщение я не перечитываю — лучше отправьте новое 🙂",
        "too_long": (
            "Слишком длинное сообщение: можно до {limit} символов. "
            "Сократите, пожалуйста, и отправьте ещё раз."
        ),
        "reply_failed": (
            "Не получилось ответить — что-то со связью. Ваше сообщение сохранено, "
            "можно попробовать ещё раз."
        ),
        "btn_retry": "Повторить",
        "regen_failed": "Не получилось переписать ответ. Попробуйте ещё раз чуть позже.",
        "nothing_to_regen": "Переписывать пока нечего.",
        "stopped_empty": "⏹ Остановлено.",
        "interrupted": "⏸ Ответ прервался: бот перезапускается. Напишите ещё раз через минуту.",
        "restart_interrupted": "⏸ Ответ прервался: бот перезапускался. Нажмите «Повторить» — я отвечу заново.",
        # errors
        "one_moment": "Секунду… Сервис на мгновение недоступен. Попробуйте ещё раз через минуту.",
        "oops": "Что-то пошло не так. Попробуйте ещё раз.",
        "unknown_command": "Не знаю такой команды. Список команд — /help.",
        "private_only": "Я общаюсь только в личных сообщениях — напишите мне напрямую.",
        # /help
        "help": (
            "Что я умею:\n"
            "/start — начало\n"
            "/chat — продолжить общение или выбрать персонажа\n"
            "/premium — Премиум, пакеты ответов, остаток на сегодня\n"
            "/settings — язык, стиль ответов, удаление данных\n"
            "/mydata — все ваши данные одним файлом\n"
            "/help — эта подсказка\n"
            "/paysupport — помощь с оплатой\n"
            "/terms — условия\n\n"
            "Просто пишите в чат — персонаж ответит. Кнопка 🔄 под последним ответом "
            "переписывает его, кнопка остановки во время ответа прерывает его."
        ),
        # /settings
        "settings": "⚙️ Настройки\n\nЯзык: {language}\nСтиль ответов: {style}",
        "lang_ru": "Русский",
        "lang_en": "English",
        "style_short": "Коротко",
        "style_normal": "Обычно",
        "style_long": "Подробно",
        "btn_delete": "Удалить мои данные",
        "delete_confirm": "Удалить все ваши диалоги и историю переписки? Это нельзя отменить.",
        "btn_delete_yes": "Да, удалить",
        "btn_cancel": "Отмена",
        "deleted": "Готово: ваши данные удалены. Чтобы начать снова, нажмите /start.",
        "saved": "Сохранено",
        # /stats
        "stats": (
            "📊 Статистика\n"
            "Игроков: {players}\n"
            "Активных диалогов: {dialogs}\n"
            "Сообщений сегодня (UTC): {messages}\n"
            "Сейчас онлайн: {online}"
        ),
        # trust and safety (vitte/safety): the age gate, blocking, the rate limit
        "age_question": "Vitte — для взрослых. Вам уже есть 18 лет?",
        "btn_age_yes": "Мне есть 18",
        "btn_age_no": "Мне нет 18",
        "age_thanks": "Спасибо! Можно начинать 💕",
        "age_declined": "Извините, общение в Vitte доступно только взрослым (18+).",
        "blocked": "Извините, доступ к Vitte для вас закрыт.",
        "rate_limited": "Не так быстро 🙂 Попробуйте снова через {seconds} с.",
        # the player's data (/mydata) and the admins' /block, /unblock (vitte/bot/handlers/safety.py)
        "mydata_caption": (
            "Ваши данные в Vitte: профиль, настройки, диалоги со всеми сообщениями, платежи. "
            "Удалить их можно в /settings."
        ),
        "mydata_too_often": "Файл с данными уже отправлен. Следующий можно запросить через {seconds} с.",
        "block_usage": (
            "/block <id или @username> [причина] — заблокировать игрока; можно и ответом на "
            "пересланное от него сообщение.\n/unblock <id или @username> — снять блокировку."
        ),
        "block_unknown": "Игрок {who} не найден: он ещё не писал боту или удалил свои данные.",
        "block_hidden": "Telegram скрыл автора пересланного сообщения. Используйте /block <id или @username>.",
        "block_done": "Заблокирован: {who}. Причина: {reason}.",
        "unblock_done": "Блокировка снята: {who}.",
        "no_reason": "не указана",
        # bot commands (the menu)
        "cmd_start": "Начало",
        "cmd_chat": "Начать общение",
        "cmd_settings": "Настройки",
        "cmd_mydata": "Мои данные",
        "cmd_help": "Помощь",
        "cmd_premium": "Премиум и лимиты",
        "cmd_paysupport": "Помощь с оплатой",
        "cmd_terms": "Условия",
        "menu_button": "Персонажи",
    },
    "en": {
        "greet_named": "Hi, {name}! 💕",
        "greet_anon": "Hi! 💕",
        "greet_body": (
            "I'm Vitte — the home of characters you can have a heart-to-heart with. "
            "Choose a character and a story, then simply write in this chat."
        ),
        "btn_start": "💕 Start chatting",
        "continue_q": "Continue with {persona}?",
        "btn_continue": "Continue chatting",
        "btn_over": "Start over",
        "btn_choose": "Choose a character",
        "choose_prompt": "Choose a character and a story, and let's begin.",
        "webapp_missing": (
            "The character picker (the Web App) is not set up yet: the operator has not given "
            "its address, so a character can't be chosen right now. Please check back later."
        ),
        "personas_list": "Characters: {names}.",
        "continue_reminder": "Back with {persona}. You left off here:\n\n“{last}”\n\nWrite your answer 💬",
        "continue_empty": "Back with {persona}. Write something — they are waiting 💬",
        "started_over": "Starting over with {persona}: memory cleared.",
        "stale": "This button is out of date.",
        "persona_card": "{persona} — {tagline}\n\nOpen the card to choose a story.",
        "persona_card_short": "{persona}\n\nOpen the card to choose a story.",
        "btn_open_persona": "Open {persona}",
        "persona_unknown": "There is no such character.",
        "non_text": "I only understand text for now 🙂 Put it in words and I'll answer.",
        "edited": "I don't reread edited messages — please send a new one 🙂",
        "too_long": (
            "That message is too long: the limit is {limit} characters. "
            "Please shorten it and send it again."
        ),
        "reply_failed": (
            "Couldn't answer just now — a connection hiccup. Your message is saved; "
            "you can try again."
        ),
        "btn_retry": "Retry",
        "regen_failed": "Couldn't rewrite the reply. Please try again a bit later.",
        "nothing_to_regen": "There is nothing to rewrite yet.",
        "stopped_empty": "⏹ Stopped.",
        "interrupted": "⏸ The reply was cut off: the bot is restarting. Please write again in a minute.",
        "restart_interrupted": "⏸ The reply was cut off by a restart. Tap Retry and I'll answer again.",
        "one_moment": "One moment… The service is briefly unavailable. Please try again in a minute.",
        "oops": "Something went wrong. Please try again.",
        "unknown_command": "I don't know that command. See /help for the list.",
        "private_only": "I only chat in private messages — please write to me directly.",
        "help": (
            "What I can do:\n"
            "/start — the beginning\n"
            "/chat — continue chatting or choose a character\n"
            "/premium — Premium, reply packs, what is left today\n"
            "/settings — language, reply style, deleting your data\n"
            "/mydata — all your data in one file\n"
            "/help — this help\n"
            "/paysupport — help with payments\n"
            "/terms — terms\n\n"
            "Just write in the chat and the character answers. The 🔄 button under the latest "
            "reply rewrites it; the stop button while a reply is written cuts it short."
        ),
        "settings": "⚙️ Settings\n\nLanguage: {language}\nReply style: {style}",
        "lang_ru": "Русский",
        "lang_en": "English",
        "style_short": "Short",
        "style_normal": "Normal",
        "style_long": "Long",
        "btn_delete": "Delete my data",
        "delete_confirm": "Delete all your dialogs and chat history? This cannot be undone.",
        "btn_delete_yes": "Yes, delete",
        "btn_cancel": "Cancel",
        "deleted": "Done: your data has been deleted. Press /start to begin again.",
        "saved": "Saved",
        "stats": (
            "📊 Statistics\n"
            "Players: {players}\n"
            "Active dialogs: {dialogs}\n"
            "Messages today (UTC): {messages}\n"
            "Online now: {online}"
        ),
        "age_question": "Vitte is for adults. Are you 18 or older?",
        "btn_age_yes": "I'm 18 or older",
        "btn_age_no": "I'm under 18",
        "age_thanks": "Thank you! Let's begin 💕",
        "age_declined": "Sorry, Vitte is for adults only (18+).",
        "blocked": "Sorry, your access to Vitte is closed.",
        "rate_limited": "Not so fast 🙂 Please try again in {seconds} s.",
        "mydata_caption": (
            "Your data in Vitte: profile, settings, dialogs with every message, payments. "
            "You can delete it in /settings."
        ),
        "mydata_too_often": "Your data file has just been sent. You can ask for another in {seconds} s.",
        "block_usage": (
            "/block <id or @username> [reason] — block a player; also works as a reply to a "
            "message forwarded from them.\n/unblock <id or @username> — lift the block."
        ),
        "block_unknown": "Player {who} not found: they have not written to the bot or deleted their data.",
        "block_hidden": "Telegram hides who wrote the forwarded message. Use /block <id or @username>.",
        "block_done": "Blocked: {who}. Reason: {reason}.",
        "unblock_done": "Unblocked: {who}.",
        "no_reason": "none given",
        "cmd_start": "Start",
        "cmd_chat": "Start chatting",
        "cmd_settings": "Settings",
        "cmd_mydata": "My data",
        "cmd_help": "Help",
        "cmd_premium": "Premium and limits",
        "cmd_paysupport": "Help with payments",
        "cmd_terms": "Terms",
        "menu_button": "Characters",
    },
}


def norm_lang(lang: str | None) -> str:
    return lang if lang in TEXTS else DEFAULT_LANG


def t(lang: str | None, key: str, /, **kw: Any) -> str:
    """The text `key` in `lang` (Russian when the language is unknown), formatted with `kw`."""
    text = TEXTS[norm_lang(lang)][key]
    return text.format(**kw) if kw else text


def all_langs(key: str) -> set[str]:
    """The text in every language (to match a reply-keyboard press, for instance)."""
    return {TEXTS[lang][key] for lang in LANGS}
