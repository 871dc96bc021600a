"""The spec file: typed when right, one precise line when wrong."""

from __future__ import annotations

from pathlib import Path

import pytest

from mlpack_edge.builder.metrics import Gate
from mlpack_edge.builder.spec import DEFAULT_MISSING, StepSpec, load_spec
from mlpack_edge.errors import SpecError

from .conftest import spec_text


def _load_error(tmp_path: Path, text: str) -> str:
    path = tmp_path / "mlpack.toml"
    path.write_text(text)
    with pytest.raises(SpecError) as info:
        load_spec(path)
    return str(info.value)


def test_full_spec_is_typed(tmp_path: Path) -> None:
    path = tmp_path / "mlpack.toml"
    path.write_text(
        spec_text(
            estimator='steps = [{ class = "StandardScaler" }, { class = "LogisticRegression", name = "lr", params = { C = 0.5 } }]',
            extra="""
            [data.features]
            a = "numeric"
            colour = { kind = "categorical", nullable = true, unseen = "missing" }

            [preprocess]
            numeric = { impute = "constant", fill_value = -1, scale = true }
            categorical = { impute = "none", encode = "ordinal" }

            [evaluate]
            gates = ["precision >= 0.9", "recall > .5"]
            positive = "yes"

            [parity]
            tolerance = 1e-3

            [drift]
            psi_warn = 0.05
            bins = 5
            """,
        )
    )
    spec = load_spec(path)
    assert spec.model.name == "demo" and spec.model.task == "binary" and spec.model.seed == 0
    assert spec.data.path == tmp_path / "data.csv" and spec.data.path_text == "data.csv"
    assert spec.data.missing == DEFAULT_MISSING
    assert [(f.name, f.kind, f.nullable, f.unseen) for f in spec.data.features or ()] == [
        ("a", "numeric", None, None),
        ("colour", "categorical", True, "missing"),
    ]
    assert spec.preprocess.explicit and spec.preprocess.numeric.impute == "constant"
    assert spec.preprocess.numeric.fill_value == -1.0 and spec.preprocess.numeric.scale
    assert spec.preprocess.categorical.encode == "ordinal"
    steps = spec.estimator.steps or ()
    assert [(s.class_name, s.name, dict(s.params)) for s in steps] == [
        ("StandardScaler", None, {}),
        ("LogisticRegression", "lr", {"C": 0.5}),
    ]
    assert spec.evaluate.gates == (
        Gate("precision >= 0.9", "precision", ">=", 0.9),
        Gate("recall > .5", "recall", ">", 0.5),
    )
    assert spec.evaluate.positive == "yes"
    assert spec.parity.tolerance == 1e-3
    assert (spec.drift.psi_warn, spec.drift.psi_drift, spec.drift.bins) == (0.05, 0.2, 5)
    assert len(spec.sha256) == 64


def test_defaults_and_folder_argument(tmp_path: Path) -> None:
    (tmp_path / "mlpack.toml").write_text(spec_text(task="classification"))
    spec = load_spec(tmp_path)  # a folder means its mlpack.toml
    assert spec.path == tmp_path / "mlpack.toml"
    assert spec.data.test_size == 0.2 and spec.data.features is None and spec.data.unseen == "error"
    assert not spec.preprocess.explicit and spec.preprocess.numeric.impute == "median"
    assert spec.evaluate.gates == () and spec.parity.tolerance == 1e-4
    assert spec.estimator.step is not None and spec.estimator.step.class_name == "LogisticRegression"


def test_nested_estimator_params(tmp_path: Path) -> None:
    path = tmp_path / "mlpack.toml"
    path.write_text(
        spec_text(
            estimator='class = "CalibratedClassifierCV"\nparams = { estimator = { class = "SVC", params = { C = 2.0 } }, ensemble = false }'
        )
    )
    step = load_spec(path).estimator.step
    assert step is not None
    inner = step.params["estimator"]
    assert isinstance(inner, StepSpec) and inner.class_name == "SVC" and dict(inner.params) == {"C": 2.0}
    assert inner.where == "estimator.params.estimator"
    assert step.params["ensemble"] is False


def test_top_level_gates(tmp_path: Path) -> None:
    path = tmp_path / "mlpack.toml"
    path.write_text('gates = ["accuracy >= 0.5"]\n' + spec_text())
    assert [g.metric for g in load_spec(path).evaluate.gates] == ["accuracy"]


def test_missing_spec(tmp_path: Path) -> None:
    with pytest.raises(SpecError) as info:
        load_spec(tmp_path / "nope.toml")
    assert str(info.value) == f"{tmp_path / 'nope.toml'}: spec file not found"


