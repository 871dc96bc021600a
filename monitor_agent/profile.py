"""The reference profile: what a device needs to measure drift without the training rows.

The builder computes it from the training split (features) and the held-out split
(predictions) with :func:`build_profile`; the device bins live traffic with the very
same :func:`bin_numeric` / :func:`bin_categorical`, so a window's counts and the
reference shares are comparable bin for bin.

Format ``mlpack.profile/1`` (``profile.json`` in a bundle)::

    {
      "format": "mlpack.profile/1",
      "features": [
        {"name": "age", "kind": "numeric",
         "edges": [e1, ..., ek],          # interior bin edges, strictly increasing
         "shares": [s0, ..., sk],         # share of non-missing rows per bin (k+1 bins)
         "count": 455, "missing_rate": 0.02, "min": 18.0, "max": 90.0},
        {"name": "colour", "kind": "categorical",
         "categories": ["blue", "red"],   # sorted; one bin per category
         "shares": [0.4, 0.6], "count": 455, "missing_rate": 0.0}
      ],
      "prediction": {"name": "prediction", "kind": "categorical", ...}   # classes, or
                    {"name": "prediction", "kind": "numeric", ...}       # regression output
    }

Numeric bin ``i`` holds ``edges[i-1] <= x < edges[i]`` (``np.searchsorted(edges, x,
side="right")``); the first and last bins are open-ended, and values outside the
training ``[min, max]`` are *also* counted as below/above range. Missing values
(NaN, ``None``, empty string) are never binned: they are counted separately.

Float32: the model and the device see numbers as float32 (the runtime casts its input
to float32 and the recorder bins those values), so a numeric profile is computed from
the training values *rounded to float32*: ``edges``, ``min``, ``max`` and ``shares`` are
what the device would count for the training rows themselves. The edges are stored
as JSON float64 numbers; they are float32 values whenever a quantile falls on a data
value (ties), and otherwise lie between two float32 values. To recompute the shares
in float64, round the values first: ``bin_numeric(edges, x.astype(np.float32))``. Binning
the unrounded float64 values instead can move a value within float32 rounding (about
6e-8 relative) of an edge into the neighbouring bin; with ties on an edge that is a
whole tie group, which a device would otherwise report as drift.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Literal

import numpy as np

from mlpack_edge.errors import BundleError
from mlpack_edge._record import Frozen, Record

__all__ = [
    "PROFILE_FORMAT",
    "NumericProfile",
    "CategoricalProfile",
    "FeatureProfile",
    "Profile",
    "numeric_profile",
    "categorical_profile",
    "build_profile",
    "bin_numeric",
    "bin_categorical",
    "NumericBins",
    "CategoricalBins",
    "as_device_floats",
]

PROFILE_FORMAT = "mlpack.profile/1"
DEFAULT_BINS = 10


class NumericProfile(Frozen):
    """One numeric feature's reference: interior bin edges and the share of rows per bin."""

    __slots__ = ("name", "edges", "shares", "count", "missing_rate", "min", "max")
    _fields = (*__slots__, "kind")
    name: str
    edges: tuple[float, ...]
    shares: tuple[float, ...]
    count: int
    missing_rate: float
    min: float | None
    max: float | None
    kind: Literal["numeric"] = "numeric"

    def __init__(
        self, name: str, edges: tuple[float, ...], shares: tuple[float, ...], count: int, missing_rate: float,
        min: float | None, max: float | None,  # noqa: A002 - the profile's field names
    ) -> None:
        s = object.__setattr__
        s(self, "name", name)
        s(self, "edges", edges)
        s(self, "shares", shares)
        s(self, "count", count)
        s(self, "missing_rate", missing_rate)
        s(self, "min", min)
        s(self, "max", max)

    @property
    def n_bins(self) -> int:
        return len(self.edges) + 1

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "kind": self.kind,
            "edges": list(self.edges),
            "shares": list(self.shares),
            "count": self.count,
            "missing_rate": self.missing_rate,
            "min": self.min,
            "max": self.max,
        }


class CategoricalProfile(Frozen):
    """One categorical feature's reference: its categories (sorted) and their shares."""

    __slots__ = ("name", "categories", "shares", "count", "missing_rate")
    _fields = (*__slots__, "kind")
    name: str
    categories: tuple[str, ...]
    shares: tuple[float, ...]
    count: int
    missing_rate: float
    kind: Literal["categorical"] = "categorical"

    def __init__(
        self, name: str, categories: tuple[str, ...], shares: tuple[float, ...], count: int, missing_rate: float
    ) -> None:
        s = object.__setattr__
        s(self, "name", name)
        s(self, "categories", categories)
        s(self, "shares", shares)
        s(self, "count", count)
        s(self, "missing_rate", missing_rate)

    @property
    def n_bins(self) -> int:
        return len(self.categories)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "kind": self.kind,
            "categories": list(self.categories),
            "shares": list(self.shares),
            "count": self.count,
            "missing_rate": self.missing_rate,
        }


