"""Every supported estimator family: build -> the bundle's ONNX answers like scikit-learn.

XGBoost and LightGBM (the ``[xgboost]``/``[lightgbm]`` extras, installed by the test
command) are here twice: behind mlpack's imputer, and fed the missing values themselves
(``impute = "none"``), which both route natively and the ONNX graph must route the same.

The comparison here is the test's own, not the build's parity stage: it reads the
bundle's model.onnx with onnxruntime and scores fresh rows (a third with missing values,
some with unseen categories) against the fitted estimator the build returns.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import pandas as pd
import pytest

from .conftest import Project, binary_rows, mixed_rows, regression_rows, spec_text

CLASSIFIERS = {
    "logistic": ('class = "LogisticRegression"', "scale = true"),
    "random-forest": ('class = "RandomForestClassifier"\nparams = { n_estimators = 15, max_depth = 5 }', ""),
    "gradient-boosting": ('class = "GradientBoostingClassifier"\nparams = { n_estimators = 20, max_depth = 2 }', ""),
    "hist-gradient-boosting": ('class = "HistGradientBoostingClassifier"\nparams = { max_iter = 20 }', ""),
    "mlp": ('class = "MLPClassifier"\nparams = { hidden_layer_sizes = [8], max_iter = 300 }', "scale = true"),
    "svc": (
        'class = "CalibratedClassifierCV"\nparams = { estimator = { class = "SVC" }, ensemble = false, cv = 3 }',
        "scale = true",
    ),
    "knn": ('class = "KNeighborsClassifier"\nparams = { n_neighbors = 5 }', "scale = true"),
    "decision-tree": ('class = "DecisionTreeClassifier"\nparams = { max_depth = 4 }', ""),
    "xgboost": ('class = "xgboost.XGBClassifier"\nparams = { n_estimators = 20, max_depth = 3 }', ""),
    "xgboost-native-nan": ('class = "xgboost.XGBClassifier"\nparams = { n_estimators = 20 }', 'impute = "none"'),
    "lightgbm": ('class = "lightgbm.LGBMClassifier"\nparams = { n_estimators = 20, num_leaves = 8 }', ""),
    "lightgbm-native-nan": (
        'class = "lightgbm.LGBMClassifier"\nparams = { n_estimators = 20, min_child_samples = 5 }',
        'impute = "none"',
    ),
}
REGRESSORS = {
    "linear": 'class = "LinearRegression"',
    "ridge": 'class = "Ridge"\nparams = { alpha = 0.5 }',
    "lasso": 'class = "Lasso"\nparams = { alpha = 0.01 }',
    "sgd": 'steps = [{ class = "StandardScaler" }, { class = "SGDRegressor", params = { max_iter = 200 } }]',
    "random-forest": 'class = "RandomForestRegressor"\nparams = { n_estimators = 15, max_depth = 5 }',
    "hist-gradient-boosting": 'class = "HistGradientBoostingRegressor"\nparams = { max_iter = 30 }',
    "mlp": 'steps = [{ class = "StandardScaler" }, { class = "MLPRegressor", params = { hidden_layer_sizes = [8], max_iter = 400 } }]',
    "knn": 'class = "KNeighborsRegressor"',
    "xgboost": 'class = "xgboost.XGBRegressor"\nparams = { n_estimators = 30, max_depth = 3 }',
    "lightgbm": 'class = "LGBMRegressor"\nparams = { n_estimators = 30, num_leaves = 8 }',
}
# Regressors fed the missing values themselves (no imputer in front).
NATIVE_NAN_REGRESSORS = {
    "xgboost": 'class = "xgboost.XGBRegressor"\nparams = { n_estimators = 30, max_depth = 3 }',
    "lightgbm": 'class = "lightgbm.LGBMRegressor"\nparams = { n_estimators = 30, min_child_samples = 5 }',
}
COLUMN_PIPELINES = {
    "onehot-logistic": (
        'class = "LogisticRegression"\nparams = { max_iter = 500 }',
        'numeric = { impute = "mean", scale = true }\ncategorical = { impute = "most_frequent", encode = "onehot" }',
    ),
    "onehot-hgb": ('class = "HistGradientBoostingClassifier"\nparams = { max_iter = 20 }', ""),
    "ordinal-forest": (
        'class = "RandomForestClassifier"\nparams = { n_estimators = 10, max_depth = 5 }',
        'numeric = { impute = "median" }\ncategorical = { impute = "none", encode = "ordinal" }',
    ),
    "onehot-xgboost": ('class = "xgboost.XGBClassifier"\nparams = { n_estimators = 20, max_depth = 3 }', ""),
    "ordinal-lightgbm": (
        'class = "lightgbm.LGBMClassifier"\nparams = { n_estimators = 20, num_leaves = 8 }',
        'numeric = { impute = "none" }\ncategorical = { impute = "none", encode = "ordinal" }',
    ),
    "passthrough-hgb": (
        'class = "HistGradientBoostingClassifier"\nparams = { max_iter = 20 }',
        'numeric = "none"\ncategorical = { encode = "onehot" }',
    ),
}


def _fresh_rows(csv_path: Path, manifest: dict[str, Any], seed: int = 5) -> pd.DataFrame:
    """Rows from the CSV with extra gaps and unseen categories, in the model's input form."""
    rng = np.random.default_rng(seed)
    raw = pd.read_csv(csv_path, dtype=str, keep_default_na=False).head(60)
    out = {}
    for f in manifest["input"]["features"]:
        col = raw[f["name"]].to_numpy(dtype=object)
        gaps = rng.uniform(size=len(col)) < (0.3 if f["nullable"] else 0.0)
        if f["kind"] == "numeric":
            values = np.array([np.nan if v == "" else float(v) for v in col], dtype=np.float32)
            values[gaps] = np.nan
        else:
            values = np.where(gaps, "", col).astype(object)
            values[rng.uniform(size=len(col)) < 0.1] = "never-seen"
        out[f["name"]] = values
    return pd.DataFrame(out)


