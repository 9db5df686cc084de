"""The text catalogues (vitte/locales, vitte.i18n): complete, consistent, compiled, served as they are."""

from __future__ import annotations

import json
import re
import shutil
import string
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from babel.messages.mofile import read_mo
from babel.messages.pofile import read_po

from tests.support.webapp import WebAppHarness, running_webapp
from vitte import i18n
from vitte.billing_texts import replies_left_text
from vitte.bot.texts import t
from vitte.config import load_settings
from vitte.i18n import (
    COMMON,
    DEFAULT_LANGUAGE,
    LANGUAGES,
    LOCALES_DIR,
    REFERENCE_LANGUAGE,
    Texts,
    format_date,
    format_day,
    mo_path,
    normalize_language,
    po_path,
)
from vitte.webapp.texts import PAGE, language_texts, page_texts

ROOT = Path(__file__).resolve().parents[1]
Entries = dict[tuple[str, str], tuple[str, ...]]  # (context, key) -> the text, or its plural forms


def _entries(catalog: Any) -> Entries:
    """What a catalogue says (what `pybabel compile` keeps: translated, not fuzzy)."""
    out: Entries = {}
    for message in catalog:
        if not message.id or message.fuzzy:
            continue
        forms = (message.string,) if isinstance(message.string, str) else tuple(message.string)
        if not all(forms):
            continue
        key = message.id if isinstance(message.id, str) else message.id[0]
        context = message.context or ""
        if isinstance(context, bytes):  # Babel < 2.19 reads a .mo's contexts undecoded
            context = context.decode("utf-8")
        out[(context, key)] = forms
    return out


def _po(lang: str) -> Any:
    with po_path(lang).open("rb") as fp:
        return read_po(fp)


def _fields(text: str) -> set[str]:
    return {name for _, name, _, _ in string.Formatter().parse(text) if name is not None}


@pytest.fixture(scope="module")
def catalogues() -> dict[str, Entries]:
    return {lang: _entries(_po(lang)) for lang in LANGUAGES}


# ---------------------------------------------------------------------- the catalogues


def test_the_languages_are_the_catalogues_present() -> None:
    pos = {p.parents[1].name for p in LOCALES_DIR.glob("*/LC_MESSAGES/vitte.po")}
    assert set(LANGUAGES) == pos >= {"ru", "en"}
    assert LANGUAGES[0] == DEFAULT_LANGUAGE and REFERENCE_LANGUAGE in LANGUAGES


@pytest.mark.parametrize("lang", LANGUAGES)
def test_every_catalogue_has_every_key_and_no_other(lang: str, catalogues: dict[str, Entries]) -> None:
    reference = catalogues[REFERENCE_LANGUAGE]
    mine = catalogues[lang]
    assert sorted(set(reference) - set(mine)) == [], "untranslated or fuzzy"
    assert sorted(set(mine) - set(reference)) == [], "not in the reference catalogue"
    plural = {k for k, forms in reference.items() if len(forms) > 1}
    assert {k for k, forms in mine.items() if len(forms) > 1 or k in plural} == plural


@pytest.mark.parametrize("lang", LANGUAGES)
def test_placeholders_match_the_reference(lang: str, catalogues: dict[str, Entries]) -> None:
    reference = catalogues[REFERENCE_LANGUAGE]
    for key, forms in catalogues[lang].items():
        expected = set().union(*(_fields(f) for f in reference[key]))
        found = [_fields(f) for f in forms]  # each parses as a str.format template
        if len(reference[key]) > 1:  # a plural form may leave the number out ("one story")
            assert set().union(*found) == expected and all(f <= expected for f in found), key
        else:
            assert found == [expected], key


