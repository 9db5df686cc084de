"""The standalone lorebooks a persona names (vitte.catalog.worlds), inside its exported card and out
of it again (issue 17): export -> import gives the same lore, with its settings and its links.

An exported card carries each book it names twice:

- its entries in the card's own ``character_book``, after the card's own entries, each marked
  ``extensions.vitte.lorebook: <book id>`` — what SillyTavern, RisuAI … read (V3: the character
  lorebook). A card without a book of its own gets one with the first named book's settings,
  marked ``extensions.vitte.linked_only``;
- the book as stored, in the card's ``extensions.vitte.lorebook_files`` (book id -> its JSON) —
  what Vitte's import reads back (`split_books`): the marked entries leave the card's book again
  (a book only made for them goes), the books are stored as standalone ones (one already stored
  under that id is kept: the operator's copy wins), and the card keeps naming them.

Pure functions over the card's JSON: no database.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Sequence
from typing import Any

from vitte.catalog.lorebook import parse_book

__all__ = ["MAX_BOOKS", "embed_books", "split_books"]

MARK = "lorebook"  # an entry's extensions.vitte key: the standalone book it came from
FILES = "lorebook_files"  # the card's extensions.vitte key: the books as stored
ONLY = "linked_only"  # the character_book's extensions.vitte key: made only for the named books
MAX_BOOKS = 16  # as many as a card may name (vitte.catalog.worlds.MAX_LINKS)
_BOOK_ID = re.compile(r"^[a-z0-9]+(?:-[a-z0-9]+)*$")  # what vitte.catalog.cards.slugify makes
_SETTINGS = ("name", "description", "scan_depth", "token_budget", "recursive_scanning")


def _body(book: dict[str, Any]) -> dict[str, Any]:
    inner = book.get("data")
    return inner if book.get("spec") == "lorebook_v3" and isinstance(inner, dict) else book


def _entries(book: dict[str, Any]) -> list[dict[str, Any]]:
    raw = _body(book).get("entries")
    if isinstance(raw, dict):  # SillyTavern's own world file: {"0": {...}, "1": {...}}
        raw = list(raw.values())
    return [e for e in raw if isinstance(e, dict)] if isinstance(raw, list) else []


def _vitte(obj: dict[str, Any]) -> dict[str, Any]:
    """`obj`'s ``extensions.vitte`` object, made (or replaced, when not an object) as needed."""
    ext = obj.get("extensions")
    if not isinstance(ext, dict):
        ext = obj["extensions"] = {}
    vitte = ext.get("vitte")
    if not isinstance(vitte, dict):
        vitte = ext["vitte"] = {}
    return vitte


def _peek(obj: object, key: str) -> object:
    """``obj.extensions.vitte[key]`` without changing anything (None when absent)."""
    ext = obj.get("extensions") if isinstance(obj, dict) else None
    vitte = ext.get("vitte") if isinstance(ext, dict) else None
    return vitte.get(key) if isinstance(vitte, dict) else None


def embed_books(fields: dict[str, Any], books: Sequence[tuple[str, dict[str, Any]]]) -> None:
    """Put `books` (id, the stored JSON; the ones the card names, in its order) into the card's
    fields (V3 ``data``), in place: their entries in ``character_book``, the books themselves in
    ``extensions.vitte.lorebook_files``."""
    books = [(bid, book) for bid, book in books if isinstance(book, dict)][:MAX_BOOKS]
    if not books:
        return
    own = fields.get("character_book")
    if isinstance(own, dict) and isinstance(own.get("entries"), list | dict):
        merged = copy.deepcopy(own)
        merged["entries"] = _entries(merged)
    else:
        first = _body(books[0][1])
        merged = {k: copy.deepcopy(first[k]) for k in _SETTINGS if k in first}
        merged["entries"] = []
        _vitte(merged)[ONLY] = True
    for bid, book in books:
        for entry in _entries(book):
            marked = copy.deepcopy(entry)
            _vitte(marked)[MARK] = bid
            merged["entries"].append(marked)
    fields["character_book"] = merged
    _vitte(fields)[FILES] = {bid: copy.deepcopy(book) for bid, book in books}


def _fields(card: dict[str, Any]) -> dict[str, Any]:
    """The card's fields: its ``data`` (V2/V3), else the card itself (V1, Chub's older layout)."""
    data = card.get("data")
    return data if isinstance(data, dict) else card


def split_books(card: dict[str, Any]) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    """(the card as Vitte stores it, the standalone books it carried by id): the marked entries
    of the books it carried out of its ``character_book`` again, and ``lorebook_files`` gone.
    A card that carries none comes back as it is (the same object). A carried book that is not
    a usable lorebook, or whose id is not a book id, is left out (its entries stay the card's)."""
    files = _peek(_fields(card), FILES)
    if files is None:
        return card, {}
    books: dict[str, dict[str, Any]] = {}
    if isinstance(files, dict):
        for bid, book in files.items():
            if len(books) == MAX_BOOKS:
                break
            usable = isinstance(book, dict) and parse_book(book) is not None
            if usable and isinstance(bid, str) and len(bid) <= 64 and _BOOK_ID.match(bid):
                books[bid] = copy.deepcopy(book)
    card = copy.deepcopy(card)
    fields = _fields(card)
    _vitte(fields).pop(FILES, None)
    own = fields.get("character_book")
    if isinstance(own, dict) and isinstance(own.get("entries"), list):
        kept = [e for e in own["entries"] if not (isinstance(e, dict) and str(_peek(e, MARK)) in books)]
        if _peek(own, ONLY) is True and not kept:
            del fields["character_book"]
        else:
            own["entries"] = kept
            if _peek(own, ONLY) is True:
                _vitte(own).pop(ONLY, None)
    return card, books
