"""The fake OpenAI-compatible server now ships in the package (`vitte.devtools.llm_server`,
used by `vitte bench`); this re-export keeps the tests' imports working."""

from vitte.devtools.llm_server import FakeLLMServer, RecordedRequest, run_subprocess, tokens

__all__ = ["FakeLLMServer", "RecordedRequest", "run_subprocess", "tokens"]
