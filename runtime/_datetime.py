"""Date and time columns: parse them and derive numeric parts, the same way at build time and on the device.

A ``datetime`` feature is a text column (``2012/01/01``, ``2012-01-01T08:30:00``, epoch
seconds ``1325406600``) the model never sees as such: it sees the *parts* the spec
declares (``year``, ``month``, ``day``, ``day_of_week``, ...), each a numeric feature named
``<column>_<part>``. This module is the one implementation: the builder imports it to
derive the training columns, the device's schema to derive the same parts from what a
device sends, so a date the model never saw (next month, next year) predicts like any
other row instead of being an unseen category.

Rules:

* formats: ``iso`` (ISO 8601 as :meth:`datetime.fromisoformat` reads it: ``2012-01-01``,
  ``2012-01-01 08:30``, ``2012-01-01T08:30:00Z``, ``...+02:00``), ``epoch`` (seconds since
  1970-01-01 UTC, integer or decimal), or a ``strptime`` pattern (``%Y/%m/%d``). The build
  infers the first of :data:`INFERRED` that reads every training cell, unless the spec
  declares one; the manifest records it.
* parts are taken from the time as written (its wall clock): an offset such as ``+02:00``
  is not converted away, since "hour of day" means the local hour the row was recorded
  in; epoch seconds are read in UTC.
* a ``datetime`` object (a pandas ``Timestamp`` too) is taken as it is, whatever the format.
"""

from __future__ import annotations

import _strptime  # noqa: F401  # datetime.strptime imports it lazily; a frozen runtime must carry it
import math
import re
from collections.abc import Collection, Sequence
from datetime import datetime, timezone
from typing import Any

import numpy as np

__all__ = ["PARTS", "DEFAULT_PARTS", "INFERRED", "part_names", "parse", "derive", "infer_format", "describe"]

#: What a datetime feature can derive (day_of_week: Monday = 0; day_of_year: 1 January = 1).
PARTS = ("year", "month", "day", "day_of_week", "day_of_year", "hour", "minute")
DEFAULT_PARTS = ("year", "month", "day", "day_of_week", "hour")
#: Formats tried, in order, when the spec declares none.
INFERRED = ("iso", "%Y/%m/%d", "%Y/%m/%d %H:%M", "%Y/%m/%d %H:%M:%S", "epoch")
# strptime costs ~15 µs a value; these common patterns, written with two-digit fields, read
# the same through fromisoformat (~1 µs) once "/" is "-". Anything else (one-digit months,
# an impossible date) falls back to strptime, which decides and words the error.
_FAST = {
    "%Y/%m/%d": re.compile(r"\d{4}/\d\d/\d\d", re.ASCII),
    "%Y/%m/%d %H:%M": re.compile(r"\d{4}/\d\d/\d\d \d\d:\d\d", re.ASCII),
    "%Y/%m/%d %H:%M:%S": re.compile(r"\d{4}/\d\d/\d\d \d\d:\d\d:\d\d", re.ASCII),
}


def part_names(column: str, parts: Sequence[str]) -> list[str]:
    """The model's feature names for ``column``'s parts: ``when_year``, ``when_month``, ..."""
    return [f"{column}_{p}" for p in parts]


def describe(fmt: str) -> str:
    """A format as a person reads it: ``ISO 8601``, ``epoch seconds``, ``%Y/%m/%d``."""
    return {"iso": "ISO 8601", "epoch": "epoch seconds"}.get(fmt, fmt)


def parse(value: Any, fmt: str) -> datetime:
    """One value as a datetime; ``ValueError`` (saying what was expected) when it is not one."""
    if isinstance(value, datetime):
        return value
    if isinstance(value, (bool, np.bool_)):
        raise ValueError(f"expected a date/time ({describe(fmt)}), got a boolean")
    if fmt == "epoch":
        if isinstance(value, (int, float, np.integer, np.floating)):
            seconds = float(value)
        elif isinstance(value, str):
            try:
                seconds = float(value.strip())
            except ValueError:
                raise ValueError(f"expected a date/time ({describe(fmt)}), got {_show(value)}") from None
        else:
            raise ValueError(f"expected a date/time ({describe(fmt)}), got {type(value).__name__}")
        if not math.isfinite(seconds) or abs(seconds) > 253402300799:  # year 9999
            raise ValueError(f"expected a date/time ({describe(fmt)}), got {_show(value)}")
        return datetime.fromtimestamp(seconds, tz=timezone.utc)
    if not isinstance(value, str):
        raise ValueError(f"expected a date/time ({describe(fmt)}), got {type(value).__name__} {_show(value)}")
    text = value.strip()
    fast = _FAST.get(fmt)
    if fast is not None and fast.fullmatch(text):
        try:
            return datetime.fromisoformat(text.replace("/", "-"))
        except ValueError:
            pass
    try:
        return datetime.fromisoformat(text) if fmt == "iso" else datetime.strptime(text, fmt)
    except ValueError:
        raise ValueError(f"expected a date/time ({describe(fmt)}), got {_show(value)}") from None


def _part(t: datetime, part: str) -> float:
    if part == "day_of_week":
        return float(t.weekday())
    if part == "day_of_year":
        return float(t.timetuple().tm_yday)
    return float(getattr(t, part))


def derive(
    values: Sequence[Any], fmt: str, parts: Sequence[str], missing: Collection[str] = ("",)
) -> tuple[np.ndarray, dict[int, str]]:
    """``[N, len(parts)]`` float64 parts (NaN for a missing value) and ``{position: problem}``.

    Missing: ``None``, NaN, NaT, and text whose stripped form is in ``missing`` (the
    build's missing tokens). A value that is not a date/time in ``fmt`` gets NaN parts and
    an entry in the problems, so the caller names the row and the field.
    """
    out = np.full((len(values), len(parts)), np.nan, dtype=np.float64)
    problems: dict[int, str] = {}
    cache: dict[Any, list[float]] = {}  # dates repeat: derive each distinct text once
    for pos, v in enumerate(values):
        if v is None or (isinstance(v, float) and math.isnan(v)) or type(v).__name__ == "NaTType":
            continue
        if isinstance(v, str) and v.strip() in missing:
            continue
        key = v if isinstance(v, str) else None
        if key is not None and key in cache:
            out[pos] = cache[key]
            continue
        try:
            t = parse(v, fmt)
        except ValueError as exc:
            problems[pos] = str(exc)
            continue
        row = [_part(t, p) for p in parts]
        if key is not None:
            cache[key] = row
        out[pos] = row
    return out, problems


def infer_format(cells: Sequence[str]) -> tuple[str | None, int | None]:
    """The first of :data:`INFERRED` that reads every cell, or ``(None, index of the first
    cell the most lenient candidate could not read)``."""
    best: tuple[int, int] | None = None  # (cells read before failing, failing index)
    for fmt in INFERRED:
        for i, text in enumerate(cells):
            try:
                parse(text, fmt)
            except ValueError:
                if best is None or i > best[0]:
                    best = (i, i)
                break
        else:
            return fmt, None
    return None, best[1] if best is not None else 0


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."
