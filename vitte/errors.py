"""Domain errors. Faces turn them into a friendly line (player) or one line + exit code (operator)."""

from __future__ import annotations


class VitteError(Exception):
    """Base of every error the core raises on purpose."""


class NotFound(VitteError):
    """Something named does not exist (exit code 1 for the operator, 404 on the Web App)."""


class UnknownUser(NotFound):
    def __init__(self, user: object) -> None:
        super().__init__(f"unknown user: {user}")
        self.user = user


class UnknownPersona(NotFound):
    def __init__(self, persona_id: str) -> None:
        super().__init__(f"unknown persona: {persona_id}")
        self.persona_id = persona_id


class UnknownStory(NotFound):
    def __init__(self, story_id: str) -> None:
        super().__init__(f"unknown story: {story_id}")
        self.story_id = story_id


class NoActiveDialog(VitteError):
    """The player has no active dialog (the faces offer the 'Начать общение' flow)."""


class StaleDialog(VitteError):
    """A button from an earlier dialog was pressed; it must not act on the current one."""


class NothingToRegenerate(VitteError):
    """There is no reply (and no unanswered message) to write again."""


class ReplyFailed(VitteError):
    """The LLM could not write a reply. The player's message stays stored; a retry can follow."""

    def __init__(self, cause: BaseException, user_message_id: int | None = None) -> None:
        super().__init__(str(cause) or type(cause).__name__)
        self.cause = cause
        self.user_message_id = user_message_id


class MessageTooLong(VitteError):
    def __init__(self, limit: int) -> None:
        super().__init__(f"message longer than {limit} characters")
        self.limit = limit


class StoreUnavailable(VitteError):
    """The database cannot be reached right now ('one moment' for the player)."""
