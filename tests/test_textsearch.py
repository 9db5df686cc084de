from __future__ import annotations

from vitte.textsearch import match_query, regconfig, stemmed, terms


def test_russian_word_forms_share_a_stem() -> None:
    assert terms("моего кота зовут Барсик", "ru") == ["кот", "зовут", "барсик"]
    assert set(terms("кота", "ru")) == set(terms("кот", "ru")) == {"кот"}
    assert stemmed("Ёлка, ёлки!", "ru") == stemmed("елка елки", "ru")


def test_english_word_forms_share_a_stem() -> None:
    assert terms("cats", "en") == terms("cat", "en") == ["cat"]
    assert terms("the running of the cats", "en") == ["run", "cat"]


def test_stop_words_and_punctuation_are_not_terms() -> None:
    assert terms("и я, и ты — а?", "ru") == []
    assert match_query("", "en") == ""
    assert match_query('"quoted" OR NEAR(xy) *', "en") == '"quot" OR "near" OR "xy"'


def test_unknown_language_is_lower_cased_words() -> None:
    assert terms("Katzen Hunde", "de") == ["katzen", "hunde"]
    assert regconfig("ru") == "russian" and regconfig("en") == "english" and regconfig("xx") == "simple"
