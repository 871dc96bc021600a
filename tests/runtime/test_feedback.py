"""Prediction ids and ground truth on the device: ``serve`` (POST /predict ids, POST /feedback),
``predict`` (an id column) and ``<model> feedback`` (a labels CSV), through real sockets, the
real agent, its SQLite files, and a real ``serve`` process killed with -9."""

from __future__ import annotations

import csv
import io
import os
import signal
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from click.testing import CliRunner

from mlpack_edge.cli import main
from mlpack_edge.monitor_agent.agent import Agent, ModelInfo
from mlpack_edge.monitor_agent.config import AgentConfig
from mlpack_edge.monitor_agent.feedback import FeedbackStore
from mlpack_edge.monitor_agent.outbox import Outbox
from mlpack_edge.monitor_agent.wire import SystemStats
from mlpack_edge.runtime import Model, PredictServer, ServeConfig
from mlpack_edge.runtime.bundle import Bundle
from tests._proc import start_and_wait

ROW = {"x1": 1.0, "x2": None, "colour": "red", "shape": "round"}


@pytest.fixture
def served(mixed_bundle: Path, tmp_path: Path) -> Iterator[tuple[str, Agent, Model]]:
    state = tmp_path / "state"
    state.mkdir()
    info = ModelInfo.from_bundle_dir(mixed_bundle)
    agent = Agent.open(info, state, AgentConfig(), sampler=SystemStats)
    model = Model(Bundle.open(mixed_bundle), threads=1, recorder=agent.recorder)
    agent.start()
    server = PredictServer(model, ServeConfig(port=0, id_field="order"), feedback=agent)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield server.url, agent, model
    finally:
        server.shutdown()
        agent.stop()


def test_serve_returns_ids_and_joins_feedback(served: tuple[str, Agent, Model]) -> None:
    url, agent, model = served
    with httpx.Client(base_url=url, timeout=10) as c:
        one = c.post("/predict", json=ROW).json()
        assert set(one) == {"label", "probabilities", "id"}
        batch = c.post("/predict", json=[ROW, {**ROW, "x1": "abc"}, {**ROW, "order": "A-17"}]).json()
        first, bad, mine = batch["predictions"]
        assert "id" in first and "id" not in bad and mine["id"] == "A-17"  # the row's own id, not a feature
        assert first["id"] != one["id"]
        wrong = next(c for c in model.classes if str(c) != one["label"])
        r = c.post("/feedback", json={"id": one["id"], "label": one["label"]})
        assert r.status_code == 200 and r.json() == {"id": one["id"], "outcome": "matched"}
        r = c.post("/feedback", json=[
            {"id": "A-17", "label": wrong},
            {"id": "A-17", "label": one["label"]},
            {"id": "nope", "label": one["label"]},
            {"id": first["id"], "label": "not-a-class"},
        ])
        assert r.json() == {"outcomes": ["matched", "duplicate", "unmatched", "unknown_label"],
                            "counts": {"matched": 1, "duplicate": 1, "unmatched": 1, "unknown_label": 1}}
        # A malformed item refuses the whole request: nothing of it is counted.
        r = c.post("/feedback", json=[{"id": first["id"], "label": one["label"]}, {"label": "x"}])
        assert r.status_code == 400 and r.json() == {"error": "[1].id: missing"}
        r = c.post("/feedback", json={"id": [1], "label": 1})
        assert r.status_code == 400 and "body.id: expected a string or integer id" in r.json()["error"]
        r = c.post("/feedback", content=b"{nope")
        assert r.status_code == 400
        assert c.get("/feedback").status_code == 405
    report = agent.status()
    assert report.production is not None
    fb = report.production["feedback"]
    assert (fb["labels"], fb["matched"], fb["duplicate"], fb["unmatched"], fb["unknown_label"]) == (5, 2, 1, 1, 1)
    assert report.production["labelled"] == 2 and report.production["accuracy"] == 0.5
    metrics = agent.metrics_text()  # what GET /metrics adds
    assert 'mlpack_feedback_labels{model="mixed",version="1.0.0",outcome="duplicate"} 1' in metrics


def test_serve_without_monitoring_answers_feedback_with_409(mixed_bundle: Path) -> None:
    server = PredictServer(Model(Bundle.open(mixed_bundle), threads=1), ServeConfig(port=0))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        assert "id" not in httpx.post(f"{server.url}/predict", json=ROW, timeout=10).json()
        r = httpx.post(f"{server.url}/feedback", json={"id": "x", "label": 1}, timeout=10)
        assert r.status_code == 409 and "monitoring agent" in r.json()["error"]
    finally:
        server.shutdown()


