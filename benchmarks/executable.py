"""Device executable: rebuild time, download size, installed start-up, serve memory.

    .venv/bin/python benchmarks/executable.py [--cold] [--size-only] [--runs 9]

Targets (issue 3), each measured in this run, start-up as a ratio to a baseline
measured in the same run:

* rebuild after changing only the model (runtime cache warm) <= 15 s
* download (the single file) <= 36 MB
* installed ``predict`` ready <= 1.2x the cold start of ``python -c 'import numpy, onnxruntime'``
* ``serve`` RSS <= 60 MB for a linear model (breast-cancer LogisticRegression)

What "ready" means here, for ``<installed>/<name> predict one-row.csv`` (output to a pipe):

* ``*_exit_s`` — the strict reading: wall time from spawning the process until it has
  exited, everything included (the monitoring agent stores its window at exit: SQLite
  writes with fsync);
* ``*_first_row_s`` — wall time until the first prediction row (the line after the CSV
  header) can be read from its stdout: what a caller waiting for the answer sees.

The baseline is the whole ``python -c 'import numpy, onnxruntime'`` process (the same
interpreter the runtime is frozen from). Each figure is the median of ``--runs`` (>= 7)
runs, the commands interleaved run by run so the shared machine's noise hits all alike,
after one warm-up run each (page cache). "monitor" runs have the agent on, as an
installed device runs (its state folder exists); "no_monitor" pass ``--no-monitor``;
"signed_monitor" is the same model built ``--sign-key`` and installed ``--trust-key`` (the
secure default: every start verifies the Ed25519 signature), agent on.

``serve`` memory is measured twice: idle after a warm-up of single-row requests, and at
peak under load (16 client threads, a connection per request). Each as RSS, USS (pages
only this process has), PSS (shared pages divided among the processes sharing them) and
anonymous RSS (RSS less file-backed pages). RSS counts every page of library code the process touched (numpy,
OpenBLAS, onnxruntime): a frozen executable's libraries are its own files, so there
USS = RSS, whereas a venv process shares them with every other Python process on the
machine; ``anon`` is the part the process allocated (heap, arenas, stacks).

``--startup-only`` stops after the installed ``predict`` figures (no onefile, no serve).
``--cold`` freezes into an empty cache first and reports how long that took (15-60 s
the first time on a machine); otherwise the user's cache is used as is. ``--size-only``
stops after the two builds (sizes and build times, no install/start-up/serve runs).
The download splits into the frozen runtime (shared by every model) and the appended
bundle (the model). Numbers on a shared machine are noisy: read the ratios, not the
absolute times.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable, Mapping
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "breast_cancer"
TARGETS = {
    "rebuild_s": 15.0,
    "size_mb": 36.0,
    "ratio_exit_monitor": 1.2,
    "ratio_exit_signed_monitor": 1.2,
    "ratio_exit_no_monitor": 1.2,
    "ratio_first_row_monitor": 1.2,
    "ratio_first_row_no_monitor": 1.2,
    "ratio_first_row_signed_monitor": 1.2,
    "serve_idle_rss_mb": 60.0,
    "serve_no_monitor_idle_rss_mb": 60.0,
}


def _run_once(cmd: list[str], env: Mapping[str, str], rows: bool) -> tuple[float, float | None]:
    """(seconds until the process exited, seconds until its second stdout line was readable)."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env)
    assert proc.stdout is not None
    first_row = None
    if rows:
        proc.stdout.readline()  # the CSV header
        if proc.stdout.readline():
            first_row = time.perf_counter() - t0
    proc.stdout.read()
    if proc.wait() != 0:
        raise RuntimeError(f"{' '.join(cmd)} exited with {proc.returncode}")
    return time.perf_counter() - t0, first_row


def _interleaved(
    commands: Mapping[str, list[str]], runs: int, env: Mapping[str, str], rows: Callable[[str], bool]
) -> dict[str, tuple[float, float | None]]:
    """Median (exit, first row) seconds of each command, run round-robin after one warm-up each."""
    times: dict[str, list[tuple[float, float | None]]] = {name: [] for name in commands}
    for name, cmd in commands.items():
        _run_once(cmd, env, rows(name))  # page cache warm for every side alike
    for _ in range(runs):
        for name, cmd in commands.items():
            times[name].append(_run_once(cmd, env, rows(name)))
    out: dict[str, tuple[float, float | None]] = {}
    for name, samples in times.items():
        firsts = [f for _, f in samples if f is not None]
        out[name] = (statistics.median(e for e, _ in samples), statistics.median(firsts) if firsts else None)
        MINIMA[name] = min(e for e, _ in samples)
    return out