@pytest.mark.parametrize("lang", LANGUAGES)
def test_the_compiled_catalogues_are_fresh(lang: str) -> None:
    """A .mo says exactly what its .po says: run `pybabel compile -d vitte/locales -D vitte`."""
    po = _po(lang)
    with mo_path(lang).open("rb") as fp:
        mo = read_mo(fp)
    assert _entries(mo) == _entries(po), "stale vitte.mo: pybabel compile -d vitte/locales -D vitte"
    assert (mo.num_plurals, mo.plural_expr) == (po.num_plurals, po.plural_expr)


def test_the_template_is_the_reference_without_texts() -> None:
    """vitte/locales/vitte.pot (what `pybabel init` starts from): `python -m vitte.i18n template`."""
    with i18n.TEMPLATE_PATH.open("rb") as fp:
        shipped = read_po(fp)
    fresh = i18n.template()
    # the English comments as words: write_po wraps long comment lines
    as_list = lambda cat: [(m.context, m.id, " ".join(m.auto_comments).split()) for m in cat if m.id]  # noqa: E731
    assert as_list(shipped) == as_list(fresh), "stale vitte.pot: python -m vitte.i18n template"
    assert all(not any(m.string or ()) for m in shipped if m.id)


def test_russian_has_three_plural_forms() -> None:
    assert _po("ru").num_plurals == 3 and _po("en").num_plurals == 2
    ns = (0, 1, 2, 4, 5, 11, 12, 14, 21, 22, 25, 101, 111, 1000)
    assert [COMMON.nt("ru", "replies", n) for n in ns] == [
        "0 ответов", "1 ответ", "2 ответа", "4 ответа", "5 ответов", "11 ответов", "12 ответов",
        "14 ответов", "21 ответ", "22 ответа", "25 ответов", "101 ответ", "111 ответов", "1000 ответов",
    ]  # fmt: skip
    assert [COMMON.nt("en", "replies", n) for n in (0, 1, 2, 21)] == ["0 replies", "1 reply", "2 replies", "21 replies"]
    assert [COMMON.nt("ru", "stories", n) for n in (1, 2, 5, 11, 21, 22, 25)] == [
        "1 история", "2 истории", "5 историй", "11 историй", "21 история", "22 истории", "25 историй",
    ]  # fmt: skip
    assert [replies_left_text(n, "ru") for n in (1, 2, 5, 11, 21, 22, 25)] == [
        "Остался 1 ответ на сегодня.", "Осталось 2 ответа на сегодня.", "Осталось 5 ответов на сегодня.",
        "Осталось 11 ответов на сегодня.", "Остался 21 ответ на сегодня.", "Осталось 22 ответа на сегодня.",
        "Осталось 25 ответов на сегодня.",
    ]  # fmt: skip


def test_no_hand_written_plural_or_language_pair_is_left() -> None:
    sources = [*ROOT.joinpath("vitte").rglob("*.py"), *ROOT.joinpath("tui").rglob("*.py")]
    sources.append(ROOT / "vitte/webapp/static/app.js")
    for path in sources:
        text = path.read_text("utf-8")
        assert not re.search(r"% ?100\b", text), f"a plural rule by hand in {path}"
        assert "ru_plural" not in text, path
    page = (ROOT / "vitte/webapp/static/app.js").read_text("utf-8")
    assert '"ru"' not in page and '"en"' not in page  # the page's languages come from the server


# ---------------------------------------------------------------------- the lookups


def test_language_normalisation() -> None:
    for code, lang in [("ru", "ru"), ("en", "en"), ("en-US", "en"), ("EN_gb", "en"), ("ru-RU", "ru"),
                       ("uk", DEFAULT_LANGUAGE), ("", DEFAULT_LANGUAGE), (None, DEFAULT_LANGUAGE)]:  # fmt: skip
        assert normalize_language(code) == lang, code
    assert t("de", "stale") == t(None, "stale") == t(DEFAULT_LANGUAGE, "stale")


def test_unknown_keys_fail_loudly() -> None:
    with pytest.raises(KeyError):
        t("ru", "no_such_key")
    with pytest.raises(KeyError):
        COMMON.nt("en", "no_such_key", 3)


