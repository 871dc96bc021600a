"""From the spec's ``[estimator]`` and ``[preprocess]`` to a fitted scikit-learn model.

Names resolve only to scikit-learn classes and the four XGBoost/LightGBM estimators of
:mod:`mlpack_edge.builder.boosters`: a spec is data, and must not be able to
instantiate arbitrary Python. Arbitrary code goes through ``factory``, a file in the
project that the author wrote on purpose.

mlpack builds the preprocessing front itself because the ONNX input layout depends on
it: with categorical features every feature becomes its own named ONNX input, and
skl2onnx only joins several inputs through a ColumnTransformer, so the model must
begin with one (see ``builder/_inputs.py``).
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import inspect
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sklearn.base import BaseEstimator, clone, is_classifier, is_regressor
from sklearn.compose import ColumnTransformer
from sklearn.impute import SimpleImputer
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, OrdinalEncoder, StandardScaler
from sklearn.utils import all_estimators

try:  # what scikit-learn raises for a bad parameter value (a ValueError subclass)
    from sklearn.utils._param_validation import InvalidParameterError
except ImportError:  # pragma: no cover - moved in a future scikit-learn
    InvalidParameterError = ValueError  # type: ignore[misc,assignment]

from mlpack_edge.builder import boosters
from mlpack_edge.builder._inputs import model_input
from mlpack_edge.builder._suggest import nearest
from mlpack_edge.builder.data import Dataset
from mlpack_edge.builder.spec import EstimatorSpec, PreprocessSpec, Spec, StepSpec
from mlpack_edge.errors import TrainingError

__all__ = ["UserEstimator", "Model", "resolve_estimator", "resolve_class", "assemble", "fit", "describe"]

# Public scikit-learn modules searched for a short class name, most used first, so the
# common case imports one module instead of all of scikit-learn.
_MODULES = (
    "linear_model",
    "ensemble",
    "tree",
    "neighbors",
    "svm",
    "neural_network",
    "naive_bayes",
    "preprocessing",
    "impute",
    "compose",
    "pipeline",
    "decomposition",
    "discriminant_analysis",
    "calibration",
    "feature_selection",
    "kernel_approximation",
    "gaussian_process",
    "cross_decomposition",
    "isotonic",
    "multiclass",
    "multioutput",
    "kernel_ridge",
    "dummy",
    "cluster",
    "covariance",
    "mixture",
    "random_projection",
    "semi_supervised",
    "manifold",
    "feature_extraction",
    "feature_extraction.text",
    "frozen",
    "model_selection",
)
_RESERVED_STEPS = ("impute", "scale", "columns")


@dataclass(frozen=True)
class UserEstimator:
    """The spec's estimator, unfitted, before mlpack puts its preprocessing in front."""

    estimator: Any
    factory_sha256: str | None = None  # lineage of a factory file


@dataclass(frozen=True)
class Model:
    """The whole fitted model and how its input is laid out."""

    estimator: Any
    layout: str  # "matrix" | "columns"
    warnings: tuple[str, ...] = ()


def resolve_estimator(spec: Spec) -> UserEstimator:
    """Instantiate ``[estimator]`` (class, steps or factory), checking names and parameters."""
    est: EstimatorSpec = spec.estimator
    if est.factory is not None:
        return _from_factory(spec, est.factory)
    if est.step is not None:
        return UserEstimator(_instantiate(est.step, spec.path))
    assert est.steps is not None
    steps = []
    for s in est.steps:
        obj = _instantiate(s, spec.path)
        steps.append((s.name or type(obj).__name__.lower(), obj))
    names = [n for n, _ in steps]
    dup = next((n for n in names if names.count(n) > 1), None)
    if dup:
        raise TrainingError(
            f'{spec.path}: estimator.steps: two steps are named {dup!r}; give one of them a name = "..."'
        )
    return UserEstimator(Pipeline(steps))


def resolve_class(name: str) -> type:
    """A scikit-learn estimator class from a short name or a dotted ``sklearn.`` path,
    or a supported XGBoost/LightGBM estimator (``xgboost.XGBClassifier`` or ``XGBClassifier``).

    Raises ``LookupError`` with a suggestion when there is no such estimator, and with
    the pip command when it belongs to an optional library that is not installed.
    """
    if boosters.canonical_name(name) is not None:
        return boosters.resolve(name)
    if "." in name:
        module_name, _, attr = name.rpartition(".")
        if not (module_name == "sklearn" or module_name.startswith("sklearn.")):
            allowed = ", ".join(boosters.SUPPORTED)
            raise LookupError(
                f"{name!r} is not a scikit-learn class (only sklearn.* names and {allowed} are allowed;"
                " use estimator.factory for other code)"
            )
        try:
            cls = getattr(importlib.import_module(module_name), attr, None)
        except ImportError:
            cls = None
        if isinstance(cls, type) and issubclass(cls, BaseEstimator):
            return cls
        raise LookupError(f"unknown scikit-learn estimator {name!r}")
    for module_name in _MODULES:
        cls = getattr(importlib.import_module(f"sklearn.{module_name}"), name, None)
        if isinstance(cls, type) and issubclass(cls, BaseEstimator):
            return cls
    known = sorted({n for n, _ in all_estimators()} | {d.split(".")[1] for d in boosters.SUPPORTED})
    close = nearest(name, known)
    hint = f" (did you mean '{close}'?)" if close else ""
    raise LookupError(f"unknown scikit-learn estimator {name!r}{hint}")


