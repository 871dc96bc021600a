"""Every example's own training CSV, target dropped, predicts on its built executable, row for row.

The device must accept exactly what the build trained on, and answer as the training side
does: for each example that builds from a CSV, the real executable's ``predict`` reads the
whole file (every row, missing cells included) and its labels equal the fitted
estimator's ``predict`` on the same rows, its probabilities (or values) within the
bundle's parity tolerance. The brought ONNX network is checked against its committed
reference outputs (PyTorch's), the same comparison its build proves. One more project,
``tests/builder/data/r_export.csv`` (R's ``write.csv``: ``NA`` cells in a numeric and a
categorical column), checks that the executable reads as missing what the build did,
and a project with a ``datetime`` column checks the frozen runtime derives its parts
(``%Y/%m/%d %H:%M`` text, ``NA`` gaps) as the build did.

Cost: the examples are built once for the module, all into the session's runtime cache,
so the runtime is frozen at most once (a run that froze it already reuses it).
"""

from __future__ import annotations

import csv
import importlib.util
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.builder.test_datetime_build import _data as datetime_data
from tests.builder.test_datetime_build import _spec as datetime_spec

pytestmark = pytest.mark.slow

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
#: Every example that builds from a CSV. strict_gate is left out on purpose: it fails its
#: gates by design, so no executable is made (tests/builder/test_build.py checks it fails).
BUILT = ["breast_cancer", "diabetes", "fleet_faults", "fleet_faults_xgboost", "onnx_network"]
R_EXPORT = Path(__file__).resolve().parents[1] / "builder" / "data" / "r_export.csv"
R_SPEC = """[model]
name = "r-export"
version = "1.0.0"
task = "multiclass"
seed = 0

[data]
path = "r_export.csv"
target = "label"

[estimator]
class = "HistGradientBoostingClassifier"
params = { max_iter = 30 }
"""


def test_every_csv_example_is_covered() -> None:
    """A new example that trains from a CSV is added to BUILT (or consciously left out here)."""
    with_csv = {p.parent.name for p in EXAMPLES.glob("*/mlpack.toml") if "[data]" in p.read_text()}
    assert with_csv - {"strict_gate"} == set(BUILT)


@dataclass(frozen=True)
class Example:
    name: str
    executable: Path
    manifest: dict[str, Any]
    rows_csv: Path  # the training CSV, every column the model takes and nothing else
    rows: int
    labels: list[str] | None  # expected labels in file order (classification)
    outputs: np.ndarray  # expected probabilities [N, classes] or values [N]


def _expected(spec_path: Path, result: Any) -> tuple[list[str] | None, np.ndarray]:
    """The training side's answer for every row of the CSV, in file order."""
    from mlpack_edge.builder import _inputs
    from mlpack_edge.builder.byo import all_rows
    from mlpack_edge.builder.data import load_data
    from mlpack_edge.builder.spec import load_spec

    spec = load_spec(spec_path)
    if result.estimator is None:  # brought ONNX: its reference outputs
        assert spec.model.onnx is not None and spec.model.onnx.reference_outputs is not None
        with open(spec.model.onnx.reference_outputs, newline="") as fh:
            ref = list(csv.DictReader(fh))
        classes = result.manifest["output"]["classes"]
        return [r["label"] for r in ref], np.array([[float(r[f"proba_{c}"]) for c in classes] for r in ref])
    ds = load_data(spec.data, spec.model.task, spec.model.seed)
    x = _inputs.model_input(all_rows(ds, spec.data), result.manifest["input"]["layout"])
    if ds.task == "regression":
        return None, np.asarray(result.estimator.predict(x), dtype=np.float64)
    return [str(v) for v in result.estimator.predict(x)], result.estimator.predict_proba(x)


def _rows_csv(name: str, spec_path: Path, manifest: dict[str, Any], folder: Path) -> tuple[Path, int]:
    """The training CSV with only the model's columns (the target dropped), cells untouched."""
    from mlpack_edge.builder.spec import load_spec

    spec = load_spec(spec_path)
    parts = {f"{d['name']}_{p}": d["name"] for d in manifest["input"].get("datetime", []) for p in d["parts"]}
    features = list(dict.fromkeys(parts.get(f["name"], f["name"]) for f in manifest["input"]["features"]))
    with open(spec.data.path, newline="", encoding="utf-8-sig") as fh:
        rows = list(csv.DictReader(fh))
    out = folder / f"{name}-rows.csv"
    with open(out, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=features, extrasaction="ignore", lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    return out, len(rows)


@pytest.fixture(scope="module")
def examples(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Example]:
    from mlpack_edge.builder import build

    work = tmp_path_factory.mktemp("training-rows")
    (work / "r").mkdir()
    shutil.copy(R_EXPORT, work / "r" / "r_export.csv")
    (work / "r" / "mlpack.toml").write_text(R_SPEC)
    (work / "dt").mkdir()
    (work / "dt" / "data.csv").write_text(datetime_data())
    (work / "dt" / "mlpack.toml").write_text(datetime_spec())
    specs = {name: EXAMPLES / name / "mlpack.toml" for name in BUILT} | {
        "r_export": work / "r" / "mlpack.toml",
        "datetime": work / "dt" / "mlpack.toml",
    }
    built: dict[str, Example] = {}
    for name, spec_path in specs.items():
        if name == "fleet_faults_xgboost" and importlib.util.find_spec("xgboost") is None:
            continue
        result = build(spec_path, work / "dist")
        assert result.executable is not None
        labels, outputs = _expected(spec_path, result)
        rows_csv, n = _rows_csv(name, spec_path, result.manifest, work)
        built[name] = Example(name, result.executable, result.manifest, rows_csv, n, labels, outputs)
    return built


@pytest.mark.parametrize("name", [*BUILT, "r_export", "datetime"])
def test_the_training_csv_predicts_row_for_row(examples: dict[str, Example], name: str, tmp_path: Path) -> None:
    if name not in examples:
        pytest.skip("xgboost is not installed (pip install 'mlpack-edge[xgboost]')")
    ex = examples[name]
    out = tmp_path / "out.csv"
    run = subprocess.run(
        [str(ex.executable), "--allow-unsigned", "predict", str(ex.rows_csv), "-o", str(out)],
        capture_output=True, text=True, timeout=300,
    )
    assert run.returncode == 0, run.stderr
    with open(out, newline="") as fh:
        got = list(csv.DictReader(fh))
    assert len(got) == ex.rows
    refused = [(i + 1, r["error"]) for i, r in enumerate(got) if r["error"]]
    assert refused == [], f"{len(refused)} training rows refused, first: {refused[:3]}"
    tolerance = float(ex.manifest["parity"]["tolerance"])
    if ex.labels is None:
        values = np.array([float(r["value"]) for r in got])
        np.testing.assert_allclose(values, ex.outputs, rtol=0, atol=tolerance)
        return
    classes = ex.manifest["output"]["classes"]
    differ = [(i + 1, r["label"], e) for i, (r, e) in enumerate(zip(got, ex.labels)) if r["label"] != e]
    assert differ == [], f"{len(differ)} labels differ from the training side (row, device, training): {differ[:5]}"
    proba = np.array([[float(r[f"proba_{c}"]) for c in classes] for r in got])
    np.testing.assert_allclose(proba, ex.outputs, rtol=0, atol=tolerance)
