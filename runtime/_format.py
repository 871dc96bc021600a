"""Outputs as text: float32 results written with the fewest digits that read back exactly.

onnxruntime returns float32; ``float(np.float32(0.1))`` is 0.10000000149011612, which
is noise to a reader and bytes on the wire. numpy's shortest round-trip repr of the
float32 value ("0.1") is exact and deterministic, so CSV and JSON use it. NaN and
infinities (a model fed a missing value it cannot handle) become ``null`` in JSON.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from itertools import chain
from json.encoder import encode_basestring
from typing import Any

import numpy as np

from mlpack_edge.monitor_agent._ids import IdRun
from mlpack_edge.runtime._shortest import shortest_float32

__all__ = ["float_texts", "short_floats", "json_floats", "finite_or_none", "error_record", "predictions_json"]

#: What ``serve`` answers with (``json.dumps`` with options makes an encoder per call).
ENCODE = json.JSONEncoder(ensure_ascii=False, allow_nan=False).encode


def float_texts(values: np.ndarray) -> list[Any]:
    """Shortest round-trip text of each value (nested lists for 2-D input)."""
    return values.astype(str).tolist()  # type: ignore[no-any-return]


#: Below this many float32 values, numpy's own text per value is cheaper than :mod:`._shortest`,
#: whose ~60 array operations cost a fixed ~50-90 µs: a single row's 2 probabilities took
#: 3.6 µs as texts and 88 µs vectorised (the two break even near 200 values).
VECTOR_MIN = 160


def _as_floats(values: np.ndarray) -> np.ndarray:
    """float64 values whose repr is the shortest text of each value (float32: :mod:`._shortest`)."""
    if values.dtype == np.float32:
        if values.size < VECTOR_MIN:
            return np.array(values.astype(str).tolist(), dtype=np.float64)
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


#: Where numpy's shortest text of a float32 differs from Python's ``repr`` of the float it
#: reads back as (checked on millions of values in ``tests/runtime/test_format.py``): numpy
#: turns to exponents at 1e6 (``1e+06``), Python at 1e16, and numpy writes float32's 1e-4 as
#: ``1e-04``. Below 1e-4 both write exponents alike (``7.4144045e-06``).
_TEXT_HIGH = 999_999.0
_TEXT_1E_4 = np.float32(1e-4)


def json_float_texts(values: np.ndarray) -> list[str] | None:
    """The JSON text of each value (row-major), as :data:`ENCODE` writes :func:`json_floats`;
    ``None`` if one is not finite (JSON's ``null``, left to the encoder).

    Why: for float32, numpy's shortest text is the JSON text itself below 1e6, so neither the
    vectorised shortest search nor a ``repr`` per float is needed; elsewhere the text is read
    back and written by ``repr``, as the encoder would.
    """
    if values.dtype != np.float32:
        floats = _as_floats(values).ravel()
        return list(map(repr, floats.tolist())) if np.isfinite(floats).all() else None
    flat = values.ravel()
    if not flat.size:
        return []
    a = np.abs(flat)
    top = a.max()  # NaN if any is NaN: one reduction settles finiteness and the exponent range
    if not np.isfinite(top):
        return None
    texts: list[str] = flat.astype(str).tolist()
    odd = (a >= _TEXT_HIGH) | (a == _TEXT_1E_4) if top >= _TEXT_HIGH else a == _TEXT_1E_4
    for i in np.flatnonzero(odd).tolist():
        texts[i] = repr(float(texts[i]))
    return texts


def predictions_json(result: Any, ids: Sequence[str] | None) -> bytes | None:
    """``{"predictions": [...], "failed": k}`` of a :class:`~.model.BatchResult` as bytes, byte for
    byte what :data:`ENCODE` makes of ``result.records()`` with ``"id"`` added to each predicted
    row (``ids``, one per predicted row; ``None``: no ids); ``None`` when it cannot say so
    (a non-finite output, which JSON writes as ``null``, or class names that collide as text).

    Why: the records are a dict per row (and one per row's probabilities) that the encoder
    walks again, and each float was searched for its shortest text, made a float again and
    written by ``repr``; here a row is one ``%`` of a template holding the class names, and
    the floats come as texts (:func:`json_float_texts`).
    """
    if result.values is not None:
        texts = json_float_texts(result.values)
        if texts is None:
            return None
        keys = '"value": %s'
        columns = [texts]
    else:
        names = [str(c) for c in result.classes]
        if len(set(names)) != len(names):
            return None
        texts = json_float_texts(result.probabilities)
        if texts is None:
            return None
        keys = '"label": %s, "probabilities": {' + ", ".join(encode_basestring(n).replace("%", "%%") + ": %s" for n in names) + "}"
        labels = result.labels.tolist()
        encoded = {label: ENCODE(label) for label in set(labels)}
        width = len(names)
        columns = [[encoded[label] for label in labels], *(texts[c::width] for c in range(width))]
    # Generated ids (an IdRun: hex digits and "-") are written as they are, inside the template's
    # quotes; any other id (the caller's) is escaped.
    plain = type(ids) is IdRun
    template = "{" + keys + ((', "id": "%s"}' if plain else ', "id": %s}') if ids is not None else "}")
    if ids is not None:
        columns.append(ids if plain else list(map(encode_basestring, ids)))
    errors = result.errors
    if not errors:  # one % over the whole list: no string per row to make and join (~20% of this part)
        n = result.ok.size
        joined = ", ".join([template] * n) % tuple(chain.from_iterable(zip(*columns))) if n else ""
        return ('{"predictions": [' + joined + '], "failed": 0}').encode()
    rows: list[str] = list(map(template.__mod__, zip(*columns))) if result.ok.size else []
    merged: list[str | None] = [None] * result.size
    for k, pos in enumerate(result.ok.tolist()):
        merged[pos] = rows[k]
    failed = iter(errors)
    rows = [x if x is not None else ENCODE(error_record(next(failed))) for x in merged]
    return ('{"predictions": [' + ", ".join(rows) + '], "failed": %d}' % len(errors)).encode()
