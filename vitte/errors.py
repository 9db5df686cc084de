"""Domain errors. Faces turn them into a friendly line (player) or one line + exit code (operator)."""

from __future__ import annotations

from typing import Any, ClassVar, Generic, TypeVar

_K = TypeVar("_K")


class VitteError(Exception):
    """Base of every error the core raises on purpose."""

    # set by DialogEngine.reply when the refused message was a crisis signal: the face still
    # sends vitte.safety.crisis_resources() (see vitte/safety/__init__.py)
    crisis: bool = False


class NotFound(VitteError):
    """Something named does not exist (exit code 1 for the operator, 404 on the Web App)."""


class _Unknown(NotFound, Generic[_K]):
    """``unknown <what>: <key>``; the key asked for is kept in the attribute named `attr`."""

    _what: ClassVar[str]
    _attr: ClassVar[str]

    def __init_subclass__(cls, *, what: str, attr: str, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls._what, cls._attr = what, attr

    def __init__(self, key: _K) -> None:
        super().__init__(f"unknown {self._what}: {key}")
        setattr(self, self._attr, key)


class UnknownUser(_Unknown[object], what="user", attr="user"):
    user: object


class UnknownPersona(_Unknown[str], what="persona", attr="persona_id"):
    persona_id: str


class UnknownStory(_Unknown[str], what="story", attr="story_id"):
    story_id: str


class NoActiveDialog(VitteError):
    """The player has no active dialog (the faces offer the 'Начать общение' flow)."""


class StaleDialog(VitteError):
    """A button from an earlier dialog was pressed; it must not act on the current one."""


class NothingToRegenerate(VitteError):
    """There is no reply (and no unanswered message) to write again."""


class ReplyFailed(VitteError):
    """The LLM could not write a reply. The player's message stays stored; a retry can follow."""

    def __init__(
        self, cause: BaseException, user_message_id: int | None = None, *, crisis: bool = False
    ) -> None:
        super().__init__(str(cause) or type(cause).__name__)
        self.cause = cause
        self.user_message_id = user_message_id
        # the player's message carried a crisis signal: the face still sends the help resources
        self.crisis = crisis


class MessageTooLong(VitteError):
    def __init__(self, limit: int) -> None:
        super().__init__(f"message longer than {limit} characters")
        self.limit = limit


class MigrationBusy(VitteError):
    """A migration waited longer than its lock timeout for a table in use; nothing changed."""

    def __init__(self, waited: str) -> None:
        super().__init__(
            f"the migration waited more than {waited} for a table the running bot is using; "
            "nothing was changed: run it again (in a quieter moment)"
        )


class StoreUnavailable(VitteError):
    """The database cannot be reached right now ('one moment' for the player)."""


# --------------------------------------------------------------------------- payments (vitte/billing.py)
class QuotaExceeded(VitteError):
    """The player's replies for today are used up (free or premium limit, and no pack replies left).

    Raised by the engine's reply/regenerate before anything is stored or the LLM is called;
    `entitlement` (a vitte.billing.Entitlement) says what the player has, for the paywall.
    """

    def __init__(self, entitlement: Any) -> None:
        super().__init__("the daily reply quota is used up")
        self.entitlement = entitlement


class UnknownPlan(_Unknown[str], what="plan", attr="plan_id"):
    plan_id: str


class UnknownPayment(_Unknown[str], what="payment", attr="charge_id"):
    charge_id: str


class PaymentAlreadyRefunded(VitteError):
    def __init__(self, charge_id: str, refunded_at: Any = None) -> None:
        when = f" at {refunded_at:%Y-%m-%d %H:%M} UTC" if refunded_at is not None else ""
        super().__init__(f"payment {charge_id} was already refunded{when}")
        self.charge_id = charge_id
        self.refunded_at = refunded_at


class NoSubscription(VitteError):
    """The player has no Stars subscription to change."""

    def __init__(self, user_id: int) -> None:
        super().__init__(f"user {user_id} has no Stars subscription")
        self.user_id = user_id


class PaymentApiFailed(VitteError):
    """Telegram refused or could not be reached for a payment call (refund, subscription edit)."""


# --------------------------------------------------------------------------- trust and safety (vitte/safety)
class AgeNotConfirmed(VitteError):
    """The player has not confirmed being 18+ (`Players.confirm_adult`): the faces show the age gate."""

    def __init__(self) -> None:
        super().__init__("the player has not confirmed being an adult")


class PlayerBlocked(VitteError):
    """The operator blocked this player: one polite line, nothing stored, no LLM call.

    `reason` is the operator's note; it is for operators, not for the player.
    """

    def __init__(self, reason: str | None = None) -> None:
        super().__init__("the player is blocked")
        self.reason = reason


class RateLimited(VitteError):
    """Too many replies asked for in a short time; nothing was stored. Retry after that many seconds."""

    def __init__(self, retry_after_seconds: float) -> None:
        seconds = max(float(retry_after_seconds), 0.0)
        super().__init__(f"too many messages: retry in {max(1, int(-(-seconds // 1)))} s")
        self.retry_after_seconds = seconds


class NotHeard(VitteError):
    """A voice message could not be transcribed (the endpoint failed, or nothing was said).
    It stays stored (`message_id`); hearing it again is a retry."""

    def __init__(self, message_id: int, why: str = "") -> None:
        super().__init__(f"voice message {message_id} not transcribed{': ' + why if why else ''}")
        self.message_id = message_id


class UnsupportedAudio(NotHeard):
    """The transcription endpoint refused the file itself (a 4xx such as 400 "unsupported
    format"): hearing it again cannot help. It stays stored (`message_id`), not transcribed."""


class MediaTooLarge(VitteError):
    """A voice message over VITTE_VOICE_MAX_SECONDS (`unit` "s") or the 20 MB of getFile ("MB").
    `message_id`: the stored message when its size came out only while it was downloaded (it
    stays stored, unheard); None when it was refused before anything was stored."""

    def __init__(self, limit: int, unit: str, message_id: int | None = None) -> None:
        super().__init__(f"media over {limit} {unit}")
        self.limit = limit
        self.unit = unit
        self.message_id = message_id


class PhotoFailed(VitteError):
    """The persona's photo could not be made; the player's request (`message_id`) stays stored."""

    def __init__(self, message_id: int, why: str = "") -> None:
        super().__init__(f"photo for message {message_id} not made{': ' + why if why else ''}")
        self.message_id = message_id


class MediaQuotaExceeded(VitteError):
    """Today's photos (`kind` "photo") or voice replies ("voice") are used up: `limit` a day on
    the player's plan (`premium`), `premium_limit` on Premium."""

    def __init__(self, kind: str, limit: int, premium: bool, premium_limit: int) -> None:
        super().__init__(f"daily {kind} allowance of {limit} used up")
        self.kind = kind
        self.limit = limit
        self.premium = premium
        self.premium_limit = premium_limit
