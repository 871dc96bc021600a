"""``serve`` under wrk on loopback, interleaved with the servers a user would write instead.

    .venv/bin/python benchmarks/serve_throughput.py [--rounds 3] [--duration 5] [--connections 16]
        [--batch 100] [--models breast_cancer,fleet_faults] [--loads single,batch] [--protocols]

For each example model (breast_cancer: LogisticRegression on 30 numeric features;
fleet_faults: HistGradientBoosting with categorical columns), built with the builder, it
starts in turn, round after round (so the machine's load moves them alike):

* ``mlpack serve`` with the monitoring agent on (``--state-dir``, as an installed service runs);
* ``mlpack serve --no-monitor``;
* ``installed`` (only when listed in ``--servers``): the device executable frozen by
  ``mlpack build`` (PyInstaller; the first freeze on a machine takes about a minute),
  installed with ``install --prefix`` and run as ``<installed launcher> serve``, agent on
  as an installed device runs it: the installed default, not the source checkout's
  interpreter (the two differ: the frozen runtime runs on a shared ``libpython``);
* ``uvicorn``: a Starlette + onnxruntime app, 1 worker, uvloop + httptools, access log off
  (``benchmarks/_serve_baselines.py``; needs ``pip install uvicorn starlette uvloop httptools``);
* ``stdlib``: ``ThreadingHTTPServer`` + onnxruntime, keep-alive, ``TCP_NODELAY``.

Each server gets a single-row ``POST /predict`` run and a ``--batch``-row run of wrk
(``-t2 -c<connections>``; on Debian/Ubuntu ``apt-get install -y wrk``). Memory is USS
(``psutil``'s ``memory_full_info().uss``: the pages only this process holds) idle after one
request, and the highest USS sampled every 0.1 s during the load. Reported: min and
median over the rounds of req/s, p50, p99 and the server's CPU time per request (user +
system, all its threads: the figure a loaded shared machine moves least), split into the
main thread and the others (``serve``'s monitoring agent, onnxruntime's pool) and the system
part, and the ratios against ``uvicorn`` (speed) and ``stdlib`` (memory). The benchmark's own process has numpy
and onnxruntime loaded, so their library pages are shared, not in any server's USS.
``--protocols`` adds MLflow ``/invocations`` (``dataframe_split``) and KServe v2 ``infer``
(one JSON tensor per feature) runs of the same batch against ``serve`` (agent on) alone.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import psutil

from mlpack_edge.builder import build

ROOT = Path(__file__).resolve().parents[1]
BASELINES = Path(__file__).resolve().parent / "_serve_baselines.py"
SERVERS = ("serve", "serve --no-monitor", "uvicorn", "stdlib")  # the default; "installed" on request
TARGETS = {"breast_cancer": "diagnosis", "fleet_faults": "fault"}


def _rows(example: str, n: int) -> list[dict[str, Any]]:
    """Real rows of the example CSV as JSON objects (features only; numbers as numbers)."""
    lines = (ROOT / "examples" / example / f"{example}.csv").read_text().splitlines()
    header = lines[0].split(",")
    spec = (ROOT / "examples" / example / "mlpack.toml").read_text()
    categorical = {c for c in header if re.search(rf'^{c}\s*=\s*(\{{[^}}]*"categorical"|"categorical")', spec, re.M)}
    out = []
    for line in lines[1 : n + 1]:
        row: dict[str, Any] = {}
        for k, v in zip(header, line.split(",")):
            if k == TARGETS[example]:
                continue
            row[k] = v if k in categorical else (float(v) if v else None)
        out.append(row)
    return out


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _install(spec: Path, work: Path) -> Path:
    """Freeze and install the example's device executable; returns the installed launcher."""
    result = build(spec, work / "dist-exe" / spec.parent.name)
    assert result.executable is not None
    prefix = work / f"prefix-{spec.parent.name}"
    subprocess.run([str(result.executable), "install", "--prefix", str(prefix), "--allow-unsigned"],
                   check=True, capture_output=True, env=_device_env())
    name = result.manifest["name"]
    print(f"{spec.parent.name}: installed {result.executable.name} ({result.executable.stat().st_size / 1e6:.2f} MB)", flush=True)
    return prefix / name / "current" / name


def _main_thread_cpu(server: psutil.Process) -> float:
    """CPU seconds of the server's main thread (the one whose id is the pid): the other threads
    (``serve``'s monitoring agent, onnxruntime's pool) are the rest of the process's figure."""
    return next((t.user_time + t.system_time for t in server.threads() if t.id == server.pid), 0.0)


def _device_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("MLPACK_")}


