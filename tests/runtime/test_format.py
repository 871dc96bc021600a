"""The vectorised shortest float32 formatting against numpy's own (Dragon4) texts."""

from __future__ import annotations

import json

import numpy as np
import pytest

from mlpack_edge.runtime._format import json_floats, short_floats
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
    ["random bit patterns", "probabilities", "edges", "integers", "powers of two", "powers of ten", "near ties"],
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
        # decimals with few digits: their rounding sits next to the float32 interval edges
        "near ties": lambda: (rng.integers(1, 10**6, 100_000) / 10.0 ** rng.integers(0, 12, 100_000)).astype(np.float32),
    }[name]()
    got = shortest_float32(values)
    want = _numpy(values)
    bad = ~_same(got, want)
    assert not bad.any(), (values[bad][:5], got[bad][:5], want[bad][:5])


def test_json_floats_keep_the_shape_and_write_non_finite_values_as_null() -> None:
    values = np.array([[0.1, np.nan], [np.inf, 2.5]], dtype=np.float32)
    assert json.dumps(json_floats(values)) == "[[0.1, null], [null, 2.5]]"
    assert json.dumps(json_floats(values[0])) == "[0.1, null]"
    assert json.dumps(json_floats(np.array([[0.1, 0.7]], dtype=np.float32))) == "[[0.1, 0.7]]"
    assert json.dumps(short_floats(np.array([1 / 3], dtype=np.float32))) == "[0.33333334]"
    assert json.dumps(json_floats(np.array([0.1], dtype=np.float64))) == "[0.1]"  # float64 kept as it is
