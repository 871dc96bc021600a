"""Prediction ids: cheap, unique across processes and restarts, and free of SQLite (a one-shot
``predict`` makes them while it writes its output, before the agent touches the disk)."""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterator

__all__ = ["IdMaker", "IdRun", "IdSpan", "split_id"]


class IdRun(list[str]):
    """Ids made together (``prefix`` + consecutive hex counters from ``first``): the join store
    keeps such a batch as one block row instead of a row per id (see ``feedback.py``)."""

    __slots__ = ("prefix", "first")

    def __init__(self, ids: list[str], prefix: str, first: int) -> None:
        super().__init__(ids)
        self.prefix = prefix
        self.first = first

    def span(self) -> IdSpan:
        """The run without its strings: what the agent holds until its drain (~0.1 KB, not ~6 KB a 100)."""
        return IdSpan(self.prefix, self.first, len(self))


class IdSpan:
    """A run of generated ids as ``(prefix, first, n)``; iterating spells the ids again."""

    __slots__ = ("prefix", "first", "n")

    def __init__(self, prefix: str, first: int, n: int) -> None:
        self.prefix, self.first, self.n = prefix, first, n

    def __len__(self) -> int:
        return self.n

    def __iter__(self) -> Iterator[str]:
        return iter(_spell(self.prefix, self.first, self.n))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, IdSpan) and (self.prefix, self.first, self.n) == (other.prefix, other.first, other.n)

    def __repr__(self) -> str:
        return f"IdSpan({self.prefix!r}, {self.first}, {self.n})"


def split_id(pid: str) -> tuple[str, int] | None:
    """``(prefix, counter)`` of an id :class:`IdMaker` could have made; ``None`` for any other text."""
    head, sep, tail = pid.rpartition("-")
    if not sep or not tail or len(tail) > 16:
        return None
    try:
        n = int(tail, 16)
    except ValueError:
        return None
    return (head + sep, n) if f"{n:x}" == tail else None  # one spelling per id: "0a" is not "a"


# Counter spellings by their low byte: bare below 256, two digits after a higher part.
_LOW_BARE = tuple(f"{i:x}" for i in range(256))
_LOW_PADDED = tuple(f"{i:02x}" for i in range(256))


def _spell(prefix: str, first: int, n: int) -> list[str]:
    """``prefix`` + the hex spelling of each counter ``first`` .. ``first + n - 1``, 256 at a time:
    one ``join`` and one ``split`` per 256 ids instead of a ``%x`` per id."""
    ids: list[str] = []
    k, last = first, first + n - 1
    while k <= last:
        high, low = divmod(k, 256)
        take = min(last - k + 1, 256 - low)
        head, table = (f"{prefix}{high:x}", _LOW_PADDED) if high else (prefix, _LOW_BARE)
        ids += (head + ("," + head).join(table[low : low + take])).split(",")  # ids hold no ","
        k += take
    return ids


class IdMaker:
    """Prediction ids unique across processes and restarts: a random per-process prefix and a
    counter (``3f9a1c2e-1a``); cheap enough for the single-row path."""

    def __init__(self, start: int = 1) -> None:
        """``start``: the first counter (tests start near a spelling boundary)."""
        self._prefix = os.urandom(4).hex() + "-"  # as secrets.token_hex(4), without importing secrets
        self._count = itertools.count(start)

    def one(self) -> str:
        return f"{self._prefix}{next(self._count):x}"

    def many(self, n: int) -> list[str]:
        """``n`` ids with consecutive counters, as an :class:`IdRun`.

        The counters are taken in one C call (``islice`` over the shared ``count``: no bytecode
        runs in between, so no other thread can take one of them). The spellings are made 256 at
        a time from a table of low bytes: one ``join`` and one ``split`` per 256 ids instead of a
        ``%x`` per id (100 ids: ~190k -> ~90k instructions of the serve thread, callgrind).
        """
        if n <= 0:
            return []
        last = next(itertools.islice(self._count, n - 1, n))
        first = last - n + 1
        ids = _spell(self._prefix, first, n)
        return IdRun(ids, self._prefix, first)
