"""The vectorised shortest float32 formatting against numpy's own (Dragon4) texts, and serve's
batch answer written from templates against the encoder's output of the records."""

from __future__ import annotations

import json

import numpy as np
import pytest

from mlpack_edge.monitor_agent._ids import IdMaker
from mlpack_edge.runtime._format import ENCODE, VECTOR_MIN, json_float_texts, json_floats, predictions_json, short_floats
from mlpack_edge.runtime._shortest import shortest_float32


def _numpy(values: np.ndarray) -> np.ndarray:
    """What the formatting did before: numpy's shortest text of each float32, read back."""
    return np.array(values.astype(str).tolist(), dtype=np.float64)


def _same(got: np.ndarray, want: np.ndarray) -> np.ndarray:
    both_nan = np.isnan(got) & np.isnan(want)
    return both_nan | ((got == want) & (np.signbit(got) == np.signbit(want)))


EDGES = np.array(
    [0.0, -0.0, 0.5, 2.5, 0.25, 1.0, -1.0, 0.1, 0.3, 1 / 3, 2 / 3, 9.999999e-1, 16777216.0, 16777217.0, 33554432.0,
     1e10, 1e-10, 1e22, 1e23, 1e-22, 1e-23, 1e-45, 1.17549435e-38, 3.4028235e38, -3.4028235e38,
     np.inf, -np.inf, np.nan],
    dtype=np.float32,
)


@pytest.mark.parametrize(
    "name",
    ["random bit patterns", "probabilities", "edges", "integers", "powers of two", "powers of ten", "tiny", "near ties"],
)
def test_the_values_are_those_of_numpys_shortest_texts(name: str) -> None:
    rng = np.random.default_rng(20261205)
    values = {
        "random bit patterns": lambda: rng.integers(0, 2**32, 300_000, dtype=np.uint64).astype(np.uint32).view(np.float32),
        "probabilities": lambda: rng.random(300_000).astype(np.float32),
        "edges": lambda: EDGES,
        "integers": lambda: np.arange(-50_000, 50_000, dtype=np.float32),
        "powers of two": lambda: np.ldexp(np.float32(1), np.arange(-149, 128)).astype(np.float32),
        "powers of ten": lambda: (10.0 ** np.arange(-45, 39, dtype=np.float64)).astype(np.float32),
        "tiny": lambda: (rng.random(200_000) * 10.0 ** rng.integers(-45, -3, 200_000)).astype(np.float32),
        # decimals with few digits: their rounding sits next to the float32 interval edges
        "near ties": lambda: (rng.integers(1, 10**6, 100_000) / 10.0 ** rng.integers(0, 12, 100_000)).astype(np.float32),
    }[name]()
    got = shortest_float32(values)
    want = _numpy(values)
    bad = ~_same(got, want)
    assert not bad.any(), (values[bad][:5], got[bad][:5], want[bad][:5])
    finite = values[np.isfinite(values)]
    texts = json_float_texts(finite)
    assert texts is not None
    wrong = [(t, w) for t, w in zip(texts, map(ENCODE, json_floats(finite))) if t != w]
    assert not wrong, wrong[:5]
    small = finite[: VECTOR_MIN - 1]  # below VECTOR_MIN: numpy's texts read back, not the vectorised search
    assert _same(np.array(short_floats(small)), want[np.isfinite(values)][: VECTOR_MIN - 1]).all()


def test_json_float_texts_leave_non_finite_values_to_the_encoder() -> None:
    assert json_float_texts(np.array([0.5, np.nan], dtype=np.float32)) is None
    assert json_float_texts(np.array([[1.0, -np.inf]], dtype=np.float32)) is None
    big = np.array([3e38, -3e38, 1e-4, -1e-4, 9.99e5, 1e6, 1e16, 0.0, -0.0, 1e-45], dtype=np.float32)
    assert json_float_texts(big) == list(map(ENCODE, json_floats(big)))
    assert json_float_texts(np.array([0.1, 1e-7], dtype=np.float64)) == ["0.1", "1e-07"]


