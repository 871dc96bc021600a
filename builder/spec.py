"""The build spec (``mlpack.toml``): one TOML file says what to train, on what, and how to judge it.

``mlpack build`` takes the spec file or the folder holding it (``mlpack.toml``).
Every key is checked: a key the format does not know is an error naming its dotted path
and the nearest valid one, because a misspelt ``recal >= 0.9`` or ``parms`` silently
ignored would ship a model nobody asked for. Paths in the spec are relative to the spec
file, so a project folder builds the same from anywhere.

Format (all sections but ``[model]``, ``[data]`` and ``[estimator]`` are optional)::

    [model]
    name = "breast-cancer"        # [A-Za-z0-9._-], starts with a letter or digit
    version = "1.0.0"             # same alphabet
    task = "binary"               # binary | multiclass | regression | classification
                                  # ("classification" = binary or multiclass, from the data)
    description = "..."           # optional, as are owner and intended_use (model card)
    seed = 0                      # drives the split and every estimator's random_state
    # Bring your own ONNX model instead of [estimator] (see builder/byo.py):
    # onnx = "model.onnx"         # or `mlpack build --onnx FILE`; no [estimator]/[preprocess]
    # reference_outputs = "expected.csv"   # your framework's outputs for every data row:
    #                             # proba_<class> columns (+ optional label), or value
    # onnx_outputs = { probabilities = "probs" }   # which graph output is which:
    #                             # label, probabilities, logits (softmax added), value
    # classes = ["setosa", "versicolor", "virginica"]   # probability column order
    #                             # (default: the target's classes, sorted)

    [data]
    path = "data.csv"             # CSV with a header row, relative to this file
    target = "target"
    test_size = 0.2               # share of rows held out (stratified for classification)
    exclude = ["id"]              # columns never used as features (optional)
    unseen = "error"              # default policy for categories never seen in training:
                                  # "error" (reject the row) | "missing" (treat as missing)
    missing = ["", "NA", "N/A", "NaN", "nan", "null", "NULL"]   # cells read as missing

    [data.features]               # optional; default: every column but target/exclude,
    age = "numeric"               # kind inferred (numbers -> numeric, else categorical)
    colour = { kind = "categorical", nullable = true, unseen = "missing" }
    # nullable: default = the column has missing cells; true lets the device send nulls

    [preprocess]                  # built by mlpack in front of the estimator
    numeric = { impute = "median", scale = false }   # impute: none|mean|median|constant
                                  # (fill_value for constant); numeric = "none" passes through
    categorical = { impute = "most_frequent", encode = "onehot" }
                                  # impute: most_frequent|none; encode: onehot|ordinal

    [estimator]                   # exactly one of class / steps / factory
    class = "RandomForestClassifier"            # scikit-learn name or dotted sklearn path, or
                                  # xgboost.XGBClassifier|XGBRegressor, lightgbm.LGBMClassifier|LGBMRegressor
    params = { n_estimators = 100, max_depth = 8 }
    # steps = [{ class = "StandardScaler" }, { class = "LogisticRegression", params = { C = 0.5 } }]
    # factory = "model.py:make_estimator"       # returns an unfitted estimator
    # A params value { class = "...", params = {...} } is itself an estimator, e.g.
    # class = "CalibratedClassifierCV", params = { estimator = { class = "SVC" } }

    [evaluate]
    gates = ["precision >= 0.9", "recall >= 0.85"]   # metric (>=|>|<=|<) number
    positive = "malignant"        # binary: the class precision/recall/F1/ROC AUC score
                                  # (default: the second class in sorted order)

    [parity]
    tolerance = 1e-4              # absolute, on probabilities / regression values

    [drift]
    psi_warn = 0.1
    psi_drift = 0.2
    bins = 10                     # quantile bins per numeric feature in the profile
    alpha = 0.005                 # family-wise false-alarm rate of the drift test (all features)
    min_count = 20                # fewest values in a feature for a verdict ("not enough data")

Gates may also be a top-level ``gates = [...]`` (TOML puts a key written after a
``[table]`` header into that table, so it must then come before the first header).
If the estimator is (or begins with) a ColumnTransformer, it routes columns itself:
``[preprocess]`` must be left out and every feature arrives as its own named column.
"""

