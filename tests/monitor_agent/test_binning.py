"""The vectorised counting equals the profile's one binning rule, value for value."""

from __future__ import annotations

import numpy as np
import pytest

from mlpack_edge.monitor_agent import _binning
from mlpack_edge.monitor_agent._binning import NumericBinner, count_categorical
from mlpack_edge.monitor_agent.histogram import LatencyHistogram
from mlpack_edge.monitor_agent.profile import NumericProfile, bin_categorical, bin_numeric, numeric_profile


def _profiles(rng: np.random.Generator) -> list[NumericProfile]:
    return [
        numeric_profile("normal", rng.normal(size=500)),
        numeric_profile("few", rng.integers(0, 3, 500).astype(float)),  # ties: fewer edges
        numeric_profile("empty", np.full(10, np.nan)),  # no edges, no range
        numeric_profile("wide", rng.exponential(5, 500), bins=25),
    ]


@pytest.mark.parametrize("compare_max_edges", [_binning.COMPARE_MAX_EDGES, 0])  # edge by edge; binary search
def test_numeric_binner_matches_bin_numeric_per_column(compare_max_edges: int, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_binning, "COMPARE_MAX_EDGES", compare_max_edges)
    rng = np.random.default_rng(1)
    profiles = _profiles(rng)
    binner = NumericBinner(profiles)
    assert (binner._by_edge is None) == (compare_max_edges == 0)  # noqa: SLF001 - the path under test
    for rows in (1, 7, 3000, 5000):  # 5000 > one chunk
        x = rng.normal(scale=4, size=(rows, len(profiles)))
        x[rng.random(x.shape) < 0.1] = np.nan
        x[0, 0] = np.inf
        x[-1, 1] = -np.inf
        x[rows // 2, 3] = profiles[3].edges[4]  # exactly on an edge: goes right
        got = binner.count(x)
        for j, p in enumerate(profiles):
            want = bin_numeric(np.array(p.edges), x[:, j], p.min, p.max)
            assert binner.column(got, j).tolist() == want.counts.tolist(), (rows, p.name)
            assert (got.missing[j], got.below[j], got.above[j]) == (want.missing, want.below, want.above)


def test_numeric_binner_float32_matches_bin_numeric() -> None:
    """float32 rows (what the runtime records) are compared as float32 against edges rounded up to
    float32: values one float32 step either side of an edge, and on it, land as in float64."""
    rng = np.random.default_rng(5)
    profiles = _profiles(rng)
    binner = NumericBinner(profiles)
    edges = np.array(profiles[0].edges + profiles[3].edges)
    near = np.concatenate([edges, np.nextafter(edges.astype(np.float32), np.float32(np.inf)).astype(float),
                           np.nextafter(edges.astype(np.float32), np.float32(-np.inf)).astype(float)])
    assert (near.astype(np.float32).astype(float) != near).any()  # some edges fall between float32 values
    for rows in (1, 9, 2041, 4100):  # 2041 > one chunk; 4100 identical values fill every byte lane
        x = rng.normal(scale=4, size=(rows, len(profiles))).astype(np.float32)
        if rows == 4100:
            x[:] = np.float32(0.25)
        else:
            x[rng.random(x.shape) < 0.1] = np.nan
            x[0, 0] = np.inf
            x[-1, 1] = -np.inf
        k = min(rows, near.size)
        x[:k, 0] = near[:k]
        x[:k, 3] = near[::-1][:k]
        got = binner.count(x)
        for j, p in enumerate(profiles):
            want = bin_numeric(np.array(p.edges), x[:, j].astype(np.float64), p.min, p.max)
            assert binner.column(got, j).tolist() == want.counts.tolist(), (rows, p.name)
            assert (got.missing[j], got.below[j], got.above[j]) == (want.missing, want.below, want.above)


def test_ceil_f32_is_the_smallest_float32_not_below() -> None:
    e = np.array([0.1, -0.1, 1.0, 1e39, -1e39, np.inf, -np.inf, np.nan, 3.4028234663852886e38])
    c = _binning._ceil_f32(e)
    assert c.dtype == np.float32
    ok = ~np.isnan(e)
    assert (c[ok].astype(float) >= e[ok]).all()
    up = ok & (e != -np.inf)  # nothing lies below -inf
    with np.errstate(over="ignore"):
        below = np.nextafter(c[up], np.float32(-np.inf)).astype(float)
    assert (below < e[up]).all()
    assert np.isnan(c[~ok]).all()


def test_count_categorical_matches_bin_categorical() -> None:
    index = {"blue": 0, "red": 1}
    values = ["blue", "red", "", None, float("nan"), "green", "blue", 3, "red", "red"]
    counts = np.zeros(2, np.int64)
    missing, unseen = count_categorical(index, values, counts)
    want = bin_categorical(index, values)
    assert counts.tolist() == want.counts.tolist() == [2, 3]
    assert (missing, unseen) == (want.missing, want.unseen) == (3, 2)


def test_histogram_add_array_matches_add_many() -> None:
    rng = np.random.default_rng(2)
    values = np.concatenate([rng.lognormal(-9, 2, 5000), [0.0, 1e-9, 1e-7, 2.5]])
    a, b = LatencyHistogram(), LatencyHistogram()
    a.add_many(values.tolist())
    b.add_array(values)
    assert a == b and a.count == values.size
