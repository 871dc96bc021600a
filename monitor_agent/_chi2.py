"""The chi-square survival function in plain ``math``: the device has no scipy.

``chi2_sf(x, df)`` is the regularized upper incomplete gamma ``Q(df/2, x/2)``, computed
the classic way (Numerical Recipes' ``gammq``): the power series of ``P`` below
``x < a + 1`` (where it converges fast) and a Lentz continued fraction for ``Q`` above
(where it does, and where a small ``Q`` keeps its relative precision instead of being
``1 - P`` rounded to zero). Tests compare it with ``scipy.stats.chi2.sf``.
"""

from __future__ import annotations

import math

__all__ = ["chi2_sf", "chi2_cdf"]

_EPS = 1e-15
_TINY = 1e-300
_MAX_ITER = 1000


def _p_series(a: float, x: float) -> float:
    term = total = 1.0 / a
    ap = a
    for _ in range(_MAX_ITER):
        ap += 1.0
        term *= x / ap
        total += term
        if abs(term) < abs(total) * _EPS:
            break
    return total * math.exp(-x + a * math.log(x) - math.lgamma(a))


def _q_fraction(a: float, x: float) -> float:
    b = x + 1.0 - a
    c = 1.0 / _TINY
    d = 1.0 / b
    h = d
    for i in range(1, _MAX_ITER):
        an = -i * (i - a)
        b += 2.0
        d = an * d + b
        d = _TINY if abs(d) < _TINY else d
        c = b + an / c
        c = _TINY if abs(c) < _TINY else c
        d = 1.0 / d
        delta = d * c
        h *= delta
        if abs(delta - 1.0) < _EPS:
            break
    return math.exp(-x + a * math.log(x) - math.lgamma(a)) * h


def chi2_sf(x: float, df: float) -> float:
    """P(X >= x) for X ~ chi-square with ``df`` degrees of freedom (``df > 0``)."""
    if df <= 0:
        raise ValueError(f"df must be positive, got {df}")
    if not x > 0:  # also NaN: no evidence
        return 1.0
    if math.isinf(x):
        return 0.0
    a, half = 0.5 * df, 0.5 * x
    if half < a + 1.0:
        return min(1.0, max(0.0, 1.0 - _p_series(a, half)))
    return min(1.0, max(0.0, _q_fraction(a, half)))


def chi2_cdf(x: float, df: float) -> float:
    """P(X <= x) for X ~ chi-square with ``df`` degrees of freedom; precise in the lower tail."""
    if df <= 0:
        raise ValueError(f"df must be positive, got {df}")
    if not x > 0:
        return 0.0
    if math.isinf(x):
        return 1.0
    a, half = 0.5 * df, 0.5 * x
    if half < a + 1.0:
        return min(1.0, max(0.0, _p_series(a, half)))
    return min(1.0, max(0.0, 1.0 - _q_fraction(a, half)))
