"""Resolving the estimator: sklearn names only, checked parameters, seeds, factories."""

from __future__ import annotations

import pytest
from sklearn.calibration import CalibratedClassifierCV
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.svm import SVC

from mlpack_edge.builder.estimators import resolve_class
from mlpack_edge.errors import TrainingError

from .conftest import Project, binary_rows, mixed_rows, spec_text


def test_resolve_short_and_dotted_names() -> None:
    assert resolve_class("LogisticRegression") is LogisticRegression
    assert resolve_class("sklearn.ensemble.RandomForestClassifier") is RandomForestClassifier


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        (
            "RandomForrestClassifier",
            "unknown scikit-learn estimator 'RandomForrestClassifier' (did you mean 'RandomForestClassifier'?)",
        ),
        (
            "os.system",
            "'os.system' is not a scikit-learn class (only sklearn.* names and xgboost.XGBClassifier,"
            " xgboost.XGBRegressor, lightgbm.LGBMClassifier, lightgbm.LGBMRegressor are allowed;"
            " use estimator.factory for other code)",
        ),
        ("sklearn.ensemble.Nope", "unknown scikit-learn estimator 'sklearn.ensemble.Nope'"),
        ("sklearn.utils.check_array", "unknown scikit-learn estimator 'sklearn.utils.check_array'"),
    ],
)
def test_unknown_or_foreign_names_are_refused(name: str, expected: str) -> None:
    with pytest.raises(LookupError) as info:
        resolve_class(name)
    assert info.value.args[0] == expected


def _fails(project: Project, spec: str, data: str | None = None) -> str:
    project.write(spec, data if data is not None else binary_rows())
    with pytest.raises(TrainingError) as info:
        project.build()
    assert not project.dist.exists()
    return str(info.value).replace(str(project.spec_path), "mlpack.toml")


@pytest.mark.parametrize(
    ("estimator", "expected"),
    [
        (
            'class = "RandomForestClassifier"\nparams = { n_estimator = 5 }',
            "estimator.params: RandomForestClassifier has no parameter 'n_estimator' (did you mean 'n_estimators'?)",
        ),
        (
            'class = "RandomForestClassifier"\nparams = { n_estimators = -3 }',
            "estimator parameter rejected by scikit-learn: The 'n_estimators' parameter of RandomForestClassifier"
            " must be an int in the range [1, inf). Got -3 instead.",
        ),
        (
            'steps = [{ class = "StandardScaler" }, { class = "LogisticRegresion" }]',
            "estimator.steps[1].class: unknown scikit-learn estimator 'LogisticRegresion' (did you mean 'LogisticRegression'?)",
        ),
        (
            'class = "SVC"',
            "SVC gives no class probabilities (predict_proba), which the bundle ships; wrap it:"
            ' class = "CalibratedClassifierCV", params = { estimator = { class = "SVC" }, ensemble = false }',
        ),
        ('class = "Ridge"', "task is binary but Ridge is not a classifier"),
        (
            'steps = [{ class = "StandardScaler", name = "scale" }, { class = "LogisticRegression" }]',
            "estimator.steps: step name 'scale' is reserved for mlpack's preprocessing",
        ),
    ],
    ids=["unknown-param", "param-value", "nested-step", "no-probabilities", "task-mismatch", "reserved-name"],
)
def test_estimator_errors_are_one_precise_line(project: Project, estimator: str, expected: str) -> None:
    assert _fails(project, spec_text(estimator=estimator)) == f"mlpack.toml: {expected}"


def test_seed_reaches_every_random_state_and_wrappers_build(project: Project) -> None:
    project.write(
        spec_text(
            estimator='class = "CalibratedClassifierCV"\n'
            'params = { estimator = { class = "SVC", params = { C = 2.0 } }, ensemble = false, cv = 3 }'
        ).replace("seed = 0", "seed = 11"),
        binary_rows(),
    )
    result = project.build()
    model = result.estimator
    assert isinstance(model, Pipeline) and [n for n, _ in model.steps] == ["impute", "model"]
    calibrated = model.named_steps["model"]
    assert isinstance(calibrated, CalibratedClassifierCV) and isinstance(calibrated.estimator, SVC)
    assert calibrated.estimator.random_state == 11 and calibrated.estimator.C == 2.0
    assert result.manifest["lineage"]["estimator"] == "SimpleImputer -> CalibratedClassifierCV(SVC)"


def test_explicit_random_state_is_kept(project: Project) -> None:
    project.write(
        spec_text(estimator='class = "RandomForestClassifier"\nparams = { n_estimators = 3, random_state = 5 }'),
        binary_rows(),
    )
    assert project.build().estimator.named_steps["model"].random_state == 5


def test_factory_returns_the_estimator(project: Project) -> None:
    (project.root / "helpers.py").write_text("DEPTH = 3\n")
    (project.root / "model.py").write_text(
        "from helpers import DEPTH\n"
        "from sklearn.tree import DecisionTreeClassifier\n"
        "def make():\n    return DecisionTreeClassifier(max_depth=DEPTH)\n"
    )
    project.write(spec_text(estimator='factory = "model.py:make"'), binary_rows())
    result = project.build()
    tree = result.estimator.named_steps["model"]
    assert tree.max_depth == 3 and tree.random_state == 0
    assert len(result.manifest["lineage"]["factory_sha256"]) == 64
    assert result.manifest["lineage"]["factory"] == "model.py:make"


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        (None, "mlpack.toml: estimator.factory: {root}/model.py not found (the path is relative to the spec)"),
        ("def other():\n    pass\n", "mlpack.toml: estimator.factory: {root}/model.py has no function make()"),
        (
            "def make():\n    raise RuntimeError('no GPU here')\n",
            "mlpack.toml: estimator.factory: model.py:make raised RuntimeError: no GPU here",
        ),
        (
            "def make():\n    return 42\n",
            "mlpack.toml: estimator.factory: make() returned int, expected an unfitted scikit-learn estimator",
        ),
    ],
)
def test_factory_failures(project: Project, source: str | None, expected: str) -> None:
    if source is not None:
        (project.root / "model.py").write_text(source)
    msg = _fails(project, spec_text(estimator='factory = "model.py:make"'))
    assert msg == expected.format(root=project.root)


def test_own_column_transformer_routes_columns(project: Project) -> None:
    (project.root / "model.py").write_text(
        "from sklearn.compose import ColumnTransformer\n"
        "from sklearn.impute import SimpleImputer\n"
        "from sklearn.pipeline import make_pipeline\n"
        "from sklearn.preprocessing import OneHotEncoder\n"
        "from sklearn.linear_model import LogisticRegression\n"
        "def make():\n"
        "    ct = ColumnTransformer([('n', SimpleImputer(), ['x1', 'x2']),\n"
        "                            ('c', OneHotEncoder(handle_unknown='ignore'), ['colour', 'shape'])])\n"
        "    return make_pipeline(ct, LogisticRegression(max_iter=500))\n"
    )
    project.write(spec_text(task="multiclass", target="label", estimator='factory = "model.py:make"'), mixed_rows())
    result = project.build()
    assert isinstance(result.estimator.steps[0][1], ColumnTransformer)
    assert result.manifest["input"]["layout"] == "columns"
    # ... and mlpack's own preprocessing cannot be stacked in front of it
    project.write(
        spec_text(
            task="multiclass",
            target="label",
            estimator='factory = "model.py:make"',
            extra="[preprocess]\nnumeric = { scale = true }\n",
        )
    )
    with pytest.raises(
        TrainingError, match=r"\[preprocess\] cannot be used with an estimator that begins with a ColumnTransformer"
    ):
        project.build()
