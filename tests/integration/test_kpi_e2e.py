"""End to end, production KPIs: a built model serves 2,000 rows over HTTP with the real agent,
1,500 of them get ground truth (some late, some with an unknown label, some duplicated, plus
labels for ids that never existed), the device syncs to a real collector process, and the
collector's per-class precision/recall equal scikit-learn's on the pairs the device joined;
the recall that falls below the build's gate is a production_gate alert."""

from __future__ import annotations

import csv
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
from click.testing import CliRunner

from mlpack_edge.cli import main
from mlpack_edge.collector import admin
from mlpack_edge.monitor_agent.agent import Agent, ModelInfo
from mlpack_edge.monitor_agent.config import AgentConfig
from mlpack_edge.runtime import Bundle, Model, PredictServer, ServeConfig
from tests.collector.process import start_collector, stop_collector

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[2]


class Clock:
    def __init__(self, t: float) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def test_collector_kpis_equal_sklearn_and_a_failing_gate_alerts(tmp_path: Path) -> None:
    from sklearn.metrics import precision_recall_fscore_support

    build = subprocess.run(
        [sys.executable, "-m", "mlpack_edge.cli", "build", str(REPO / "examples" / "breast_cancer" / "mlpack.toml"),
         "--out", str(tmp_path / "dist"), "--no-executable", "--quiet"],
        capture_output=True, text=True, timeout=600,
    )
    assert build.returncode == 0, build.stderr
    bundle_dir = tmp_path / "dist" / "breast-cancer-1.0.0"
    db_url = "sqlite:///" + str(tmp_path / "collector.db")
    added = CliRunner().invoke(main, ["collector", "add-model", str(bundle_dir), "--db", db_url])
    assert added.exit_code == 0, added.output
    with open(REPO / "examples" / "breast_cancer" / "breast_cancer.csv", newline="") as fh:
        data = list(csv.DictReader(fh))
    rng = np.random.default_rng(13)
    picked = rng.integers(0, len(data), 2000)
    rows = [{k: float(v) for k, v in data[i].items() if k != "diagnosis"} for i in picked]
    truth = [data[i]["diagnosis"] for i in picked]

    collector = start_collector(db_url, "--min-labels", "200")
    try:
        token = admin.add_device(db_url, "clinic-1")
        clock = Clock(time.time() - 3 * 3600)
        config = AgentConfig(collector_url=collector.url, device_id="clinic-1", token=token,
                             feedback_join_seconds=3600, capture_rate=0.5, capture_max_rows_per_day=600)
        info = ModelInfo.from_bundle_dir(bundle_dir)
        agent = Agent.open(info, tmp_path / "state", config, clock=clock, sampler=None)
        model = Model(Bundle.open(bundle_dir), recorder=agent.recorder)
        server = PredictServer(model, ServeConfig(port=0), feedback=agent)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        try:
            with httpx.Client(base_url=server.url, timeout=30) as c:
                preds = [p for k in range(0, 2000, 500) for p in c.post("/predict", json=rows[k : k + 500]).json()["predictions"]]
                assert len(preds) == 2000 and all("id" in p for p in preds)
                ids = [p["id"] for p in preds]
                # Ground truth for 1,500 of them. To make recall of 'malignant' fall below its
                # gate (0.9), 200 rows the model called benign are reported malignant.
                labels = list(truth)
                benign = [k for k in range(1500) if preds[k]["label"] == "benign"]
                for k in benign[:200]:
                    labels[k] = "malignant"
                on_time = [{"id": ids[k], "label": labels[k]} for k in range(1300)]
                unknown = [{"id": ids[k], "label": "unsure"} for k in range(1300, 1400)]  # not a class
                dup = [{"id": ids[k], "label": "benign" if labels[k] == "malignant" else "malignant"} for k in range(50)]
                ghost = [{"id": f"ghost-{k}", "label": "benign"} for k in range(20)]
                r = c.post("/feedback", json=on_time + unknown + dup + ghost).json()["counts"]
                assert r == {"matched": 1300, "unknown_label": 100, "duplicate": 50, "unmatched": 20}
                clock.t += 7200  # past the join window
                late = [{"id": ids[k], "label": labels[k]} for k in range(1400, 1500)]
                assert c.post("/feedback", json=late).json()["counts"] == {"late": 100}
        finally:
            server.shutdown()
        clock.t += 61
        agent.tick()  # closes the traffic window, writes the ids, hands the labels to the outbox
        while True:
            result = agent.sync()
            assert result.outcome in ("delivered", "nothing"), result
            if result.outcome == "nothing":
                break
        agent.stop()
        fresh = tmp_path / "fresh" / "fresh.csv"
        fresh.parent.mkdir()
        exported = CliRunner().invoke(main, ["collector", "export-samples", "breast-cancer:1.0.0", "--db", db_url,
                                             "-o", str(fresh)])
        assert exported.exit_code == 0, exported.output
        with httpx.Client(base_url=collector.url, timeout=30) as cl:
            detail = cl.get(f"/api/v1/models/{info.content_hash}").json()
            device = cl.get("/api/v1/devices/clinic-1").json()
            alerts = cl.get("/api/v1/alerts").json()["alerts"]
            page = cl.get(f"/models/{info.content_hash}").text
    finally:
        stop_collector(collector)

    (entry,) = detail["production"]
    k = entry["kpi"]
    assert k["feedback"] == {"labels": 1570, "matched": 1300, "unmatched": 20, "late": 100, "duplicate": 50,
                             "unknown_label": 100}
    y_true, y_pred = labels[:1300], [p["label"] for p in preds[:1300]]
    p, r, f, s = precision_recall_fscore_support(y_true, y_pred, labels=["benign", "malignant"], zero_division=0.0)
    for j, c in enumerate(["benign", "malignant"]):
        assert k["per_class"][c]["precision"] == p[j]
        assert k["per_class"][c]["recall"] == r[j]
        assert k["per_class"][c]["f1"] == f[j]
        assert k["per_class"][c]["support"] == s[j]
    mp, mr, mf, _ = precision_recall_fscore_support(y_true, y_pred, average="macro", zero_division=0.0)
    assert (k["macro"]["precision"], k["macro"]["recall"], k["macro"]["f1"]) == (mp, mr, mf)
    recall = next(g for g in k["gates"] if g["metric"] == "recall")
    assert recall["status"] == "fail" and recall["production"] == r[1] < 0.9 and recall["build"] >= 0.9
    assert recall["interval"][0] < recall["production"] < recall["interval"][1]
    assert device["production"][0]["kpi"]["per_class"] == k["per_class"]
    breaches = [a for a in alerts if a["kind"] == "production_gate"]
    assert {(a["device"], a["feature"]) for a in breaches} >= {(None, "recall"), ("clinic-1", "recall")}
    assert "Production KPIs" in page and "recall &gt;= 0.9" in page

    # Capture: about half of the 2,000 rows were offered, a day's reservoir of 600 kept; the
    # labelled ones export in the training columns, and the next build trains on them.
    with open(fresh, newline="") as fh:
        got = list(csv.reader(fh))
    assert got[0] == list(data[0].keys())  # the training CSV's columns, target last as in the example
    from collections import Counter

    exported_pairs = Counter((tuple(float(v) for v in r[:-1]), r[-1]) for r in got[1:])
    # Every exported row is one the device labelled (on time or late; first label wins, an
    # unknown label attaches nothing), with that label: a sub-multiset of the labelled pairs.
    labelled_pairs = Counter((tuple(rows[k].values()), labels[k]) for k in [*range(1300), *range(1400, 1500)])
    assert 300 < sum(exported_pairs.values()) <= 600
    assert not exported_pairs - labelled_pairs
    spec = (REPO / "examples" / "breast_cancer" / "mlpack.toml").read_text().replace('"breast_cancer.csv"', '"fresh.csv"')
    spec = spec.replace('gates = ["precision >= 0.9", "recall >= 0.9", "roc_auc >= 0.95"]', "gates = []")
    (fresh.parent / "mlpack.toml").write_text(spec)
    rebuilt = subprocess.run(
        [sys.executable, "-m", "mlpack_edge.cli", "build", str(fresh.parent / "mlpack.toml"), "--out",
         str(tmp_path / "dist2"), "--no-executable", "--quiet"], capture_output=True, text=True, timeout=600)
    assert rebuilt.returncode == 0, rebuilt.stderr
