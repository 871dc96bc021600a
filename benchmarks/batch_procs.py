"""Batch throughput, our ``Model.predict_proba`` vs a default ``InferenceSession``, each side in its own process.

    .venv/bin/python benchmarks/batch_procs.py [--rounds 12] [--calls 6] [--batch-rows 20000]

Issue 14 goal 4b: a batch through the Python API at ≥ 0.95× the throughput of an
``InferenceSession`` with default options. ``predict_latency.py`` times both in one
process, where the 2-thread sessions' spinning workers compete with each other on a
2-core machine (its readings swing 0.6-1.4×). Here each side runs in a fresh Python
process (imports, load, 3 warm-up calls, then ``--calls`` timed calls of the same batch,
read from one ``.npy``), the processes alternate side by side, model by model, for
``--rounds`` rounds (many short rounds: on a shared machine the load moves within minutes,
and both sides should sample the same spread of it). Bundles are the breast_cancer ones of
``predict_latency.py``, built once.

Sides: ``api`` (``open_model(bundle).predict_proba(X)``), ``ort`` (``InferenceSession(path)
.run(None, {"X": X})``, default options: labels and probabilities), ``ort_proba`` (the same
session asked for the probabilities only, as ``predict_proba`` does); a diagnostic one can
be added with ``--sides``: ``ort_batch``, an ``InferenceSession`` with the options of the
runtime's large-batch session (``session_options(batch_threads(), spinning=True)``), asked
for the probabilities only.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

MODELS = ("LogisticRegression", "RandomForest", "HistGradientBoosting", "MLP")


def _side(side: str, bundle: Path) -> Callable[[Any], Any]:
    """The call a side times on the batch (imports only what that side needs)."""
    if side == "api":
        from mlpack_edge.runtime import open_model

        return open_model(bundle).predict_proba
    import onnxruntime as ort

    if side in ("ort", "ort_proba"):
        sess = ort.InferenceSession(str(bundle / "model.onnx"), providers=["CPUExecutionProvider"])
    elif side == "ort_batch":
        from mlpack_edge.runtime.session import batch_threads, session_options

        so = session_options(batch_threads(), spinning=True)
        sess = ort.InferenceSession(str(bundle / "model.onnx"), so, providers=["CPUExecutionProvider"])
    else:
        raise SystemExit(f"--sides: expected api, ort, ort_proba or ort_batch, got {side!r}")
    # predict_proba asks onnxruntime for the probabilities only; so do all but the plain ``ort``.
    outputs = None if side == "ort" else [o.name for o in sess.get_outputs() if o.name == "probabilities"]
    return lambda X: sess.run(outputs, {"X": X})


def child(side: str, bundle: Path, x_path: Path, calls: int) -> None:
    """One process of one side: print the ``calls`` timed seconds as JSON."""
    import numpy as np

    X = np.load(x_path)
    f = _side(side, bundle)
    for _ in range(3):
        f(X)
    times = []
    for _ in range(calls):
        t = time.perf_counter()
        f(X)
        times.append(time.perf_counter() - t)
    print(json.dumps(times))


def _bundles(work: Path, models: list[str], batch_rows: int) -> tuple[dict[str, Path], Path]:
    """Build the breast_cancer bundles (predict_latency's code) and write the batch as float32 .npy."""
    import numpy as np

    import predict_latency as pl  # benchmarks/ is sys.path[0] when run as a script

    bundles: dict[str, Path] = {}
    for label in models:
        est, scale = pl.ESTIMATORS[label]
        bundles[label] = pl._build(work, label, est, scale).bundle_dir
    _, frame = pl._rows(work / models[0] / "mlpack.toml")
    x = frame.to_numpy(dtype=np.float32)
    X = np.ascontiguousarray(np.tile(x, (-(-batch_rows // len(x)), 1))[:batch_rows])
    np.save(work / "batch.npy", X)
    return bundles, work / "batch.npy"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=12)
    ap.add_argument("--calls", type=int, default=6, help="timed calls per process")
    ap.add_argument("--batch-rows", type=int, default=20_000)
    ap.add_argument("--models", default=",".join(MODELS))
    ap.add_argument("--sides", default="api,ort,ort_proba", help="the first is ours, each other one a baseline")
    ap.add_argument("--child", nargs=3, metavar=("SIDE", "BUNDLE", "NPY"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        side, bundle, npy = args.child
        child(side, Path(bundle), Path(npy), args.calls)
        return
    models, sides = args.models.split(","), args.sides.split(",")
    times: dict[tuple[str, str], list[float]] = {(m, s): [] for m in models for s in sides}
    load = [os.getloadavg()[0]]
    with tempfile.TemporaryDirectory(prefix="mlpack-batchprocs-") as tmp:
        bundles, npy = _bundles(Path(tmp), models, args.batch_rows)
        load.append(os.getloadavg()[0])
        for r in range(args.rounds):
            for m in models:
                for s in sides:
                    cmd = [sys.executable, __file__, "--calls", str(args.calls), "--child", s, str(bundles[m]), str(npy)]
                    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
                    times[(m, s)] += json.loads(out.splitlines()[-1])
            load.append(os.getloadavg()[0])
            print(f"round {r + 1}/{args.rounds} load {load[-1]:.2f}", file=sys.stderr)
    ours, bases = sides[0], sides[1:]
    print(f"\nBatch of {args.batch_rows} rows, each side in its own process, {args.rounds} rounds x {args.calls} calls"
          f" (target {ours} >= 0.95x throughput); load average {min(load):.2f}-{max(load):.2f}")
    head = "".join(f" {s + ' min':>14} {s + ' med':>14}" for s in sides)
    ratios = "".join(f" {'/' + b + ' min':>15} {'/' + b + ' med':>15}" for b in bases)
    print(f"{'model':22}{head}{ratios}")
    for m in models:
        cells = "".join(f" {min(times[(m, s)]) * 1e3:14.2f} {statistics.median(times[(m, s)]) * 1e3:14.2f}" for s in sides)
        a = times[(m, ours)]
        cells += "".join(
            f" {min(times[(m, b)]) / min(a):15.2f} {statistics.median(times[(m, b)]) / statistics.median(a):15.2f}" for b in bases
        )
        print(f"{m:22}{cells}")
    print(f"(times in ms; a ratio is the baseline's time / {ours}'s = {ours}'s throughput / the baseline's)")


if __name__ == "__main__":
    main()
