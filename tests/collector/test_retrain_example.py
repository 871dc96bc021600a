"""examples/retrain_webhook: a drift alert from a real collector makes the receiver run ``mlpack build``.

The example's receiver script runs as its own process on 127.0.0.1, registered as a
signed webhook; a device uploads drifted telemetry; the collector opens a drift alert and
posts it; the receiver checks the signature and runs a real ``mlpack build`` of the
breast-cancer spec (bundle only). A request with a wrong signature is refused with 401.
"""

from __future__ import annotations

import json
import shlex
import shutil
import sys
import time
from pathlib import Path

import httpx

from mlpack_edge.collector import admin
from tests._proc import start_and_wait
from tests.collector.process import start_collector, stop_collector
from tests.collector.sim import gz

from .test_api import post

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "examples" / "retrain_webhook" / "receiver.py"


def test_a_drift_alert_runs_mlpack_build_through_the_example_receiver(tmp_path: Path, profile, demo_hash) -> None:
    shutil.copytree(ROOT / "examples" / "breast_cancer", tmp_path / "spec")
    (tmp_path / "secret").write_text("retrain-secret\n")
    cmd = [sys.executable, str(SCRIPT), "--spec", str(tmp_path / "spec"), "--out", str(tmp_path / "dist"),
           "--mlpack", shlex.join([sys.executable, "-m", "mlpack_edge.cli"]), "--build-arg=--no-executable",
           "--secret-file", str(tmp_path / "secret"), "--port", "0"]
    rx = start_and_wait(cmd, '{"event": "listening"', stream="stdout")
    assert rx.line is not None, rx.output()
    url = json.loads(rx.line)["url"] + "alerts"
    db = "sqlite:///" + str(tmp_path / "collector.db")
    admin.add_webhook(db, url, "alertmanager", tmp_path / "secret")
    c = start_collector(db, "--alert-interval", "0.5")
    try:
        r = httpx.post(url, content=b'{"version": "4", "alerts": []}', headers={"X-Mlpack-Signature": "sha256=00"})
        assert r.status_code == 401
        dev, token = c.device(profile, demo_hash, shift=3.0)
        now = time.time()
        assert post(c, token, gz(dev.batch([dev.window(now - 300, rows=2000)]))).status_code == 200
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and '"build_finished"' not in rx.output() and '"build_failed"' not in rx.output():
            time.sleep(0.2)
        events = [json.loads(line) for line in rx.output().splitlines() if line.startswith("{")]
        kinds = {(e["status"], e["kind"]) for e in events if e["event"] == "alert"}
        assert ("firing", "drift") in kinds
        (done,) = [e for e in events if e["event"] in ("build_finished", "build_failed")][:1]
        assert done["event"] == "build_finished", done
        assert done["result"]["ok"] is True and done["result"]["gates"] == "3/3 passed"
        assert (tmp_path / "dist" / "breast-cancer-1.0.0" / "manifest.json").is_file()
        assert any(e["event"] == "refused" for e in events)
    finally:
        stop_collector(c)
        rx.proc.terminate()
        rx.proc.wait(timeout=10)
