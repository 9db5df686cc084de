"""Where a dialog's history in the prompt starts: a start that moves in steps, not per message.

The recent messages come from a capped list (VITTE_RECENT_MESSAGES): once a dialog is longer,
every new message pushes the oldest one out, and a prompt whose history starts one message
later than the previous reply's shares nothing with it after the system part. Providers'
prefix caches want the opposite: the previous prompt as the start of the next one.

So each dialog keeps an anchor (in the process, per dialog, bounded): the history starts at
the anchor while the anchor is still among the recent messages and the history from it fits
its budget; otherwise the anchor moves forward to keep the newer half of what fits. Between
two moves each prompt extends the previous one. Messages before the anchor are the ones recall
may bring back (`vitte.dialogs.recall`). A process that restarts starts anew (nothing stored).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

from vitte.cache.base import CachedMessage
from vitte.prompt import estimate_tokens

DIALOGS = 8192  # dialogs whose anchor a process remembers
KEEP_AT_LEAST = 4  # a move keeps at least this many newest messages


class Windows:
    """Per-dialog anchors of the prompt's history (see the module docstring)."""

    def __init__(self, dialogs: int = DIALOGS) -> None:
        self._anchors: OrderedDict[int, int] = OrderedDict()
        self._max = dialogs

    def window(
        self, dialog_id: int, history: Sequence[CachedMessage], budget: int, *, full: bool = False
    ) -> list[CachedMessage]:
        """The part of `history` (oldest first) the prompt shows: from the dialog's anchor.
        `full`: the recent list is at its cap (it slides from now on), so a first anchor keeps
        its newer half too, else the next message would move it at once."""
        if not history:
            return []
        anchor = self._anchors.get(dialog_id)
        start = None
        if anchor is not None and history[0].id <= anchor:
            start = next((i for i, m in enumerate(history) if m.id >= anchor), None)
            if start is not None and _tokens(history[start:]) > budget:
                start = None
        if start is None:
            start = _half_of_fit(history, budget) if anchor is not None or full else _fit(history, budget)
        self._anchors[dialog_id] = history[start].id
        self._anchors.move_to_end(dialog_id)
        while len(self._anchors) > self._max:
            self._anchors.popitem(last=False)
        return list(history[start:])

    def forget(self, dialog_id: int) -> None:
        self._anchors.pop(dialog_id, None)


def _tokens(messages: Sequence[CachedMessage]) -> int:
    return sum(estimate_tokens(m.text) for m in messages)


def _fit(history: Sequence[CachedMessage], budget: int) -> int:
    """The index of the oldest message from which the history fits `budget` (the newest always)."""
    used, start = 0, len(history)
    for i in range(len(history) - 1, -1, -1):
        used += estimate_tokens(history[i].text)
        if used > budget and start < len(history):
            break
        start = i
    return start


def _half_of_fit(history: Sequence[CachedMessage], budget: int) -> int:
    """A new anchor: the newer half of what fits (at least KEEP_AT_LEAST messages)."""
    start = _fit(history, budget)
    kept = len(history) - start
    return max(start, len(history) - max(kept // 2, min(KEEP_AT_LEAST, kept)))
