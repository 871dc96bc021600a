"""Drift scores between a reference profile and observed bin counts.

Shared by the device (``status``, ``/metrics``) and the collector (fleet drift), so
both report the same number for the same counts.

* PSI = sum((p - q) * ln(p / q)) with both distributions floored at ``EPSILON``
  before renormalising, so an empty bin does not make PSI infinite.
* Jensen-Shannon divergence in bits (0 = identical, 1 = disjoint), unsmoothed.

PSI and JS are *effect sizes*, and on a small sample they are large by chance alone:
under no shift, PSI over ``B`` bins is about ``(1/n + 1/m) * chi2(B - 1)``, so 70 rows
and 10 bins give ~0.13 on average and often more than 0.2. So :func:`classify` flags
``warn``/``drift`` only when the effect size reaches the threshold **and** a two-sample
Pearson chi-square test of the observed bin counts against the reference counts
(:func:`chi2_test`) is significant at ``alpha / n_tests`` (Bonferroni over the features
and the prediction of a model: the family-wise false-alarm rate stays below ``alpha``).
Below ``min_count`` observed values there is no verdict: ``not-enough-data``.

The test works on the same mergeable bin counts the device keeps, so device, collector
and fleet view reach the same verdict for the same counts.

:func:`psi_rows` / :func:`js_rows` are the same maths for many observations at once
(one row each): the collector scores a thousand devices in one numpy call.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from mlpack_edge.monitor_agent._chi2 import chi2_cdf, chi2_sf
from mlpack_edge.monitor_agent._thresholds import Thresholds

__all__ = [
    "EPSILON",
    "MIN_EXPECTED",
    "STATUSES",
    "psi",
    "js_divergence",
    "psi_rows",
    "js_rows",
    "pooled_cells",
    "min_testable_count",
    "chi2_test",
    "ChiSquare",
    "poisson_sf",
    "present_count",
    "rate_exceeds",
    "Thresholds",
    "DriftScore",
    "classify",
]

EPSILON = 1e-4
#: Bins are pooled until each cell expects at least this many observed values: the
#: chi-square approximation is poor (and anti-conservative) for sparser cells.
MIN_EXPECTED = 5.0
#: Every status, least to most severe.
STATUSES = ("no-data", "not-enough-data", "ok", "warn", "drift")


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




# --------------------------------------------------------------------------- significance


def pooled_cells(shares: Sequence[float], n: int, ordered: bool, min_expected: float = MIN_EXPECTED) -> list[list[int]]:
    """Group bins so each group expects ``>= min_expected`` of ``n`` values under the reference.

    ``ordered`` (numeric bins) pools neighbours left to right, so a shift still moves mass
    between groups; otherwise (categories) the rarest categories are pooled together. The
    grouping depends on the reference and ``n`` only, never on the observed counts, so the
    test's null distribution is not tilted by looking at the data first. A short last
    group joins the one before it. One group means no test is possible.
    """
    q = np.asarray(shares, dtype=np.float64)
    total = q.sum()
    q = q / total if total > 0 else q
    order = list(range(q.size)) if ordered else [int(i) for i in np.argsort(-q, kind="stable")]
    groups: list[list[int]] = []
    current: list[int] = []
    mass = 0.0
    for i in order:
        current.append(i)
        mass += float(q[i])
        if mass * n >= min_expected:
            groups.append(current)
            current, mass = [], 0.0
    if current:
        if groups:
            groups[-1].extend(current)
        else:
            groups.append(current)
    return groups


def present_count(count: int, missing_rate: float) -> int:
    """Values behind a profile's shares (its non-missing rows): the test's reference sample size."""
    return int(round(int(count) * (1.0 - float(missing_rate))))


def poisson_sf(k: int, mean: float) -> float:
    """P(X >= k) for X ~ Poisson(``mean``): ``P(chi2 with 2k df <= 2 * mean)``."""
    if k <= 0:
        return 1.0
    if mean <= 0:
        return 0.0
    return chi2_cdf(2.0 * mean, 2 * k)


def rate_exceeds(count: int, total: int, rate: float, level: float) -> bool:
    """Is ``count`` of ``total`` significantly above ``rate`` (one-sided, at ``level``)?

    Both the share must exceed ``rate`` and the Poisson tail (an upper bound for the
    binomial's at small rates) must be below ``level``: one odd value in 80 (1.25%) is
    not evidence that more than 1% of values are odd; 200 of 10,000 is.
    """
    if total <= 0 or count <= rate * total:
        return False
    return poisson_sf(count, rate * total) < level


@dataclass(frozen=True)
class ChiSquare:
    """A two-sample Pearson chi-square test of two binned samples (after pooling)."""

    statistic: float
    df: int
    p_value: float


def chi2_test(
    reference_shares: Sequence[float],
    reference_count: float | None,
    observed: Sequence[float] | np.ndarray,
    ordered: bool = True,
) -> ChiSquare | None:
    """Test whether ``observed`` counts come from the reference's distribution.

    The reference is itself a sample (``reference_count`` values with ``reference_shares``),
    so this is the 2 x G contingency-table test of homogeneity:
    ``X2 = N*n * sum_g (r_g/N - c_g/n)^2 / (r_g + c_g)`` with ``G - 1`` degrees of freedom,
    over the cells of :func:`pooled_cells`. Without a reference count (or 0) it is the
    one-sample goodness-of-fit test against the shares. ``None`` when no test is possible
    (nothing observed, or a single cell).
    """
    c = np.asarray(observed, dtype=np.float64)
    n = float(c.sum())
    if n <= 0:
        return None
    groups = pooled_cells(reference_shares, int(n), ordered)
    if len(groups) < 2:
        return None
    q = np.asarray(reference_shares, dtype=np.float64)
    q = q / q.sum()
    qg = np.array([q[g].sum() for g in groups])
    cg = np.array([c[g].sum() for g in groups])
    pg = cg / n
    if reference_count:
        big_n = float(reference_count)
        rg = qg * big_n
        stat = float(big_n * n * np.sum((qg - pg) ** 2 / (rg + cg)))
    else:
        stat = float(n * np.sum((pg - qg) ** 2 / qg))
    df = len(groups) - 1
    return ChiSquare(stat, df, chi2_sf(stat, df))


Status = Literal["no-data", "not-enough-data", "ok", "warn", "drift"]


@dataclass(frozen=True)
class DriftScore:
    """Effect sizes, the test behind the verdict, and the verdict.

    ``alpha`` is the per-feature level the p-value was held against (``alpha / n_tests``);
    ``statistic``/``df``/``p_value`` are ``None`` when no test ran (too few values).
    """

    psi: float
    js: float
    status: Status
    n: int = 0
    min_count: int = 0
    test: str = "chi2"
    statistic: float | None = None
    df: int | None = None
    p_value: float | None = None
    alpha: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "psi": self.psi,
            "js": self.js,
            "status": self.status,
            "n": self.n,
            "min_count": self.min_count,
            "test": self.test,
            "statistic": self.statistic,
            "df": self.df,
            "p_value": self.p_value,
            "alpha": self.alpha,
        }


def classify(
    reference: Sequence[float],
    observed: Sequence[float] | np.ndarray,
    thresholds: Thresholds,
    *,
    reference_count: float | None = None,
    n_tests: int = 1,
    ordered: bool = True,
) -> DriftScore:
    """PSI, JS, the chi-square test and the verdict for one feature (see the module doc).

    ``reference_count`` is how many values the reference shares were computed from
    (``None``: treat the reference as exact); ``n_tests`` is how many features (and the
    prediction) are judged together, for the Bonferroni correction; ``ordered`` says the
    bins are ordered (numeric), which decides how sparse bins are pooled.
    """
    obs = np.asarray(observed, dtype=np.float64)
    n = int(obs.sum())
    need = max(1, int(thresholds.min_count))
    if n == 0:
        return DriftScore(0.0, 0.0, "no-data", 0, need)
    p = psi(reference, obs)
    j = js_divergence(reference, obs)
    if n < need or math.isnan(p):
        return DriftScore(p, j, "not-enough-data", n, need)
    level = thresholds.alpha / max(1, n_tests)
    test = chi2_test(reference, reference_count, obs, ordered)
    if test is None:  # a single cell after pooling: too few values for this feature's bins
        return DriftScore(p, j, "not-enough-data", n, max(need, _needed(reference, ordered, n)), alpha=level)
    significant = test.p_value < level
    status: Status
    if significant and p >= thresholds.psi_drift:
        status = "drift"
    elif significant and p >= thresholds.psi_warn:
        status = "warn"
    else:
        status = "ok"
    return DriftScore(p, j, status, n, need, "chi2", test.statistic, test.df, test.p_value, level)


@functools.lru_cache(maxsize=4096)
def min_testable_count(shares: tuple[float, ...], ordered: bool) -> int:
    """The fewest values for which the bins pool into two cells (a test is possible); the
    answer is monotone in n, so ``n >= min_testable_count(...)`` replaces pooling per call."""
    return _needed(shares, ordered, 1)


def _needed(reference: Sequence[float], ordered: bool, n: int) -> int:
    """The smallest count (from ``n`` up, doubling) for which the bins pool into two cells."""
    m = max(n, 1)
    while m < 10**9 and len(pooled_cells(reference, m, ordered)) < 2:
        m *= 2
    lo, hi = max(n, 1), m
    while lo < hi:
        mid = (lo + hi) // 2
        if len(pooled_cells(reference, mid, ordered)) >= 2:
            hi = mid
        else:
            lo = mid + 1
    return lo
