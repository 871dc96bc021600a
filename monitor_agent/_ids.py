"""Prediction ids: cheap, unique across processes and restarts, and free of SQLite (a one-shot
``predict`` makes them while it writes its output, before the agent touches the disk)."""

from __future__ import annotations

import itertools
import os

__all__ = ["IdMaker"]


class IdMaker:
    """Prediction ids unique across processes and restarts: a random per-process prefix and a
    counter (``3f9a1c2e-1a``); cheap enough for the single-row path."""

    def __init__(self) -> None:
        self._prefix = os.urandom(4).hex() + "-"  # as secrets.token_hex(4), without importing secrets
        self._count = itertools.count(1)

    def one(self) -> str:
        return f"{self._prefix}{next(self._count):x}"

    def many(self, n: int) -> list[str]:
        p, c = self._prefix, self._count
        return [f"{p}{next(c):x}" for _ in range(n)]