def _start(kind: str, bundle: Path, work: Path, launcher: Path | None = None) -> tuple[subprocess.Popen[bytes], str]:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    env["PYTHONPYCACHEPREFIX"] = str(work / "pycache")
    port = _free_port()
    if kind == "installed":
        assert launcher is not None
        cmd = [str(launcher), "serve", "--port", str(port), "--max-connections", "256"]
        env = _device_env()
    elif kind.startswith("serve"):
        cmd = [sys.executable, "-m", "mlpack_edge.runtime.cli", "--bundle", str(bundle), "--allow-unsigned", "serve",
               "--port", str(port), "--max-connections", "256"]
        cmd += ["--no-monitor"] if "no-monitor" in kind else ["--state-dir", str(work / f"state-{port}")]
    else:
        cmd = [sys.executable, str(BASELINES), kind, str(bundle / "model.onnx"), str(port)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    return proc, f"http://127.0.0.1:{port}"


def _ready(proc: subprocess.Popen[bytes], url: str, row: dict[str, Any]) -> None:
    request = urllib.request.Request(f"{url}/predict", json.dumps(row).encode(), {"Content-Type": "application/json"})
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"server exited with {proc.returncode}: {proc.args}")
        try:
            with urllib.request.urlopen(request, timeout=5) as r:
                if r.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError):
            time.sleep(0.1)
    raise SystemExit(f"server did not answer: {proc.args}")


def _uss_mb(pid: int) -> float:
    return psutil.Process(pid).memory_full_info().uss / 2**20


class _PeakUss(threading.Thread):
    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.pid, self.peak, self._done = pid, 0.0, threading.Event()

    def run(self) -> None:
        while not self._done.wait(0.1):
            try:
                self.peak = max(self.peak, _uss_mb(self.pid))
            except psutil.Error:
                return

    def stop(self) -> float:
        self._done.set()
        self.join()
        return self.peak


def _wrk(url: str, body: str, duration: int, connections: int, work: Path, path: str = "/predict") -> dict[str, Any]:
    body_file = work / "body.json"
    body_file.write_text(body)
    script = work / "body.lua"
    script.write_text(
        'wrk.method = "POST"\n'
        'wrk.headers["Content-Type"] = "application/json"\n'
        f'local f = io.open("{body_file}", "r")\n'
        "wrk.body = f:read(\"*a\")\n"
        "f:close()\n"
    )
    out = subprocess.run(
        ["wrk", "-t2", f"-c{connections}", f"-d{duration}s", "--latency", "-s", str(script), f"{url}{path}"],
        capture_output=True, text=True, check=True,
    ).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    requests = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    pct = {p: _seconds(v) for p, v in re.findall(r"^\s+(50|75|90|99)%\s+(\S+)", out, re.M)}
    bad = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    errors = re.search(r"Socket errors: (.*)", out)
    return {
        "rps": rps,
        "requests": requests,
        "p50": pct.get("50", float("nan")) * 1e3,
        "p99": pct.get("99", float("nan")) * 1e3,
        "non_2xx": int(bad.group(1)) if bad else 0,
        "socket_errors": errors.group(1) if errors else "",
    }


def _seconds(text: str) -> float:
    value, unit = re.match(r"([\d.]+)(us|ms|s|m)", text).groups()  # type: ignore[union-attr]
    return float(value) * {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0}[unit]


def _one_server(
    kind: str, bundle: Path, work: Path, rows: list[dict[str, Any]], args: argparse.Namespace, launcher: Path | None = None
) -> dict[str, Any]:
    proc, url = _start(kind, bundle, work, launcher)
    try:
        _ready(proc, url, rows[0])
        time.sleep(0.5)
        got: dict[str, Any] = {"idle_uss": _uss_mb(proc.pid)}
        peak = _PeakUss(proc.pid)
        peak.start()
        server = psutil.Process(proc.pid)
        for load, body in (("single", json.dumps(rows[0])), ("batch", json.dumps(rows))):
            if load not in args.loads:
                continue
            cpu0, main0 = server.cpu_times(), _main_thread_cpu(server)
            got[load] = _wrk(url, body, args.duration, args.connections, work)
            cpu1, main1 = server.cpu_times(), _main_thread_cpu(server)
            per = 1e6 / max(got[load]["requests"], 1)
            got[load]["cpu_us"] = (cpu1.user + cpu1.system - cpu0.user - cpu0.system) * per
            got[load]["sys_us"] = (cpu1.system - cpu0.system) * per
            got[load]["main_us"] = (main1 - main0) * per
        if args.protocols and kind == "serve":
            columns = list(rows[0])
            split = {"dataframe_split": {"columns": columns, "data": [[r[c] for c in columns] for r in rows]}}
            got["/invocations"] = _wrk(url, json.dumps(split), args.duration, args.connections, work, "/invocations")
            tensors = {"inputs": [{"name": c, "shape": [len(rows), 1], "datatype": "BYTES" if isinstance(rows[0][c], str) else "FP64",
                                   "data": [r[c] for r in rows]} for c in columns]}
            name = json.loads((bundle / "manifest.json").read_text())["name"]
            got["v2 infer"] = _wrk(url, json.dumps(tensors), args.duration, args.connections, work, f"/v2/models/{name}/infer")
        got["loaded_uss"] = peak.stop()
        return got
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _stats(values: list[float]) -> tuple[float, float]:
    return min(values), statistics.median(values)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--duration", type=int, default=5, help="seconds per wrk run")
    ap.add_argument("--connections", type=int, default=16)
    ap.add_argument("--batch", type=int, default=100, help="rows per batched request")
    ap.add_argument("--models", default="breast_cancer,fleet_faults")
    ap.add_argument("--servers", default=",".join(SERVERS), help="of serve, 'serve --no-monitor', installed, uvicorn, stdlib")
    ap.add_argument("--loads", default="single,batch", help="of single, batch: which wrk runs to make")
    ap.add_argument("--protocols", action="store_true", help="also MLflow /invocations and KServe v2 infer against serve")
    args = ap.parse_args()
    if shutil.which("wrk") is None:
        raise SystemExit("wrk not found: install it (Debian/Ubuntu: apt-get install -y wrk)")
    servers = args.servers.split(",")
    args.loads = args.loads.split(",")

    with tempfile.TemporaryDirectory(prefix="mlpack-serve-bench-") as tmp:
        work = Path(tmp)
        for example in args.models.split(","):
            bundle = build(ROOT / "examples" / example / "mlpack.toml", work / "dist" / example, executable=False).bundle_dir
            launcher = _install(ROOT / "examples" / example / "mlpack.toml", work) if "installed" in servers else None
            rows = _rows(example, args.batch)
            runs: dict[str, list[dict[str, Any]]] = {k: [] for k in servers}
            for r in range(args.rounds):
                for kind in servers if r % 2 == 0 else servers[::-1]:  # alternate the order too
                    runs[kind].append(_one_server(kind, bundle, work, rows, args, launcher))
            _report(example, runs, args)


