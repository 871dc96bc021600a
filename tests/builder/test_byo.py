"""Bring your own ONNX: bind, gate, prove against reference outputs, bundle for the unchanged runtime."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from mlpack_edge.runtime import open_model
from mlpack_edge.runtime.selftest import self_test

from . import _onnx_graphs as graphs
from .conftest import Project, binary_rows, mixed_rows, regression_rows

CLASSES = ["no", "yes"]


def _spec(extra_model: str = "", gates: str = '["roc_auc >= 0.7"]', task: str = "binary", target: str = "y",
          tail: str = "") -> str:
    return (
        f'[model]\nname = "net"\nversion = "1.0.0"\ntask = "{task}"\n{extra_model}\n'
        f'[data]\npath = "data.csv"\ntarget = "{target}"\n\n[evaluate]\ngates = {gates}\n{tail}'
    )


def _x(csv_text: str, cols: list[str]) -> np.ndarray:
    frame = pd.read_csv(io.StringIO(csv_text))
    return frame[cols].to_numpy(np.float32)


def _binary(project: Project, head: str = "softmax", extra: str = "", reference: bool = True, **kw: object) -> str:
    data = binary_rows(missing=0.0)
    (project.root / "net.onnx").write_bytes(graphs.linear_classifier(head, **kw))  # type: ignore[arg-type]
    proba = graphs.softmax(_x(data, ["a", "b", "c"]) @ graphs.W + graphs.B)
    if reference:
        (project.root / "expected.csv").write_text(graphs.reference_csv(proba, CLASSES))
    model = 'onnx = "net.onnx"\n' + ('reference_outputs = "expected.csv"\n' if reference else "") + extra
    project.write(_spec(model), data)
    return data


def test_network_with_reference_outputs_is_gated_proven_and_runs_on_the_runtime(project: Project) -> None:
    data = _binary(project)
    result = project.cli()
    assert result.exit_code == 0, result.output
    assert "appended label (argmax)" in result.output
    assert "160 data rows agree with expected.csv (max abs diff " in result.output
    bundle = project.dist / "net-1.0.0"
    m = json.loads((bundle / "manifest.json").read_bytes())
    p = m["parity"]
    assert p["passed"] and p["rows"] == 160 and p["against"] == "reference outputs" and p["reference"] == "expected.csv"
    assert p["max_abs_diff"] < 1e-6 and m["gates"][0]["passed"] and m["metrics"]["roc_auc"] > 0.7
    assert m["input"]["layout"] == "matrix" and m["onnx"]["inputs"] == [{"name": "x", "dtype": "float32", "width": 3}]
    assert m["output"] == {"classes": CLASSES, "label": "label", "probabilities": "probs"}
    lin = m["lineage"]
    assert lin["estimator"] == "ONNX model (numpy-test)" and lin["onnx_file"] == "net.onnx" and len(lin["onnx_sha256"]) == 64
    assert "proven" not in p and p["label_is_argmax"] is True
    # The unchanged runtime serves it: labels by name, probabilities as numpy computed them.
    model = open_model(bundle)
    x = _x(data, ["a", "b", "c"])[:5]
    expected = graphs.softmax(x @ graphs.W + graphs.B)
    np.testing.assert_allclose(model.predict_proba(x), expected, atol=1e-6)
    assert list(model.predict(x)) == [CLASSES[i] for i in expected.argmax(axis=1)]
    assert self_test(model).passed
    card = (bundle / "model_card.html").read_text()
    assert "Parity: ONNX against the reference outputs" in card and "parity passed" in card


def test_without_reference_outputs_parity_is_recorded_as_not_proven(project: Project) -> None:
    _binary(project, reference=False)
    result = project.build()
    p = result.manifest["parity"]
    assert p["status"] == "not proven (no reference outputs)" and p["proven"] is False and p["max_abs_diff"] is None
    assert p["label_is_argmax"] is True  # the graph's own answers: its label is its top class
    card = (result.bundle_dir / "model_card.html").read_text()
    assert "parity not proven" in card and "Parity: not proven" in card
    assert "no reference outputs were given" in card
    golden = json.loads((result.bundle_dir / "golden.json").read_bytes())
    assert len(golden["rows"]) == 32  # every held-out row (all admissible), answered by the graph itself


@pytest.mark.parametrize(
    ("head", "extra", "appended"),
    [
        ("logits", 'onnx_outputs = { logits = "logits" }\n', "softmax, label (argmax)"),
        ("sigmoid1", "", "[1 - p, p], label (argmax)"),
    ],
)
def test_heads_mlpack_completes(project: Project, head: str, extra: str, appended: str) -> None:
    _binary(project, head=head, extra=extra)
    result = project.cli()
    assert result.exit_code == 0, result.output
    assert f"appended {appended}" in result.output
    assert json.loads((project.dist / "net-1.0.0" / "manifest.json").read_bytes())["parity"]["max_abs_diff"] < 1e-6


def _no_numeric_gaps(text: str) -> str:
    frame = pd.read_csv(io.StringIO(text), dtype=str, keep_default_na=False)
    frame["x2"] = frame["x2"].replace("", "0.0")
    return frame.to_csv(index=False)


def test_onnx_on_the_command_line_and_features_read_from_the_graph(project: Project, tmp_path: Path) -> None:
    data = _no_numeric_gaps(mixed_rows())
    model_file = tmp_path / "elsewhere.onnx"
    model_file.write_bytes(graphs.columns_classifier())
    project.write(_spec(task="multiclass", target="label", gates='["accuracy >= 0.0"]'), data)
    result = project.cli("--onnx", str(model_file))
    assert result.exit_code == 0, result.output
    m = json.loads((project.dist / "net-1.0.0" / "manifest.json").read_bytes())
    assert m["input"]["layout"] == "columns"
    assert [(f["name"], f["kind"]) for f in m["input"]["features"]] == [
        ("x1", "numeric"), ("x2", "numeric"), ("colour", "categorical"), ("shape", "categorical")
    ]
    assert m["parity"]["status"] == "not proven (no reference outputs)"
    model = open_model(project.dist / "net-1.0.0")
    pred = model.predict_one({"x1": 0.3, "x2": 1.0, "colour": None, "shape": "round"})
    assert pred.label in ("A", "B", "C") and abs(sum(pred.probabilities.values()) - 1) < 1e-5
    assert self_test(model).passed


def test_regression_with_reference_outputs(project: Project) -> None:
    data = regression_rows().replace(",,", ",0.0,")  # no gaps: this network has no answer for NaN
    x = _x(data, ["x1", "x2", "x3"])
    (project.root / "reg.onnx").write_bytes(graphs.linear_regressor())
    values = (x @ np.array([[3.0], [-2.0], [0.5]], np.float32) + 10.0).ravel()
    (project.root / "expected.csv").write_text(graphs.reference_csv(values=values))
    project.write(
        _spec('onnx = "reg.onnx"\nreference_outputs = "expected.csv"\n', gates='["r2 >= 0.5"]', task="regression"),
        data,
    )
    m = project.build().manifest
    assert m["parity"]["passed"] and m["parity"]["rows"] == 150 and m["output"] == {"value": "y"}


def _fails(project: Project) -> str:
    result = project.cli()
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output and not project.dist.exists()
    last = result.output.splitlines()[-1]
    return last.replace(str(project.root) + "/", "")


def test_not_onnx(project: Project) -> None:
    _binary(project)
    (project.root / "net.onnx").write_text("a,b\n1,2\n")
    assert _fails(project) == "Error: net.onnx: not an ONNX model (expected an ONNX protobuf file, e.g. from torch.onnx.export)"


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        ({"width": 2}, "Error: net.onnx: input 'x' has shape [N, 2], expected [N, 3] for the 3 features (a, b, c)"),
        (
            {"batch": 1},
            "Error: net.onnx: input 'x' has a fixed batch size 1 ([1, 3]); export it with a dynamic first dimension"
            " (torch.onnx.export(..., dynamic_axes={'x': {0: 'batch'}}))",
        ),
        ({"opset": 99}, "Error: net.onnx: opset ai.onnx 99 is newer than onnxruntime "),
    ],
)
def test_inputs_and_opsets_the_device_cannot_take(project: Project, kwargs: dict[str, object], expected: str) -> None:
    _binary(project, **kwargs)
    assert _fails(project).startswith(expected)


def test_inputs_named_unlike_the_features(project: Project) -> None:
    project.write(_spec('onnx = "net.onnx"\n', task="multiclass", target="label", gates="[]")
                  + '\n[data.features]\nx1 = "numeric"\nx2 = "numeric"\ncolor = "categorical"\nshape = "categorical"\n',
                  mixed_rows().replace("colour", "color"))
    (project.root / "net.onnx").write_bytes(graphs.columns_classifier())
    assert _fails(project) == (
        "Error: net.onnx: the model's inputs (x1, x2, colour, shape) do not match the features (x1, x2, color, shape):"
        " no input for feature(s) color; input(s) colour are not features"
    )


def test_a_network_that_answers_nan_for_missing_values(project: Project) -> None:
    (project.root / "net.onnx").write_bytes(graphs.columns_classifier())
    project.write(_spec('onnx = "net.onnx"\n', task="multiclass", target="label", gates="[]"), mixed_rows())
    assert _fails(project) == (
        "Error: net.onnx: the model answers NaN or infinity on 4 of 48 held-out rows, each with a missing value:"
        " the model does not handle missing values; fill them in before export (or in the graph),"
        " or make those features non-nullable"
    )


def test_no_probabilities_for_a_classifier(project: Project) -> None:
    _binary(project, head="label")
    assert _fails(project) == (
        "Error: net.onnx: the model has no class probabilities (outputs: cls int64 [N]); a classifier bundle ships them"
        ' and gates such as roc_auc need them: export probabilities [N, C] or logits ([model] onnx_outputs = { logits = "..." })'
    )


def test_logits_passed_off_as_probabilities(project: Project) -> None:
    _binary(project, head="logits")
    msg = _fails(project)
    assert msg.startswith("Error: net.onnx: output 'logits' does not hold probabilities on the held-out rows (values ")
    assert msg.endswith('if it holds logits, set [model] onnx_outputs = { logits = "logits" }')


def test_reference_outputs_of_the_wrong_shape(project: Project) -> None:
    _binary(project)
    ref = project.root / "expected.csv"
    lines = ref.read_text().splitlines()
    ref.write_text("\n".join(lines[:-3]) + "\n")
    assert _fails(project) == (
        "Error: expected.csv: 157 rows of reference outputs, but the data has 160 rows (one per data row, same order)"
    )
    ref.write_text("\n".join(line.split(",")[0] for line in lines) + "\n")
    assert _fails(project) == (
        "Error: expected.csv: expected columns proba_no, proba_yes (one per class, optionally label),"
        " missing proba_yes (found proba_no)"
    )


def test_reference_outputs_that_disagree_fail_parity(project: Project) -> None:
    _binary(project)
    ref = project.root / "expected.csv"
    lines = ref.read_text().splitlines()
    no, yes = map(float, lines[5].split(","))
    lines[5] = f"{no - 0.01:.9g},{yes + 0.01:.9g}"
    ref.write_text("\n".join(lines) + "\n")
    assert _fails(project) == (
        "Error: expected.csv: the ONNX model disagrees with the reference outputs on 1 of 160 rows"
        " (max abs diff 0.01, tolerance 0.0001); first at data line 6"
    )


def test_estimator_and_onnx_together_is_a_spec_error(project: Project) -> None:
    _binary(project)
    project.spec_path.write_text(project.spec_path.read_text() + '\n[estimator]\nclass = "LogisticRegression"\n')
    assert _fails(project) == (
        "Error: mlpack.toml: [estimator] cannot be used with model.onnx (the ONNX file is the whole model);"
        " remove [estimator] or model.onnx"
    )


@pytest.mark.slow
@pytest.mark.parametrize("example", ["onnx_network", "fleet_faults_xgboost"])
def test_the_device_executable_runs_the_example_unchanged(tmp_path: Path, example: str) -> None:
    """The executable the build freezes (the same runtime as for scikit-learn) verifies and predicts."""
    import csv
    import os
    import subprocess

    from mlpack_edge.builder import build

    from .conftest import EXAMPLES

    result = build(EXAMPLES / example, tmp_path / "dist")
    assert result.executable is not None
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLPACK_")}
    run = lambda *args: subprocess.run(  # noqa: E731
        [str(result.executable), *map(str, args)], capture_output=True, text=True, timeout=300, env=env
    )
    verify = run("verify")
    assert verify.returncode == 0, verify.stderr
    assert "golden set:" in verify.stdout and " agree " in verify.stdout
    spec_data = {"onnx_network": EXAMPLES / "breast_cancer" / "breast_cancer.csv",
                 "fleet_faults_xgboost": EXAMPLES / "fleet_faults" / "fleet_faults.csv"}[example]
    features = [f["name"] for f in result.manifest["input"]["features"]]
    with spec_data.open() as f:
        rows = list(csv.DictReader(f))[:20]
    rows_csv = tmp_path / "rows.csv"
    with rows_csv.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(features)
        w.writerows([[r[c] for c in features] for r in rows])
    predict = run("predict", rows_csv)
    assert predict.returncode == 0, predict.stderr
    got = list(csv.DictReader(io.StringIO(predict.stdout)))
    assert len(got) == 20 and all(r["error"] == "" for r in got)
    if example == "onnx_network":  # PyTorch's own answers for those rows
        with (EXAMPLES / "onnx_network" / "reference.csv").open() as f:
            ref = list(csv.DictReader(f))[:20]
        assert [r["label"] for r in got] == [r["label"] for r in ref]
        for g, r in zip(got, ref, strict=True):
            assert abs(float(g["proba_malignant"]) - float(r["proba_malignant"])) < 1e-5
    else:
        x = pd.read_csv(rows_csv, dtype=str, keep_default_na=False)
        frame = pd.DataFrame({
            f["name"]: (pd.to_numeric(x[f["name"]].replace("", np.nan)).astype(np.float32) if f["kind"] == "numeric"
                        else x[f["name"]])
            for f in result.manifest["input"]["features"]
        })
        assert [r["label"] for r in got] == [str(v) for v in result.estimator.predict(frame)]