from __future__ import annotations

import hashlib
import math
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, Literal

from mlpack_edge.builder._suggest import nearest
from mlpack_edge.builder.metrics import Gate, parse_gate
from mlpack_edge.errors import SpecError

__all__ = [
    "DEFAULT_MISSING",
    "Spec",
    "ModelSpec",
    "OnnxSpec",
    "DataSpec",
    "FeatureSpec",
    "NumericPrep",
    "CategoricalPrep",
    "PreprocessSpec",
    "StepSpec",
    "EstimatorSpec",
    "EvaluateSpec",
    "ParitySpec",
    "DriftSpec",
    "load_spec",
]

Task = Literal["binary", "multiclass", "regression", "classification"]
Kind = Literal["numeric", "categorical"]
Unseen = Literal["error", "missing"]

DEFAULT_MISSING = ("", "NA", "N/A", "NaN", "nan", "null", "NULL")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")

# The schema: table -> allowed keys. "data.features.*" is any one feature's table,
# "estimator.steps[]" any one step's.
_SCHEMA: dict[str, tuple[str, ...]] = {
    "": ("model", "data", "preprocess", "estimator", "evaluate", "gates", "parity", "drift"),
    "model": (
        *("name", "version", "task", "description", "owner", "intended_use", "seed"),
        *("onnx", "reference_outputs", "onnx_outputs", "classes"),
    ),
    "model.onnx_outputs": ("label", "probabilities", "logits", "value"),
    "data": ("path", "target", "test_size", "exclude", "unseen", "missing", "features"),
    "data.features.*": ("kind", "nullable", "unseen"),
    "preprocess": ("numeric", "categorical"),
    "preprocess.numeric": ("impute", "scale", "fill_value"),
    "preprocess.categorical": ("impute", "encode"),
    "estimator": ("class", "params", "steps", "factory"),
    "estimator.steps[]": ("class", "params", "name"),
    "evaluate": ("gates", "positive"),
    "parity": ("tolerance",),
    "drift": ("psi_warn", "psi_drift", "bins", "alpha", "min_count"),
}


@dataclass(frozen=True)
class ModelSpec:
    name: str
    version: str
    task: Task
    seed: int = 0
    description: str = ""
    owner: str = ""
    intended_use: str = ""
    onnx: OnnxSpec | None = None  # bring your own ONNX model (no [estimator])


@dataclass(frozen=True)
class OnnxSpec:
    """``[model] onnx = ...`` and its companions: a model trained elsewhere, exported to ONNX."""

    path: Path  # resolved against the spec's folder (or as given on the command line)
    path_text: str  # as written (lineage: no absolute paths)
    reference_outputs: Path | None = None
    reference_text: str | None = None
    outputs: Mapping[str, str] = field(default_factory=dict)  # role (label|probabilities|logits|value) -> output name
    classes: tuple[Any, ...] | None = None  # probability column order


@dataclass(frozen=True)
class FeatureSpec:
    """A declared feature; ``None`` fields are decided from the data."""

    name: str
    kind: Kind | None = None
    nullable: bool | None = None
    unseen: Unseen | None = None


@dataclass(frozen=True)
class DataSpec:
    path: Path  # resolved against the spec's folder
    path_text: str  # as written in the spec (goes into lineage: no absolute paths)
    target: str
    test_size: float = 0.2
    features: tuple[FeatureSpec, ...] | None = None  # None: every column but target/exclude
    exclude: tuple[str, ...] = ()
    unseen: Unseen = "error"
    missing: tuple[str, ...] = DEFAULT_MISSING


@dataclass(frozen=True)
class NumericPrep:
    impute: Literal["none", "mean", "median", "constant"] = "median"
    scale: bool = False
    fill_value: float = 0.0
    enabled: bool = True  # numeric = "none": columns reach the estimator untouched


@dataclass(frozen=True)
class CategoricalPrep:
    impute: Literal["none", "most_frequent"] = "most_frequent"
    encode: Literal["onehot", "ordinal"] = "onehot"


