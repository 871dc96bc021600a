"""Outputs as text: float32 results written with the fewest digits that read back exactly.

onnxruntime returns float32; ``float(np.float32(0.1))`` is 0.10000000149011612, which
is noise to a reader and bytes on the wire. numpy's shortest round-trip repr of the
float32 value ("0.1") is exact and deterministic, so CSV and JSON use it. NaN and
infinities (a model fed a missing value it cannot handle) become ``null`` in JSON.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from mlpack_edge.runtime._shortest import shortest_float32

__all__ = ["float_texts", "short_floats", "json_floats", "finite_or_none", "error_record"]


def float_texts(values: np.ndarray) -> list[Any]:
    """Shortest round-trip text of each value (nested lists for 2-D input)."""
    return values.astype(str).tolist()  # type: ignore[no-any-return]


def _as_floats(values: np.ndarray) -> np.ndarray:
    """float64 values whose repr is the shortest text of each value (float32: :mod:`._shortest`)."""
    if values.dtype == np.float32:
        return shortest_float32(values)
    if values.dtype == np.float64:
        return values  # repr of a float64 is already its shortest round-trip text
    return np.array(float_texts(values), dtype=np.float64)


def short_floats(values: np.ndarray) -> list[Any]:
    """Python floats that print as the shortest repr of each float32 value (NaN kept)."""
    return _as_floats(values).tolist()  # type: ignore[no-any-return]


def finite_or_none(x: float) -> float | None:
    """JSON has no NaN or infinity: those become ``null``."""
    return x if math.isfinite(x) else None


def json_floats(values: np.ndarray) -> list[Any]:
    """Values as JSON-ready floats (shortest float32 repr; non-finite -> ``None``)."""
    floats = _as_floats(values)
    if np.isfinite(floats).all():
        return floats.tolist()  # type: ignore[no-any-return]
    if values.ndim == 1:
        return [finite_or_none(f) for f in floats.tolist()]
    return [[finite_or_none(f) for f in row] for row in floats.tolist()]


def error_record(error: Any) -> dict[str, Any]:
    """An :class:`~mlpack_edge.errors.InputError` as JSON: message, row and field."""
    return {"error": str(error), "row": error.row, "field": error.field}