def test_every_table_names_every_language_in_its_own_words() -> None:
    names = {lang: i18n.language_name(lang) for lang in LANGUAGES}
    assert names["ru"] == "Русский" and names["en"] == "English"
    for lang in LANGUAGES:
        for code in LANGUAGES:
            assert t(lang, f"lang_{code}") == PAGE.t(lang, f"lang_{code}") == names[code]


def test_one_date_format() -> None:
    moment = datetime(2026, 1, 31, 9, 5, tzinfo=UTC)
    assert format_date(moment, "ru") == "31.01.2026 09:05 UTC"
    assert format_date(moment, "en") == "2026-01-31 09:05 UTC"
    assert format_date(None, "en") == "—"
    assert format_day(moment, "ru") == "31 января 2026" and format_day(moment, "en") == "31 January 2026"


def test_aiogram_i18n_reads_the_same_catalogues() -> None:
    from aiogram.utils.i18n import I18n

    aiogram_i18n = I18n(path=LOCALES_DIR, default_locale=DEFAULT_LANGUAGE, domain=i18n.DOMAIN)
    assert set(aiogram_i18n.available_locales) == set(LANGUAGES)
    for lang in LANGUAGES:
        assert aiogram_i18n.locales[lang].pgettext("bot", "btn_continue") == t(lang, "btn_continue")


def test_a_lookup_is_a_cached_dict() -> None:
    """`t` on the hot path: one dict per language, built once, then a lookup and a format."""
    from vitte.bot.texts import BOT

    table = BOT.table("ru")
    assert type(table) is dict and BOT.table("ru") is table and BOT.table("xx") is table


# ---------------------------------------------------------------------- a third language


