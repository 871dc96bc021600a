"""'Did you mean ...?': the nearest valid name for a misspelt one (one rule, used everywhere)."""

from __future__ import annotations

import difflib
from collections.abc import Iterable

__all__ = ["nearest"]


def nearest(name: str, options: Iterable[str]) -> str | None:
    """The option ``name`` most likely meant: same letters in another case, else the closest spelling."""
    choices = list(options)
    folded = [o for o in choices if o.lower() == name.lower()]
    if folded:
        return folded[0]
    close = difflib.get_close_matches(name, choices, n=1, cutoff=0.6)
    return close[0] if close else None