def test_predict_writes_ids_and_feedback_csv_joins_them(mixed_bundle: Path, tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.mkdir()
    rows = "x1,x2,colour,shape\n1.0,2.0,red,round\n0.5,,blue,square\nabc,1,red,round\n"
    (tmp_path / "in.csv").write_text(rows)
    base = ["device", "--bundle", str(mixed_bundle), "--allow-unsigned"]
    r = CliRunner().invoke(main, [*base, "predict", str(tmp_path / "in.csv"), "--state-dir", str(state),
                                  "-o", str(tmp_path / "out.csv")])
    assert r.exit_code == 1  # one bad row
    out = list(csv.DictReader(io.StringIO((tmp_path / "out.csv").read_text())))
    assert [bool(o["id"]) for o in out] == [True, True, False]  # the failed row got no prediction, no id
    labels = tmp_path / "labels.csv"
    labels.write_text("pid,truth\n" + f"{out[0]['id']},{out[0]['label']}\n{out[1]['id']},{out[1]['label']}\n"
                      f"{out[0]['id']},{out[0]['label']}\nghost,{out[0]['label']}\n")
    fb = [*base, "feedback", str(labels), "--state-dir", str(state), "--id-column", "pid", "--label-column", "truth"]
    r = CliRunner().invoke(main, [*fb, "--json"])
    assert r.exit_code == 0, r.output
    assert '"matched": 2' in r.stdout and '"duplicate": 1' in r.stdout and '"unmatched": 1' in r.stdout
    r = CliRunner().invoke(main, [*base, "status", "--state-dir", str(state)])
    assert "production (ground truth): 4 labels, 2 matched, 1 unmatched, 0 late, 1 duplicate" in r.stdout
    assert "accuracy 1.0000" in r.stdout
    # A malformed file: one line naming it, exit 1, nothing counted.
    labels.write_text("pid,truth\nx\n")
    r = CliRunner().invoke(main, fb)
    assert r.exit_code == 1 and r.output.strip().endswith("labels.csv: line 2: expected 2 fields as in the header, got 1")
    with Outbox.open(state) as box:
        assert sum(w.feedback.labels for w in box.pending_windows() if w.feedback) == 4


def test_predict_uses_the_id_column(mixed_bundle: Path, tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.mkdir()
    (tmp_path / "in.csv").write_text("order,x1,x2,colour,shape\nA1,1.0,2.0,red,round\n,0.5,,blue,square\n")
    r = CliRunner().invoke(main, ["device", "--bundle", str(mixed_bundle), "--allow-unsigned", "predict",
                                  str(tmp_path / "in.csv"), "--state-dir", str(state), "--id-column", "order"])
    assert r.exit_code == 0, r.output
    out = list(csv.DictReader(io.StringIO(r.stdout)))
    assert out[0]["order"] == "A1" and out[1]["order"]  # a row without an id gets a generated one
    store = FeedbackStore(state)
    try:
        assert store.stats()["pending"] == 2
    finally:
        store.close()
    # Without monitoring the id column is still accepted (copied), no ids are made.
    r = CliRunner().invoke(main, ["device", "--bundle", str(mixed_bundle), "--allow-unsigned", "predict",
                                  str(tmp_path / "in.csv"), "--no-monitor", "--id-column", "order"])
    assert r.exit_code == 0, r.output
    assert r.stdout.splitlines()[0].split(",")[0] == "order" and "id" not in r.stdout.splitlines()[0].split(",")


@pytest.mark.slow
def test_labels_survive_kill_9_of_serve(mixed_bundle: Path, tmp_path: Path) -> None:
    state = tmp_path / "state"
    started = start_and_wait(
        [sys.executable, "-m", "mlpack_edge.cli", "device", "--bundle", str(mixed_bundle), "--allow-unsigned",
         "serve", "--port", "0", "--state-dir", str(state)],
        "serving ", env={**os.environ, "MLPACK_WINDOW_SECONDS": "3600", "MLPACK_CAPTURE_RATE": "1"},
    )
    assert started.line is not None, started.output()
    url = started.line.split(" on ")[1].split()[0]
    try:
        preds = httpx.post(f"{url}/predict", json=[ROW] * 5, timeout=10).json()["predictions"]
        labels = [{"id": p["id"], "label": p["label"]} for p in preds]
        assert httpx.post(f"{url}/feedback", json=labels, timeout=10).json()["counts"] == {"matched": 5}
    finally:
        started.proc.send_signal(signal.SIGKILL)
        started.finish()
    # The next process hands the acknowledged labels to the outbox, once.
    info = ModelInfo.from_bundle_dir(mixed_bundle)
    for _ in range(2):
        agent = Agent.open(info, state, AgentConfig(), sampler=SystemStats)
        agent.start()
        agent.stop()
    with Outbox.open(state) as box:
        fbs = [w.feedback for w in box.pending_windows() if w.feedback is not None]
        samples = [x for w in box.pending_windows() for x in w.samples or ()]
    assert len(fbs) == 1 and fbs[0].matched == 5 and fbs[0].labels == 5
    # The captured rows (written with the labels' join) are handed over once too, labelled.
    assert sorted(x["id"] for x in samples) == sorted(p["id"] for p in preds)
    assert all(x["label"] == x["output"] for x in samples)


def test_capture_keeps_a_bounded_daily_sample_with_labels(mixed_bundle: Path, tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.mkdir()
    info = ModelInfo.from_bundle_dir(mixed_bundle)
    config = AgentConfig(capture_rate=1.0, capture_max_rows_per_day=3, capture_exclude=("colour",))
    agent = Agent.open(info, state, config, sampler=SystemStats)
    model = Model(Bundle.open(mixed_bundle), threads=1, recorder=agent.recorder)
    agent.start()
    server = PredictServer(model, ServeConfig(port=0), feedback=agent)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        with httpx.Client(base_url=server.url, timeout=10) as c:
            first = c.post("/predict", json={**ROW, "x1": 0.0}).json()
            more = c.post("/predict", json=[{**ROW, "x1": float(i)} for i in range(1, 10)]).json()["predictions"]
            assert c.post("/feedback", json={"id": first["id"], "label": first["label"]}).json()["outcome"] == "matched"
    finally:
        server.shutdown()
        agent.stop()
    with Outbox.open(state) as box:
        samples = [x for w in box.pending_windows() for x in (w.samples or [])]
    assert len(samples) == 3 and {x["slot"] for x in samples} == {0, 1, 2}  # 10 offered, a reservoir of 3 kept
    assert all("colour" not in x["row"] and x["row"]["shape"] == "round" for x in samples)  # excluded before storing
    ids = {p["id"] for p in [first, *more]}
    assert {x["id"] for x in samples} <= ids
    labelled = [x for x in samples if x["label"] is not None]
    assert all(x["id"] == first["id"] and x["label"] == first["label"] for x in labelled)


def test_capture_that_cannot_fit_the_outbox_stays_off(mixed_bundle: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    info = ModelInfo.from_bundle_dir(mixed_bundle)
    config = AgentConfig(cap_bytes=256 * 1024, capture_rate=0.5, capture_max_rows_per_day=100_000)
    agent = Agent.open(info, tmp_path, config, sampler=SystemStats)  # the rest of monitoring runs
    try:
        assert agent.capture_rate == 0.0
    finally:
        agent.stop()
    (line,) = [r.getMessage() for r in caplog.records if "capture is off" in r.getMessage()]
    assert "capture_max_rows_per_day 100000 keeps about" in line and "lower capture_max_rows_per_day to at most" in line


def test_concurrent_predictions_and_labels_lose_no_id(served: tuple[str, Agent, Model]) -> None:
    from concurrent.futures import ThreadPoolExecutor

    url, agent, model = served

    def client(n: int) -> list[tuple[str, str]]:
        out = []
        with httpx.Client(base_url=url, timeout=30) as c:
            for i in range(50):
                p = c.post("/predict", json={**ROW, "x1": float(n * 100 + i)}).json()
                out.append((p["id"], p["label"]))
                if i % 10 == 9:  # label what this client has so far while the others keep predicting
                    r = c.post("/feedback", json=[{"id": pid, "label": lab} for pid, lab in out[-10:]]).json()
                    assert r["counts"] == {"matched": 10}, r
        return out

    with ThreadPoolExecutor(4) as pool:
        got = [x for part in pool.map(client, range(4)) for x in part]
    assert len({pid for pid, _ in got}) == 200
    fb = agent.status().production["feedback"]
    assert (fb["matched"], fb["unmatched"], fb["duplicate"]) == (200, 0, 0)


def test_install_checks_capture_settings(mixed_bundle: Path, tmp_path: Path) -> None:
    base = ["device", "--bundle", str(mixed_bundle), "--allow-unsigned", "install", "--prefix", str(tmp_path / "opt")]
    r = CliRunner().invoke(main, [*base, "--capture-rate", "2"])
    assert (r.exit_code, r.output) == (1, "Error: agent settings: capture_rate must be between 0 (off) and 1, got 2.0\n")
    r = CliRunner().invoke(main, [*base, "--capture-rate", "0.1", "--capture-max-rows-per-day", "1000000"])
    assert r.exit_code == 1 and r.output.startswith(
        "Error: agent settings: capture_max_rows_per_day 1000000 keeps about "), r.output
    assert "lower capture_max_rows_per_day to at most" in r.output and len(r.output.splitlines()) == 1
    assert not (tmp_path / "opt").exists()
    # Valid settings pass the checks and reach the next one (this is plain Python, not an executable).
    r = CliRunner().invoke(main, [*base, "--capture-rate", "0.1", "--capture-exclude", "colour"])
    assert r.output.startswith("Error: install runs from a device executable"), r.output