MINIMA: dict[str, float] = {}  # fastest exit of each command in the last _interleaved call


def _spec_copy(work: Path, version: str, c: float) -> Path:
    folder = work / f"spec-{version}"
    shutil.copytree(EXAMPLE, folder)
    spec = folder / "mlpack.toml"
    text = spec.read_text().replace('version = "1.0.0"', f'version = "{version}"')
    spec.write_text(text.replace("C = 0.5", f"C = {c}"))
    return spec


def _one_row_csv(work: Path) -> Path:
    with open(EXAMPLE / "breast_cancer.csv", newline="") as fh:
        reader = csv.DictReader(fh)
        row = next(reader)
    row.pop("diagnosis")
    path = work / "one-row.csv"
    with open(path, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(row))
        writer.writeheader()
        writer.writerow(row)
    return path


def _memory(root: psutil.Process) -> dict[str, float]:
    """RSS, USS, PSS and anonymous RSS (MB) of a process and its children (a onefile launcher has one).

    ``anon`` is RSS less its file-backed pages (psutil's ``shared``: library code and
    data mapped from files, which the kernel can drop and reload): the heap, arenas and
    stacks the process really allocated.
    """
    got = {"rss": 0.0, "uss": 0.0, "pss": 0.0, "anon": 0.0}
    for p in [root, *root.children(recursive=True)]:
        info = p.memory_full_info()
        got["rss"] += info.rss / 1e6
        got["uss"] += info.uss / 1e6
        got["pss"] += info.pss / 1e6
        got["anon"] += (info.rss - info.shared) / 1e6
    return got


