"""The device's one Prometheus formatter, read back by prometheus_client's own parser:
``serve``'s counters and histogram, the drift status exporter, hostile label values, and
the promise that the device side never imports prometheus_client."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest
from prometheus_client.parser import text_string_to_metric_families

from mlpack_edge.monitor_agent._prom import family, number
from mlpack_edge.monitor_agent.drift import Thresholds
from mlpack_edge.monitor_agent.profile import Profile
from mlpack_edge.monitor_agent.status import build_status, render_metrics
from mlpack_edge.monitor_agent.wire import BinCounts, Window
from mlpack_edge.runtime.metrics import BUCKETS, ServeMetrics

HOSTILE = 'press "07"\\line\nnext'


def parse(text: str) -> dict[str, list[tuple[str, dict[str, str], float]]]:
    return {f.name: [(s.name, s.labels, s.value) for s in f.samples] for f in text_string_to_metric_families(text)}


def test_serve_metrics_parse_back_exactly() -> None:
    m = ServeMetrics(HOSTILE, "1.0.0", "ab" * 32)
    for seconds in (0.00005, 0.0003, 0.0003, 7.0):
        m.request("/predict", 200, seconds)
    m.request("other", 404)
    m.rows(predicted=5, invalid=2)
    got = parse(m.render())
    assert got["mlpack_model_info"] == [("mlpack_model_info", {"name": HOSTILE, "version": "1.0.0", "content_hash": "ab" * 32}, 1.0)]
    requests = {(s[1]["endpoint"], s[1]["code"]): s[2] for s in got["mlpack_http_requests"]}
    assert requests == {("/predict", "200"): 4.0, ("other", "404"): 1.0}
    assert {s[1]["outcome"]: s[2] for s in got["mlpack_rows"]} == {"predicted": 5.0, "invalid": 2.0}
    hist = got["mlpack_predict_duration_seconds"]
    buckets = [(s[1]["le"], s[2]) for s in hist if s[0].endswith("_bucket")]
    assert [le for le, _ in buckets] == [repr(b) for b in BUCKETS] + ["+Inf"]
    assert dict(buckets)["0.0001"] == 1 and dict(buckets)["0.0005"] == 3 and dict(buckets)["+Inf"] == 4
    assert [s[2] for s in hist if s[0].endswith("_count")] == [4.0]
    assert [s[2] for s in hist if s[0].endswith("_sum")] == [pytest.approx(7.00065)]
    assert abs(got["mlpack_start_time_seconds"][0][2] - time.time()) < 60


def test_status_metrics_parse_back_with_hostile_names() -> None:
    profile = Profile.from_dict({
        "format": "mlpack.profile/1",
        "features": [{"name": HOSTILE, "kind": "numeric", "edges": [0.0], "shares": [0.5, 0.5], "count": 10,
                      "missing_rate": 0.0},
                     {"name": "colour", "kind": "categorical", "categories": ["a", "b"], "shares": [0.5, 0.5],
                      "count": 10, "missing_rate": 0.0}],
        "prediction": None,
    })
    window = Window(model="c" * 64, seq=1, start=0.0, end=60.0, requests=3, rows=100, errors={"validation": 2},
                    features={HOSTILE: BinCounts([100, 0]), "colour": BinCounts([50, 50])})
    report = build_status("c" * 64, "churn", '1.2.0"beta', profile, Thresholds(), [window], 0.0, 60.0,
                          {"pending": 1, "delivered": 0, "dropped_rows": 0})
    got = parse(render_metrics(report))
    psi = {s[1]["feature"]: s[2] for s in got["mlpack_drift_psi"]}
    assert set(psi) == {HOSTILE, "colour"} and psi["colour"] == 0.0 and psi[HOSTILE] > 0.2
    assert all(s[1]["model"] == "churn" and s[1]["version"] == '1.2.0"beta' for s in got["mlpack_drift_status"])
    assert {s[1]["feature"]: s[2] for s in got["mlpack_drift_status"]} == {HOSTILE: 2.0, "colour": 0.0}
    assert got["mlpack_recent_errors"] == [("mlpack_recent_errors", {"model": "churn", "version": '1.2.0"beta',
                                                                      "kind": "validation"}, 2.0)]
    assert {s[1]["state"] for s in got["mlpack_outbox_windows"]} == {"pending", "delivered"}


def test_numbers_and_skipped_samples() -> None:
    assert [number(v) for v in (3, True, 0.1, float("nan"), float("inf"), -float("inf"))] == [
        "3", "1", "0.1", "NaN", "+Inf", "-Inf"]
    lines = family("x", "gauge", "a\\b\nc", [({}, None), ({"k": "v"}, 2.5)])
    assert lines == ["# HELP x a\\\\b c", "# TYPE x gauge", 'x{k="v"} 2.5']
    assert parse("\n".join(lines) + "\n") == {"x": [("x", {"k": "v"}, 2.5)]}


def test_the_device_side_never_imports_prometheus_client() -> None:
    probe = (
        "import sys\n"
        "from mlpack_edge.runtime.metrics import ServeMetrics\n"
        "from mlpack_edge.monitor_agent.status import render_metrics\n"
        "ServeMetrics('m', '1', 'h').render()\n"
        "print(sorted(m for m in sys.modules if m.startswith('prometheus_client')))\n"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
    assert (out.returncode, out.stdout) == (0, "[]\n"), out.stderr
