"""Device executable: rebuild time, download size, installed start-up, serve memory.

    .venv/bin/python benchmarks/executable.py [--cold] [--size-only] [--runs 7]

Targets (issue 3), each measured in this run, start-up as a ratio to a baseline
measured in the same run:

* rebuild after changing only the model (runtime cache warm) <= 15 s
* download (the single file) <= 36 MB
* installed ``predict`` ready <= 1.2x the cold start of ``python -c 'import numpy, onnxruntime'``
* ``serve`` RSS <= 60 MB for a linear model (breast-cancer LogisticRegression)

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
import time
import urllib.request
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "breast_cancer"
TARGETS = {
    "rebuild_s": 15.0,
    "size_mb": 36.0,
    "start_ratio": 1.2,
    "start_ratio_no_monitor": 1.2,
    "serve_rss_mb": 60.0,
    "serve_rss_no_monitor_mb": 60.0,
}


def _timed(cmd: list[str], **kwargs: object) -> float:
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, capture_output=True, **kwargs)  # type: ignore[call-overload]
    return time.perf_counter() - t0


def _median_runs(cmd: list[str], runs: int, **kwargs: object) -> float:
    _timed(cmd, **kwargs)  # page cache warm for both sides alike
    return statistics.median(_timed(cmd, **kwargs) for _ in range(runs))


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


def _serve_rss(cmd: list[str], row_csv: Path, env: dict[str, str], requests: int = 200) -> float:
    """RSS of a ``serve`` command (and any child) after ``requests`` single-row predictions."""
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
        for _ in range(requests):
            req = urllib.request.Request(url + "/predict", body, {"Content-Type": "application/json"})
            urllib.request.urlopen(req, timeout=10).read()
        root = psutil.Process(proc.pid)
        return sum(p.memory_info().rss for p in [root, *root.children(recursive=True)]) / 1e6
    finally:
        proc.terminate()
        proc.wait(timeout=20)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cold", action="store_true", help="freeze into an empty cache first")
    parser.add_argument("--size-only", action="store_true", help="stop after the builds: sizes and build times")
    parser.add_argument("--runs", type=int, default=7)
    args = parser.parse_args()

    from mlpack.builder import build
    from mlpack.runtime.embedded import open_appended

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

        baseline = _median_runs([sys.executable, "-c", "import numpy, onnxruntime"], args.runs, env=env)
        ready = _median_runs([str(installed), "predict", str(row_csv)], args.runs, env=env)
        bare = _median_runs([str(installed), "predict", "--no-monitor", str(row_csv)], args.runs, env=env)
        python_cmd = [sys.executable, "-m", "mlpack.cli", "device", "--bundle", str(second.bundle_dir)]
        python_bare = _median_runs([*python_cmd, "predict", "--no-monitor", str(row_csv)], args.runs, env=env)
        onefile = _median_runs([str(exe), "predict", str(row_csv)], max(3, args.runs // 2), env=env)
        results["python_import_numpy_onnxruntime_s"] = round(baseline, 3)
        results["installed_predict_s"] = round(ready, 3)
        results["start_ratio"] = round(ready / baseline, 2)
        results["installed_predict_no_monitor_s"] = round(bare, 3)
        results["start_ratio_no_monitor"] = round(bare / baseline, 2)
        results["python_predict_no_monitor_s"] = round(python_bare, 3)  # same command, not frozen
        results["onefile_predict_s"] = round(onefile, 3)

        # serve as the installed service runs it (monitoring on: its state folder exists), and
        # the same command from the Python install, to separate packaging from the code it runs.
        results["serve_rss_mb"] = round(_serve_rss([str(installed), "serve"], row_csv, env), 1)
        results["serve_rss_no_monitor_mb"] = round(_serve_rss([str(installed), "serve", "--no-monitor"], row_csv, env), 1)
        results["python_serve_rss_no_monitor_mb"] = round(_serve_rss([*python_cmd, "serve", "--no-monitor"], row_csv, env), 1)
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
