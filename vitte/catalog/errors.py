"""The one error of card import: `CardError`, a single line naming the file, the field and the problem."""

from __future__ import annotations

__all__ = ["CardError"]


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


class CardError(Exception):
    """A card cannot be used. ``str(e)`` is one line: ``<source>: <field>: <problem>``."""

    def __init__(self, source: str, field: str, problem: str) -> None:
        self.source = _one_line(source)
        self.field = _one_line(field)
        self.problem = _one_line(problem)
        super().__init__(f"{self.source}: {self.field}: {self.problem}")
