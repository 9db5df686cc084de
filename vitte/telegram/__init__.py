"""Telegram, called: the one `make_bot` and the Bot API calls several faces share.

The bot (`vitte.bot`), the Web App (`vitte.webapp`) and the CLI make these calls; this package
imports none of them (only the core and aiogram), so no face imports another to reach Telegram.

- ``vitte.telegram.bot.make_bot(settings, session=None) -> Bot``: VITTE_BOT_TOKEN on
  VITTE_TELEGRAM_API_URL, with the response-type pinning (`vitte.perf`).
- ``vitte.telegram.calls``: ``call_with_retry`` (429 and brief network trouble waited out),
  ``split_text`` (Telegram's 4096 characters, cut on sentence boundaries).
- ``vitte.telegram.messages``: ``send_opening`` (a story's opening, whichever face opened the
  dialog), ``send_player_data`` (the player's data as a file: /mydata and the Web App's
  "Download my data").
- ``vitte.telegram.payments``: invoices and invoice links, refunds, renewal changes.
  ``vitte.billing`` computes (the invoice, who may be refunded, what a refund ends) and records;
  the Telegram call is made here, between the two.
"""

from vitte.aiogram_models import install as _lazy_aiogram_models

_lazy_aiogram_models()  # before aiogram is imported: its models are built on first use
