"""The sample-size-aware drift verdict: effect size AND a chi-square test, checked against scipy,
against small unshifted samples (no false alarm) and real shifts (detected)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from mlpack_edge.collector.models import ModelInfo
from mlpack_edge.collector.queries import drift_of
from mlpack_edge.monitor_agent._chi2 import chi2_cdf, chi2_sf
from mlpack_edge.monitor_agent.drift import (
    MIN_EXPECTED,
    Thresholds,
    chi2_test,
    classify,
    poisson_sf,
    pooled_cells,
    psi,
    rate_exceeds,
    min_testable_count,
)
from mlpack_edge.monitor_agent.profile import Profile, bin_numeric, build_profile
from mlpack_edge.monitor_agent.status import build_status, reference_count, render_metrics, render_text
from mlpack_edge.monitor_agent.wire import BinCounts, Window

T = Thresholds()


@pytest.mark.parametrize("df", [1, 2, 3, 4, 7, 9, 19, 30, 99])
def test_chi2_sf_matches_scipy_from_the_body_to_the_far_tail(df: int) -> None:
    xs = np.concatenate([[1e-8, 1e-3], np.linspace(0.05, 4 * df + 200, 300)])
    for x in xs:
        want = float(stats.chi2.sf(x, df))
        got = chi2_sf(float(x), df)
        if want > 1e-280:
            assert math.isclose(got, want, rel_tol=1e-9, abs_tol=1e-300), (x, df, got, want)
    assert chi2_sf(0.0, df) == 1.0 and chi2_sf(math.inf, df) == 0.0 and chi2_sf(math.nan, df) == 1.0
    for x in xs:
        want = float(stats.chi2.cdf(x, df))
        if want > 1e-280:
            assert math.isclose(chi2_cdf(float(x), df), want, rel_tol=1e-9), (x, df)


@pytest.mark.parametrize(("k", "mean"), [(1, 0.8), (5, 1.0), (200, 100.0), (3, 0.01), (50, 60.0), (1000, 990.0)])
def test_poisson_tail_matches_scipy(k: int, mean: float) -> None:
    assert math.isclose(poisson_sf(k, mean), float(stats.poisson.sf(k - 1, mean)), rel_tol=1e-9)


def test_a_rate_flag_needs_evidence_not_one_odd_value() -> None:
    level = 0.005 / 10
    assert not rate_exceeds(1, 80, 0.01, level)  # 1.25% of 80: the old rule warned
    assert rate_exceeds(200, 10_000, 0.01, level)  # 2% of 10,000
    assert not rate_exceeds(5, 1000, 0.01, level)  # below the rate itself
    assert rate_exceeds(10, 80, 0.01, level)


def test_two_sample_statistic_is_scipys_contingency_test_on_the_pooled_cells() -> None:
    rng = np.random.default_rng(5)
    q = rng.dirichlet(np.ones(10))
    for n in (25, 60, 400, 5000):
        obs = rng.multinomial(n, rng.dirichlet(np.ones(10)))
        got = chi2_test(q, 1234, obs, ordered=True)
        assert got is not None
        groups = pooled_cells(q, n, ordered=True)
        table = np.vstack([[q[g].sum() * 1234 for g in groups], [obs[g].sum() for g in groups]])
        stat, p, dof, _ = stats.chi2_contingency(table, correction=False)
        assert (got.df, math.isclose(got.statistic, stat, rel_tol=1e-9)) == (dof, True)
        assert math.isclose(got.p_value, p, rel_tol=1e-7, abs_tol=1e-300)
    # no reference count: goodness of fit against the shares
    obs = rng.multinomial(300, q)
    gof = chi2_test(q, None, obs, ordered=False)
    groups = pooled_cells(q, 300, ordered=False)
    want = stats.chisquare([obs[g].sum() for g in groups], [300 * q[g].sum() for g in groups])
    assert gof is not None and math.isclose(gof.statistic, want.statistic, rel_tol=1e-9)


def test_pooling_gives_every_cell_enough_expected_values_and_keeps_numeric_bins_adjacent() -> None:
    q = [0.3, 0.01, 0.01, 0.02, 0.26, 0.2, 0.1, 0.05, 0.03, 0.02]
    for n in (20, 50, 100, 1000):
        for ordered in (True, False):
            groups = pooled_cells(q, n, ordered)
            assert sorted(i for g in groups for i in g) == list(range(10))
            assert all(sum(q[i] for i in g) * n >= MIN_EXPECTED for g in groups)
            if ordered:
                assert all(g == list(range(g[0], g[-1] + 1)) for g in groups)
    assert len(pooled_cells(q, 1000, True)) == 10  # enough data: no pooling
    for ordered in (True, False):  # min_testable_count is the exact threshold of "two cells or more"
        k = min_testable_count(tuple(q), ordered)
        assert len(pooled_cells(q, k, ordered)) >= 2 > len(pooled_cells(q, k - 1, ordered))
        assert all(len(pooled_cells(q, m, ordered)) >= 2 for m in range(k, k + 200))
    assert len(pooled_cells([0.97, 0.03], 20, False)) == 1  # 0.6 expected in the rare one: no test


def _reference(seed: int = 0, n: int = 1000, features: int = 10) -> tuple[Profile, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.normal(0.0, 1.0, (n, features))
    return build_profile([(f"f{j}", "numeric", x[:, j]) for j in range(features)]), x


def _overall(profile: Profile, sample: np.ndarray, flagged: tuple[str, ...] = ("drift",)) -> tuple[bool, bool]:
    """(old rule: any PSI >= 0.2, new verdict: any feature in ``flagged``) for one sample."""
    old = new = False
    k = len(profile.features)
    for j, f in enumerate(profile.features):
        counts = bin_numeric(np.asarray(f.edges), sample[:, j]).counts
        old |= psi(f.shares, counts) >= T.psi_drift
        new |= classify(f.shares, counts, T, reference_count=reference_count(f), n_tests=k).status in flagged
    return old, new


def test_small_unshifted_samples_raise_no_alarm_where_the_psi_rule_did() -> None:
    profile, _ = _reference()
    rng = np.random.default_rng(2024)
    old_alarms = new_alarms = 0
    for _ in range(200):
        old, new = _overall(profile, rng.normal(0.0, 1.0, (70, 10)))
        old_alarms += old
        new_alarms += new
    assert old_alarms > 100  # the issue: PSI >= 0.2 on most 70-row samples of the same distribution
    assert new_alarms == 0


def test_a_real_shift_or_scale_change_is_detected() -> None:
    profile, _ = _reference()
    rng = np.random.default_rng(7)
    shifted = scaled = 0
    for _ in range(100):
        x = rng.normal(0.0, 1.0, (200, 10))
        x[:, 3] += 1.0  # one standard deviation, one feature
        shifted += _overall(profile, x)[1]
        # x1.6 has a PSI of only ~0.26 on 10 quantile bins (at 1,000 rows 4% of samples fall
        # below 0.2), so it is counted at warn or drift; at 100 rows the test finds ~2 in 3.
        y = rng.normal(0.0, 1.0, (200, 10))
        y[:, 6] *= 1.6
        scaled += _overall(profile, y, ("warn", "drift"))[1]
    assert shifted >= 95 and scaled >= 95


def test_too_few_values_say_not_enough_data_instead_of_a_status() -> None:
    profile, _ = _reference()
    f = profile.features[0]
    counts = bin_numeric(np.asarray(f.edges), np.array([3.0, 3.1, 2.9])).counts  # far out, PSI huge
    score = classify(f.shares, counts, T, reference_count=reference_count(f), n_tests=10)
    assert score.psi > 2 and (score.status, score.n, score.min_count, score.p_value) == ("not-enough-data", 3, 20, None)
    # a dominant category: the rare ones cannot be tested until n is large enough
    rare = classify([0.97, 0.03], [20, 0], T, reference_count=1000, ordered=False)
    assert (rare.status, rare.min_count) == ("not-enough-data", 167)
    assert classify([0.97, 0.03], [167, 0], T, reference_count=1000, ordered=False).status == "ok"
    assert classify(f.shares, [0] * f.n_bins, T).status == "no-data"


def _window(profile: Profile, x: np.ndarray) -> Window:
    feats = {}
    for j, f in enumerate(profile.features):
        b = bin_numeric(np.asarray(f.edges), x[:, j], f.min, f.max)
        feats[f.name] = BinCounts(b.counts.tolist(), b.missing, b.below, b.above, 0)
    return Window(model="m" * 64, seq=0, start=0.0, end=60.0, requests=len(x), rows=len(x), features=feats)


def test_status_text_json_and_collector_show_the_same_test_and_verdict() -> None:
    profile, _ = _reference(features=4)
    rng = np.random.default_rng(3)
    x = rng.normal(0.0, 1.0, (500, 4))
    x[:, 1] += 1.0
    w = _window(profile, x)
    report = build_status("m" * 64, "demo", "1.0", profile, T, [w], 0.0, 60.0)
    d = report.to_dict()
    f1 = d["features"][1]
    assert (f1["status"], f1["test"], f1["count"], f1["df"]) == ("drift", "chi2", 500, 9)
    assert f1["p_value"] < f1["alpha"] == pytest.approx(0.005 / 4)
    assert d["status"] == "drift" and d["thresholds"]["alpha"] == 0.005
    text = render_text(report)
    assert "chi-square p < 0.0013 (alpha 0.005 over 4 tests)" in text
    line = next(ln for ln in text.splitlines() if ln.startswith("f1 "))
    assert "drift" in line and f"{f1['p_value']:.2g}" in line
    assert "f1: reference vs current (n=500)" in text  # side by side for the drifted feature only
    assert "f0: reference vs current" not in text
    assert 'mlpack_drift_p_value{model="demo",version="1.0",feature="f1"}' in render_metrics(report)

    # the collector, from the flattened count vector it stores, reaches the same verdicts
    model = ModelInfo("m" * 64, "demo", "1.0", profile.to_dict(), T)
    fleet = drift_of(model, model.vector(w))
    for f in report.features:
        c = fleet[f.name]
        assert (c["status"], c["n"], c["df"]) == (f.status, f.count, f.df)
        assert c["p_value"] == pytest.approx(f.p_value, rel=1e-12)
        assert c["bins"]["observed"] == f.observed and c["bins"]["labels"] == f.labels

    small = build_status("m" * 64, "demo", "1.0", profile, T, [_window(profile, x[:12])], 0.0, 60.0)
    assert small.status == "not-enough-data"
    assert "overall: NOT ENOUGH DATA (12 of 20)" in render_text(small)
    assert "not enough data (12 of 20)" in render_text(small)


def test_profile_edges_agree_with_what_the_device_counts_for_float64_training_values() -> None:
    """0.7 is 0.69999998807907 in float32: a tie group on an edge must not change bins on the device."""
    rng = np.random.default_rng(1)
    x = np.concatenate([np.full(300, 0.1), np.full(400, 0.7), np.full(300, 0.9), rng.normal(0.5, 0.2, 200)])
    f = build_profile([("x", "numeric", x)]).features[0]
    device = np.asarray(x, dtype=np.float32)  # what the runtime hands the recorder
    from mlpack_edge.monitor_agent._binning import NumericBinner

    binner = NumericBinner([f])
    counts = binner.column(binner.count(device.reshape(-1, 1)), 0)
    assert np.allclose(counts / counts.sum(), f.shares, rtol=0, atol=1e-12)
    # the float64 recomputation documented in the profile format agrees too
    again = bin_numeric(np.asarray(f.edges), x.astype(np.float32)).counts
    assert again.tolist() == counts.tolist()
    assert classify(f.shares, counts, T, reference_count=reference_count(f)).status == "ok"
    assert f.max == float(np.float32(x.max())) and f.min == float(np.float32(x.min()))
