"""A mergeable latency histogram with a bounded relative error (DDSketch-style buckets).

Bucket ``i`` holds values in ``(GAMMA**(i-1), GAMMA**i]`` seconds with
``GAMMA = (1 + ALPHA) / (1 - ALPHA)``; reporting a bucket by ``2 * GAMMA**i / (GAMMA + 1)``
keeps every quantile within ``ALPHA`` (1 %) relative error of the true value. Two
histograms merge by adding counts per bucket, so a fleet-wide p99 is as exact as a
single device's.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

__all__ = ["ALPHA", "GAMMA", "MAX_INDEX", "LatencyHistogram"]

ALPHA = 0.01
GAMMA = (1 + ALPHA) / (1 - ALPHA)
_LOG_GAMMA = math.log(GAMMA)
_MIN_VALUE = 1e-7  # 0.1 µs: anything faster is reported as this
_MIN_INDEX = math.ceil(math.log(_MIN_VALUE) / _LOG_GAMMA)
#: Bucket indices a histogram from outside may hold: GAMMA**10000 is ~1e86 s, far beyond any
#: latency, and still a float (an index past ~35,000 overflows when a quantile is read).
MAX_INDEX = 10_000
_MAX_COUNT = 2**53 - 1  # wire.MAX_COUNT (the wire module imports this one)


class LatencyHistogram:
    """Sparse bucket counts; ``add`` costs one ``log`` and a dict update."""

    __slots__ = ("buckets",)

    def __init__(self, buckets: Mapping[int, int] | None = None) -> None:
        self.buckets: dict[int, int] = dict(buckets or {})

    @staticmethod
    def index(seconds: float) -> int:
        if seconds <= _MIN_VALUE:
            return _MIN_INDEX
        return math.ceil(math.log(seconds) / _LOG_GAMMA)

    def add(self, seconds: float, count: int = 1) -> None:
        i = self.index(seconds)
        self.buckets[i] = self.buckets.get(i, 0) + count

    def add_many(self, values: Iterable[float]) -> None:
        b = self.buckets
        for v in values:
            i = _MIN_INDEX if v <= _MIN_VALUE else math.ceil(math.log(v) / _LOG_GAMMA)
            b[i] = b.get(i, 0) + 1

    def add_array(self, values: np.ndarray | Iterable[float]) -> None:
        """Vectorised :meth:`add_many` (same buckets) for a flush of many latencies at once."""
        if isinstance(values, np.ndarray):
            v = values.astype(np.float64).ravel()  # a copy: worked on in place below
        else:  # a flush's tuple of floats: fromiter skips asarray's shape discovery
            v = np.fromiter(values, dtype=np.float64)
        if v.size == 0:
            return
        low = v <= _MIN_VALUE
        np.maximum(v, _MIN_VALUE, out=v)
        np.log(v, out=v)
        v /= _LOG_GAMMA
        np.ceil(v, out=v)
        idx = v.astype(np.int64)
        idx[low] = _MIN_INDEX
        lo = int(idx.min())
        counts = np.bincount(idx - lo) if int(idx.max()) - lo < 65536 else None
        b = self.buckets
        if counts is None:  # absurd spreads (days next to µs): unique's sort, not a huge bincount
            keys, n = np.unique(idx, return_counts=True)
            pairs = zip(keys.tolist(), n.tolist())
        else:
            at = np.flatnonzero(counts)
            pairs = zip((at + lo).tolist(), counts[at].tolist())
        for i, c in pairs:
            b[i] = b.get(i, 0) + c

    def merge(self, other: LatencyHistogram) -> None:
        b = self.buckets
        for i, c in other.buckets.items():
            b[i] = b.get(i, 0) + c

    @property
    def count(self) -> int:
        return sum(self.buckets.values())

    def quantile(self, q: float) -> float | None:
        """The ``q``-quantile in seconds (``None`` when empty), within ``ALPHA`` relative error."""
        total = self.count
        if total == 0:
            return None
        rank = q * (total - 1)
        seen = 0
        for i in sorted(self.buckets):
            seen += self.buckets[i]
            if seen > rank:
                return 2 * GAMMA**i / (GAMMA + 1)
        return 2 * GAMMA ** max(self.buckets) / (GAMMA + 1)

    def to_dict(self) -> dict[str, Any]:
        keys = sorted(self.buckets)
        return {"alpha": ALPHA, "index": keys, "counts": [self.buckets[k] for k in keys]}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> LatencyHistogram:
        if float(d.get("alpha", ALPHA)) != ALPHA:
            raise ValueError(f"latency.alpha must be {ALPHA}")
        idx, counts = d["index"], d["counts"]
        if len(idx) != len(counts):
            raise ValueError("latency.index and latency.counts differ in length")
        out: dict[int, int] = {}
        for i, c in zip(idx, counts):
            # JSON does not tell 7 from 7.0: an integral float is that integer.
            i = int(i) if type(i) is float and i.is_integer() else i
            c = int(c) if type(c) is float and c.is_integer() else c
            if not isinstance(i, int) or isinstance(i, bool) or not isinstance(c, int) or isinstance(c, bool) or c < 0:
                raise ValueError("latency buckets must be integers with non-negative counts")
            if not -MAX_INDEX <= i <= MAX_INDEX or c > _MAX_COUNT:
                raise ValueError(f"latency bucket indices lie within ±{MAX_INDEX} and counts at most 2**53-1")
            out[i] = out.get(i, 0) + c
        return cls(out)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, LatencyHistogram) and {
            k: v for k, v in self.buckets.items() if v
        } == {k: v for k, v in other.buckets.items() if v}

    def __repr__(self) -> str:
        return f"LatencyHistogram(count={self.count})"
