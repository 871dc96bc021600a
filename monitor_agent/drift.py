"""Drift scores between a reference profile and observed bin counts.

Shared by the device (``status``, ``/metrics``) and the collector (fleet drift), so
both report the same number for the same counts.

* PSI = sum((p - q) * ln(p / q)) with both distributions floored at ``EPSILON``
  before renormalising, so an empty bin does not make PSI infinite.
* Jensen-Shannon divergence in bits (0 = identical, 1 = disjoint), unsmoothed.

:func:`psi_rows` / :func:`js_rows` are the same maths for many observations at once
(one row each): the collector scores a thousand devices in one numpy call.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

__all__ = ["EPSILON", "psi", "js_divergence", "psi_rows", "js_rows", "Thresholds", "DriftScore", "classify"]

EPSILON = 1e-4


def _as_dist(x: Sequence[float] | np.ndarray) -> np.ndarray:
    a = np.asarray(x, dtype=np.float64)
    total = a.sum()
    return a / total if total > 0 else a


def psi(reference: Sequence[float] | np.ndarray, observed: Sequence[float] | np.ndarray) -> float:
    """Population stability index of ``observed`` (counts or shares) against ``reference``."""
    p = _as_dist(observed)
    q = _as_dist(reference)
    if p.size == 0 or p.sum() == 0 or q.sum() == 0:
        return 0.0
    p = np.maximum(p, EPSILON)
    q = np.maximum(q, EPSILON)
    p /= p.sum()
    q /= q.sum()
    return float(np.sum((p - q) * np.log(p / q)))


def js_divergence(reference: Sequence[float] | np.ndarray, observed: Sequence[float] | np.ndarray) -> float:
    """Jensen-Shannon divergence (base 2) of ``observed`` against ``reference``."""
    p = _as_dist(observed)
    q = _as_dist(reference)
    if p.size == 0 or p.sum() == 0 or q.sum() == 0:
        return 0.0
    m = 0.5 * (p + q)

    def kl(a: np.ndarray, b: np.ndarray) -> float:
        nz = a > 0
        return float(np.sum(a[nz] * np.log2(a[nz] / b[nz])))

    return max(0.0, min(1.0, 0.5 * kl(p, m) + 0.5 * kl(q, m)))


def _as_dist_rows(x: np.ndarray) -> np.ndarray:
    a = np.asarray(x, dtype=np.float64)
    total = a.sum(axis=-1, keepdims=True)
    return np.divide(a, total, out=np.zeros_like(a), where=total > 0)


def psi_rows(reference: Sequence[float] | np.ndarray, observed: np.ndarray) -> np.ndarray:
    """:func:`psi` of each row of ``observed`` (2-D counts) against one ``reference``."""
    obs = np.atleast_2d(np.asarray(observed, dtype=np.float64))
    q = _as_dist(reference)
    if obs.shape[1] == 0 or q.sum() == 0:
        return np.zeros(obs.shape[0])
    empty = obs.sum(axis=1) == 0
    p = np.maximum(_as_dist_rows(obs), EPSILON)
    q = np.maximum(q, EPSILON)
    p /= p.sum(axis=1, keepdims=True)
    q = q / q.sum()
    out = np.sum((p - q) * np.log(p / q), axis=1)
    out[empty] = 0.0
    return out


def js_rows(reference: Sequence[float] | np.ndarray, observed: np.ndarray) -> np.ndarray:
    """:func:`js_divergence` of each row of ``observed`` (2-D counts) against one ``reference``."""
    obs = np.atleast_2d(np.asarray(observed, dtype=np.float64))
    q = _as_dist(reference)
    if obs.shape[1] == 0 or q.sum() == 0:
        return np.zeros(obs.shape[0])
    empty = obs.sum(axis=1) == 0
    p = _as_dist_rows(obs)
    m = 0.5 * (p + q)

    def kl(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        ratio = np.divide(a, b, out=np.ones_like(a), where=a > 0)
        return np.sum(np.where(a > 0, a * np.log2(ratio), 0.0), axis=1)

    out = np.clip(0.5 * kl(p, m) + 0.5 * kl(np.broadcast_to(q, p.shape), m), 0.0, 1.0)
    out[empty] = 0.0
    return out


@dataclass(frozen=True)
class Thresholds:
    """Levels carried in the manifest (``drift`` section); defaults per industry habit.

    ``psi_warn``/``psi_drift`` grade PSI. ``missing_jump`` is how far (absolute share)
    the live missing rate may rise above the profile's before it is flagged;
    ``out_of_range`` is the share of values outside the training range (numeric) or of
    unseen categories that is flagged (the reference expects none).
    """

    psi_warn: float = 0.1
    psi_drift: float = 0.2
    missing_jump: float = 0.05
    out_of_range: float = 0.01

    @classmethod
    def from_dict(cls, d: dict[str, float] | None) -> Thresholds:
        d = d or {}
        return cls(
            float(d.get("psi_warn", 0.1)),
            float(d.get("psi_drift", 0.2)),
            float(d.get("missing_jump", 0.05)),
            float(d.get("out_of_range", 0.01)),
        )

    def to_dict(self) -> dict[str, float]:
        return {
            "psi_warn": self.psi_warn,
            "psi_drift": self.psi_drift,
            "missing_jump": self.missing_jump,
            "out_of_range": self.out_of_range,
        }


@dataclass(frozen=True)
class DriftScore:
    psi: float
    js: float
    status: Literal["ok", "warn", "drift", "no-data"]


def classify(reference: Sequence[float], observed: Sequence[float], thresholds: Thresholds) -> DriftScore:
    """PSI and JS with a status; ``no-data`` when nothing was observed."""
    if sum(observed) == 0:
        return DriftScore(0.0, 0.0, "no-data")
    p = psi(reference, observed)
    j = js_divergence(reference, observed)
    status: Literal["ok", "warn", "drift", "no-data"]
    if math.isnan(p):
        status = "no-data"
    elif p >= thresholds.psi_drift:
        status = "drift"
    elif p >= thresholds.psi_warn:
        status = "warn"
    else:
        status = "ok"
    return DriftScore(p, j, status)