def test_malformed_toml_names_line_and_column(tmp_path: Path) -> None:
    msg = _load_error(tmp_path, '[model]\nname = "x"\nversion = \n')
    assert msg == f"{tmp_path / 'mlpack.toml'}: not valid TOML: Invalid value (at line 3, column 11)"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            spec_text(estimator='class = "LogisticRegression"\nparms = { C = 1 }'),
            "unknown key 'estimator.parms' (did you mean 'estimator.params'?)",
        ),
        (
            spec_text(extra="[parity]\ntolerence = 0.1\n"),
            "unknown key 'parity.tolerence' (did you mean 'parity.tolerance'?)",
        ),
        (spec_text(extra='[estimater]\nclass = "X"\n'), "unknown key 'estimater' (did you mean 'estimator'?)"),
        (
            spec_text(extra='[data.features]\na = { kind = "numeric", nulable = true }\n'),
            "unknown key 'data.features.a.nulable' (did you mean 'data.features.a.nullable'?)",
        ),
        (
            spec_text(estimator='steps = [{ class = "Ridge", parameters = {} }]'),
            "unknown key 'estimator.steps[0].parameters' (did you mean 'estimator.steps[0].params'?)",
        ),
    ],
)
def test_unknown_keys_name_the_key_and_the_nearest(tmp_path: Path, text: str, expected: str) -> None:
    assert _load_error(tmp_path, text) == f"{tmp_path / 'mlpack.toml'}: {expected}"


def test_key_under_the_wrong_table_points_to_its_home(tmp_path: Path) -> None:
    # TOML puts `gates` written after [estimator] into [estimator]: say where it belongs.
    msg = _load_error(tmp_path, spec_text() + 'gates = ["precision >= 0.9"]\n')
    assert msg == (
        f"{tmp_path / 'mlpack.toml'}: unknown key 'estimator.gates' (did you mean 'evaluate.gates'?"
        " a key written after a [table] header belongs to that table)"
    )


@pytest.mark.parametrize(
    ("gate", "task", "expected"),
    [
        (
            "precison >= 0.9",
            "binary",
            "evaluate.gates[0]: unknown metric 'precison' in gate 'precison >= 0.9' (did you mean 'precision'?"
            " metrics for binary: accuracy, precision, recall, f1, roc_auc;"
            " averaged over classes: precision_macro, recall_macro, f1_macro, roc_auc_macro)",
        ),
        (
            "mae <= 3",
            "binary",
            "evaluate.gates[0]: metric 'mae' in gate 'mae <= 3' does not apply to a binary task"
            " (metrics: accuracy, precision, recall, f1, roc_auc)",
        ),
        (
            "precision => 0.9",
            "binary",
            "evaluate.gates[0]: gate 'precision => 0.9' is not 'metric >= number' (operators: >=, >, <=, <)",
        ),
        (
            "accuracy >= 0.9",
            "regression",
            "evaluate.gates[0]: metric 'accuracy' in gate 'accuracy >= 0.9' does not apply to a regression task"
            " (metrics: mae, rmse, r2)",
        ),
    ],
)
def test_bad_gates(tmp_path: Path, gate: str, task: str, expected: str) -> None:
    msg = _load_error(tmp_path, spec_text(task=task, extra=f'[evaluate]\ngates = ["{gate}"]\n'))
    assert msg == f"{tmp_path / 'mlpack.toml'}: {expected}"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            spec_text(name="my model"),
            "model.name: 'my model' must use only letters, digits, '.', '_', '-' (it names the bundle folder)",
        ),
        (
            spec_text(task="ranking"),
            "model.task: expected one of binary, multiclass, regression, classification, got 'ranking'",
        ),
        (spec_text().replace("seed = 0", 'seed = "zero"'), "model.seed: expected an integer, got 'zero'"),
        (
            spec_text().replace('target = "y"', 'target = "y"\ntest_size = 1.5'),
            "data.test_size: expected a share between 0 and 1, got 1.5",
        ),
        (
            spec_text(estimator='class = "X"\nfactory = "m.py:f"'),
            "estimator: give exactly one of class, steps or factory (got class and factory)",
        ),
        (spec_text(estimator='factory = "m.py"'), "estimator.factory: expected \"file.py:function\", got 'm.py'"),
        (
            spec_text(extra='[data.features]\na = "text"\n'),
            "data.features.a: expected numeric or categorical, got 'text'",
        ),
        (spec_text(extra="[parity]\ntolerance = -1\n"), "parity.tolerance: expected a number >= 0, got -1"),
        (spec_text(extra="[drift]\npsi_warn = 0.3\n"), "drift: expected 0 < psi_warn <= psi_drift, got 0.3 and 0.2"),
        (
            spec_text(task="regression", extra='[evaluate]\npositive = "yes"\n'),
            "evaluate.positive: applies to binary classification only, not regression",
        ),
        (spec_text().replace("[data]\n", "").replace('path = "data.csv"\ntarget = "y"\n', ""), "missing table [data]"),
    ],
)
def test_invalid_values(tmp_path: Path, text: str, expected: str) -> None:
    assert _load_error(tmp_path, text) == f"{tmp_path / 'mlpack.toml'}: {expected}"