FeatureProfile = NumericProfile | CategoricalProfile


class Profile(Frozen):
    """A model's reference: every feature, and its predictions (``None``: none profiled)."""

    __slots__ = ("features", "prediction")
    _fields = __slots__
    features: tuple[FeatureProfile, ...]
    prediction: FeatureProfile | None

    def __init__(self, features: tuple[FeatureProfile, ...], prediction: FeatureProfile | None) -> None:
        object.__setattr__(self, "features", features)
        object.__setattr__(self, "prediction", prediction)

    def feature(self, name: str) -> FeatureProfile:
        for f in self.features:
            if f.name == name:
                return f
        raise KeyError(name)

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": PROFILE_FORMAT,
            "features": [f.to_dict() for f in self.features],
            "prediction": self.prediction.to_dict() if self.prediction is not None else None,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], source: str = "profile.json") -> Profile:
        """Parse and check a profile; any defect is a one-line ``BundleError`` naming ``source``."""
        if not isinstance(data, Mapping):
            raise BundleError(f"{source}: expected a JSON object")
        fmt = data.get("format")
        if fmt != PROFILE_FORMAT:
            raise BundleError(f"{source}: unsupported format {fmt!r}, expected {PROFILE_FORMAT!r}")
        raw = data.get("features")
        if not isinstance(raw, list):
            raise BundleError(f"{source}: 'features' must be a list")
        feats = tuple(_feature_from_dict(f, source) for f in raw)
        pred = data.get("prediction")
        return cls(feats, _feature_from_dict(pred, source) if pred is not None else None)


def _feature_from_dict(d: Any, source: str) -> FeatureProfile:
    try:
        kind = d["kind"]
        if kind == "numeric":
            edges = tuple(float(x) for x in d["edges"])
            shares = tuple(float(x) for x in d["shares"])
            if len(shares) != len(edges) + 1 or any(b <= a for a, b in zip(edges, edges[1:])):
                raise ValueError("edges must increase and shares must have one more entry")
            return NumericProfile(
                name=str(d["name"]),
                edges=edges,
                shares=shares,
                count=int(d["count"]),
                missing_rate=float(d["missing_rate"]),
                min=None if d.get("min") is None else float(d["min"]),
                max=None if d.get("max") is None else float(d["max"]),
            )
        if kind == "categorical":
            cats = tuple(str(x) for x in d["categories"])
            shares = tuple(float(x) for x in d["shares"])
            if len(shares) != len(cats):
                raise ValueError("one share per category expected")
            return CategoricalProfile(
                name=str(d["name"]),
                categories=cats,
                shares=shares,
                count=int(d["count"]),
                missing_rate=float(d["missing_rate"]),
            )
        raise ValueError(f"unknown kind {kind!r}")
    except (KeyError, TypeError, ValueError) as exc:
        name = d.get("name", "?") if isinstance(d, Mapping) else "?"
        raise BundleError(f"{source}: feature {name!r} is malformed ({exc})") from None


# --------------------------------------------------------------------------- binning


class NumericBins(Record):
    """What :func:`bin_numeric` counted: one count per bin, and the values it could not bin."""

    __slots__ = ("counts", "missing", "below", "above")
    _fields = __slots__

    def __init__(self, counts: np.ndarray, missing: int, below: int, above: int) -> None:
        self.counts = counts  # int64, len(edges) + 1
        self.missing = missing
        self.below = below
        self.above = above


class CategoricalBins(Record):
    """What :func:`bin_categorical` counted: one count per category, missing and unseen values."""

    __slots__ = ("counts", "missing", "unseen")
    _fields = __slots__

    def __init__(self, counts: np.ndarray, missing: int, unseen: int) -> None:
        self.counts = counts  # int64, len(categories)
        self.missing = missing
        self.unseen = unseen