@pytest.fixture
def with_german(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """vitte/locales plus a German catalogue made as the README says (pybabel init + compile)."""
    locales = tmp_path / "locales"
    shutil.copytree(LOCALES_DIR, locales, ignore=shutil.ignore_patterns("de"))
    pybabel = [sys.executable, "-m", "babel.messages.frontend"]
    subprocess.run([*pybabel, "init", "-i", str(locales / "vitte.pot"), "-d", str(locales), "-D", "vitte", "-l", "de"],
                   check=True, capture_output=True)  # fmt: skip
    po = locales / "de/LC_MESSAGES/vitte.po"
    with po.open("rb") as fp:
        catalog = read_po(fp)
    for message in catalog:  # a "translation": the English, marked
        if message.id:
            english = [c[len("en: ") :] for c in message.auto_comments]
            if isinstance(message.id, str):
                message.string = "DE " + "\n".join(english)
            else:
                message.string = tuple(f"DE {e}" for e in english)
    name = catalog.get("language_name", "common")
    assert name is not None
    name.string = "Deutsch"
    from babel.messages.pofile import write_po

    with po.open("wb") as fp:
        write_po(fp, catalog)
    subprocess.run([*pybabel, "compile", "-d", str(locales), "-D", "vitte"], check=True, capture_output=True)
    monkeypatch.setattr(i18n, "LOCALES_DIR", locales)
    monkeypatch.setattr(i18n, "LANGUAGES", i18n._discover())
    monkeypatch.setattr(i18n, "_KNOWN", frozenset(i18n.LANGUAGES))
    monkeypatch.setattr(i18n, "_TRANSLATIONS", {})
    monkeypatch.setattr(i18n, "_KEYS", {})
    yield locales


def test_a_third_language_is_one_catalogue(with_german: Path) -> None:
    assert i18n.LANGUAGES == ("ru", "de", "en")
    bot = Texts("bot")
    assert normalize_language("de-AT") == "de"
    assert bot.t("de", "stale") == "DE This button is out of date."
    assert bot.t("de", "lang_de") == bot.t("ru", "lang_de") == "Deutsch"
    assert bot.t("ru", "stale") == "Эта кнопка устарела."
    assert COMMON.nt("de", "replies", 1) == "DE 1 reply" and COMMON.nt("de", "replies", 3) == "DE 3 replies"


# ---------------------------------------------------------------------- the page's texts


@pytest.fixture
async def webapp(sqlite_url: str) -> AsyncIterator[WebAppHarness]:
    async with running_webapp(load_settings(database_url=sqlite_url), seed=False) as h:
        yield h


def test_the_page_texts_are_the_catalogue() -> None:
    data = page_texts()
    assert data["default"] == DEFAULT_LANGUAGE and data["languages"] == list(LANGUAGES)
    for lang in LANGUAGES:
        one = data["catalogues"][lang]
        assert one["texts"] == dict(PAGE.table(lang)) and one["language"] == lang
        stories = one["plurals"]["stories"]
        assert "other" in stories
        assert stories.get("one", stories["other"]).format(n=1) == COMMON.nt(lang, "stories", 1)
    assert data["catalogues"]["ru"]["plurals"]["stories"] == {
        "one": "{n} история", "few": "{n} истории", "many": "{n} историй", "other": "{n} историй",
    }  # fmt: skip


async def test_the_page_gets_its_texts_from_the_server(webapp: WebAppHarness) -> None:
    c = webapp.client
    resp = await c.get("/")
    html = await resp.text()
    found = re.search(r'<script id="vitte-texts" type="application/json">(.*?)</script>', html)
    assert found is not None and json.loads(found.group(1)) == page_texts()
    assert f'<html lang="{DEFAULT_LANGUAGE}">' in html and "__TEXTS__" not in html
    # the <noscript> line from the catalogues (the page's `noscript`, every language's)
    assert '<noscript><p class="noscript">Vitte needs JavaScript. / Для Vitte нужен JavaScript.</p></noscript>' in html
    zipped = await c.get("/", headers={"Accept-Encoding": "gzip"}, auto_decompress=False)
    assert zipped.headers["Content-Encoding"] == "gzip"
    for lang in LANGUAGES:
        resp = await c.get(f"/api/texts/{lang}.json")
        assert resp.status == 200 and await resp.json() == language_texts(lang)
    resp = await c.get("/api/texts/xx.json")
    assert resp.status == 404 and (await resp.json())["code"] == "not_found"


def test_the_page_has_no_strings_of_its_own() -> None:
    page = (ROOT / "vitte/webapp/static/app.js").read_text("utf-8")
    assert "STRINGS" not in page and "Настройки" not in page and "Who shall we talk to?" not in page


def test_the_cli_and_the_page_shell_have_no_russian_of_their_own() -> None:
    """The demo's lines and guest, the <noscript> line: the catalogues' (cli, console, page)."""
    sources = [*ROOT.joinpath("cli").glob("*.py"), ROOT / "vitte/webapp/static/index.html"]
    for path in sources:
        found = re.findall(r"[А-Яа-яЁё][^\n\"']*", path.read_text("utf-8"))
        assert not found, f"Russian text in {path.relative_to(ROOT)}: {found[:3]}"
    assert [Texts("cli").t("ru", k) for k in ("demo_message_1", "demo_message_2")] == [
        "Привет! Как проходит твой день?", "Расскажи о себе что-нибудь, чего никто не знает.",
    ]  # fmt: skip
    assert Texts("console").t("ru", "guest_name") == "Гость"


def test_the_plans_and_thanks_read_the_catalogue() -> None:
    from vitte.billing import plans
    from vitte.billing_texts import payment_thanks_text

    settings = load_settings()
    titles = {p.id: (p.title("ru"), p.title("en")) for p in plans(settings)}
    assert titles["premium"] == ("Премиум", "Premium")
    paid = SimpleNamespace(plan="pack", extra_replies=21, expires_at=None)
    assert payment_thanks_text(paid, "ru") == "Спасибо! Добавлено: 21 ответ."
    assert payment_thanks_text(SimpleNamespace(plan=None), "en") == "Thank you! Payment received."
