"""The whole build through the library and the `mlpack build` command."""

from __future__ import annotations

import json
import re
import runpy
from pathlib import Path

import pytest
from click.testing import CliRunner

from mlpack_edge.builder import RecordingReporter, build
from mlpack_edge.cli import main
from mlpack_edge.errors import PackagingError
from mlpack_edge.monitor_agent.profile import Profile
from mlpack_edge.runtime.manifest import read_manifest, verify_files

from .conftest import EXAMPLES, Project, binary_rows, spec_text

STAGES = ["spec", "data", "train", "evaluate", "convert", "parity", "profile", "bundle"]
BUNDLE_FILES = {"model.onnx", "manifest.json", "profile.json", "golden.json", "model_card.html"}


def test_bundle_contents_and_manifest(project: Project) -> None:
    project.write(spec_text(extra='[evaluate]\ngates = ["accuracy >= 0.6"]\npositive = "yes"\n'), binary_rows())
    result = project.build()
    assert result.bundle_dir == project.dist / "demo-1.0.0" and result.executable is None
    assert {p.name for p in result.bundle_dir.iterdir()} == BUNDLE_FILES
    manifest = read_manifest(result.bundle_dir)
    verify_files(manifest, lambda n: (result.bundle_dir / n).read_bytes(), "bundle")
    assert manifest.content_hash == result.content_hash and manifest.data == result.manifest
    m = result.manifest
    assert m["task"] == "binary" and m["input"]["layout"] == "matrix"
    assert m["output"] == {"classes": ["no", "yes"], "label": "label", "probabilities": "probabilities"}
    assert m["onnx"] == {
        "file": "model.onnx",
        "opset": {"": 18, "ai.onnx.ml": 3},
        "inputs": [{"name": "X", "dtype": "float32", "width": 3}],
    }
    assert set(m["metrics"]) == {"accuracy", "precision", "recall", "f1", "roc_auc"}
    assert m["gates"] == [
        {
            "gate": "accuracy >= 0.6",
            "metric": "accuracy",
            "op": ">=",
            "threshold": 0.6,
            "value": m["metrics"]["accuracy"],
            "passed": True,
        }
    ]
    assert m["parity"]["passed"] and m["parity"]["rows"] == 32
    lineage = m["lineage"]
    assert lineage["data_path"] == "data.csv" and lineage["seed"] == 0 and lineage["positive_class"] == "yes"
    for key in (
        "python",
        "mlpack",
        "sklearn",
        "skl2onnx",
        "onnx",
        "onnxruntime",
        "numpy",
        "spec_sha256",
        "data_sha256",
    ):
        assert lineage[key]
    # no absolute paths and no wall-clock time anywhere in the bundle
    for name in BUNDLE_FILES:
        text = (result.bundle_dir / name).read_bytes().decode("utf-8", "replace")
        assert str(project.root) not in text
        assert not re.search(r"20\d\d-\d\d-\d\d", text), name
    profile = Profile.from_dict(json.loads((result.bundle_dir / "profile.json").read_bytes()))
    assert [f.name for f in profile.features] == ["a", "b", "c"]
    assert profile.features[2].missing_rate > 0  # c has gaps in training
    assert profile.prediction is not None and profile.prediction.categories == ("no", "yes")  # type: ignore[union-attr]
    assert profile.prediction.count == 32
    ev = m["evaluation"]
    assert ev["stratified"] is True and sum(ev["class_counts"]["held_out"]) == lineage["test_rows"] == 32
    assert sum(map(sum, ev["confusion"])) == 32 and sum(ev["class_counts"]["train"]) == lineage["train_rows"]


def test_regression_profile_and_evaluation(project: Project) -> None:
    from .conftest import regression_rows

    project.write(spec_text(task="regression", estimator='class = "Ridge"'), regression_rows())
    result = project.build()
    profile = Profile.from_dict(json.loads((result.bundle_dir / "profile.json").read_bytes()))
    assert profile.prediction is not None and profile.prediction.kind == "numeric"
    ev = result.manifest["evaluation"]
    assert "confusion" not in ev and ev["target"]["train"]["count"] == result.manifest["lineage"]["train_rows"]
    assert sum(b["count"] for b in ev["residual_bins"]) == result.manifest["lineage"]["test_rows"]
    assert "classes" not in result.manifest["output"]


def test_two_builds_are_byte_identical(tmp_path: Path) -> None:
    spec = EXAMPLES / "fleet_faults" / "mlpack.toml"
    a = build(spec, tmp_path / "a", executable=False)
    b = build(spec, tmp_path / "b", executable=False)
    for name in sorted(BUNDLE_FILES):
        assert (a.bundle_dir / name).read_bytes() == (b.bundle_dir / name).read_bytes(), name
    assert a.content_hash == b.content_hash