def _report(example: str, runs: dict[str, list[dict[str, Any]]], args: argparse.Namespace) -> None:
    print(f"\n{example}: wrk -t2 -c{args.connections}, {args.duration} s per run, {args.rounds} rounds (min / median);"
          f" batch = {args.batch} rows")
    base_speed = runs.get("uvicorn")
    base_mem = runs.get("stdlib")
    for load in ("single", "batch", "/invocations", "v2 infer"):
        for kind, rs in runs.items():
            if not rs or load not in rs[0]:
                continue
            rps = _stats([x[load]["rps"] for x in rs])
            p50 = _stats([x[load]["p50"] for x in rs])
            p99 = _stats([x[load]["p99"] for x in rs])
            cpu = _stats([x[load]["cpu_us"] for x in rs]) if "cpu_us" in rs[0][load] else None
            bad = sum(x[load]["non_2xx"] for x in rs)
            sock = {x[load]["socket_errors"] for x in rs} - {""}
            line = (f"  {load:12} {kind:18} {rps[0]:8.0f} / {rps[1]:8.0f} req/s   p50 {p50[0]:6.2f} / {p50[1]:6.2f} ms"
                    f"   p99 {p99[0]:6.2f} / {p99[1]:6.2f} ms")
            if cpu is not None:
                line += f"   CPU {cpu[0]:6.0f} / {cpu[1]:6.0f} us/req"
            if base_speed and kind != "uvicorn" and load in base_speed[0]:
                b = statistics.median([x[load]["rps"] for x in base_speed])
                bp = statistics.median([x[load]["p99"] for x in base_speed])
                line += f"   x{rps[1] / b:4.2f} uvicorn req/s, p99 x{p99[1] / bp:4.2f}"
                if cpu is not None:
                    bc = statistics.median([x[load]["cpu_us"] for x in base_speed])
                    line += f", CPU/req x{cpu[1] / bc:4.2f}"
            if bad or sock:
                line += f"   non-2xx {bad} socket errors {sorted(sock)}"
            print(line)
            if cpu is not None and "main_us" in rs[0][load]:
                main = _stats([x[load]["main_us"] for x in rs])
                other = _stats([x[load]["cpu_us"] - x[load]["main_us"] for x in rs])
                system = _stats([x[load]["sys_us"] for x in rs])
                print(f"  {'':12} {'':18} CPU us/req (min / median): main thread {main[0]:.0f} / {main[1]:.0f},"
                      f" other threads {other[0]:.0f} / {other[1]:.0f}, of all: system {system[0]:.0f} / {system[1]:.0f}")
    for kind, rs in runs.items():
        idle = _stats([x["idle_uss"] for x in rs])
        loaded = _stats([x["loaded_uss"] for x in rs])
        line = f"  USS          {kind:18} idle {idle[0]:5.1f} / {idle[1]:5.1f} MB   loaded {loaded[0]:5.1f} / {loaded[1]:5.1f} MB"
        if base_mem and kind != "stdlib":
            bi = statistics.median([x["idle_uss"] for x in base_mem])
            bl = statistics.median([x["loaded_uss"] for x in base_mem])
            line += f"   x{idle[1] / bi:4.2f} / x{loaded[1] / bl:4.2f} stdlib"
        print(line)
    sys.stdout.flush()


if __name__ == "__main__":
    main()
