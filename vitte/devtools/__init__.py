"""Tools for operators and developers: a loopback OpenAI-compatible LLM server (benchmarks,
tests, trying the bot without an API key) and a PostgreSQL wire counter (round trips)."""
