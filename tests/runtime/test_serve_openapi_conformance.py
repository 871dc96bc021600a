"""Schemathesis against a running ``serve``: its /openapi.json says what the server does.

A real ``mlpack device --bundle <mixed> serve`` process (numeric and categorical features,
so every kind of field is in the document) and schemathesis' command line over its
coverage, fuzzing and stateful phases, with the checks that hold a server to its
document: no server error, every status code and content type documented, every JSON
response valid against its schema. About 1,800 requests in 1-2 minutes here.

Not checked: "schema-invalid requests are refused" — the server is more lenient than
the document on purpose (numbers as text for a numeric feature, as CSV gives them;
integers as category text), and the KServe v2 request's rules (tensor names, shapes,
datatypes per feature) are written in its description, not in JSON Schema.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests._proc import start_and_wait

pytest.importorskip("schemathesis")

CHECKS = "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance"


@pytest.mark.slow
def test_schemathesis_finds_no_failure(mixed_bundle: Path, tmp_path: Path) -> None:
    cmd = [sys.executable, "-m", "mlpack_edge.runtime.cli", "--bundle", str(mixed_bundle), "--allow-unsigned",
           "serve", "--port", "0", "--no-monitor"]
    started = start_and_wait(cmd, "serving ")
    assert started.line is not None, started.output()
    url = started.line.split(" on ")[1].split()[0]
    try:
        report = tmp_path / "report.json"
        seed = os.environ.get("MLPACK_ST_SEED", "1")
        proc = subprocess.run(
            [sys.executable, "-m", "schemathesis.cli", "run", f"{url}/openapi.json", "--checks", CHECKS, "--workers", "1",
             "--no-color", "--max-examples", "100", "--seed", seed, "--report", "json", "--report-json-path", str(report)],
            capture_output=True, text=True, timeout=900, cwd=tmp_path,
        )
        assert proc.returncode == 0, proc.stdout[-15000:] + proc.stderr[-3000:]
        run = json.loads(report.read_text())
        assert run["complete"] and run["failures"] == [] and run["errors"] == []
        assert run["operations"]["tested"] == run["operations"]["total"] == 16
        assert run["test_cases"]["generated"] >= 1000, run["test_cases"]
    finally:
        started.proc.terminate()
        started.finish()