def test_reporter_sees_every_stage_in_order(project: Project) -> None:
    project.write(spec_text(), binary_rows())
    rec = RecordingReporter()
    result = project.build(reporter=rec)
    started = [e[1] for e in rec.events if e[0] == "started"]
    finished = [e[1] for e in rec.events if e[0] == "finished"]
    assert started == finished == STAGES == [name for name, _ in result.stages]
    assert all(seconds >= 0 for _, seconds in result.stages)
    assert ("info", "3 numeric (inferred): a, b, c") in rec.events
    assert ("info", "nullable: c") in rec.events


def test_failed_gate_writes_only_its_report_and_keeps_the_previous_build(project: Project) -> None:
    project.write(spec_text(extra='[evaluate]\ngates = ["accuracy >= 0.5"]\n'), binary_rows())
    first = project.build()
    before = {p.name: p.read_bytes() for p in first.bundle_dir.iterdir()}
    project.write(spec_text(extra='[evaluate]\ngates = ["accuracy >= 0.999", "recall >= 0.999", "f1 >= 0.1"]\n'))
    result = project.cli()
    assert result.exit_code == 1
    *progress, error = result.stderr.splitlines()
    report = project.dist / "demo-1.0.0.failed.html"
    assert re.fullmatch(
        r"Error: 2 of 3 gates failed: accuracy >= 0\.999 \(measured 0\.\d{4}\); recall >= 0\.999 \(measured 0\.\d{4}\)"
        + re.escape(f". Report: {report}"),
        error,
    ), result.stderr
    assert re.fullmatch(r"  evaluate +\d+\.\d\ds  FAILED", progress[-1]) and result.stdout == ""
    assert "Traceback" not in result.output
    assert {p.name: p.read_bytes() for p in first.bundle_dir.iterdir()} == before
    # the report only: no temp folders, nothing installable
    assert sorted(p.name for p in project.dist.iterdir()) == ["demo-1.0.0", "demo-1.0.0.failed.html"]
    assert "This build failed its gates" in report.read_text()
    # a build that passes again removes the stale report
    project.write(spec_text(extra='[evaluate]\ngates = ["accuracy >= 0.5"]\n'))
    project.build()
    assert sorted(p.name for p in project.dist.iterdir()) == ["demo-1.0.0"]


def test_rebuild_replaces_atomically_and_says_so(project: Project) -> None:
    project.write(spec_text(), binary_rows())
    first = project.build()
    old_manifest = (first.bundle_dir / "manifest.json").read_bytes()
    project.write(spec_text(estimator='class = "LogisticRegression"\nparams = { C = 0.01 }'))
    result = project.cli()
    assert result.exit_code == 0, result.output
    assert "replaced the previous build of this version" in result.stdout
    assert (first.bundle_dir / "manifest.json").read_bytes() != old_manifest
    assert [p.name for p in project.dist.iterdir()] == ["demo-1.0.0"]


def test_refuses_to_replace_a_folder_that_is_not_a_bundle(project: Project) -> None:
    project.write(spec_text(), binary_rows())
    precious = project.dist / "demo-1.0.0"
    precious.mkdir(parents=True)
    (precious / "notes.txt").write_text("mine")
    with pytest.raises(PackagingError) as info:
        project.build()
    assert str(info.value) == f"{precious} exists and is not an mlpack bundle; move it away or choose another --out"
    assert (precious / "notes.txt").read_text() == "mine"


def test_cli_prints_each_stage_with_its_timing_on_stderr_and_the_result_on_stdout(project: Project) -> None:
    project.write(spec_text(), binary_rows())
    result = project.cli()
    assert result.exit_code == 0, result.output
    progress = result.stderr.splitlines()
    assert progress[0] == f"mlpack build {project.spec_path}"
    for stage in STAGES:
        assert any(re.match(rf"  {stage} +\d+\.\d\ds  \S", line) for line in progress), stage
    assert progress[-1] == "unsigned: devices refuse it unless allowed (sign with --sign-key KEY)"  # a warning
    # stdout: the result only, so `mlpack build | tail -1` or a script reads just that.
    assert re.fullmatch(
        rf"built {re.escape(str(project.dist / 'demo-1.0.0'))} \(manifest sha256 [0-9a-f]{{16}}\)\n", result.stdout
    )


