"""XGBoost and LightGBM in a spec: optional extras, labels, determinism, lineage.

Their parity on held-out rows, probes and rows with missing values is covered per
family in test_roundtrip.py; these tests cover what is particular to them.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from mlpack_edge.errors import TrainingError

from .conftest import REPO, Project, binary_rows, mixed_rows, regression_rows, spec_text

XGB = 'class = "xgboost.XGBClassifier"\nparams = { n_estimators = 20, max_depth = 3 }'
LGBM = 'class = "lightgbm.LGBMClassifier"\nparams = { n_estimators = 20, num_leaves = 8 }'


@pytest.mark.parametrize(
    ("estimator", "module", "expected"),
    [
        (XGB, "xgboost", "xgboost.XGBClassifier needs XGBoost, which is not installed: pip install 'mlpack-edge[xgboost]'"),
        (
            'class = "LGBMRegressor"',
            "lightgbm",
            "lightgbm.LGBMRegressor needs LightGBM, which is not installed: pip install 'mlpack-edge[lightgbm]'",
        ),
        (
            LGBM,
            "onnxmltools",
            "lightgbm.LGBMClassifier needs onnxmltools to convert it to ONNX, which is not installed:"
            " pip install 'mlpack-edge[lightgbm]'",
        ),
    ],
)
def test_a_missing_library_is_one_line_with_the_pip_command(
    project: Project, monkeypatch: pytest.MonkeyPatch, estimator: str, module: str, expected: str
) -> None:
    monkeypatch.setitem(sys.modules, module, None)  # what an uninstalled package looks like to import
    task = "regression" if "Regressor" in estimator else "binary"
    project.write(spec_text(task=task, estimator=estimator), regression_rows() if task == "regression" else binary_rows())
    result = project.cli()
    assert result.exit_code == 1
    assert result.output.splitlines()[-1] == f"Error: {project.spec_path}: estimator.class: {expected}"
    assert "Traceback" not in result.output and not project.dist.exists()


def test_booster_parameters_are_checked_with_a_suggestion(project: Project) -> None:
    project.write(spec_text(estimator='class = "xgboost.XGBClassifier"\nparams = { n_estimator = 5 }'), binary_rows())
    with pytest.raises(TrainingError) as info:
        project.build()
    assert str(info.value).endswith(
        "estimator.params: XGBClassifier has no parameter 'n_estimator' (did you mean 'n_estimators'?)"
    )
    # LightGBM's own parameter names and aliases pass through its **kwargs
    project.write(spec_text(estimator='class = "lightgbm.LGBMClassifier"\nparams = { min_data_in_leaf = 5, n_estimators = 5 }'))
    assert project.build().estimator.steps[-1][1].get_params()["min_data_in_leaf"] == 5


def test_string_labels_reach_the_onnx_label_output(project: Project) -> None:
    # XGBoost's own API takes only 0..n-1; mlpack maps the CSV's labels both ways.
    project.write(spec_text(task="multiclass", target="label", estimator=XGB), mixed_rows())
    result = project.build()
    m = result.manifest
    assert m["output"]["classes"] == ["A", "B", "C"]
    assert list(result.estimator.classes_) == ["A", "B", "C"]
    session = ort.InferenceSession(str(result.bundle_dir / "model.onnx"), providers=["CPUExecutionProvider"])
    feeds = {
        "x1": np.array([[0.5]], np.float32),
        "x2": np.array([[np.nan]], np.float32),
        "colour": np.array([["red"]], object),
        "shape": np.array([["round"]], object),
    }
    label, proba = session.run(None, feeds)
    assert label[0] in ("A", "B", "C") and proba.shape == (1, 3)
    assert m["lineage"]["estimator"].endswith("-> XGBClassifier")
    assert m["lineage"]["xgboost"] and m["lineage"]["onnxmltools"] and "lightgbm" not in m["lineage"]


def test_lightgbm_is_seeded_deterministic_and_quiet(project: Project, capfd: pytest.CaptureFixture[str]) -> None:
    project.write(spec_text(estimator=LGBM), binary_rows())
    params = project.build().estimator.steps[-1][1].get_params()
    assert params["random_state"] == 0 and params["deterministic"] is True and params["force_row_wise"] is True
    assert params["verbose"] == -1
    assert "[LightGBM]" not in capfd.readouterr().out
    # a parameter the spec sets, or an alias of it, is left as written
    project.write(spec_text(estimator='class = "lightgbm.LGBMClassifier"\nparams = { verbosity = 1, n_estimators = 5 }'))
    params = project.build().estimator.steps[-1][1].get_params()
    assert params["verbosity"] == 1 and "verbose" not in params


_BUILD_AGAIN = textwrap.dedent(
    """
    import sys
    from mlpack_edge.builder import build
    build(sys.argv[1], sys.argv[2], executable=False)
    """
)


@pytest.mark.parametrize("estimator", [XGB, LGBM, 'class = "xgboost.XGBRegressor"', 'class = "lightgbm.LGBMRegressor"'])
def test_two_builds_are_byte_identical_across_processes(tmp_path: Path, estimator: str) -> None:
    regression = "Regressor" in estimator
    project = Project(tmp_path)
    project.write(
        spec_text(task="regression" if regression else "binary", estimator=estimator, extra='[preprocess]\nnumeric = "none"\n'),
        regression_rows() if regression else binary_rows(missing=0.2),
    )
    first = project.build().bundle_dir
    env = {**os.environ, "PYTHONHASHSEED": "123"}  # another process, another hash seed
    other = tmp_path / "again"
    subprocess.run(
        [sys.executable, "-c", _BUILD_AGAIN, str(project.spec_path), str(other)], check=True, env=env, cwd=REPO, timeout=300
    )
    for name in ("model.onnx", "manifest.json", "golden.json", "profile.json"):
        assert (first / name).read_bytes() == (other / first.name / name).read_bytes(), name
