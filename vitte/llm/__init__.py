"""LLM clients: any OpenAI-compatible Chat Completions API, or the offline demo writer."""

from __future__ import annotations

from typing import TYPE_CHECKING

from vitte.llm import base
from vitte.llm.base import *  # noqa: F403 - the contract (`base.__all__`): LLM, LLMRequest, the errors
from vitte.llm.demo import DemoWriter
from vitte.llm.openai import OpenAICompatibleLLM

if TYPE_CHECKING:
    from vitte.config import Settings

__all__ = [*base.__all__, "DemoWriter", "OpenAICompatibleLLM", "make_llm"]


def make_llm(settings: Settings) -> base.LLM:
    """The configured LLM: an OpenAI-compatible API when VITTE_LLM_BASE_URL is set, else the
    offline demo writer (check `.is_demo` / `.label` to tell the operator which one runs)."""
    if settings.llm_base_url:
        return OpenAICompatibleLLM(settings)
    return DemoWriter()