def test_cli_json_and_quiet(project: Project) -> None:
    project.write(spec_text(), binary_rows())
    quiet = project.cli("--quiet")
    assert quiet.exit_code == 0 and quiet.output == ""
    result = project.cli("--json")
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc["ok"] is True and doc["replaced"] is True
    assert doc["bundle"] == str(project.dist / "demo-1.0.0") and doc["executable"] is None
    assert [s["name"] for s in doc["stages"]] == STAGES
    assert doc["content_hash"] == read_manifest(project.dist / "demo-1.0.0").content_hash
    assert set(doc["metrics"]) == {"accuracy", "precision", "recall", "f1", "roc_auc"}


def test_cli_json_failure_is_machine_readable(project: Project) -> None:
    project.write(spec_text(extra='[evaluate]\ngates = ["accuracy >= 0.999"]\n'), binary_rows())
    result = project.cli("--json")
    assert result.exit_code == 1
    doc = json.loads(result.stdout)
    assert doc["ok"] is False and doc["error"]["type"] == "GateError"
    assert doc["error"]["failures"][0]["gate"] == "accuracy >= 0.999"
    assert [(s["name"], s["ok"]) for s in doc["stages"]] == [
        ("spec", True),
        ("data", True),
        ("train", True),
        ("evaluate", False),
    ]
    assert result.stderr.startswith("Error: 1 of 1 gate failed: accuracy >= 0.999 (measured ")
    assert doc["error"]["report"] == str(project.dist / "demo-1.0.0.failed.html")
    assert [p.name for p in project.dist.iterdir()] == ["demo-1.0.0.failed.html"]


def test_default_spec_is_mlpack_toml_in_the_current_folder(project: Project, monkeypatch: pytest.MonkeyPatch) -> None:
    project.write(spec_text(), binary_rows())
    monkeypatch.chdir(project.root)
    result = CliRunner().invoke(main, ["build", "--no-executable", "-q"])
    assert result.exit_code == 0, result.output
    assert (project.root / "dist" / "demo-1.0.0" / "manifest.json").is_file()


# ---------------------------------------------------------------------------- bad input


BAD_INPUT = [
    # (name, files to write {name: text}, expected stderr after "Error: ", with {root} for the folder)
    ("missing spec", {}, "{root}/mlpack.toml: spec file not found"),
    (
        "missing data",
        {"mlpack.toml": spec_text()},
        "{root}/data.csv: data file not found (data.path is relative to the spec)",
    ),
    (
        "malformed toml",
        {"mlpack.toml": '[model]\nname = "x\n'},
        "{root}/mlpack.toml: not valid TOML: Illegal character '\\n' (at line 2, column 10)",
    ),
    (
        "unknown key",
        {"mlpack.toml": spec_text(extra="[parity]\ntolerence = 1\n"), "data.csv": binary_rows()},
        "{root}/mlpack.toml: unknown key 'parity.tolerence' (did you mean 'parity.tolerance'?)",
    ),
    (
        "target absent",
        {"mlpack.toml": spec_text(target="label"), "data.csv": binary_rows()},
        "{root}/data.csv: target column 'label' not found (columns: a, b, c, y)",
    ),
    (
        "feature absent",
        {"mlpack.toml": spec_text(extra='[data.features]\na = "numeric"\nbb = "numeric"\n'), "data.csv": binary_rows()},
        "{root}/data.csv: feature 'bb' (data.features) not found (did you mean 'b'?)",
    ),
    (
        "non-numeric value",
        {
            "mlpack.toml": spec_text(extra='[data.features]\na = "numeric"\n'),
            "data.csv": "a,y\n1,x\n2,y\n3,x\nthree,y\n",
        },
        "{root}/data.csv: line 5: column 'a' expects a number, got 'three'",
    ),
    (
        "empty csv",
        {"mlpack.toml": spec_text(), "data.csv": ""},
        "{root}/data.csv: the file is empty (expected a CSV with a header row)",
    ),
    (
        "single class",
        {"mlpack.toml": spec_text(), "data.csv": "a,y\n1,x\n2,x\n3,x\n"},
        "{root}/data.csv: target 'y' has a single class ('x'); classification needs at least two",
    ),
    (
        "unknown estimator",
        {"mlpack.toml": spec_text(estimator='class = "LogisticRegresion"'), "data.csv": binary_rows()},
        "{root}/mlpack.toml: estimator.class: unknown scikit-learn estimator 'LogisticRegresion' (did you mean 'LogisticRegression'?)",
    ),
    (
        "parameter name rejected",
        {
            "mlpack.toml": spec_text(estimator='class = "LogisticRegression"\nparams = { c = 1.0 }'),
            "data.csv": binary_rows(),
        },
        "{root}/mlpack.toml: estimator.params: LogisticRegression has no parameter 'c' (did you mean 'C'?)",
    ),
    (
        "parameter value rejected",
        {
            "mlpack.toml": spec_text(estimator='class = "LogisticRegression"\nparams = { C = "high" }'),
            "data.csv": binary_rows(),
        },
        "{root}/mlpack.toml: estimator parameter rejected by scikit-learn: The 'C' parameter of LogisticRegression must be"
        " a float in the range (0.0, inf]. Got 'high' instead.",
    ),
    (
        "unknown metric",
        {"mlpack.toml": spec_text(extra='[evaluate]\ngates = ["recal >= 0.9"]\n'), "data.csv": binary_rows()},
        "{root}/mlpack.toml: evaluate.gates[0]: unknown metric 'recal' in gate 'recal >= 0.9' (did you mean 'recall'?"
        " metrics for binary: accuracy, precision, recall, f1, roc_auc;"
            " averaged over classes: precision_macro, recall_macro, f1_macro, roc_auc_macro)",
    ),
]