@dataclass(frozen=True)
class PreprocessSpec:
    numeric: NumericPrep = NumericPrep()
    categorical: CategoricalPrep = CategoricalPrep()
    explicit: bool = False  # the spec has a [preprocess] table


@dataclass(frozen=True)
class StepSpec:
    """One estimator: a class name and its parameters (values may be nested StepSpecs)."""

    class_name: str
    params: Mapping[str, Any]
    name: str | None = None
    where: str = "estimator"  # dotted spec key, for error messages


@dataclass(frozen=True)
class EstimatorSpec:
    """Exactly one of ``step`` (one estimator), ``steps`` (a Pipeline) or ``factory``."""

    step: StepSpec | None = None
    steps: tuple[StepSpec, ...] | None = None
    factory: str | None = None  # "file.py:function", relative to the spec


@dataclass(frozen=True)
class EvaluateSpec:
    gates: tuple[Gate, ...] = ()
    positive: int | str | None = None  # binary tasks: the class the metrics score


@dataclass(frozen=True)
class ParitySpec:
    tolerance: float = 1e-4


@dataclass(frozen=True)
class DriftSpec:
    psi_warn: float = 0.1
    psi_drift: float = 0.2
    bins: int = 10
    alpha: float | None = None  # None: the device's default (Thresholds.alpha)
    min_count: int | None = None  # None: the device's default (Thresholds.min_count)

    def manifest_section(self) -> dict[str, float | int]:
        """The manifest's ``drift`` object; alpha/min_count only when set (older manifests stay byte-identical)."""
        out: dict[str, float | int] = {"psi_warn": self.psi_warn, "psi_drift": self.psi_drift}
        if self.alpha is not None:
            out["alpha"] = self.alpha
        if self.min_count is not None:
            out["min_count"] = self.min_count
        return out


@dataclass(frozen=True)
class Spec:
    path: Path
    sha256: str
    model: ModelSpec
    data: DataSpec
    estimator: EstimatorSpec
    preprocess: PreprocessSpec = PreprocessSpec()
    evaluate: EvaluateSpec = EvaluateSpec()
    parity: ParitySpec = ParitySpec()
    drift: DriftSpec = DriftSpec()

    @property
    def root(self) -> Path:
        """The folder relative paths in the spec are resolved against."""
        return self.path.parent


# --------------------------------------------------------------------------- loading


def load_spec(path: str | Path, onnx: str | Path | None = None) -> Spec:
    """Read, check and type a spec file (or a folder's ``mlpack.toml``); defects are :class:`SpecError`.

    ``onnx`` (``mlpack build --onnx FILE``) sets ``[model] onnx`` from the command line.
    """
    path = Path(path)
    if path.is_dir():
        path = path / "mlpack.toml"
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise SpecError(f"{path}: spec file not found") from None
    except OSError as exc:
        raise SpecError(f"{path}: cannot read spec file ({exc.strerror})") from None
    try:
        doc = tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise SpecError(f"{path}: not UTF-8 text, expected a TOML spec") from None
    except tomllib.TOMLDecodeError as exc:
        raise SpecError(f"{path}: not valid TOML: {exc}") from None
    if onnx is not None:
        model_t = doc.get("model")
        if isinstance(model_t, dict):
            if "onnx" in model_t:
                raise SpecError(f"{path}: --onnx given, but the spec names model.onnx too; keep one")
            model_t["onnx"] = str(Path(onnx).resolve())  # relative to where the command runs
    return _Reader(path).spec(doc, hashlib.sha256(raw).hexdigest())


