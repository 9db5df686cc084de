"""Telegram Web App initData, signed the way Telegram signs it (for tests and local tools)."""

from __future__ import annotations

import json
import time
from urllib.parse import urlencode

from vitte.webapp.auth import sign_init_data

TEST_BOT_TOKEN = "123456789:AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw-test"
OTHER_BOT_TOKEN = "987654321:ZZHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw-evil"


def make_init_data(
    user_id: int,
    bot_token: str = TEST_BOT_TOKEN,
    *,
    first_name: str = "Аня",
    username: str | None = "anya",
    language_code: str = "ru",
    auth_date: int | None = None,
    extra: dict[str, str] | None = None,
    user: dict[str, object] | None = None,
) -> str:
    """A URL-encoded initData string with a valid hash (unless the token is another bot's)."""
    if user is None:
        user = {"id": user_id, "first_name": first_name, "language_code": language_code}
        if username:
            user["username"] = username
    fields = {
        "query_id": "AAHdF6IQAAAAAN0XohDhrOrc",
        "user": json.dumps(user, ensure_ascii=False, separators=(",", ":")),
        "auth_date": str(int(time.time()) if auth_date is None else auth_date),
    }
    fields.update(extra or {})
    fields["hash"] = sign_init_data(fields, bot_token)
    return urlencode(fields)


def auth_header(init_data: str) -> dict[str, str]:
    return {"Authorization": f"tma {init_data}"}
