"""The dialogs engine: the one place for the seed's rules.

One active dialog per player (the database enforces it too); choose persona + story,
continue, start over (memory cleared, new dialog), reset; and the reply pipeline: the
player's message is stored before the LLM is called, the reply is stored when done, a cut
reply is marked, never shown as complete.

The modules, each with one job:

- `views`     what the faces receive (DialogView, Opening, ReplyOutcome, …);
- `store`     every SQL statement of dialogs and messages, once;
- `turn`      a player's turn: their lock and what it holds (Turn, Turns);
- `reply`     the reply pipeline (reply, regenerate);
- `lifecycle` continue / choose / start over / reset, and the reads faces show;
- `recovery`  replies a crash cut;
- `memory`    folding old turns into the dialog's summary;
- `facts`     the rules of a dialog's facts (parsing, merging, choosing for the prompt);
- `facts_store` the facts' SQL; `factbook` the facts' cache, extraction and edits;
- `engine`    DialogEngine, the parts assembled.
"""

from vitte.dialogs.engine import DialogEngine
from vitte.dialogs.turn import Turn
from vitte.dialogs.views import (
    DialogView,
    InterruptedReply,
    MessageView,
    OnText,
    Opening,
    Recovery,
    ReplyOutcome,
)

__all__ = [
    "DialogEngine",
    "DialogView",
    "InterruptedReply",
    "MessageView",
    "OnText",
    "Opening",
    "Recovery",
    "ReplyOutcome",
    "Turn",
]
