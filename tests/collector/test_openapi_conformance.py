"""Schemathesis against a running collector: the OpenAPI document says what the server does.

A real ``mlpack collector serve`` holding real telemetry (so the typed read replies carry
series, drift and alerts), a registered device's bearer token, and schemathesis' command
line with every check (server errors, documented status codes and content types, reply
schemas, schema-valid requests accepted, schema-invalid ones refused, 405 with ``Allow``
for undeclared methods, ...) over its coverage, fuzzing and stateful phases: about 2,000
requests in 30-40 s on the project's machine.

What JSON Schema cannot state (cross-parameter range rules, the ingest body's cross-field
rules) is written in the API's descriptions, and ``_schemathesis_hooks.py`` tells
schemathesis about exactly those rules, checked independently of the server; see there.
``$MLPACK_ST_SEED`` picks another seed (the default one keeps CI reproducible).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.collector.process import start_collector, stop_collector
from tests.collector.sim import gz, make_profile, model_hash

pytest.importorskip("schemathesis")

HOOKS = Path(__file__).with_name("_schemathesis_hooks.py")
CONFIG = """\
hooks = "{hooks}"
seed = {seed}

[generation]
database = "none"
"""


@pytest.mark.slow
def test_schemathesis_finds_no_failure(tmp_path: Path) -> None:
    c = start_collector("sqlite:///" + str(tmp_path / "collector.db"), "--silent-after", "1800")
    try:
        profile = make_profile()
        h = model_hash("demo", "1.0.0")
        now = time.time()
        steady, token = c.device(profile, h, seed=1)
        drifting, other = c.device(profile, h, seed=2, shift=2.5)
        with httpx.Client(base_url=c.url, timeout=30) as client:
            for dev, tok in ((steady, token), (drifting, other)):
                body = gz(dev.batch([dev.window(now - 3 * 3600 + 600 * k) for k in range(12)]))
                r = client.post("/api/v1/ingest", content=body,
                                headers={"Authorization": f"Bearer {tok}", "Content-Encoding": "gzip"})
                assert r.status_code == 200, r.text
            assert "drift" in {a["kind"] for a in client.get("/api/v1/alerts").json()["alerts"]}
        config = tmp_path / "schemathesis.toml"
        config.write_text(CONFIG.format(hooks=HOOKS, seed=int(os.environ.get("MLPACK_ST_SEED", "1"))))
        report = tmp_path / "report.json"
        proc = subprocess.run(
            [sys.executable, "-m", "schemathesis.cli", "--config-file", str(config), "run", f"{c.url}/openapi.json",
             "--checks", "all", "--header", f"Authorization: Bearer {token}", "--workers", "1", "--no-color",
             "--report", "json", "--report-json-path", str(report)],
            capture_output=True, text=True, timeout=900, cwd=tmp_path,
            env={**os.environ, "MLPACK_ST_DEVICE": steady.name},
        )
        assert proc.returncode == 0, proc.stdout[-15000:] + proc.stderr[-3000:]
        run = json.loads(report.read_text())
        assert run["complete"] and run["failures"] == [] and run["errors"] == []
        assert run["operations"]["tested"] == run["operations"]["total"] == 22
        assert run["test_cases"]["generated"] >= 1000, run["test_cases"]
        assert all(run["phases"][p]["status"] == "success" for p in ("coverage", "fuzzing", "stateful")), run["phases"]
    finally:
        stop_collector(c)
