"""The real device executable's ``serve`` answers MLflow and KServe v2 clients.

The frozen breast-cancer executable (session fixture ``built``) serves on an ephemeral
port with its monitoring agent on; NVIDIA's ``tritonclient`` (binary tensors, the
default) and MLflow-shaped CSV and JSON requests get the same answers as the Python API
on the same rows, and the served ``/openapi.json`` is a valid OpenAPI document.
"""

from __future__ import annotations

import csv
import os
import re
import subprocess
from pathlib import Path

import httpx
import numpy as np
import pytest

from mlpack_edge.runtime.model import open_model

from ._builds import Built

pytestmark = pytest.mark.slow

NAME = "breast-cancer"


def _rows(rows_csv: Path) -> tuple[list[str], np.ndarray]:
    with open(rows_csv, newline="") as fh:
        reader = csv.reader(fh)
        header = next(reader)
        return header, np.array([[float(v) for v in r] for r in reader])


def test_executable_serves_mlflow_and_v2_clients(built: Built, tmp_path: Path) -> None:
    http = pytest.importorskip("tritonclient.http")
    validator = pytest.importorskip("openapi_spec_validator")
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLPACK_")}
    proc = subprocess.Popen(
        [str(built.v1), "serve", "--port", "0", "--state-dir", str(tmp_path / "state")],
        stderr=subprocess.PIPE, text=True, env=env,
    )
    assert proc.stderr is not None
    try:
        seen = []
        for _ in range(20):  # warnings (unsigned download, ...) may come first
            line = proc.stderr.readline()
            seen.append(line)
            match = re.fullmatch(rf"serving {NAME} 1\.0\.0 on (http://127\.0\.0\.1:\d+) \(Ctrl-C to stop\)\n", line)
            if match or not line:
                break
        assert match, f"no listening line: {''.join(seen)!r}"
        url = match.group(1)
        header, x = _rows(built.rows_csv)
        model = open_model(built.bundle1, threads=1)
        labels = model.predict(x)
        proba = model.predict_proba(x)

        client = http.InferenceServerClient(url.removeprefix("http://"))
        assert client.is_server_live() and client.is_model_ready(NAME)
        meta = client.get_model_metadata(NAME)
        assert [t["name"] for t in meta["inputs"]] == header
        inputs = []
        for j, t in enumerate(meta["inputs"]):
            i = http.InferInput(t["name"], [len(x), 1], t["datatype"])
            i.set_data_from_numpy(x[:, j : j + 1].astype(np.float32))
            inputs.append(i)
        result = client.infer(NAME, inputs)
        assert [v.decode() for v in result.as_numpy("label")] == list(labels)
        assert len(set(result.as_numpy("id").tolist())) == len(x)  # the agent runs: ids for /feedback
        np.testing.assert_array_equal(result.as_numpy("probabilities"), proba)
        matrix = http.InferInput("input-0", list(x.shape), "FP64")  # one [N, 30] tensor: all features are numeric
        matrix.set_data_from_numpy(x)
        np.testing.assert_array_equal(client.infer(NAME, [matrix]).as_numpy("probabilities"), proba)

        with httpx.Client(base_url=url, timeout=30) as c:
            r = c.post("/invocations", content=built.rows_csv.read_bytes(), headers={"Content-Type": "text/csv"})
            assert r.json()["predictions"] == list(labels)
            split = {"dataframe_split": {"columns": header, "data": x.tolist()}}
            answer = c.post("/invocations", json=split).json()
            assert answer["predictions"] == list(labels)
            fb = c.post("/feedback", json=[{"id": i, "label": y} for i, y in zip(answer["ids"], labels)]).json()
            assert fb["counts"] == {"matched": len(x)}
            validator.validate(c.get("/openapi.json").json())
            metrics = c.get("/metrics").text
        assert f'mlpack_rows_total{{outcome="predicted"}} {4 * len(x)}' in metrics
        recent = re.search(r"^mlpack_recent_rows(?:{[^}]*})? (\S+)$", metrics, re.M)
        assert recent and float(recent.group(1)) == 4 * len(x), [m for m in metrics.splitlines() if "recent" in m]
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, proc.stderr.read()
