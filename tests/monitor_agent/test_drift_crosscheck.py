"""PSI/JS from a recorded window == the same scores computed straight from raw rows."""

from __future__ import annotations

import bisect
import math

import numpy as np

from mlpack_edge.monitor_agent.drift import EPSILON, Thresholds, js_divergence, psi
from mlpack_edge.monitor_agent.profile import Profile
from mlpack_edge.monitor_agent.recorder import Recorder
from mlpack_edge.monitor_agent.status import build_status

from .helpers import MODEL_HASH, T0, FakeClock, traffic


def _raw_psi(ref: list[float], counts: list[int]) -> float:
    """PSI written out by hand, with the floor documented in drift.py."""
    n = sum(counts)
    p = [max(c / n, EPSILON) for c in counts]
    q = [max(r, EPSILON) for r in ref]
    sp, sq = sum(p), sum(q)
    p, q = [x / sp for x in p], [x / sq for x in q]
    return sum((a - b) * math.log(a / b) for a, b in zip(p, q))


def test_psi_from_window_equals_psi_from_raw_rows(profile: Profile) -> None:
    rng = np.random.default_rng(11)
    rec = Recorder(profile, MODEL_HASH, clock=FakeClock(T0), buffer_rows=100)
    rows = []
    for n in (1, 40, 333, 1, 900):
        num, cat, pred = traffic(rng, n, shift=6.0)
        rec.record(num, cat, pred, 0.001)
        rows.append(num)
    window = rec.close()
    assert window is not None
    raw = np.concatenate(rows)
    for j, name in enumerate(["age", "income", "score"]):
        f = profile.feature(name)
        # Bin the raw rows one by one with the stdlib: bin i holds edges[i-1] <= x < edges[i].
        counts = [0] * f.n_bins
        for x in raw[:, j].tolist():
            if not math.isnan(x):
                counts[bisect.bisect_right(f.edges, x)] += 1
        assert window.features[name].bins == counts
        assert math.isclose(psi(f.shares, window.features[name].bins), _raw_psi(list(f.shares), counts), rel_tol=1e-12)
        assert math.isclose(js_divergence(f.shares, window.features[name].bins), js_divergence(f.shares, counts))
    report = build_status(MODEL_HASH, "churn", "1.2.0", profile, Thresholds(), [window], T0, T0 + 60)
    age = report.features[0]
    assert age.name == "age" and age.status == "drift" and age.psi > 0.2  # the +6 shift is visible
    assert {f.name: f.status for f in report.features}["score"] == "ok"
