"""Production KPIs over the real collector process (SQLite and PostgreSQL): the windows'
feedback sections are stored, merged per version and device, judged against the gates the
model entry carries, and a failing gate is a production_gate alert."""

from __future__ import annotations

import time
import uuid

from mlpack_edge.monitor_agent.wire import Feedback
from tests.collector.process import Collector
from tests.collector.sim import gz, model_hash
from tests.collector.test_api import post

KPI = {"task": "binary", "classes": ["0", "1"], "positive": "1", "metrics": {"recall": 0.93, "precision": 0.9},
       "gates": [{"gate": "recall >= 0.9", "metric": "recall", "op": ">=", "threshold": 0.9},
                 {"gate": "precision >= 0.5", "metric": "precision", "op": ">=", "threshold": 0.5}]}


def _feedback(confusion: list[list[int]], **extra: int) -> Feedback:
    n = sum(map(sum, confusion))
    return Feedback(labels=n + sum(extra.values()), matched=n, confusion=confusion, **extra)


def test_feedback_is_merged_per_version_and_device_and_a_failing_gate_alerts(collector: Collector, profile) -> None:
    h = model_hash("kpi", uuid.uuid4().hex)  # a version of its own: the session collector is shared
    now = time.time()
    (a, ta), (b, tb) = collector.device(profile, h), collector.device(profile, h, seed=2)
    # Device a: 150 actual positives, 120 found; device b: 100 actual positives, 70 found.
    wa = [a.window(now - 900), a.window(now - 840)]
    wa[1].feedback = _feedback([[300, 20], [30, 120]], late=3, duplicate=2)
    wb = [b.window(now - 900)]
    wb[0].feedback = _feedback([[200, 10], [30, 70]], unmatched=5)
    entry = {"kpi": KPI}
    for dev, token, ws in ((a, ta, wa), (b, tb, wb)):
        batch = dev.batch(ws, name="kpi", version="1.0.0")
        batch["models"][h].update(entry)
        r = post(collector, token, gz(batch))
        assert r.status_code == 200, r.text
    with collector.client() as cl:
        detail = cl.get(f"/api/v1/models/{h}").json()
        dev_a = cl.get(f"/api/v1/devices/{a.name}").json()
        alerts = [x for x in cl.get("/api/v1/alerts").json()["alerts"] if x["model"] == h]
        page = cl.get(f"/models/{h}").text
    (entry_out,) = detail["production"]
    k = entry_out["kpi"]
    assert k["feedback"] == {"labels": 790, "matched": 780, "unmatched": 5, "late": 3, "duplicate": 2, "unknown_label": 0}
    assert k["confusion"] == [[500, 30], [60, 190]]
    assert k["per_class"]["1"]["recall"] == 190 / 250 and k["per_class"]["1"]["precision"] == 190 / 220
    recall, precision = k["gates"]
    assert (recall["status"], recall["n"], recall["build"], recall["certain"]) == ("fail", 250, 0.93, True)
    assert precision["status"] == "pass"
    assert entry_out["devices"][b.name]["per_class"]["1"]["recall"] == 0.7
    assert dev_a["production"][0]["kpi"]["per_class"]["1"]["recall"] == 0.8
    kinds = sorted((x["kind"], x["device"] or "", x["severity"]) for x in alerts if x["kind"] == "production_gate")
    assert kinds == sorted([("production_gate", "", "critical"), ("production_gate", a.name, "critical"),
                            ("production_gate", b.name, "critical")])
    assert "fails gate recall >= 0.9; 0.930 at build" in next(x["message"] for x in alerts if x["device"] is None)
    assert "Production KPIs" in page and "recall of class 1" in page and "Gate metrics in production" in page


def test_feedback_with_the_wrong_classes_is_refused_and_windows_without_it_stay_valid(collector: Collector, profile) -> None:
    h = model_hash("kpi-bad", uuid.uuid4().hex)
    dev, token = collector.device(profile, h)
    w = dev.window(time.time() - 600)
    w.feedback = _feedback([[1, 0, 0], [0, 1, 0], [0, 0, 1]])  # the profile has 2 classes
    r = post(collector, token, gz(dev.batch([w], name="kpi-bad")))
    assert r.status_code == 422
    assert r.json()["error"] == "windows[0].feedback.confusion: expected 2 classes (the model's prediction profile), got 3"
    plain = dev.window(time.time() - 540)  # an older agent's window: no feedback section
    r = post(collector, token, gz(dev.batch([plain], name="kpi-bad")))
    assert r.status_code == 200 and r.json()["stored"] == [plain.seq]
    with collector.client() as cl:
        assert cl.get(f"/api/v1/models/{h}").json()["production"] == []


def test_captured_rows_are_upserted_by_slot_and_exported_in_training_columns(collector: Collector, profile, tmp_path) -> None:
    import csv

    from click.testing import CliRunner

    from mlpack_edge.cli import main

    h = model_hash("capture", uuid.uuid4().hex)
    dev, token = collector.device(profile, h)
    now = time.time()
    day = int(now // 86400)
    row = {"x0": 0.5, "x1": -1.25, "x2": None, "colour": "red"}
    w1 = dev.window(now - 600)
    w1.samples = [{"day": day, "slot": 0, "time": now - 590, "id": "p-1", "row": row, "output": "1", "label": None},
                  {"day": day, "slot": 1, "time": now - 580, "id": "p-2", "row": {**row, "x0": 2.0}, "output": "0",
                   "label": None}]
    batch = dev.batch([w1], name="capture")
    batch["models"][h]["kpi"] = {**KPI, "target": "churned"}
    assert post(collector, token, gz(batch)).status_code == 200
    w2 = dev.window(now - 540)  # slot 0 again, now with its label: replaces the first copy
    w2.samples = [{**w1.samples[0], "label": "0"}]
    assert post(collector, token, gz(dev.batch([w2], name="capture"))).status_code == 200
    bad = dev.window(now - 480)
    bad.samples = [{**w1.samples[0], "row": {"email": "someone@example.org"}}]
    r = post(collector, token, gz(dev.batch([bad], name="capture")))
    assert r.status_code == 422 and r.json()["error"] == "windows[0].samples[0].row.email: not a feature of model capture 1.0.0"

    out = tmp_path / "fresh.csv"
    r = CliRunner().invoke(main, ["collector", "export-samples", h[:12], "--db", collector.db_url, "-o", str(out)])
    assert r.exit_code == 0 and r.output == f"wrote 1 rows of capture 1.0.0 to {out}\n", r.output
    rows = list(csv.reader(out.open()))
    assert rows == [["x0", "x1", "x2", "colour", "churned"], ["0.5", "-1.25", "", "red", "0"]]
    r = CliRunner().invoke(main, ["collector", "export-samples", "capture:1.0.0", "--all", "--db", collector.db_url,
                                  "-o", str(out)])
    assert r.exit_code == 0 and len(list(csv.reader(out.open()))) == 3
    r = CliRunner().invoke(main, ["collector", "export-samples", "nope:1", "--db", collector.db_url, "-o", str(out)])
    assert r.exit_code == 1 and "model 'nope:1': no such model" in r.output