class _Reader:
    """Turns the TOML document into typed dataclasses, naming ``path`` in every error."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def fail(self, key: str, message: str) -> SpecError:
        return SpecError(f"{self.path}: {key}: {message}")

    def check_keys(self, table: Mapping[str, Any], schema_key: str, where: str) -> None:
        allowed = _SCHEMA[schema_key]
        for key in table:
            if key in allowed:
                continue
            dotted = f"{where}.{key}" if where else key
            hint = _suggest(key, allowed, where)
            raise SpecError(f"{self.path}: unknown key '{dotted}'{hint}")

    def table(self, doc: Mapping[str, Any], key: str, required: bool = False) -> dict[str, Any]:
        value = doc.get(key)
        if value is None:
            if required:
                raise SpecError(f"{self.path}: missing table [{key}]")
            return {}
        if not isinstance(value, dict):
            raise self.fail(key, f"expected a table, got {_show(value)}")
        return value

    def string(self, t: Mapping[str, Any], key: str, where: str, default: str | None = None) -> str:
        value = t.get(key, default)
        if value is None:
            raise self.fail(f"{where}.{key}", "required, but missing")
        if not isinstance(value, str):
            raise self.fail(f"{where}.{key}", f"expected a string, got {_show(value)}")
        return value

    def choice(self, t: Mapping[str, Any], key: str, where: str, options: tuple[str, ...], default: str) -> Any:
        value = self.string(t, key, where, default)
        if value not in options:
            raise self.fail(f"{where}.{key}", f"expected one of {', '.join(options)}, got {value!r}")
        return value

    def number(self, t: Mapping[str, Any], key: str, where: str, default: float) -> float:
        value = t.get(key, default)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise self.fail(f"{where}.{key}", f"expected a number, got {_show(value)}")
        return float(value)

    def integer(self, t: Mapping[str, Any], key: str, where: str, default: int) -> int:
        value = t.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.fail(f"{where}.{key}", f"expected an integer, got {_show(value)}")
        return value

    def boolean(self, t: Mapping[str, Any], key: str, where: str, default: bool) -> bool:
        value = t.get(key, default)
        if not isinstance(value, bool):
            raise self.fail(f"{where}.{key}", f"expected true or false, got {_show(value)}")
        return value

    def strings(self, t: Mapping[str, Any], key: str, where: str, default: tuple[str, ...]) -> tuple[str, ...]:
        value = t.get(key, default)
        if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
            raise self.fail(f"{where}.{key}", f"expected a list of strings, got {_show(value)}")
        return tuple(value)

    # ------------------------------------------------------------------ sections

    def spec(self, doc: dict[str, Any], sha256: str) -> Spec:
        self.check_keys(doc, "", "")
        model = self.model(self.table(doc, "model", required=True))
        data = self.data(self.table(doc, "data", required=True))
        if model.onnx is not None:
            for table in ("estimator", "preprocess"):
                if table in doc:
                    raise SpecError(
                        f"{self.path}: [{table}] cannot be used with model.onnx (the ONNX file is the whole model);"
                        f" remove [{table}] or model.onnx"
                    )
            estimator = EstimatorSpec()
        else:
            estimator = self.estimator(self.table(doc, "estimator", required=True))
        preprocess = self.preprocess(doc)
        evaluate = self.evaluate(doc, model.task)
        parity_t = self.table(doc, "parity")
        self.check_keys(parity_t, "parity", "parity")
        tolerance = self.number(parity_t, "tolerance", "parity", 1e-4)
        if tolerance < 0:
            raise self.fail("parity.tolerance", f"expected a number >= 0, got {tolerance:g}")
        return Spec(
            path=self.path,
            sha256=sha256,
            model=model,
            data=data,
            estimator=estimator,
            preprocess=preprocess,
            evaluate=evaluate,
            parity=ParitySpec(tolerance),
            drift=self.drift(self.table(doc, "drift")),
        )

    def model(self, t: dict[str, Any]) -> ModelSpec:
        self.check_keys(t, "model", "model")
        name = self.string(t, "name", "model")
        version = self.string(t, "version", "model")
        for key, value in (("name", name), ("version", version)):
            if not _NAME.match(value):
                raise self.fail(
                    f"model.{key}",
                    f"{value!r} must use only letters, digits, '.', '_', '-' (it names the bundle folder)",
                )
        seed = self.integer(t, "seed", "model", 0)
        if not 0 <= seed < 2**32:
            raise self.fail("model.seed", f"expected an integer in [0, 2**32), got {seed}")
        task = self.choice(
            t, "task", "model", ("binary", "multiclass", "regression", "classification"), "classification"
        )
        return ModelSpec(
            name=name,
            version=version,
            task=task,
            seed=seed,
            description=self.string(t, "description", "model", ""),
            owner=self.string(t, "owner", "model", ""),
            intended_use=self.string(t, "intended_use", "model", ""),
            onnx=self.onnx(t, task),
        )

    def onnx(self, t: dict[str, Any], task: str) -> OnnxSpec | None:
        companions = [k for k in ("reference_outputs", "onnx_outputs", "classes") if k in t]
        if "onnx" not in t:
            if companions:
                raise self.fail(f"model.{companions[0]}", "only goes with model.onnx (a bring-your-own ONNX model)")
            return None
        text = self.string(t, "onnx", "model")
        ref = self.string(t, "reference_outputs", "model") if "reference_outputs" in t else None
        outputs_t = t.get("onnx_outputs", {})
        if not isinstance(outputs_t, dict):
            raise self.fail("model.onnx_outputs", f"expected a table like {{ probabilities = \"probs\" }}, got {_show(outputs_t)}")
        self.check_keys(outputs_t, "model.onnx_outputs", "model.onnx_outputs")
        outputs = {k: self.string(outputs_t, k, "model.onnx_outputs") for k in outputs_t}
        roles = set(outputs)
        if task == "regression" and roles - {"value"}:
            raise self.fail("model.onnx_outputs", f"a regression model has one output: value (got {', '.join(sorted(roles))})")
        if task != "regression" and "value" in roles:
            raise self.fail("model.onnx_outputs.value", "is for regression; a classifier has probabilities (or logits) and label")
        if {"probabilities", "logits"} <= roles:
            raise self.fail("model.onnx_outputs", "give probabilities or logits, not both")
        classes = None
        if "classes" in t:
            value = t["classes"]
            if task == "regression":
                raise self.fail("model.classes", "applies to classification, not regression")
            ok = isinstance(value, list) and len(value) >= 2 and (
                all(isinstance(c, str) for c in value) or all(isinstance(c, int) and not isinstance(c, bool) for c in value)
            )
            if not ok or len(set(value)) != len(value):
                raise self.fail("model.classes", f"expected a list of two or more distinct labels (all strings or all integers), got {_show(value)}")
            classes = tuple(value)
        base = self.path.parent
        path = Path(text) if Path(text).is_absolute() else base / text
        return OnnxSpec(
            path=path,
            path_text=text,
            reference_outputs=(base / ref) if ref is not None else None,
            reference_text=ref,
            outputs=MappingProxyType(outputs),
            classes=classes,
        )

    def data(self, t: dict[str, Any]) -> DataSpec:
        self.check_keys(t, "data", "data")
        path_text = self.string(t, "path", "data")
        test_size = self.number(t, "test_size", "data", 0.2)
        if not 0.0 < test_size < 1.0:
            raise self.fail("data.test_size", f"expected a share between 0 and 1, got {test_size:g}")
        unseen = self.choice(t, "unseen", "data", ("error", "missing"), "error")
        features = None
        if "features" in t:
            ft = t["features"]
            if not isinstance(ft, dict) or not ft:
                raise self.fail("data.features", f"expected a table of feature = kind, got {_show(ft)}")
            features = tuple(self.feature(name, value) for name, value in ft.items())
        return DataSpec(
            path=self.path.parent / path_text,
            path_text=path_text,
            target=self.string(t, "target", "data"),
            test_size=test_size,
            features=features,
            exclude=self.strings(t, "exclude", "data", ()),
            unseen=unseen,
            missing=self.strings(t, "missing", "data", DEFAULT_MISSING),
        )

    def feature(self, name: str, value: Any) -> FeatureSpec:
        where = f"data.features.{name}"
        kinds = ("numeric", "categorical")
        if isinstance(value, str):
            if value not in kinds:
                raise self.fail(where, f"expected numeric or categorical, got {value!r}")
            return FeatureSpec(name, value)  # type: ignore[arg-type]
        if not isinstance(value, dict):
            raise self.fail(where, f'expected "numeric", "categorical" or a table, got {_show(value)}')
        self.check_keys(value, "data.features.*", where)
        kind = value.get("kind")
        if kind is not None and kind not in kinds:
            raise self.fail(f"{where}.kind", f"expected numeric or categorical, got {kind!r}")
        nullable = self.boolean(value, "nullable", where, False) if "nullable" in value else None
        unseen = self.choice(value, "unseen", where, ("error", "missing"), "error") if "unseen" in value else None
        if unseen is not None and kind == "numeric":
            raise self.fail(f"{where}.unseen", "applies to categorical features only")
        return FeatureSpec(name, kind, nullable, unseen)

    def preprocess(self, doc: dict[str, Any]) -> PreprocessSpec:
        if "preprocess" not in doc:
            return PreprocessSpec()
        t = self.table(doc, "preprocess")
        self.check_keys(t, "preprocess", "preprocess")
        num_t = t.get("numeric", {})
        if num_t == "none":
            numeric = NumericPrep(impute="none", enabled=False)
        elif isinstance(num_t, dict):
            self.check_keys(num_t, "preprocess.numeric", "preprocess.numeric")
            numeric = NumericPrep(
                impute=self.choice(
                    num_t, "impute", "preprocess.numeric", ("none", "mean", "median", "constant"), "median"
                ),
                scale=self.boolean(num_t, "scale", "preprocess.numeric", False),
                fill_value=self.number(num_t, "fill_value", "preprocess.numeric", 0.0),
            )
        else:
            raise self.fail("preprocess.numeric", f'expected a table or "none", got {_show(num_t)}')
        cat_t = t.get("categorical", {})
        if not isinstance(cat_t, dict):
            raise self.fail("preprocess.categorical", f"expected a table, got {_show(cat_t)}")
        self.check_keys(cat_t, "preprocess.categorical", "preprocess.categorical")
        categorical = CategoricalPrep(
            impute=self.choice(cat_t, "impute", "preprocess.categorical", ("none", "most_frequent"), "most_frequent"),
            encode=self.choice(cat_t, "encode", "preprocess.categorical", ("onehot", "ordinal"), "onehot"),
        )
        return PreprocessSpec(numeric, categorical, explicit=True)

    def estimator(self, t: dict[str, Any]) -> EstimatorSpec:
        self.check_keys(t, "estimator", "estimator")
        given = [k for k in ("class", "steps", "factory") if k in t]
        if len(given) != 1:
            what = "none" if not given else " and ".join(given)
            raise self.fail("estimator", f"give exactly one of class, steps or factory (got {what})")
        if "params" in t and "class" not in t:
            raise self.fail("estimator.params", "only goes with estimator.class (steps carry their own params)")
        if "class" in t:
            return EstimatorSpec(step=self.step(t, "estimator", "estimator"))
        if "factory" in t:
            factory = self.string(t, "factory", "estimator")
            if factory.count(":") != 1 or not all(factory.split(":")):
                raise self.fail("estimator.factory", f'expected "file.py:function", got {factory!r}')
            return EstimatorSpec(factory=factory)
        steps = t["steps"]
        if not isinstance(steps, list) or not steps or not all(isinstance(s, dict) for s in steps):
            raise self.fail("estimator.steps", "expected a non-empty list of { class = ..., params = {...} } tables")
        out = []
        for i, s in enumerate(steps):
            where = f"estimator.steps[{i}]"
            self.check_keys(s, "estimator.steps[]", where)
            out.append(self.step(s, where, where))
        names = [s.name for s in out if s.name]
        dup = next((n for n in names if names.count(n) > 1), None)
        if dup:
            raise self.fail("estimator.steps", f"step name {dup!r} is used twice")
        return EstimatorSpec(steps=tuple(out))

    def step(self, t: Mapping[str, Any], where: str, key_where: str) -> StepSpec:
        class_name = self.string(t, "class", key_where)
        params = t.get("params", {})
        if not isinstance(params, dict):
            raise self.fail(f"{where}.params", f"expected a table, got {_show(params)}")
        name = self.string(t, "name", key_where) if "name" in t else None
        resolved = {k: self.param(v, f"{where}.params.{k}") for k, v in params.items()}
        return StepSpec(class_name, MappingProxyType(resolved), name, where)

    def param(self, value: Any, where: str) -> Any:
        """A table with ``class`` is a nested estimator; lists are searched for such tables."""
        if isinstance(value, dict):
            if "class" in value:
                bad = set(value) - {"class", "params"}
                if bad:
                    key = sorted(bad)[0]
                    raise SpecError(
                        f"{self.path}: unknown key '{where}.{key}'{_suggest(key, ('class', 'params'), where)}"
                    )
                return self.step(value, where, where)
            return {k: self.param(v, f"{where}.{k}") for k, v in value.items()}
        if isinstance(value, list):
            return [self.param(v, f"{where}[{i}]") for i, v in enumerate(value)]
        return value

    def evaluate(self, doc: dict[str, Any], task: str) -> EvaluateSpec:
        ev = self.table(doc, "evaluate")
        self.check_keys(ev, "evaluate", "evaluate")
        positive = ev.get("positive")
        if positive is not None:
            if task not in ("binary", "classification"):
                raise self.fail("evaluate.positive", f"applies to binary classification only, not {task}")
            if isinstance(positive, bool) or not isinstance(positive, (int, str)):
                raise self.fail(
                    "evaluate.positive", f"expected a class label (string or integer), got {_show(positive)}"
                )
        if "gates" in doc and "gates" in ev:
            raise SpecError(f"{self.path}: gates given twice (top-level and in [evaluate]); keep one")
        where = "evaluate.gates" if "gates" in ev else "gates"
        texts = (ev if "gates" in ev else doc).get("gates", [])
        if not isinstance(texts, list) or not all(isinstance(g, str) for g in texts):
            raise self.fail(where, f'expected a list of strings like "precision >= 0.9", got {_show(texts)}')
        out = []
        for i, text in enumerate(texts):
            try:
                out.append(parse_gate(text, task))
            except ValueError as exc:
                raise self.fail(f"{where}[{i}]", str(exc)) from None
        return EvaluateSpec(tuple(out), positive)

    def drift(self, t: dict[str, Any]) -> DriftSpec:
        self.check_keys(t, "drift", "drift")
        warn = self.number(t, "psi_warn", "drift", 0.1)
        drift = self.number(t, "psi_drift", "drift", 0.2)
        if not 0 < warn <= drift:
            raise self.fail("drift", f"expected 0 < psi_warn <= psi_drift, got {warn:g} and {drift:g}")
        bins = self.integer(t, "bins", "drift", 10)
        if not 2 <= bins <= 100:
            raise self.fail("drift.bins", f"expected an integer from 2 to 100, got {bins}")
        alpha = self.number(t, "alpha", "drift", 0.005) if "alpha" in t else None
        if alpha is not None and not 0 < alpha < 1:
            raise self.fail("drift.alpha", f"expected a number between 0 and 1 (exclusive), got {alpha:g}")
        min_count = self.integer(t, "min_count", "drift", 20) if "min_count" in t else None
        if min_count is not None and min_count < 1:
            raise self.fail("drift.min_count", f"expected a positive integer, got {min_count}")
        return DriftSpec(warn, drift, bins, alpha, min_count)


def _show(value: Any) -> str:
    """A short, readable rendering of a TOML value for an error message."""
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, list):
        return "a list"
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _suggest(key: str, allowed: tuple[str, ...], where: str) -> str:
    """' (did you mean ...?)': the table where ``key`` is valid, else the nearest key here."""
    homes = [t for t, keys in _SCHEMA.items() if key in keys and t and not t.endswith(("*", "[]"))]
    if homes:
        return f" (did you mean '{homes[0]}.{key}'? a key written after a [table] header belongs to that table)"
    close = nearest(key, allowed)
    if close:
        near = f"{where}.{close}" if where else close
        return f" (did you mean '{near}'?)"
    if allowed:
        return f" (expected one of: {', '.join(allowed)})"
    return ""
