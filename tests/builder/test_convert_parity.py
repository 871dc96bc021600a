"""Conversion and the parity proof, checked with a real onnxruntime session."""

from __future__ import annotations

import json

import numpy as np
import onnxruntime as ort
import pytest

from mlpack_edge.builder.parity import UNSEEN_PROBE
from mlpack_edge.errors import ConversionError, ParityError
from mlpack_edge.runtime.golden import Golden, compare

from .conftest import Project, binary_rows, csv_text, mixed_rows, spec_text

MIXED_FEATURES = """
[data.features]
x1 = "numeric"
x2 = "numeric"
colour = { kind = "categorical", unseen = "missing" }
shape = "categorical"
"""


def test_unsupported_estimator_names_the_step_and_what_is_supported(project: Project) -> None:
    project.write(spec_text(estimator='class = "DummyClassifier"'), binary_rows())
    with pytest.raises(ConversionError) as info:
        project.build()
    msg = str(info.value)
    assert msg.startswith(
        "step 'model' (DummyClassifier) cannot be converted to ONNX: skl2onnx has no converter for it;"
        " supported classifiers: AdaBoostClassifier, "
    )
    assert "LogisticRegression" in msg and "RandomForestClassifier" in msg and "Ridge," not in msg
    assert not project.dist.exists()


def test_random_forest_trained_on_nan_is_caught(project: Project) -> None:
    # DESIGN.md: such a forest converts and runs, and is silently wrong on rows with NaN.
    project.write(
        spec_text(
            estimator='class = "RandomForestClassifier"\nparams = { n_estimators = 10, max_depth = 4 }',
            extra='[preprocess]\nnumeric = "none"\n',
        ),
        binary_rows(missing=0.3),
    )
    with pytest.raises(ParityError) as info:
        project.build()
    msg = str(info.value)
    assert msg.startswith("ONNX disagrees with scikit-learn on ")
    assert ", missing 2/2 — every disagreeing row has a missing value: this model does not treat missing" in msg
    assert msg.endswith('put an imputer in front ([preprocess] numeric = { impute = "median" })')
    assert not project.dist.exists()


def test_the_same_forest_with_an_imputer_passes(project: Project) -> None:
    project.write(
        spec_text(estimator='class = "RandomForestClassifier"\nparams = { n_estimators = 10, max_depth = 4 }'),
        binary_rows(missing=0.3),
    )
    parity = project.build().manifest["parity"]
    assert parity["passed"] and parity["label_agreement"] == 1.0 and parity["max_abs_diff"] <= 1e-4


def test_tight_tolerance_fails_and_says_by_how_much(project: Project) -> None:
    rng = np.random.default_rng(0)
    rows = [[f"{a:.4f}", f"{b:.4f}", f"{1e5 + 3e3 * a - 7e2 * b + e:.4f}"] for a, b, e in rng.normal(size=(60, 3))]
    project.write(
        spec_text(
            task="regression",
            estimator='class = "GradientBoostingRegressor"\nparams = { n_estimators = 20 }',
            extra="[parity]\ntolerance = 1e-6\n",
        ),
        csv_text(["a", "b", "y"], rows),
    )
    with pytest.raises(ParityError) as info:
        project.build()
    assert str(info.value).startswith("ONNX disagrees with scikit-learn on ")
    assert "(max abs diff " in str(info.value) and ", tolerance 1e-06): held-out " in str(info.value)
    assert "ONNX computes in float32: for outputs up to " in str(info.value)


def test_feature_names_that_are_not_identifiers_stay_onnx_input_names(project: Project) -> None:
    rows = [[f"{i % 7}.5", ["red", "blue"][i % 2], "ab"[(i // 2) % 2]] for i in range(60)]
    project.write(spec_text(target="y"), csv_text(["temp C", "colour/name", "y"], rows))
    result = project.build()
    session = ort.InferenceSession(str(result.bundle_dir / "model.onnx"), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["temp C", "colour/name"]
    assert [i["name"] for i in result.manifest["onnx"]["inputs"]] == ["temp C", "colour/name"]
    label, proba = session.run(
        None, {"temp C": np.array([[3.5]], np.float32), "colour/name": np.array([["red"]], object)}
    )
    assert proba.shape == (1, 2) and label[0] in ("a", "b")


def test_probes_cover_missing_and_unseen_and_golden_replays(project: Project) -> None:
    project.write(
        spec_text(
            task="multiclass",
            target="label",
            estimator='class = "HistGradientBoostingClassifier"\nparams = { max_iter = 20 }',
            extra=MIXED_FEATURES,
        ),
        mixed_rows(),
    )
    result = project.build()
    m = result.manifest
    nullable = [f["name"] for f in m["input"]["features"] if f["nullable"]]
    assert nullable == ["x2", "colour"]
    # 16 random + 2 beyond range + 2 per nullable feature + 1 all-missing + 2 unseen per categorical
    assert m["parity"]["probe_rows"] == 16 + 2 + 2 * 2 + 1 + 2 * 2
    golden = Golden.parse((result.bundle_dir / "golden.json").read_bytes())
    colour_values = {r["colour"] for r in golden.rows}
    assert None in colour_values and UNSEEN_PROBE in colour_values  # colour: unseen = "missing"
    assert UNSEEN_PROBE not in {r["shape"] for r in golden.rows}  # shape: unseen = "error": the device refuses it
    assert any(r["x2"] is None for r in golden.rows)
    # Replay the golden set through the bundle's ONNX file, mapping rows as a device does.
    session = ort.InferenceSession(str(result.bundle_dir / "model.onnx"), providers=["CPUExecutionProvider"])
    feeds = {}
    for f in m["input"]["features"]:
        col = [r[f["name"]] for r in golden.rows]
        if f["kind"] == "numeric":
            feeds[f["name"]] = np.array([np.nan if v is None else v for v in col], np.float32).reshape(-1, 1)
        else:
            known = set(f["categories"])
            feeds[f["name"]] = np.array(["" if v is None or v not in known else v for v in col], object).reshape(-1, 1)
    labels, proba = session.run([m["output"]["label"], m["output"]["probabilities"]], feeds)
    check = compare(golden, labels=list(labels), probabilities=proba)
    assert check.passed, check.describe()
    assert golden.tolerance == 1e-4 and len(golden.rows) <= 48
    assert json.loads((result.bundle_dir / "golden.json").read_bytes())["format"] == "mlpack.golden/1"


def test_label_is_argmax_needs_every_row_and_takes_the_first_class_on_a_tie() -> None:
    """The proof the device's recorder relies on: one row whose label is not its top class
    (an SVC's decision function against its Platt probabilities can do that) makes it False."""
    from mlpack_edge.builder.parity import label_is_argmax

    proba = np.array([[0.2, 0.8], [0.7, 0.3], [0.5, 0.5]], np.float32)
    assert label_is_argmax(np.array(["b", "a", "a"], object), proba, ["a", "b"])
    assert not label_is_argmax(np.array(["b", "a", "b"], object), proba, ["a", "b"])  # a tie is the first class
    assert not label_is_argmax(np.array(["a", "a", "a"], object), proba, ["a", "b"])
    assert label_is_argmax(np.array([1, 0, 0], np.int64), proba, [0, 1])  # int64 labels, JSON int classes
    assert not label_is_argmax(np.array([], object), proba[:0], ["a", "b"])  # nothing compared proves nothing