def bin_numeric(
    edges: np.ndarray,
    values: np.ndarray,
    lo: float | None = None,
    hi: float | None = None,
) -> NumericBins:
    """Count ``values`` per bin; NaN is missing; outside ``[lo, hi]`` also counts below/above."""
    x = np.asarray(values, dtype=np.float64).ravel()
    nan = np.isnan(x)
    n_missing = int(nan.sum())
    if n_missing:
        x = x[~nan]
    idx = np.searchsorted(edges, x, side="right")
    counts = np.bincount(idx, minlength=len(edges) + 1).astype(np.int64)
    below = int((x < lo).sum()) if lo is not None else 0
    above = int((x > hi).sum()) if hi is not None else 0
    return NumericBins(counts, n_missing, below, above)


def _is_missing(v: Any) -> bool:
    return v is None or v == "" or (isinstance(v, float) and v != v)


def bin_categorical(index: Mapping[str, int], values: Iterable[Any]) -> CategoricalBins:
    """Count ``values`` per category of ``index`` (category -> bin); others are unseen."""
    counts = np.zeros(len(index), dtype=np.int64)
    missing = unseen = 0
    get = index.get
    for v in values:
        if _is_missing(v):
            missing += 1
            continue
        i = get(v if isinstance(v, str) else str(v))
        if i is None:
            unseen += 1
        else:
            counts[i] += 1
    return CategoricalBins(counts, missing, unseen)


# --------------------------------------------------------------------------- building


def _shares(counts: np.ndarray) -> tuple[float, ...]:
    total = int(counts.sum())
    if total == 0:
        return tuple(0.0 for _ in counts)
    return tuple(float(c) / total for c in counts.tolist())


def as_device_floats(values: np.ndarray | Sequence[Any]) -> np.ndarray:
    """``values`` as the device sees them: rounded to float32, held as float64."""
    return np.asarray(values, dtype=np.float64).ravel().astype(np.float32).astype(np.float64)


def numeric_profile(name: str, values: np.ndarray, bins: int = DEFAULT_BINS) -> NumericProfile:
    """Quantile bins of the non-missing ``values`` (ties collapse into fewer bins).

    Computed on the values rounded to float32 (:func:`as_device_floats`), so the device,
    which bins float32 inputs, counts the training rows into exactly these shares.
    """
    x = as_device_floats(values)
    n = int(x.size)
    present = x[~np.isnan(x)]
    if present.size == 0:
        return NumericProfile(name, (), (0.0,), n, 1.0 if n else 0.0, None, None)
    qs = np.quantile(present, np.linspace(0.0, 1.0, bins + 1)[1:-1])
    lo, hi = float(present.min()), float(present.max())
    # Interior edges only, strictly increasing, and never at the minimum (an edge there
    # would leave the first bin empty by construction).
    edges = np.unique(qs[(qs > lo) & (qs <= hi)])
    counts = bin_numeric(edges, present).counts
    return NumericProfile(
        name=name,
        edges=tuple(float(e) for e in edges),
        shares=_shares(counts),
        count=n,
        missing_rate=float(n - present.size) / n,
        min=lo,
        max=hi,
    )


def categorical_profile(
    name: str, values: Sequence[Any], categories: Sequence[str] | None = None
) -> CategoricalProfile:
    """Category shares; ``categories`` fixes the bins (e.g. a model's classes), else sorted seen values."""
    vals = list(values)
    n = len(vals)
    if categories is None:
        categories = sorted({str(v) for v in vals if not _is_missing(v)})
    cats = tuple(str(c) for c in categories)
    b = bin_categorical({c: i for i, c in enumerate(cats)}, vals)
    return CategoricalProfile(
        name=name,
        categories=cats,
        shares=_shares(b.counts),
        count=n,
        missing_rate=float(b.missing) / n if n else 0.0,
    )


def build_profile(
    features: Sequence[tuple[str, Literal["numeric", "categorical"], Sequence[Any] | np.ndarray]],
    prediction: tuple[Literal["numeric", "categorical"], Sequence[Any] | np.ndarray, Sequence[str] | None]
    | None = None,
    bins: int = DEFAULT_BINS,
) -> Profile:
    """Profile every ``(name, kind, values)`` feature and, optionally, ``(kind, values, classes)``."""
    feats: list[FeatureProfile] = []
    for name, kind, values in features:
        if kind == "numeric":
            feats.append(numeric_profile(name, np.asarray(values, dtype=np.float64), bins))
        else:
            feats.append(categorical_profile(name, list(values)))
    pred: FeatureProfile | None = None
    if prediction is not None:
        kind, values, classes = prediction
        if kind == "numeric":
            pred = numeric_profile("prediction", np.asarray(values, dtype=np.float64), bins)
        else:
            pred = categorical_profile("prediction", [str(v) for v in values], classes)
    return Profile(tuple(feats), pred)
