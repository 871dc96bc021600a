"""End to end with real executables: five installed devices (four updating by ``<model> update``
from cron, one running ``serve``), a real collector process, real rollouts.

A candidate trained on inverted labels (it passes its own gates and golden set) halts its
rollout at the first stage: that device's shadow phase finds it disagrees and nothing is
switched anywhere. A good candidate then reaches every device stage by stage, the serving
device included (live shadow on its requests, then restart into the new version), with
only the ~10 kB bundle downloaded.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from mlpack_edge.builder import build
from mlpack_edge.builder.signing import generate_key
from mlpack_edge.collector import admin
from tests._data import binary_rows, spec_text
from tests._proc import start_and_wait
from tests.collector.process import start_collector, stop_collector

pytestmark = pytest.mark.slow
N_DEVICES = 5
SERVING = "press-04"


def _build(root: Path, version: str, key: Path, executable: bool, invert: bool = False) -> tuple[Path, Path | None]:
    root.mkdir(parents=True)
    lines = binary_rows(n=160, seed=4).splitlines()
    if invert:
        lines = [lines[0]] + [ln.rsplit(",", 1)[0] + "," + ("no" if ln.endswith("yes") else "yes") for ln in lines[1:]]
    (root / "data.csv").write_text("\n".join(lines) + "\n")
    (root / "mlpack.toml").write_text(spec_text(name="gov", version=version))
    result = build(root / "mlpack.toml", root / "dist", executable=executable, sign_key=key)
    return result.bundle_dir, result.executable


def mlpack(*args: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "mlpack_edge.cli", *map(str, args)], capture_output=True, text=True,
                          timeout=300)


def run(exe: Path, *args: object, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(exe), *map(str, args)], capture_output=True, text=True, timeout=300,
                          env={**os.environ, **(env or {})})


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_a_disagreeing_candidate_halts_at_stage_one_and_a_good_one_reaches_every_device(tmp_path: Path) -> None:
    keys = generate_key(tmp_path / "keys", "release")
    _, exe = _build(tmp_path / "v100", "1.0.0", keys.private, executable=True)
    good, _ = _build(tmp_path / "v101", "1.0.1", keys.private, executable=False)
    bad, _ = _build(tmp_path / "v102", "1.0.2", keys.private, executable=False, invert=True)
    assert exe is not None

    data = tmp_path / "fleet"
    data.mkdir()
    db_url = "sqlite:///" + str(data / "collector.db")
    admin_file = tmp_path / "admin.token"
    admin_file.write_text(admin.add_admin(db_url, "ops"))
    collector = start_collector(db_url, "--release-dir", str(tmp_path / "releases"))
    common = ("--collector", collector.url, "--admin-token-file", admin_file)
    rows_csv = tmp_path / "rows.csv"
    rows_csv.write_text("\n".join(ln.rsplit(",", 1)[0] for ln in binary_rows(n=40, seed=9).splitlines()) + "\n")
    golden_rows = json.loads((good / "golden.json").read_text())["rows"]
    env = {"MLPACK_WINDOW_SECONDS": "1"}
    serve = None
    port = free_port()
    try:
        devices: dict[str, Path] = {}
        for i in range(N_DEVICES):
            name = f"press-{i:02d}"
            token = tmp_path / f"{name}.token"
            token.write_text(admin.add_device(db_url, name, labels={"site": "plant-a"}))
            prefix = tmp_path / "devices" / name
            r = run(exe, "install", "--prefix", prefix, "--trust-key", keys.public, "--collector-url", collector.url,
                    "--device-id", name, "--token-file", token)
            assert r.returncode == 0, r.stderr
            devices[name] = prefix / "gov" / "current" / "gov"
            assert run(devices[name], "predict", rows_csv, env=env).returncode == 0
            assert run(devices[name], "agent", "sync").returncode == 0  # the collector learns what each runs

        serve = start_and_wait([str(devices[SERVING]), "serve", "--port", str(port)], "serving gov",
                               stream="stderr", env={**os.environ, **env})
        assert serve.line is not None, serve.output()
        http = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30)

        def cycle() -> None:
            """One round on every device: cron devices update, predict and upload; the serving one gets traffic."""
            for name, launcher in devices.items():
                if name == SERVING:
                    for row in golden_rows[:10]:
                        try:
                            http.post("/predict", json=row)
                        except httpx.TransportError:
                            pass  # restarting into the new version
                    continue
                up = run(launcher, "update")
                assert up.returncode in (0, 1, 3), up.stderr
                run(launcher, "predict", rows_csv, env=env)
                run(launcher, "agent", "sync")

        def status() -> dict:
            r = mlpack("rollout", "status", "gov", *common, "--json")
            assert r.returncode == 0, r.stderr
            return json.loads(r.stdout)

        def versions() -> dict[str, str]:
            return {n: (p.parent.parent / "current").readlink().name for n, p in devices.items()}

        # A candidate that disagrees with 1.0.0 (inverted labels) halts at its first stage.
        assert mlpack("publish", bad, *common).returncode == 0
        started = mlpack("rollout", "start", "gov", "1.0.2", *common, "--stages", "20,100", "--hold", "1s",
                         "--shadow", "2s", "--agreement-floor", "0.9")
        assert started.returncode == 0, started.stderr
        assert f"{N_DEVICES} devices targeted" in started.stdout
        deadline = time.time() + 240
        while status()["state"] == "active" and time.time() < deadline:
            cycle()
            time.sleep(0.5)
        doc = status()
        assert doc["state"] == "failed", (doc["stages"], serve.output())
        assert "shadow: agreement" in doc["reason"] and doc["reason"].startswith("stage 1 (20%): device press-")
        assert doc["stages"][0]["counts"] == {"failed": 1}
        assert not doc["stages"][1]["started"]
        assert set(versions().values()) == {"1.0.0"}  # nothing switched anywhere
        assert http.get("/health").json()["version"] == "1.0.0"

        # A good candidate reaches every device, stage by stage.
        published = mlpack("publish", good, *common)
        assert published.returncode == 0 and published.stdout.startswith("published gov 1.0.1")
        started = mlpack("rollout", "start", "gov", "1.0.1", *common, "--stages", "20,60,100", "--hold", "1s",
                         "--shadow", "1s")
        assert started.returncode == 0, started.stderr
        deadline = time.time() + 420
        while status()["state"] == "active" and time.time() < deadline:
            cycle()
            time.sleep(0.5)
        doc = status()
        assert doc["state"] == "completed", (doc["reason"], doc["stages"], serve.output())
        assert [s["counts"] for s in doc["stages"]] == [{"updated": 1}, {"updated": 2}, {"updated": 2}]
        assert set(versions().values()) == {"1.0.1"}
        for _ in range(100):  # the serving device restarted into 1.0.1 on the same port
            try:
                if http.get("/health").json()["version"] == "1.0.1":
                    break
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        assert http.get("/health").json()["version"] == "1.0.1", serve.output()
        assert "restarting into" in serve.output()
        events = [e["event"] for e in doc["events"]]
        assert events == ["started", "stage_started", "stage_started", "completed"]
        page = httpx.get(f"{collector.url}/rollouts").text
        assert "Halted: stage 1 (20%)" in page and "completed" in page
    finally:
        if serve is not None:
            serve.proc.terminate()
            serve.proc.wait(timeout=30)
        stop_collector(collector)
