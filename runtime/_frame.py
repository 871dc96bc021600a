"""pandas input for the Python API, without importing pandas (a device may not have it).

A DataFrame (or a one-row Series) is recognised by its type's module, so pandas is only
ever touched through the object the caller passed. Its columns are coerced by the
model's schema, then validated like any other input (:meth:`Schema.columns`):

* every feature must be a column and no other column may be there (select
  ``df[model.feature_names]`` to drop the rest), as for dict rows;
* numeric features: numeric columns (nullable ``Int64``/``Float64`` too) go in as float64
  with NA as missing; other columns are parsed per value as the CSV reader does;
* categorical features: training read every cell of its CSV as *text*, so a category is
  the text it had there ("1.3", "2.0", "01"). ``pd.read_csv`` with default dtypes parses
  such a column into numbers and the text is gone: 2.0 prints as "2.0" but "2" was
  written, "01" became 1. A number therefore maps to the training category whose text
  is that number (float("2") == 2.0, float("01") == 1.0) when exactly one category is;
  otherwise to its own text (then refused as unseen, or made missing, per the feature's
  ``unseen`` policy, with the usual one-line message). Booleans map to a category
  "True"/"False" (or "true"/"false"). NaN, None, NA and NaT are missing.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from mlpack_edge.errors import InputError
from mlpack_edge.runtime.manifest import Feature

__all__ = ["is_frame", "is_series", "frame_columns", "series_row"]


def is_frame(x: Any) -> bool:
    t = type(x)
    return t.__name__ == "DataFrame" and t.__module__.startswith("pandas")


def is_series(x: Any) -> bool:
    t = type(x)
    return t.__name__ == "Series" and t.__module__.startswith("pandas")


def _number_to_category(feature: Feature) -> dict[float, str | None]:
    """number -> the one training category whose text is that number (``None``: several are)."""
    out: dict[float, str | None] = {}
    for c in feature.categories:
        try:
            v = float(c)
        except ValueError:
            continue
        if math.isfinite(v):
            out[v] = None if v in out else c
    return out


def _text(v: Any) -> str:
    """A number's own text when no category matches it: 2.0 -> "2.0", 3 -> "3"."""
    if isinstance(v, (float, np.floating)) and float(v).is_integer() and abs(v) < 2**53:
        return repr(float(v))
    return str(v.item() if isinstance(v, np.generic) else v)


def _category(v: Any, lookup: dict[float, str | None], names: frozenset[str]) -> Any:
    """One categorical value as the schema expects it (text, ``None`` for missing)."""
    if v is None or isinstance(v, str):
        return v
    if isinstance(v, (bool, np.bool_)):
        for text in (str(bool(v)), str(bool(v)).lower()):
            if text in names:
                return text
        return str(bool(v))
    if isinstance(v, (int, float, np.integer, np.floating)):
        x = float(v)
        if math.isnan(x):
            return None
        found = lookup.get(x)
        return found if found is not None else _text(v)
    return v  # something else (a Timestamp...): the schema names the field and the type


def _missing_mask(col: Any) -> np.ndarray:
    return np.asarray(col.isna().to_numpy(), dtype=bool)


def _numeric_column(col: Any) -> Sequence[Any]:
    kind = getattr(col.dtype, "kind", "O")
    if kind in "fiu":
        return np.asarray(col.to_numpy(dtype="float64", na_value=np.nan), dtype=np.float64)
    values = np.array(col.to_numpy(dtype=object), dtype=object)  # a copy: pandas may hand out a read-only view
    values[_missing_mask(col)] = None
    return values.tolist()


def _categorical_column(col: Any, feature: Feature) -> Sequence[Any]:
    lookup = _number_to_category(feature)
    names = frozenset(feature.categories)
    if getattr(col.dtype, "name", "") == "category":
        col = col.astype(object)
    kind = getattr(col.dtype, "kind", "O")
    if kind in "fiu":  # one lookup per distinct value, not per row
        arr = np.asarray(col.to_numpy(dtype="float64", na_value=np.nan), dtype=np.float64)
        out = np.empty(arr.size, dtype=object)
        nan = np.isnan(arr)
        out[nan] = None
        if (~nan).any():
            uniq, inverse = np.unique(arr[~nan], return_inverse=True)
            texts = [_category(float(u) if kind == "f" else int(u), lookup, names) for u in uniq.tolist()]
            out[~nan] = np.array(texts, dtype=object)[inverse]
        return out.tolist()
    values = np.array(col.to_numpy(dtype=object), dtype=object)  # a copy: pandas may hand out a read-only view
    values[_missing_mask(col)] = None
    return [_category(v, lookup, names) for v in values.tolist()]


def _column(col: Any, feature: Feature) -> Sequence[Any]:
    if feature.kind == "numeric":
        return _numeric_column(col)
    if feature.kind == "datetime":  # Timestamps are datetimes; NaT/NaN are missing (see _datetime.derive)
        return list(col.to_numpy(dtype=object))
    return _categorical_column(col, feature)


def _check_columns(names: list[str], features: Sequence[Feature]) -> None:
    wanted = [f.name for f in features]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise InputError(f"DataFrame: column {dupes[0]!r} appears more than once")
    missing = [n for n in wanted if n not in names]
    if missing:
        shown = ", ".join(repr(m) for m in missing[:10]) + (f", ... ({len(missing)} in all)" if len(missing) > 10 else "")
        raise InputError(f"DataFrame: missing feature column{'s' if len(missing) > 1 else ''} {shown}", field=missing[0])
    extra = [n for n in names if n not in set(wanted)]
    if extra:
        shown = ", ".join(repr(e) for e in extra[:10]) + (", ..." if len(extra) > 10 else "")
        raise InputError(
            f"DataFrame: column{'s' if len(extra) > 1 else ''} {shown} {'are' if len(extra) > 1 else 'is'} not a"
            " feature of the model; pass df[model.feature_names]",
            field=extra[0],
        )


def frame_columns(df: Any, features: Sequence[Feature]) -> tuple[list[Sequence[Any]], int]:
    """One value sequence per feature (manifest order) and the row count, coerced by kind."""
    names = [str(c) for c in df.columns]
    _check_columns(names, features)
    by_name = dict(zip(names, (df.iloc[:, i] for i in range(len(names)))))
    columns = [_column(by_name[f.name], f) for f in features]
    return columns, len(df)


def series_row(row: Any, features: Sequence[Feature]) -> dict[str, Any]:
    """A one-row Series (``df.iloc[i]``) as a dict row, values coerced like a column's."""
    names = [str(k) for k in row.index]
    _check_columns(names, features)
    values = dict(zip(names, row.tolist()))
    out: dict[str, Any] = {}
    for f in features:
        v = values[f.name]
        missing = v is None or (isinstance(v, float) and math.isnan(v)) or type(v).__name__ in ("NAType", "NaTType")
        if f.kind in ("numeric", "datetime"):
            out[f.name] = None if missing else v
        else:
            out[f.name] = None if missing else _category(v, _number_to_category(f), frozenset(f.categories))
    return out
