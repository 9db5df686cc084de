from __future__ import annotations

import pytest

from vitte.config import DEFAULT_SQLITE_URL, ConfigError, load_settings


def test_defaults_are_embedded() -> None:
    s = load_settings()
    assert s.database_url == DEFAULT_SQLITE_URL
    assert s.redis_url is None
    assert s.uses_demo_writer
    assert s.telegram_api_url == "https://api.telegram.org"
    assert (s.webapp_host, s.webapp_port) == ("127.0.0.1", 8080)
    assert s.admin_ids == frozenset()


def test_reads_environment_and_dotenv(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    (tmp_path / ".env").write_text("VITTE_LLM_MODEL=from-dotenv\nVITTE_WEBAPP_PORT=9000\n")
    monkeypatch.setenv("VITTE_WEBAPP_PORT", "9100")
    monkeypatch.setenv("VITTE_ADMIN_IDS", "1, 2,3")
    monkeypatch.setenv("VITTE_DATABASE_URL", "postgresql://u@db/vitte")
    s = load_settings()
    assert s.llm_model == "from-dotenv"
    assert s.webapp_port == 9100  # the environment wins over .env
    assert s.admin_ids == frozenset({1, 2, 3})
    assert s.database_url == "postgresql+psycopg://u@db/vitte"


@pytest.mark.parametrize(
    ("name", "value", "needle"),
    [
        ("VITTE_WEBAPP_PORT", "eighty", "VITTE_WEBAPP_PORT"),
        ("VITTE_WEBAPP_PORT", "70000", "VITTE_WEBAPP_PORT"),
        ("VITTE_DATABASE_URL", "mysql://x", "VITTE_DATABASE_URL"),
        ("VITTE_REDIS_URL", "localhost:6379", "VITTE_REDIS_URL"),
        ("VITTE_ADMIN_IDS", "1,two", "VITTE_ADMIN_IDS"),
        ("VITTE_LLM_BASE_URL", "127.0.0.1:11434/v1", "VITTE_LLM_BASE_URL"),
    ],
)
def test_bad_value_is_one_clear_line(monkeypatch: pytest.MonkeyPatch, name: str, value: str, needle: str) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError) as err:
        load_settings()
    text = str(err.value)
    assert needle in text
    assert "\n" not in text


def test_secrets_are_never_printed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VITTE_BOT_TOKEN", "123456:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA")
    monkeypatch.setenv("VITTE_LLM_API_KEY", "sk-very-secret")
    s = load_settings()
    dumped = repr(s) + str(s) + s.model_dump_json()
    assert "sk-very-secret" not in dumped
    assert "AAAAAAAAAAAAAAAAAAAA" not in dumped
    assert s.require_bot_token().startswith("123456:")


@pytest.mark.parametrize("token", ["", "nonsense", "abc:defdefdefdefdefdefdefdef", "123:short"])
def test_malformed_bot_token(token: str) -> None:
    s = load_settings(bot_token=token)
    with pytest.raises(ConfigError) as err:
        s.require_bot_token()
    assert "VITTE_BOT_TOKEN" in str(err.value)
