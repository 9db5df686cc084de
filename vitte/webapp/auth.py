"""Telegram Web App initData: validated exactly as Telegram documents it.

    secret_key       = HMAC_SHA256(key="WebAppData", msg=bot_token)
    data_check_string = every field except `hash`, sorted by key, "key=value" joined by "\\n"
    hash             = hex(HMAC_SHA256(key=secret_key, msg=data_check_string))

The hash is compared in constant time; `auth_date` must be fresh (Telegram sets no maximum
age, so `webapp_auth_max_age` does) and not in the future beyond a small clock skew. Only
then is the `user` field trusted, and the Web App acts for that user id and no other.

`aiogram.utils.web_app.safe_parse_webapp_init_data` checks the HMAC but not `auth_date`,
hence this module.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl

__all__ = [
    "AUTH_SCHEME",
    "MAX_INIT_DATA_BYTES",
    "InitDataError",
    "WebAppUser",
    "init_data_from_header",
    "secret_key",
    "sign_init_data",
    "validate_init_data",
]

AUTH_SCHEME = "tma"
MAX_INIT_DATA_BYTES = 8192  # real initData is well under 1 KiB
FUTURE_SKEW_SECONDS = 60  # a phone's clock may run a little ahead


class InitDataError(Exception):
    """initData is missing, malformed, forged or expired. `code` is machine-readable."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(frozen=True, slots=True)
class WebAppUser:
    id: int
    first_name: str | None
    last_name: str | None
    username: str | None
    language_code: str | None
    is_premium: bool
    auth_date: int
    start_param: str | None = None


def secret_key(bot_token: str) -> bytes:
    return hmac.new(b"WebAppData", bot_token.encode("utf-8"), hashlib.sha256).digest()


def _data_check_string(fields: dict[str, str]) -> str:
    return "\n".join(f"{k}={fields[k]}" for k in sorted(fields) if k != "hash")


def sign_init_data(fields: dict[str, str], bot_token: str) -> str:
    """The `hash` Telegram would put on these fields (used by tests and local tools)."""
    check = _data_check_string(fields)
    return hmac.new(secret_key(bot_token), check.encode("utf-8"), hashlib.sha256).hexdigest()


def init_data_from_header(value: str | None) -> str:
    """The initData from `Authorization: tma <initData>`; InitDataError when absent or malformed."""
    if value is None or not value.strip():
        raise InitDataError("auth_missing", "Telegram initData is missing (Authorization: tma <initData>)")
    scheme, _, rest = value.strip().partition(" ")
    if scheme.lower() != AUTH_SCHEME or not rest.strip():
        raise InitDataError("auth_malformed", "Authorization header must be 'tma <initData>'")
    return rest.strip()


def _str(obj: dict[str, Any], key: str, limit: int = 256) -> str | None:
    value = obj.get(key)
    if isinstance(value, str) and value:
        return value[:limit]
    return None


def validate_init_data(
    init_data: str,
    bot_token: str,
    *,
    max_age: int,
    now: float | None = None,
) -> WebAppUser:
    """Check initData's signature and freshness; return the Telegram user it vouches for.

    Raises InitDataError with code auth_missing / auth_malformed / auth_invalid /
    auth_expired / auth_future / auth_no_user.
    """
    if not init_data:
        raise InitDataError("auth_missing", "Telegram initData is missing")
    if len(init_data.encode("utf-8", "surrogatepass")) > MAX_INIT_DATA_BYTES:
        raise InitDataError("auth_malformed", "Telegram initData is too long")
    try:
        pairs = parse_qsl(init_data, keep_blank_values=True, strict_parsing=True, errors="strict")
    except (ValueError, UnicodeError):
        raise InitDataError("auth_malformed", "Telegram initData is not a query string") from None
    fields: dict[str, str] = {}
    for key, value in pairs:
        if key in fields:
            raise InitDataError("auth_malformed", f"Telegram initData repeats the field {key!r}")
        fields[key] = value
    received = fields.get("hash", "")
    if not received:
        raise InitDataError("auth_malformed", "Telegram initData has no hash")
    if len(received) != 64 or any(c not in "0123456789abcdefABCDEF" for c in received):
        raise InitDataError("auth_malformed", "Telegram initData hash is not a SHA-256 hex digest")
    expected = sign_init_data(fields, bot_token)
    if not hmac.compare_digest(expected, received.lower()):
        raise InitDataError("auth_invalid", "Telegram initData signature does not match")

    # signed by Telegram for this bot: now check what it says
    raw_date = fields.get("auth_date", "")
    if not raw_date.isdigit() or len(raw_date) > 12:
        raise InitDataError("auth_malformed", "Telegram initData has no valid auth_date")
    auth_date = int(raw_date)
    current = time.time() if now is None else now
    if auth_date > current + FUTURE_SKEW_SECONDS:
        raise InitDataError("auth_future", "Telegram initData is dated in the future")
    if current - auth_date > max_age:
        raise InitDataError("auth_expired", "Telegram initData has expired: reopen the app from the bot")

    raw_user = fields.get("user")
    if not raw_user:
        raise InitDataError("auth_no_user", "Telegram initData carries no user")
    try:
        user = json.loads(raw_user)
    except ValueError:
        raise InitDataError("auth_malformed", "Telegram initData user is not JSON") from None
    if not isinstance(user, dict):
        raise InitDataError("auth_malformed", "Telegram initData user is not an object")
    uid = user.get("id")
    if not isinstance(uid, int) or isinstance(uid, bool) or uid <= 0 or uid >= 2**63:
        raise InitDataError("auth_malformed", "Telegram initData user has no valid id")
    return WebAppUser(
        id=uid,
        first_name=_str(user, "first_name", 128),
        last_name=_str(user, "last_name", 128),
        username=_str(user, "username", 64),
        language_code=_str(user, "language_code", 16),
        is_premium=user.get("is_premium") is True,
        auth_date=auth_date,
        start_param=fields.get("start_param") or None,
    )
