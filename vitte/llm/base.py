"""The LLM contract: any OpenAI-compatible Chat Completions API, or the offline demo writer."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, Protocol

__all__ = [
    "LLM",
    "LLMBadResponse",
    "LLMError",
    "LLMRateLimited",
    "LLMRequest",
    "LLMStreamCut",
    "LLMStreamStalled",
    "LLMTimeout",
    "LLMUnavailable",
]


@dataclass(slots=True)
class LLMRequest:
    messages: list[dict[str, str]]  # [{"role": "system"|"user"|"assistant", "content": "…"}]
    max_tokens: int = 400
    temperature: float = 0.9
    # hints for the offline demo writer (a real API ignores them)
    persona: dict[str, Any] = field(default_factory=dict)  # card fields: name, mes_example, …
    language: str = "ru"
    purpose: str = "reply"  # "reply" | "summary" | "facts"


class LLMError(Exception):
    """An LLM call failed; `str(exc)` is one line for the operator log."""


class LLMTimeout(LLMError):
    """No answer (or no next token) within the configured time."""


class LLMUnavailable(LLMError):
    """Could not connect, or the server kept answering 5xx, after the retries."""


class LLMRateLimited(LLMError):
    """The server kept answering 429 after the retries."""


class LLMBadResponse(LLMError):
    """The server answered something that is not a Chat Completions response."""


class LLMStreamCut(LLMError):
    """The stream ended before the server said it was finished."""

    def __init__(self, message: str, partial: str = "") -> None:
        super().__init__(message)
        self.partial = partial


class LLMStreamStalled(LLMStreamCut, LLMTimeout):
    """No next token within the read timeout after the stream had started.

    Both an `LLMStreamCut` (it carries `partial`) and an `LLMTimeout`.
    """


class LLM(Protocol):
    label: str  # e.g. "openai-compatible gpt-4o-mini @ http://…" or "offline demo writer"
    is_demo: bool

    def stream(self, request: LLMRequest) -> AsyncIterator[str]:
        """Yield text deltas as they arrive. Cancelling the consumer closes the connection."""
        ...

    async def complete(self, request: LLMRequest) -> str:
        """The whole answer at once (used for memory summaries)."""
        ...

    async def aclose(self) -> None: ...
