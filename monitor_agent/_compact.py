"""Which stored windows to merge when the outbox reaches its cap (a pure plan, no I/O).

Windows merge into coarser ones in stages (window -> hour -> day), oldest first, and
only when that is safe for exactly-once delivery:

* same model and same hour (day) bucket of their start time;
* *consecutive* sequence numbers (``seq == previous.seq_last + 1``): a merged window
  claims the whole range ``seq..seq_last``, so a hole (a window delivered,
  dead-lettered or belonging to another model) must never be swallowed;
* never sent before: a window that may already sit in the collector (sent, reply lost)
  keeps its exact range, else its re-send would overlap a stored range (409).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

__all__ = ["Stored", "STAGES", "plan_merges"]

#: (bucket span in seconds, level of the merged window); raw windows are level 0.
STAGES = ((3600, 1), (86400, 2))


@dataclass(frozen=True)
class Stored:
    seq: int
    seq_last: int
    model: str
    start: float
    level: int


def plan_merges(stored: Sequence[Stored], span: int, level: int) -> list[list[int]]:
    """Groups (lists of ``seq``) of two or more windows to merge into one of ``level``, oldest first.

    ``stored`` must be the unsent windows in ``seq`` order.
    """
    groups: list[list[int]] = []
    run: list[Stored] = []
    for w in stored:
        prev = run[-1] if run else None
        if (
            prev is not None
            and w.level <= level
            and w.seq == prev.seq_last + 1
            and w.model == prev.model
            and int(w.start // span) == int(run[0].start // span)
        ):
            run.append(w)
            continue
        if len(run) >= 2:
            groups.append([r.seq for r in run])
        run = [w] if w.level <= level else []
    if len(run) >= 2:
        groups.append([r.seq for r in run])
    return groups