def _instantiate(step: StepSpec, spec_path: Path) -> Any:
    try:
        cls = resolve_class(step.class_name)
    except LookupError as exc:
        raise TrainingError(f"{spec_path}: {step.where}.class: {exc}") from None
    accepted = boosters.accepted_params(cls) if boosters.is_booster_class(cls) else _param_names(cls)
    params = {}
    for key, value in step.params.items():
        if key not in accepted:
            close = nearest(key, sorted(accepted))
            hint = f" (did you mean '{close}'?)" if close else ""
            raise TrainingError(f"{spec_path}: {step.where}.params: {cls.__name__} has no parameter '{key}'{hint}")
        params[key] = _param_value(value, spec_path)
    try:
        return cls(**params)
    except (TypeError, ValueError) as exc:
        raise TrainingError(f"{spec_path}: {step.where}: {cls.__name__} rejected its parameters ({exc})") from None


def _param_value(value: Any, spec_path: Path) -> Any:
    if isinstance(value, StepSpec):
        return _instantiate(value, spec_path)
    if isinstance(value, list):
        return [_param_value(v, spec_path) for v in value]
    if isinstance(value, dict):
        return {k: _param_value(v, spec_path) for k, v in value.items()}
    return value


def _param_names(cls: type) -> set[str]:
    sig = inspect.signature(cls.__init__)
    return {
        p.name for p in sig.parameters.values() if p.name != "self" and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
    }


def _from_factory(spec: Spec, factory: str) -> UserEstimator:
    file_text, func_name = factory.split(":")
    path = spec.root / file_text
    where = f"{spec.path}: estimator.factory"
    try:
        source = path.read_bytes()
    except OSError:
        raise TrainingError(f"{where}: {path} not found (the path is relative to the spec)") from None
    digest = hashlib.sha256(source).hexdigest()
    module_name = f"_mlpack_factory_{digest[:16]}"
    loader_spec = importlib.util.spec_from_file_location(module_name, path)
    if loader_spec is None or loader_spec.loader is None:
        raise TrainingError(f"{where}: {path} is not a Python file")
    module = importlib.util.module_from_spec(loader_spec)
    sys.path.insert(0, str(spec.root))  # the factory may import its neighbours
    try:
        loader_spec.loader.exec_module(module)
        func = getattr(module, func_name, None)
        if not callable(func):
            raise TrainingError(f"{where}: {path} has no function {func_name}()")
        estimator = func()
    except TrainingError:
        raise
    except Exception as exc:  # the user's code: report what it raised, in one line
        raise TrainingError(f"{where}: {factory} raised {type(exc).__name__}: {exc}") from None
    finally:
        sys.path.remove(str(spec.root))
    if not (hasattr(estimator, "fit") and hasattr(estimator, "get_params")):
        raise TrainingError(
            f"{where}: {func_name}() returned {type(estimator).__name__}, expected an unfitted scikit-learn estimator"
        )
    return UserEstimator(estimator, digest)


# --------------------------------------------------------------------------- assembly


def assemble(user: UserEstimator, data: Dataset, prep: PreprocessSpec, seed: int, spec_path: Path) -> Model:
    """Put mlpack's preprocessing in front of the user's estimator, seed it, check the task."""
    est = clone(user.estimator)
    steps = list(est.steps) if isinstance(est, Pipeline) else [("model", est)]
    if isinstance(steps[0][1], ColumnTransformer):
        if prep.explicit:
            raise TrainingError(
                f"{spec_path}: [preprocess] cannot be used with an estimator that begins with a ColumnTransformer"
                " (it routes the columns itself); remove [preprocess]"
            )
        layout, front = "columns", []
    elif data.categorical:
        layout, front = "columns", [("columns", _column_front(data, prep))]
    else:
        layout, front = "matrix", _numeric_front(prep)
    clash = next((n for n, _ in steps if n in _RESERVED_STEPS and front), None)
    if clash:
        raise TrainingError(f"{spec_path}: estimator.steps: step name {clash!r} is reserved for mlpack's preprocessing")
    model = Pipeline(front + steps) if front or len(steps) > 1 else steps[0][1]
    _inject_seed(model, seed)
    boosters.prepare(model)
    final = model.steps[-1][1] if isinstance(model, Pipeline) else model
    if data.task == "regression" and not is_regressor(final):
        raise TrainingError(f"{spec_path}: task is regression but {type(final).__name__} is not a regressor")
    if data.task != "regression":
        if not is_classifier(final):
            raise TrainingError(f"{spec_path}: task is {data.task} but {type(final).__name__} is not a classifier")
        if not hasattr(model, "predict_proba"):
            name = type(final).__name__
            wrap = f'class = "CalibratedClassifierCV", params = {{ estimator = {{ class = "{name}" }}, ensemble = false }}'
            raise TrainingError(
                f"{spec_path}: {name} gives no class probabilities (predict_proba), which the bundle ships; wrap it: {wrap}"
            )
    return Model(model, layout)