def _onnx(bundle: Path, manifest: dict[str, Any], frame: pd.DataFrame) -> list[np.ndarray]:
    session = ort.InferenceSession(str(bundle / "model.onnx"), providers=["CPUExecutionProvider"])
    if manifest["input"]["layout"] == "matrix":
        feeds = {"X": frame.to_numpy(np.float32)}
    else:
        kinds = {f["name"]: f["kind"] for f in manifest["input"]["features"]}
        feeds = {c: frame[[c]].to_numpy(np.float32 if kinds[c] == "numeric" else object) for c in frame.columns}
    return session.run(None, feeds)


def _sklearn_input(manifest: dict[str, Any], frame: pd.DataFrame) -> Any:
    return frame.to_numpy(np.float32) if manifest["input"]["layout"] == "matrix" else frame


def _check_classifier(project: Project, data_name: str) -> Any:
    result = project.build()
    m = result.manifest
    frame = _fresh_rows(project.root / data_name, m)
    assert frame.isna().to_numpy().any() or (frame == "").to_numpy().any()  # the rows do have gaps
    labels, proba = _onnx(result.bundle_dir, m, frame)
    x = _sklearn_input(m, frame)
    np.testing.assert_array_equal(labels, result.estimator.predict(x))
    np.testing.assert_allclose(proba, result.estimator.predict_proba(x), atol=1e-4, rtol=0)
    assert m["output"]["classes"] == [str(c) if isinstance(c, str) else c for c in result.estimator.classes_]
    # The build's proof a device's recorder relies on (Model.predict_proba with a recorder takes a
    # row's class from its probabilities): the label is the top class here too, on fresh rows.
    assert m["parity"]["label_is_argmax"] is True
    np.testing.assert_array_equal(labels, np.asarray(result.estimator.classes_)[proba.argmax(axis=1)])
    return result


@pytest.mark.parametrize("family", sorted(CLASSIFIERS))
def test_classifier_families(project: Project, family: str) -> None:
    estimator, numeric = CLASSIFIERS[family]
    project.write(spec_text(estimator=estimator, extra=f"[preprocess]\nnumeric = {{ {numeric} }}\n"), binary_rows())
    result = _check_classifier(project, "data.csv")
    if "none" in numeric:  # the booster itself is fed the gaps, and the build's proof covered them
        assert "Imputer" not in result.manifest["lineage"]["estimator"]
        assert result.manifest["parity"]["missing_rows"] > 0


@pytest.mark.parametrize("family", sorted(COLUMN_PIPELINES))
def test_column_transformer_pipelines(project: Project, family: str) -> None:
    estimator, preprocess = COLUMN_PIPELINES[family]
    project.write(
        spec_text(task="multiclass", target="label", estimator=estimator, extra=f"[preprocess]\n{preprocess}\n"),
        mixed_rows(),
    )
    _check_classifier(project, "data.csv")


@pytest.mark.parametrize(
    ("family", "native_nan"),
    [(f, False) for f in sorted(REGRESSORS)] + [(f, True) for f in sorted(NATIVE_NAN_REGRESSORS)],
)
def test_regressor_families(project: Project, family: str, native_nan: bool) -> None:
    estimator = NATIVE_NAN_REGRESSORS[family] if native_nan else REGRESSORS[family]
    extra = '[preprocess]\nnumeric = { impute = "none" }\n' if native_nan else ""
    project.write(spec_text(task="regression", estimator=estimator, extra=extra), regression_rows())
    result = project.build()
    m = result.manifest
    frame = _fresh_rows(project.root / "data.csv", m)
    assert frame.isna().to_numpy().any()
    (values,) = _onnx(result.bundle_dir, m, frame)
    if native_nan:
        assert "Imputer" not in m["lineage"]["estimator"] and m["parity"]["missing_rows"] > 0
    np.testing.assert_allclose(values.ravel(), result.estimator.predict(_sklearn_input(m, frame)), atol=1e-4, rtol=0)
    assert list(m["output"]) == ["value"]
