"""Build time per stage for every example, against a hand-rolled baseline measured in the same run.

    .venv/bin/python benchmarks/build_stages.py [--repeat 3]

For each example spec the bundle is built ``--repeat`` times (``executable=False``: the
device executable has its own benchmark) and the median seconds per stage are printed.
The baseline is what a user would do by hand with the same data and estimator: fit a
fresh clone and convert it with skl2onnx. ``ratio`` = mlpack's whole build / baseline,
i.e. what the gates, the parity proof, the profile and the bundle cost on top.
A second table times the ``mlpack build`` command end to end (a fresh process, so
imports included) against ``python -c "import sklearn, skl2onnx, pandas, onnxruntime"``.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from skl2onnx import convert_sklearn
from skl2onnx.common.data_types import FloatTensorType, StringTensorType
from sklearn.base import clone

from mlpack_edge.builder import build, load_spec
from mlpack_edge.builder._inputs import model_input
from mlpack_edge.builder.convert import OPSET
from mlpack_edge.builder.data import load_data

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ("breast_cancer", "diabetes", "fleet_faults")
STAGES = ("spec", "data", "train", "evaluate", "convert", "parity", "profile", "bundle")


def _baseline(spec_path: Path, fitted: object, layout: str) -> float:
    """Fit a fresh clone on the same split and convert it: the minimum work by hand."""
    spec = load_spec(spec_path)
    ds = load_data(spec.data, spec.model.task, spec.model.seed)
    x = model_input(ds.x_train, layout)
    if layout == "matrix":
        types = [("X", FloatTensorType([None, len(ds.features)]))]
    else:
        types = [
            (f.name, FloatTensorType([None, 1]) if f.kind == "numeric" else StringTensorType([None, 1]))
            for f in ds.features
        ]
    start = time.perf_counter()
    model = clone(fitted).fit(x, ds.y_train)
    convert_sklearn(model, initial_types=types, target_opset=dict(OPSET))
    return time.perf_counter() - start


def _in_process(repeat: int) -> None:
    header = f"{'example':<14}" + "".join(f"{s:>9}" for s in STAGES) + f"{'total':>9}{'baseline':>10}{'ratio':>7}"
    print("median seconds per stage (in process, executable=False)")
    print(header)
    for name in EXAMPLES:
        spec = ROOT / "examples" / name / "mlpack.toml"
        runs: list[dict[str, float]] = []
        base: list[float] = []
        for _ in range(repeat):
            with tempfile.TemporaryDirectory(prefix="mlpack-bench-") as tmp:
                result = build(spec, Path(tmp), executable=False)
            runs.append(dict(result.stages))
            base.append(_baseline(spec, result.estimator, result.manifest["input"]["layout"]))
        med = {s: statistics.median(r[s] for r in runs) for s in STAGES}
        total = statistics.median(sum(r.values()) for r in runs)
        baseline = statistics.median(base)
        print(
            f"{name:<14}"
            + "".join(f"{med[s]:>9.3f}" for s in STAGES)
            + f"{total:>9.3f}{baseline:>10.3f}{total / baseline:>7.1f}"
        )


def _wall(cmd: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(cmd, check=True, capture_output=True)
    return time.perf_counter() - start


def _end_to_end(repeat: int) -> None:
    mlpack = str(Path(sys.executable).with_name("mlpack"))
    imports = statistics.median(
        _wall([sys.executable, "-c", "import sklearn, skl2onnx, pandas, onnxruntime"]) for _ in range(repeat)
    )
    print(f"\n`mlpack build --no-executable` wall time vs bare imports ({imports:.2f} s)")
    print(f"{'example':<14}{'seconds':>9}{'ratio':>7}")
    for name in EXAMPLES:
        with tempfile.TemporaryDirectory(prefix="mlpack-bench-") as tmp:
            secs = statistics.median(
                _wall([mlpack, "build", str(ROOT / "examples" / name), "--no-executable", "-q", "-o", tmp])
                for _ in range(repeat)
            )
        print(f"{name:<14}{secs:>9.2f}{secs / imports:>7.1f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    _in_process(args.repeat)
    _end_to_end(args.repeat)


if __name__ == "__main__":
    main()