def _serve_memory(cmd: list[str], row_csv: Path, env: dict[str, str], warmup: int = 200) -> dict[str, float]:
    """Memory of a ``serve`` command idle after ``warmup`` single-row requests, and at peak under load."""
    proc = subprocess.Popen([*cmd, "--port", "0"], env=env, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stderr is not None
        line = ""
        while " on http://" not in line:  # warnings (e.g. an unsigned bundle) may come first
            line = proc.stderr.readline()
            if not line:
                raise RuntimeError(f"{cmd[0]} serve exited before listening")
        url = line.split(" on ", 1)[1].split()[0]
        urllib.request.urlopen(url + "/health", timeout=10).read()
        with open(row_csv, newline="") as fh:
            row = {k: float(v) for k, v in next(csv.DictReader(fh)).items()}
        body = json.dumps(row).encode()

        def post(n: int) -> None:
            for _ in range(n):
                req = urllib.request.Request(url + "/predict", body, {"Content-Type": "application/json"})
                urllib.request.urlopen(req, timeout=10).read()

        root = psutil.Process(proc.pid)
        post(warmup)
        time.sleep(1.0)  # idle: the agent's first tick, nothing in flight
        idle = _memory(root)
        peak = dict(idle)
        clients = [threading.Thread(target=post, args=(200,)) for _ in range(16)]
        for t in clients:
            t.start()
        while any(t.is_alive() for t in clients):
            now = _memory(root)
            peak = {k: max(peak[k], now[k]) for k in peak}
            time.sleep(0.05)
        for t in clients:
            t.join()
        return {
            **{f"idle_{k}_mb": round(v, 1) for k, v in idle.items()},
            **{f"load_{k}_mb": round(v, 1) for k, v in peak.items()},
        }
    finally:
        proc.terminate()
        proc.wait(timeout=20)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cold", action="store_true", help="freeze into an empty cache first")
    parser.add_argument("--size-only", action="store_true", help="stop after the builds: sizes and build times")
    parser.add_argument("--runs", type=int, default=9, help="runs per start-up figure (at least 7)")
    parser.add_argument("--startup-only", action="store_true", help="stop after the installed predict start-up figures")
    args = parser.parse_args()
    if args.runs < 7:
        parser.error("--runs: at least 7 (medians of fewer runs are too noisy here)")

    from mlpack_edge.builder import build
    from mlpack_edge.builder.signing import generate_key
    from mlpack_edge.runtime.embedded import open_appended

    work = Path(tempfile.mkdtemp(prefix="mlpack-bench-exe-"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLPACK_")}
    results: dict[str, object] = {}
    try:
        if args.cold:
            os.environ["MLPACK_CACHE_DIR"] = str(work / "cache")
        t0 = time.perf_counter()
        first = build(_spec_copy(work, "1.0.0", 0.5), work / "dist")
        results["first_build_s"] = round(time.perf_counter() - t0, 2)
        results["first_build_cache"] = "cold (froze the runtime)" if args.cold else "as found"

        t0 = time.perf_counter()
        second = build(_spec_copy(work, "1.0.1", 0.25), work / "dist")
        results["rebuild_s"] = round(time.perf_counter() - t0, 2)
        results["rebuild_executable_stage_s"] = round(dict(second.stages)["executable"], 2)
        exe = second.executable
        assert exe is not None and first.executable is not None
        results["size_mb"] = round(exe.stat().st_size / 1e6, 2)
        runtime_size = open_appended(exe).runtime_size
        results["size_runtime_mb"] = round(runtime_size / 1e6, 2)
        results["size_bundle_kb"] = round((exe.stat().st_size - runtime_size) / 1e3, 1)
        if args.size_only:
            _report(results)
            return

        prefix = work / "prefix"
        install = [str(exe), "install", "--prefix", str(prefix), "--allow-unsigned"]  # the benchmark builds unsigned
        subprocess.run(install, check=True, capture_output=True, env=env)
        name = second.manifest["name"]
        installed = prefix / name / "current" / name
        row_csv = _one_row_csv(work)

        # the same model signed, installed trusting its key (runtime cached: a rebuild)
        pair = generate_key(work / "keys", "bench")
        signed = build(_spec_copy(work, "1.0.2", 0.25), work / "dist-signed", sign_key=pair.private).executable
        assert signed is not None
        install_signed = [str(signed), "install", "--prefix", str(work / "prefix-signed"), "--trust-key", str(pair.public)]
        subprocess.run(install_signed, check=True, capture_output=True, env=env)
        installed_signed = work / "prefix-signed" / name / "current" / name

        python_cmd = [sys.executable, "-m", "mlpack_edge.cli", "device", "--bundle", str(second.bundle_dir)]
        commands = {
            "baseline": [sys.executable, "-c", "import numpy, onnxruntime"],
            "monitor": [str(installed), "predict", str(row_csv)],
            "signed_monitor": [str(installed_signed), "predict", str(row_csv)],
            "no_monitor": [str(installed), "predict", "--no-monitor", str(row_csv)],
            "python_no_monitor": [*python_cmd, "predict", "--no-monitor", str(row_csv)],  # same code, not frozen
        }
        timed = _interleaved(commands, args.runs, env, rows=lambda name: name != "baseline")
        baseline = timed["baseline"][0]
        results["baseline_import_numpy_onnxruntime_s"] = round(baseline, 3)
        results["baseline_import_numpy_onnxruntime_min_s"] = round(MINIMA["baseline"], 3)
        for name in ("monitor", "signed_monitor", "no_monitor", "python_no_monitor"):
            exit_s, first_s = timed[name]
            assert first_s is not None
            results[f"{name}_exit_s"] = round(exit_s, 3)
            results[f"{name}_exit_min_s"] = round(MINIMA[name], 3)
            results[f"{name}_first_row_s"] = round(first_s, 3)
            if name != "python_no_monitor":
                results[f"ratio_exit_{name}"] = round(exit_s / baseline, 2)
                results[f"ratio_first_row_{name}"] = round(first_s / baseline, 2)
        if args.startup_only:
            _report(results)
            return
        onefile = _interleaved({"onefile": [str(exe), "predict", str(row_csv)]}, 3, env, rows=lambda _: True)
        results["onefile_predict_exit_s"] = round(onefile["onefile"][0], 3)  # unpacks itself on every start

        # serve as the installed service runs it (monitoring on: its state folder exists), and
        # the same command from the Python install, to separate packaging from the code it runs.
        for name, cmd in {
            "serve": [str(installed), "serve"],
            "serve_no_monitor": [str(installed), "serve", "--no-monitor"],
            "python_serve_no_monitor": [*python_cmd, "serve", "--no-monitor"],
        }.items():
            for key, value in _serve_memory(cmd, row_csv, env).items():
                results[f"{name}_{key}"] = value
    finally:
        shutil.rmtree(work, ignore_errors=True)
    _report(results)


def _report(results: dict[str, object]) -> None:
    for key, value in results.items():
        target = TARGETS.get(key)
        verdict = ""
        if target is not None:
            verdict = f"  (target <= {target}: {'ok' if float(value) <= target else 'MISSED'})"  # type: ignore[arg-type]
        print(f"{key:36} {value}{verdict}")


if __name__ == "__main__":
    main()
