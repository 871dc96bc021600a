"""Vectorised window counting: the profile's binning rule applied to many columns at once.

:func:`mlpack.monitor_agent.profile.bin_numeric` is *the* rule (bin ``i`` holds
``edges[i-1] <= x < edges[i]``, NaN is missing, outside ``[min, max]`` also counts as
below/above). Calling it once per feature costs ~8 numpy calls per feature, which is
too much per flush on a device; :class:`NumericBinner` computes the same counts for
every numeric feature with a handful of calls: ``searchsorted(edges, x, "right")`` equals
the number of edges ``<= x``, so one broadcast comparison against an edge matrix
(padded with NaN, which compares false) followed by a single ``bincount`` over
per-feature offsets gives every feature's counts. A test checks it against
``bin_numeric`` on random data with NaN and infinities.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from mlpack.monitor_agent.profile import NumericProfile

__all__ = ["NumericBinner", "NumericCounts", "count_categorical"]

_CHUNK_ROWS = 2048


@dataclass
class NumericCounts:
    """Counts for every column of one binner: ``bins`` is flat (see ``NumericBinner.offsets``)."""

    bins: np.ndarray  # int64, sum of n_bins over columns
    missing: np.ndarray  # int64 per column
    below: np.ndarray
    above: np.ndarray

    def add(self, other: NumericCounts) -> None:
        self.bins += other.bins
        self.missing += other.missing
        self.below += other.below
        self.above += other.above


class NumericBinner:
    """Bins a float matrix ``[rows, columns]`` against one numeric profile per column."""

    def __init__(self, profiles: Sequence[NumericProfile]) -> None:
        self.profiles = tuple(profiles)
        n = len(self.profiles)
        width = max((len(p.edges) for p in self.profiles), default=0)
        edges = np.full((n, max(width, 1)), np.nan)
        for j, p in enumerate(self.profiles):
            edges[j, : len(p.edges)] = p.edges
        self._edges = edges[None, :, :]  # [1, columns, width]
        sizes = np.array([p.n_bins for p in self.profiles], dtype=np.int64)
        self.offsets = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64)
        self.total_bins = int(sizes.sum())
        self._lo = np.array([-np.inf if p.min is None else p.min for p in self.profiles])
        self._hi = np.array([np.inf if p.max is None else p.max for p in self.profiles])

    def zeros(self) -> NumericCounts:
        n = len(self.profiles)
        z = np.zeros
        return NumericCounts(z(self.total_bins, np.int64), z(n, np.int64), z(n, np.int64), z(n, np.int64))

    def count(self, x: np.ndarray) -> NumericCounts:
        """Counts of ``x`` (``[rows, columns]``); each column binned by its own profile.

        Large inputs go in chunks so the temporary comparison cube stays a fixed size
        (memory flat in the number of rows).
        """
        x = np.asarray(x, dtype=np.float64)
        if x.ndim == 1:
            x = x.reshape(-1, 1)
        if x.shape[0] <= _CHUNK_ROWS:
            return self._count(x)
        out = self.zeros()
        for start in range(0, x.shape[0], _CHUNK_ROWS):
            out.add(self._count(x[start : start + _CHUNK_ROWS]))
        return out

    def _count(self, x: np.ndarray) -> NumericCounts:
        nan = np.isnan(x)
        missing = nan.sum(axis=0).astype(np.int64)
        idx = (x[:, :, None] >= self._edges).sum(axis=2)  # == searchsorted(edges, x, "right")
        bins = np.bincount((idx + self.offsets).ravel(), minlength=self.total_bins).astype(np.int64)
        # NaN compared false everywhere and so landed in each column's first bin: take it out.
        if missing.any():
            bins[self.offsets] -= missing
        with np.errstate(invalid="ignore"):
            below = (x < self._lo).sum(axis=0).astype(np.int64)
            above = (x > self._hi).sum(axis=0).astype(np.int64)
        return NumericCounts(bins, missing, below, above)

    def column(self, counts: NumericCounts, j: int) -> np.ndarray:
        """Column ``j``'s slice of ``counts.bins``."""
        start = int(self.offsets[j])
        return counts.bins[start : start + self.profiles[j].n_bins]


def _is_missing(v: Any) -> bool:
    return v is None or v == "" or (isinstance(v, float) and v != v)


def count_categorical(
    index: Mapping[str, int], values: Iterable[Any], counts: np.ndarray
) -> tuple[int, int]:
    """Add ``values`` into ``counts`` (category -> bin via ``index``); returns (missing, unseen).

    Same rule as :func:`~mlpack.monitor_agent.profile.bin_categorical`, but counts distinct
    values first (``Counter`` runs in C), so a flush costs one dict lookup per distinct value.
    """
    missing = unseen = 0
    for v, c in Counter(values).items():
        if _is_missing(v):
            missing += c
            continue
        i = index.get(v if isinstance(v, str) else str(v))
        if i is None:
            unseen += c
        else:
            counts[i] += c
    return missing, unseen
