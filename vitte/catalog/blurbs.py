"""Player-facing text of a card: a tagline (the first line of ``creator_notes``, cleaned, else a
prose description's first sentence), a story title from a greeting's first words, and
whether a description reads as prose a player may be shown (not W++, PList, key: value sheets
or bracketed prompt syntax). ``creator_notes`` are for people, never for the LLM."""

from __future__ import annotations

import html
import re

__all__ = ["MAX_TAGLINE", "MAX_TITLE", "derive_tagline", "greeting_title", "reads_as_prose", "tagline_from_notes"]

MAX_TAGLINE = 140
MAX_TITLE = 48  # a story title made from a greeting's first words

_ANGLE_MACRO = re.compile(r"<(user|bot|char)>", re.IGNORECASE)
_BLOCK_TAG = re.compile(r"</?(?:p|br|div|li|ul|ol|h[1-6]|hr|tr|table|blockquote)\b[^>]{0,500}>", re.IGNORECASE)
_TAG = re.compile(r"<[^>]{0,500}>")
_MD_IMAGE = re.compile(r"!\[[^\]]*\]\([^)]*\)")
_MD_LINK = re.compile(r"\[([^\]]*)\]\([^)]*\)")
_URL = re.compile(r"https?://\S+")
_MD_MARKS = re.compile(r"^[#>\s]+|[*_`~]+")
_SYNTAX = re.compile(r"[\[\]{}=|<>]|\{\{|\}\}")
_SHEET_LINE = re.compile(r"^\s*[\w'’ .()-]{1,40}\s*[:=]\s*\S")
_LETTER = re.compile(r"[^\W\d_]")


def _clean_line(line: str) -> str:
    line = _MD_IMAGE.sub(" ", line)
    line = _MD_LINK.sub(r"\1", line)
    line = _URL.sub(" ", line)
    line = _MD_MARKS.sub(" ", line)
    return " ".join(line.split())


def tagline_from_notes(notes: str) -> str:
    """The first line of the creator's notes that reads as a sentence, at most `MAX_TAGLINE`
    characters; "" when there is none (the faces show a neutral line)."""
    text = html.unescape(_TAG.sub("", _BLOCK_TAG.sub("\n", notes[:20_000])))
    for raw in text.splitlines():
        line = _clean_line(raw)
        if not line:
            continue
        if _SYNTAX.search(line) or len(_LETTER.findall(line)) < 3:
            return ""  # the first line is prompt syntax or decoration: nothing to show
        if len(line) > MAX_TAGLINE:
            cut = line[: MAX_TAGLINE - 1]
            line = (cut.rsplit(" ", 1)[0] if " " in cut else cut).rstrip(" ,;:-") + "…"
        return line
    return ""


def derive_tagline(name: str, creator_notes: str, description: str) -> str:
    """A tagline for a card without one: the first line of its creator's notes, else the first
    sentence of its description when that reads as prose, else "" (the faces show a neutral line)."""
    from_notes = tagline_from_notes(creator_notes)
    if from_notes:
        return from_notes
    named = re.sub(r"\{\{\s*char\s*\}\}|<bot>|<char>", name, description, flags=re.I)
    # judged line by line ("Name: …\nAge: …" sheets), shown as one line
    if not reads_as_prose(re.sub(r"\{\{\s*user\s*\}\}|<user>", "you", named, flags=re.I)):
        return ""
    text = " ".join(named.split())
    m = re.match(r"(.+?[.!?…])(?:\s|$)", text)
    first = m.group(1) if m else text
    if len(first) > MAX_TAGLINE:
        first = first[: MAX_TAGLINE - 1].rstrip() + "…"
    return first


def greeting_title(greeting: str) -> str:
    """A story's title from its greeting: the first words, without markdown, at most `MAX_TITLE`
    characters (cut at a word, never inside a macro)."""
    greeting = _ANGLE_MACRO.sub(lambda m: "{{user}}" if m.group(1).lower() == "user" else "{{char}}", greeting[:2000])
    text = _clean_line(" ".join(_TAG.sub(" ", greeting).split())).strip(" \"'«»“”-—")
    first = re.match(r"(.+?[.!?…][\"'»”]?)(?:\s|$)", text)
    if first is not None and len(first.group(1)) <= MAX_TITLE:
        return first.group(1).strip("\"'»”").rstrip(".")
    if len(text) <= MAX_TITLE:
        return text or "…"
    cut = text[: MAX_TITLE - 1]
    cut = cut.rsplit(" ", 1)[0] if " " in cut else cut
    cut = re.sub(r"\{\{[^}]*$", "", cut)  # never half a macro
    return cut.rstrip(" ,;:-—") + "…"


def reads_as_prose(text: str) -> bool:
    """Does `text` (macros already expanded) read as prose rather than prompt syntax?"""
    body = text.strip()
    if not body:
        return False
    if _SYNTAX.search(body):
        return False  # W++ ([x = "a" + "b"]), PList ([x: a, b]), tags, macros
    lines = [ln for ln in body.splitlines() if ln.strip()]
    sheet = sum(1 for ln in lines if _SHEET_LINE.match(ln))
    if sheet >= 2 and sheet * 3 >= len(lines):
        return False  # "Name: …\nAge: …" character sheets
    words = body.split()
    sentences = len(re.findall(r"[.!?…](?:\s|$)", body))
    return len(words) >= 4 and sentences >= 1
