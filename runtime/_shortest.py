"""float32 values as the float64s their shortest round-trip text reads back as, vectorised.

``values.astype(str)`` (numpy's Dragon4 per element, a unicode array, then ``float()``
per text) took most of a 100-row JSON reply's formatting time. Here every value is
rounded to 1, 2, ... 9 significant digits at once (numpy arithmetic over an n x 9 array)
and the first rounding that lies strictly inside the value's float32 rounding interval
wins: that decimal is numpy's shortest text, and ``m / 10**k`` (both exact, one correctly
rounded division) is the float64 ``float(text)`` gives. Whatever this cannot decide for
certain -- a candidate within a float64 ulp of the interval's edge, a tie in the
rounding, a power of two (its interval is lopsided), exponents beyond 10**22 -- is asked
of numpy's own formatting, so the result is always identical to
``np.array(values.astype(str).tolist(), dtype=float)`` (``tests/runtime/test_format.py``
checks 700,000 random values and the edge cases).
"""

from __future__ import annotations

import numpy as np

__all__ = ["shortest_float32"]

_LEVELS = np.arange(1, 10)  # significant digits: float32 needs at most 9 (a miss is asked of numpy)
_POW10 = np.array([10.0**i for i in range(23)])  # exact in float64 up to 10**22
_TIE = 1e-4  # |y - rint(y)| this close to 0.5: a possible tie (or float64 error), asked of numpy


def shortest_float32(values: np.ndarray) -> np.ndarray:
    """float64 array, same shape: each float32 value as its shortest round-trip decimal reads back."""
    x32 = np.ascontiguousarray(values, dtype=np.float32).ravel()
    with np.errstate(all="ignore"):
        x = x32.astype(np.float64)
        a = np.abs(x)
        guess = np.nan_to_num(-np.floor(np.log10(a)) - 1, nan=0.0, posinf=0.0, neginf=0.0)
        k = guess.astype(np.int64)[:, None] + _LEVELS  # decimal places tried, per value and level
        exact = (np.abs(k) <= 22).all(axis=1)
        p = _POW10[np.minimum(np.abs(k), 22)]
        pos = k >= 0
        y = np.where(pos, a[:, None] * p, a[:, None] / p)
        m = np.rint(y)
        v = np.where(pos, m / p, m * p)
        a32 = np.abs(x32)
        lo = (a + np.nextafter(a32, np.float32(0)).astype(np.float64)) / 2
        hi = (a + np.nextafter(a32, np.float32(np.inf)).astype(np.float64)) / 2
        inside = (v > np.nextafter(lo, np.inf)[:, None]) & (v < np.nextafter(hi, -np.inf)[:, None])
        outside = (v < np.nextafter(lo, -np.inf)[:, None]) | (v > np.nextafter(hi, np.inf)[:, None])
        decided = ~outside  # the first level with a candidate inside (or too close to call)
        first = decided.argmax(axis=1)
        rows = np.arange(x.size)
        sure = (
            exact
            & decided[rows, first]
            & inside[rows, first]
            & (np.abs(np.abs(y[rows, first] - m[rows, first]) - 0.5) > _TIE)
            & ((x32.view(np.uint32) & 0x7FFFFF) != 0)
        )
        out = np.copysign(v[rows, first], x)
    plain = ~np.isfinite(x) | (a == 0)  # NaN, infinities and zeros are their own answer
    out[plain] = x[plain]
    slow = ~sure & ~plain
    if slow.any():
        out[slow] = np.array(x32[slow].astype(str).tolist(), dtype=np.float64)
    return out.reshape(np.shape(values))
