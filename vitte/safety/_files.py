"""Operator-editable text files: the shipped defaults, or a configured path naming `{lang}`."""

from __future__ import annotations

from pathlib import Path

from vitte.config import ConfigError
from vitte.i18n import LANGUAGES  # every catalogue language has its safety files (or fails to start)

PACKAGE_DIR = Path(__file__).resolve().parent


def file_paths(configured: str | None, default_name: str) -> dict[str, Path]:
    """One path per language: `default_name` (with `{lang}`) in this package, or the configured
    path (`{lang}` in it is replaced; without it, one file serves every language)."""
    if configured is None:
        return {lang: PACKAGE_DIR / default_name.format(lang=lang) for lang in LANGUAGES}
    return {lang: Path(configured.replace("{lang}", lang)).expanduser() for lang in LANGUAGES}


def read_texts(configured: str | None, default_name: str, variable: str) -> dict[str, str]:
    """The text of each language's file; ConfigError (one line naming `variable`) when a file
    is missing, unreadable or empty."""
    texts: dict[str, str] = {}
    for lang, path in file_paths(configured, default_name).items():
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise ConfigError(f"{variable}: {path}: no such file") from None
        except UnicodeDecodeError:
            raise ConfigError(f"{variable}: {path}: not UTF-8 text") from None
        except OSError as exc:
            raise ConfigError(f"{variable}: {path}: {exc.strerror or exc}") from None
        if not text.strip():
            raise ConfigError(f"{variable}: {path}: the file is empty")
        texts[lang] = text.strip()
    return texts