def test_json_floats_keep_the_shape_and_write_non_finite_values_as_null() -> None:
    values = np.array([[0.1, np.nan], [np.inf, 2.5]], dtype=np.float32)
    assert json.dumps(json_floats(values)) == "[[0.1, null], [null, 2.5]]"
    assert json.dumps(json_floats(values[0])) == "[0.1, null]"
    assert json.dumps(json_floats(np.array([[0.1, 0.7]], dtype=np.float32))) == "[[0.1, 0.7]]"
    assert json.dumps(short_floats(np.array([1 / 3], dtype=np.float32))) == "[0.33333334]"
    assert json.dumps(json_floats(np.array([0.1], dtype=np.float64))) == "[0.1]"  # float64 kept as it is


class _Result:
    """The fields of a ``BatchResult`` that ``predictions_json`` reads."""

    def __init__(self, size: int, ok: list[int], errors: list[Exception], classes: tuple[object, ...],
                 labels: np.ndarray | None = None, probabilities: np.ndarray | None = None,
                 values: np.ndarray | None = None) -> None:
        self.size, self.ok, self.errors, self.classes = size, np.array(ok, dtype=np.int64), errors, classes
        self.labels, self.probabilities, self.values = labels, probabilities, values

    def records(self) -> list[dict[str, object]]:
        if self.values is not None:
            outs: list[dict[str, object]] = [{"value": v} for v in json_floats(self.values)]
        else:
            assert self.labels is not None and self.probabilities is not None
            names = [str(c) for c in self.classes]
            outs = [{"label": lab, "probabilities": dict(zip(names, p))}
                    for lab, p in zip(self.labels.tolist(), json_floats(self.probabilities))]
        merged: list[dict[str, object]] = []
        out, errs = iter(outs), iter(self.errors)
        for pos in range(self.size):
            merged.append(next(out) if pos in self.ok else {"error": str(e := next(errs)), "row": e.row, "field": e.field})  # type: ignore[attr-defined]
        return merged


def _encoded(result: _Result, ids: list[str] | None) -> bytes:
    records = result.records()
    if ids is not None:
        for j, k in enumerate(result.ok.tolist()):
            records[k]["id"] = ids[j]
    return ENCODE({"predictions": records, "failed": len(result.errors)}).encode()


def test_the_batch_answer_is_byte_for_byte_the_encoders() -> None:
    from mlpack_edge.runtime.schema import row_error

    rng = np.random.default_rng(7)
    n = 300
    p = rng.random(n).astype(np.float32) ** 8  # tiny and ordinary probabilities
    p[:5] = [0.0, 1e-4, 1e-30, 1.0, 0.5]
    probabilities = np.stack([p, 1 - p], axis=1).astype(np.float32)
    errors = [row_error(3, "f%", "expected a number, got 'x\"'"), row_error(n + 1, None, "missing feature 'é'")]
    ok = [i for i in range(n + 2) if i not in (3, n + 1)]
    cases = [
        _Result(n + 2, ok, errors, ("ben%sign", "mal\"é"), labels=np.array(["ben%sign", "mal\"é"] * (n // 2), dtype=object),
                probabilities=probabilities),
        _Result(n, list(range(n)), [], (0, 1), labels=rng.integers(0, 2, n), probabilities=probabilities),
        _Result(n, list(range(n)), [], (), values=(rng.standard_normal(n) * 10.0 ** rng.integers(-8, 12, n)).astype(np.float32)),
        _Result(2, [], errors[:1] * 2, (0, 1), labels=np.zeros(0, dtype=np.int64), probabilities=np.zeros((0, 2), np.float32)),
        _Result(0, [], [], (0, 1), labels=np.zeros(0, dtype=np.int64), probabilities=np.zeros((0, 2), np.float32)),  # []
        _Result(2, [0, 1], [], ("a%", "b"), labels=np.array(["b", "a%"], dtype=object),  # every row predicted: one %
                probabilities=np.array([[1e-4, 3e38], [0.5, 1e6]], np.float32)),
    ]
    for result in cases:
        generated = IdMaker(start=250).many(len(result.ok))  # written unescaped, across a spelling step
        for ids in (None, [f"{k:x}-id\"%s" for k in range(len(result.ok))], generated):
            assert predictions_json(result, ids) == _encoded(result, ids)
    nan = _Result(1, [0], [], (0, 1), labels=np.array([0]), probabilities=np.array([[np.nan, 1.0]], np.float32))
    assert predictions_json(nan, None) is None  # null in JSON: the caller's encoder writes it
