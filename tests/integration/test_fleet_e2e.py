"""End to end: a built example model, two devices running the real agent, one fed shifted
data; the collector (a real process) shows that one drifting and the other not."""

from __future__ import annotations

import csv
import subprocess
import sys
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
from mlpack_edge.runtime import Bundle, Model
from tests.collector.process import start_collector, stop_collector

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[2]
SHIFTED = "mean_radius"


class Clock:
    def __init__(self, t: float) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def rows(shift_sd: float) -> list[dict[str, float]]:
    with open(REPO / "examples" / "breast_cancer" / "breast_cancer.csv", newline="") as fh:
        data = [{k: float(v) for k, v in r.items() if k != "diagnosis"} for r in csv.DictReader(fh)]
    sd = float(np.std([r[SHIFTED] for r in data]))
    for r in data:
        r[SHIFTED] += shift_sd * sd
    return data


def test_collector_shows_the_drifting_device_and_not_the_steady_one(tmp_path: Path) -> None:
    build = subprocess.run(
        [sys.executable, "-m", "mlpack_edge.cli", "build", str(REPO / "examples" / "breast_cancer" / "mlpack.toml"),
         "--out", str(tmp_path / "dist"), "--no-executable", "--quiet"],
        capture_output=True, text=True, timeout=600,
    )
    assert build.returncode == 0, build.stderr
    bundle_dir = tmp_path / "dist" / "breast-cancer-1.0.0"
    db_url = "sqlite:///" + str(tmp_path / "collector.db")
    added = CliRunner().invoke(main, ["collector", "add-model", str(bundle_dir), "--db", db_url])
    assert added.exit_code == 0 and added.stdout.endswith(" added\n"), added.output

    collector = start_collector(db_url)
    try:
        info = ModelInfo.from_bundle_dir(bundle_dir)
        start = time.time() - 1800
        for device, shift in (("line-1", 0.0), ("line-2", 2.0)):
            token = admin.add_device(db_url, device)
            clock = Clock(start)
            config = AgentConfig(collector_url=collector.url, device_id=device, token=token, window_seconds=60)
            agent = Agent.open(info, tmp_path / device, config, clock=clock, sampler=None)
            model = Model(Bundle.open(bundle_dir), recorder=agent.recorder)
            data = rows(shift)
            for minute in range(10):
                model.predict(data[minute * 50 : minute * 50 + 50])
                clock.t += 61
                agent.tick()
            result = agent.sync()
            assert (result.outcome, result.delivered, result.status) == ("delivered", 10, 200), result
        with httpx.Client(base_url=collector.url, timeout=30) as cl:
            devices = {d["name"]: d for d in cl.get("/api/v1/devices").json()["devices"]}
            alerts = cl.get("/api/v1/alerts").json()["alerts"]
            page = cl.get("/").text
    finally:
        stop_collector(collector)

    steady, drifting = devices["line-1"], devices["line-2"]
    assert steady["model"]["hash"] == drifting["model"]["hash"] == info.content_hash
    assert steady["requests"] == drifting["requests"] == 10
    assert steady["rows"] == drifting["rows"] == 500
    assert drifting["status"] == "drift"
    assert drifting["worst"]["feature"] == SHIFTED and drifting["worst"]["psi"] >= 0.2
    assert steady["status"] == "ok", steady["worst"]
    drift_alerts = [a for a in alerts if a["kind"] == "drift" and a["device"]]
    assert [(a["device"], a["feature"]) for a in drift_alerts] == [("line-2", SHIFTED)]
    assert 'data-device="line-2" data-status="drift"' in page
    assert 'data-device="line-1" data-status="ok"' in page
