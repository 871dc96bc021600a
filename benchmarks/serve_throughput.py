"""``serve`` under a real HTTP load generator on loopback: requests/s, p50/p99, memory.

    .venv/bin/python benchmarks/serve_throughput.py [--duration 10] [--connections 16] [--batch 100]

Builds the breast_cancer example (LogisticRegression, 30 features) with the builder,
starts ``mlpack device --bundle ... serve --port 0`` as its own process, and drives it
with wrk (https://github.com/wg/wrk; on Debian/Ubuntu: ``apt-get install -y wrk``):

1. single-row POST /predict (one JSON object per request);
2. batched POST /predict (``--batch`` rows per request; rows/s reported too);
3. the same rows through MLflow's ``POST /invocations`` (``dataframe_split``) and KServe
   v2's ``infer`` (one JSON tensor per feature), against 2. as the baseline.

It reports wrk's requests/s and latency percentiles, the count of non-2xx answers
(must be 0), and the server's resident memory idle and at peak (VmHWM) — the target
for a linear model is ≤ 60 MB. Without wrk the load part is skipped with a note and
only memory is measured. wrk and the server share the machine's cores, so absolute
numbers are a floor; run it on an idle machine for comparable figures.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

from mlpack_edge.builder import build

ROOT = Path(__file__).resolve().parents[1]
WRK_HINT = "wrk not found: install it (Debian/Ubuntu: apt-get install -y wrk) to measure throughput"


def _rows(n: int) -> list[dict[str, float]]:
    """Real rows of the example CSV as JSON objects (features only)."""
    lines = (ROOT / "examples" / "breast_cancer" / "breast_cancer.csv").read_text().splitlines()
    header = lines[0].split(",")
    out = []
    for line in lines[1 : n + 1]:
        values = dict(zip(header, line.split(",")))
        values.pop("diagnosis")
        out.append({k: float(v) for k, v in values.items()})
    return out


def _memory(pid: int) -> dict[str, float]:
    """Resident and peak-resident MB of ``pid`` from /proc (Linux)."""
    status = Path(f"/proc/{pid}/status").read_text()
    got = {k: int(v) / 1024 for k, v in re.findall(r"^(VmRSS|VmHWM):\s+(\d+) kB", status, re.M)}
    return {"rss_mb": got.get("VmRSS", float("nan")), "peak_mb": got.get("VmHWM", float("nan"))}


def _start_server(bundle: Path, work: Path) -> tuple[subprocess.Popen[str], str]:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    env["PYTHONPYCACHEPREFIX"] = str(work / "pycache")
    proc = subprocess.Popen(
        [sys.executable, "-m", "mlpack_edge.runtime.cli", "--bundle", str(bundle), "--allow-unsigned", "serve", "--port", "0", "--max-connections", "256"],
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    assert proc.stderr is not None
    line = proc.stderr.readline()
    if not line.startswith("serving "):
        proc.kill()
        raise SystemExit(f"server did not start: {line}{proc.stderr.read()}")
    return proc, line.split(" on ")[1].split()[0]


def _wrk(url: str, body: str, duration: int, connections: int, work: Path, name: str, path: str = "/predict") -> dict[str, Any]:
    body_file = work / f"{name}.json"
    body_file.write_text(body)
    script = work / f"{name}.lua"
    script.write_text(
        'wrk.method = "POST"\n'
        'wrk.headers["Content-Type"] = "application/json"\n'
        f'local f = io.open("{body_file}", "r")\n'
        "wrk.body = f:read(\"*a\")\n"
        "f:close()\n"
    )
    out = subprocess.run(
        ["wrk", "-t2", f"-c{connections}", f"-d{duration}s", "--latency", "-s", str(script), f"{url}{path}"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    pct = {p: _seconds(v) for p, v in re.findall(r"^\s+(50|75|90|99)%\s+(\S+)", out, re.M)}
    bad = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    errors = re.search(r"Socket errors: (.*)", out)
    return {
        "requests_per_s": rps,
        "p50_ms": pct.get("50", float("nan")) * 1e3,
        "p99_ms": pct.get("99", float("nan")) * 1e3,
        "non_2xx": int(bad.group(1)) if bad else 0,
        "socket_errors": errors.group(1) if errors else "none",
    }


def _seconds(text: str) -> float:
    value, unit = re.match(r"([\d.]+)(us|ms|s|m)", text).groups()  # type: ignore[union-attr]
    return float(value) * {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0}[unit]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--duration", type=int, default=10, help="seconds per wrk run")
    ap.add_argument("--connections", type=int, default=16)
    ap.add_argument("--batch", type=int, default=100, help="rows per batched request")
    args = ap.parse_args()

    with tempfile.TemporaryDirectory(prefix="mlpack-serve-bench-") as tmp:
        work = Path(tmp)
        bundle = build(ROOT / "examples" / "breast_cancer" / "mlpack.toml", work / "dist", executable=False).bundle_dir
        proc, url = _start_server(bundle, work)
        try:
            rows = _rows(args.batch)
            request = urllib.request.Request(f"{url}/predict", json.dumps(rows[0]).encode(), {"Content-Type": "application/json"})
            with urllib.request.urlopen(request, timeout=10) as r:
                assert r.status == 200, r.status
            time.sleep(0.5)
            idle = _memory(proc.pid)
            results: dict[str, dict[str, Any]] = {}
            if shutil.which("wrk") is None:
                print(WRK_HINT, file=sys.stderr)
            else:
                results["single row"] = _wrk(url, json.dumps(rows[0]), args.duration, args.connections, work, "single")
                results[f"batch of {args.batch}"] = _wrk(url, json.dumps(rows), args.duration, args.connections, work, "batch")
                columns = list(rows[0])
                split = {"dataframe_split": {"columns": columns, "data": [[r[c] for c in columns] for r in rows]}}
                results["  /invocations"] = _wrk(url, json.dumps(split), args.duration, args.connections, work, "mlflow", "/invocations")
                tensors = {"inputs": [{"name": c, "shape": [len(rows), 1], "datatype": "FP64", "data": [r[c] for r in rows]}
                                      for c in columns]}
                results["  v2 infer"] = _wrk(url, json.dumps(tensors), args.duration, args.connections, work, "v2",
                                             "/v2/models/breast-cancer/infer")
            loaded = _memory(proc.pid)
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=20)

    print(f"serve: breast_cancer LogisticRegression, {args.connections} connections, {args.duration} s per run, loopback")
    for name, r in results.items():
        rows_per_s = r["requests_per_s"] * (1 if name == "single row" else args.batch)
        print(
            f"  {name:14} {r['requests_per_s']:9.0f} req/s  {rows_per_s:10.0f} rows/s  p50 {r['p50_ms']:7.2f} ms"
            f"  p99 {r['p99_ms']:7.2f} ms  non-2xx {r['non_2xx']}  socket errors: {r['socket_errors']}"
        )
    print(f"  memory: idle RSS {idle['rss_mb']:.1f} MB; after load RSS {loaded['rss_mb']:.1f} MB, peak {loaded['peak_mb']:.1f} MB (target <= 60 MB)")


if __name__ == "__main__":
    main()