@pytest.mark.parametrize(("case", "files", "expected"), BAD_INPUT, ids=[c[0] for c in BAD_INPUT])
def test_bad_input_is_one_line_exit_1_nothing_written(
    tmp_path: Path, case: str, files: dict[str, str], expected: str
) -> None:
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    result = CliRunner().invoke(
        main, ["build", str(tmp_path / "mlpack.toml"), "--no-executable", "-o", str(tmp_path / "dist")]
    )
    assert result.exit_code == 1, result.output
    *progress, error = result.stderr.splitlines()
    assert error == "Error: " + expected.format(root=tmp_path)
    assert progress[0] == f"mlpack build {tmp_path / 'mlpack.toml'}" and all(p.startswith("  ") for p in progress[1:])
    assert result.stdout == ""
    assert not (tmp_path / "dist").exists()


def test_usage_errors_exit_2() -> None:
    result = CliRunner().invoke(main, ["build", "--no-such-option"])
    assert result.exit_code == 2 and result.stderr.endswith("Error: No such option '--no-such-option'.\n")


# ---------------------------------------------------------------------------- examples


@pytest.mark.parametrize("example", ["breast_cancer", "diabetes", "fleet_faults", "fleet_faults_xgboost", "onnx_network"])
def test_examples_build(tmp_path: Path, example: str) -> None:
    result = CliRunner().invoke(
        main, ["build", str(EXAMPLES / example), "--no-executable", "-o", str(tmp_path), "--json"]
    )
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc["ok"] and all(g["passed"] for g in doc["gates"]) and doc["parity"]["passed"]


def test_strict_gate_example_fails_listing_each_gate(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        main, ["build", str(EXAMPLES / "strict_gate"), "--no-executable", "-o", str(tmp_path / "dist")]
    )
    assert result.exit_code == 1
    report = tmp_path / "dist" / "breast-cancer-strict-1.0.0.failed.html"
    assert result.stderr.splitlines()[-1] == (
        "Error: 2 of 3 gates failed: recall >= 0.99 (measured 0.9762); precision >= 0.99 (measured 0.8367)."
        f" Report: {report}"
    )
    assert result.stdout == ""
    assert [p.name for p in (tmp_path / "dist").iterdir()] == [report.name]  # nothing installable


def test_example_csvs_are_reproduced_by_the_committed_script(tmp_path: Path) -> None:
    script = runpy.run_path(str(EXAMPLES / "make_datasets.py"), run_name="make_datasets")
    for make in ("breast_cancer", "diabetes", "fleet_faults"):
        script[make](tmp_path)
    for rel in ("breast_cancer/breast_cancer.csv", "diabetes/diabetes.csv", "fleet_faults/fleet_faults.csv"):
        assert (tmp_path / rel).read_bytes() == (EXAMPLES / rel).read_bytes(), rel


def test_unwritable_output_is_a_packaging_error(project: Project) -> None:
    project.write(spec_text(), binary_rows())
    blocker = project.root / "dist"
    blocker.write_text("a file where the output folder should be")
    with pytest.raises(PackagingError) as info:
        project.build()
    assert str(info.value) == f"{blocker / 'demo-1.0.0'}: cannot write the bundle (File exists)"
    assert blocker.read_text() == "a file where the output folder should be"
    # the command line refuses it before building (a usage error, exit 2)
    assert project.cli().exit_code == 2


def test_fit_warnings_become_info_lines(project: Project) -> None:
    project.write(
        spec_text(estimator='class = "MLPClassifier"\nparams = { hidden_layer_sizes = [4], max_iter = 3 }'),
        binary_rows(),
    )
    rec = RecordingReporter()
    project.build(reporter=rec)
    infos = [e[1] for e in rec.events if e[0] == "info"]
    assert any(
        i.startswith("warning: ConvergenceWarning: Stochastic Optimizer: Maximum iterations (3) reached") for i in infos
    ), infos
