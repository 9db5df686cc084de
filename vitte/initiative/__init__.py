"""The persona writes first (issue 18): nudges after the player's silence, with restraint.

- `rules`: the pure rules (quiet hours in the player's time zone, jitter, the unanswered
  limit and its doubling, the online window, why a nudge is not sent now);
- `clock`: the time the scheduler reads (movable by the console's operator panel);
- `schedule`: the durable schedule's SQL (table `nudges`: claim, mark, reschedule);
- `writer`: the LLM instruction for a nudge, with the dialog's memory;
- `nudger`: claims what is due and sends it exactly once, under the player's turn.
"""
