"""The bot's handlers: plain module-level ``async def`` functions, one module per area.

A handler takes the update's object (``Message``, ``CallbackQuery`` …) and names what it needs;
aiogram passes each parameter by name from the handling's data: ``core: Core`` and
``runtime: Runtime`` (the dispatcher's workflow data, ``dp["core"]`` / ``dp["runtime"]``, set by
`vitte.bot.factory.build_dispatcher`), ``bot: Bot``, ``turn: Turn`` (the player's turn, opened by
`vitte.bot.middlewares.PlayerLockMiddleware` for messages and button presses), and what a filter
adds (``command``, ``callback_data``). Nothing is captured, so a handler can be imported and
called alone (tests/test_bot_handlers.py calls `chat.chat_command` with a real Core and the
local Bot API).

Routers: each module has ``router()`` (``router(admin_ids)`` where a filter needs the admins,
``groups_router()`` as well in `other`) that registers the module's handlers, with their
filters and in their order, on a FRESH Router. Fresh, because aiogram attaches a Router to one
parent only (a second ``include_router`` raises), while one process builds many Dispatchers:
the tests, the console and the benchmark each call `build_dispatcher`. A module-level
``router = Router()`` would work for the first Dispatcher only. The routers' order (which
matters: first match wins) is written once, in `build_dispatcher`.
"""