def _numeric_imputer(prep: PreprocessSpec) -> list[tuple[str, Any]]:
    num = prep.numeric
    if num.impute == "none":
        return []
    if num.impute == "constant":
        return [("impute", SimpleImputer(strategy="constant", fill_value=num.fill_value))]
    return [("impute", SimpleImputer(strategy=num.impute))]


def _numeric_front(prep: PreprocessSpec) -> list[tuple[str, Any]]:
    if not prep.numeric.enabled:
        return []
    return _numeric_imputer(prep) + ([("scale", StandardScaler())] if prep.numeric.scale else [])


def _column_front(data: Dataset, prep: PreprocessSpec) -> Any:
    parts: list[tuple[str, Any, list[str]]] = []
    if data.numeric:
        num_steps = _numeric_front(prep)
        parts.append(("numeric", Pipeline(num_steps) if num_steps else "passthrough", list(data.numeric)))
    cat = prep.categorical
    cat_steps: list[tuple[str, Any]] = []
    if cat.impute == "most_frequent":
        cat_steps.append(("impute", SimpleImputer(missing_values="", strategy="most_frequent")))
    if cat.encode == "onehot":
        cat_steps.append(("encode", OneHotEncoder(handle_unknown="ignore", sparse_output=False)))
    else:
        cat_steps.append(("encode", OrdinalEncoder(handle_unknown="use_encoded_value", unknown_value=-1)))
    parts.append(("categorical", Pipeline(cat_steps), list(data.categorical)))
    return ColumnTransformer(parts, remainder="drop", sparse_threshold=0.0)


def _inject_seed(model: Any, seed: int) -> None:
    """Give every ``random_state`` left unset the spec's seed: same spec, same model."""
    unset = {
        k: seed
        for k, v in model.get_params(deep=True).items()
        if (k == "random_state" or k.endswith("__random_state")) and v is None
    }
    if unset:
        model.set_params(**unset)


# --------------------------------------------------------------------------- fitting


def fit(model: Model, data: Dataset, spec_path: Path) -> Model:
    """Fit on the training split; scikit-learn's complaints become one-line TrainingErrors."""
    x = model_input(data.x_train, model.layout)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            model.estimator.fit(x, data.y_train)
        except InvalidParameterError as exc:
            raise TrainingError(
                f"{spec_path}: estimator parameter rejected by scikit-learn: {_one_line(exc)}"
            ) from None
        except (ValueError, TypeError) as exc:
            hint = ""
            if "NaN" in str(exc):
                nullable = [f.name for f in data.features if f.nullable and f.kind == "numeric"]
                hint = f"; features with missing values: {', '.join(nullable)} — keep [preprocess] numeric.impute"
            raise TrainingError(f"fitting {describe(model.estimator)} failed: {_one_line(exc)}{hint}") from None
    seen: dict[str, None] = {}
    for w in caught:
        seen.setdefault(f"{w.category.__name__}: {_one_line(w.message)}", None)
    return Model(model.estimator, model.layout, tuple(seen))


def describe(est: Any) -> str:
    """A compact, deterministic description: 'SimpleImputer -> StandardScaler -> LogisticRegression'."""
    if isinstance(est, Pipeline):
        return " -> ".join(describe(s) for _, s in est.steps)
    if isinstance(est, ColumnTransformer):
        inner = "; ".join(f"{name}: {t if isinstance(t, str) else describe(t)}" for name, t, _ in est.transformers)
        return f"ColumnTransformer[{inner}]"
    if isinstance(est, str):
        return est
    nested = [
        v
        for k, v in est.get_params(deep=False).items()
        if k in ("estimator", "base_estimator") and v is not None and not isinstance(v, str)
    ]
    if nested:
        return f"{type(est).__name__}({describe(nested[0])})"
    return type(est).__name__


def _one_line(exc: Any) -> str:
    return " ".join(str(exc).split())
