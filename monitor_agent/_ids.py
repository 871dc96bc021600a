"""Prediction ids: cheap, unique across processes and restarts, and free of SQLite (a one-shot
``predict`` makes them while it writes its output, before the agent touches the disk)."""

from __future__ import annotations

import itertools
import os

__all__ = ["IdMaker", "IdRun", "split_id"]


class IdRun(list[str]):
    """Ids made together (``prefix`` + consecutive hex counters from ``first``): the join store
    keeps such a batch as one block row instead of a row per id (see ``feedback.py``)."""

    __slots__ = ("prefix", "first")

    def __init__(self, ids: list[str], prefix: str, first: int) -> None:
        super().__init__(ids)
        self.prefix = prefix
        self.first = first


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


class IdMaker:
    """Prediction ids unique across processes and restarts: a random per-process prefix and a
    counter (``3f9a1c2e-1a``); cheap enough for the single-row path."""

    def __init__(self) -> None:
        self._prefix = os.urandom(4).hex() + "-"  # as secrets.token_hex(4), without importing secrets
        self._count = itertools.count(1)
        self._format = (self._prefix + "%x").__mod__  # one() spelled for map (the prefix is hex and "-")

    def one(self) -> str:
        return f"{self._prefix}{next(self._count):x}"

    def many(self, n: int) -> list[str]:
        """``n`` ids; an :class:`IdRun` when their counters are consecutive (always, unless
        another thread took ids in between: then a plain list, stored a row per id)."""
        p = self._prefix
        ids = list(map(self._format, itertools.islice(self._count, n)))  # in C: no per-id bytecode
        if not ids:
            return ids
        k = len(p)
        first = int(ids[0][k:], 16)
        if int(ids[-1][k:], 16) - first != n - 1:
            return ids
        return IdRun(ids, p, first)
