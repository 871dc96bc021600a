"""XGBoost and LightGBM estimators in a spec, converted by onnxmltools' converters.

A spec may name ``xgboost.XGBClassifier``, ``xgboost.XGBRegressor``,
``lightgbm.LGBMClassifier`` or ``lightgbm.LGBMRegressor`` (or the bare class name),
alone or as the last step after mlpack's declarative preprocessing. They are optional
extras (``pip install 'mlpack-edge[xgboost]'`` / ``[lightgbm]``): this module imports
them only when a spec names them, and a missing one is a one-line error with the pip
command, raised before any data is read.

Conversion: onnxmltools ships the tree converters; they are registered with skl2onnx
(``update_registered_converter``) so a whole pipeline, preprocessing included, converts
in one ``convert_sklearn`` call. Both libraries route missing values natively (a learned
default direction per split); the converters carry it as
``nodes_missing_value_tracks_true``, and the parity proof probes a missing value in
every nullable feature, so a graph that routes NaN differently fails the build.

Two adjustments, both for facts of these libraries rather than taste:

* XGBoost's scikit-learn API accepts only the classes ``0..n-1`` and answers with
  them; a target read from a CSV is often ``"yes"``/``"no"``. mlpack fits its own
  subclass that encodes the labels for fitting and gives them back from ``predict``
  and ``classes_`` (which is what the converter writes into the ONNX label output).
* LightGBM is made deterministic (``deterministic = true``, ``force_row_wise = true``)
  and quiet (``verbose = -1``: its C++ logger writes to stdout) unless the spec sets
  those parameters itself; both libraries get the spec's seed as ``random_state``.

Nothing here is imported by the device runtime: only the ONNX graph reaches a device.
"""

from __future__ import annotations

import functools
import importlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = [
    "LIBRARIES",
    "SUPPORTED",
    "canonical_name",
    "resolve",
    "accepted_params",
    "prepare",
    "is_booster",
    "is_booster_class",
    "register_converters",
    "versions",
]


@dataclass(frozen=True)
class _Library:
    module: str  # import name
    extra: str  # pip extra of mlpack-edge
    title: str  # as people write it


LIBRARIES = {
    "xgboost": _Library("xgboost", "xgboost", "XGBoost"),
    "lightgbm": _Library("lightgbm", "lightgbm", "LightGBM"),
}
#: Dotted name -> (library, class name, role).
SUPPORTED: dict[str, tuple[str, str, str]] = {
    "xgboost.XGBClassifier": ("xgboost", "XGBClassifier", "classifier"),
    "xgboost.XGBRegressor": ("xgboost", "XGBRegressor", "regressor"),
    "lightgbm.LGBMClassifier": ("lightgbm", "LGBMClassifier", "classifier"),
    "lightgbm.LGBMRegressor": ("lightgbm", "LGBMRegressor", "regressor"),
}
_SHORT = {cls: dotted for dotted, (_, cls, _) in SUPPORTED.items()}
# LightGBM parameters mlpack sets unless the spec does (see the module doc).
_LGBM_DEFAULTS = {"deterministic": True, "force_row_wise": True, "verbose": -1}


def canonical_name(name: str) -> str | None:
    """``"xgboost.XGBClassifier"`` for that name or its short form; ``None`` if not a booster."""
    if name in SUPPORTED:
        return name
    return _SHORT.get(name)


def resolve(name: str) -> type:
    """The estimator class for a supported booster name; ``LookupError`` (one line) if not installed."""
    dotted = canonical_name(name)
    if dotted is None:
        raise LookupError(f"{name!r} is not a supported XGBoost or LightGBM estimator")
    lib_name, cls_name, _ = SUPPORTED[dotted]
    lib = LIBRARIES[lib_name]
    pip = f"pip install 'mlpack-edge[{lib.extra}]'"
    try:
        module = importlib.import_module(lib.module)
    except ImportError:
        raise LookupError(f"{dotted} needs {lib.title}, which is not installed: {pip}") from None
    try:
        importlib.import_module("onnxmltools")
    except ImportError:
        raise LookupError(f"{dotted} needs onnxmltools to convert it to ONNX, which is not installed: {pip}") from None
    if dotted == "xgboost.XGBClassifier":
        return _xgb_classifier()
    return getattr(module, cls_name)  # type: ignore[no-any-return]


def accepted_params(cls: type) -> set[str]:
    """Parameter names the spec may set: the estimator's own, and LightGBM's core names and aliases.

    Both classes take most parameters through ``**kwargs``, so the signature alone
    would refuse ``n_estimators`` on XGBoost and ``min_data_in_leaf`` on LightGBM.
    """
    names = set(cls().get_params(deep=False))
    if _library(cls) == "lightgbm":
        try:
            from lightgbm.basic import _ConfigAliases

            for main, aliases in _ConfigAliases._get_all_param_aliases().items():
                names.add(main)
                names.update(aliases)
        except (ImportError, AttributeError):  # pragma: no cover - a LightGBM without the table
            pass
        names.update(_LGBM_DEFAULTS)
    return names


def is_booster(obj: Any) -> bool:
    return _library(type(obj)) is not None


def is_booster_class(cls: type) -> bool:
    return _library(cls) is not None


def _library(cls: type) -> str | None:
    """``"xgboost"`` or ``"lightgbm"`` for a class of theirs (or mlpack's XGBClassifier), else ``None``."""
    lib = getattr(cls, "_mlpack_library", None) or cls.__module__.split(".")[0]
    return lib if lib in LIBRARIES else None


def prepare(estimator: Any) -> None:
    """Set LightGBM's determinism and quiet defaults on every LightGBM step left at them."""
    for obj in _objects(estimator):
        if _library(type(obj)) == "lightgbm":
            params = obj.get_params(deep=False)
            unset = {k: v for k, v in _LGBM_DEFAULTS.items() if k not in params and not _has_alias(k, params)}
            if unset:
                obj.set_params(**unset)


def _has_alias(key: str, params: dict[str, Any]) -> bool:
    try:
        from lightgbm.basic import _ConfigAliases

        table = _ConfigAliases._get_all_param_aliases()
    except (ImportError, AttributeError):  # pragma: no cover
        return False
    for main, aliases in table.items():
        group = {main, *aliases}
        if key in group and group & params.keys():
            return True
    return False


def register_converters(estimator: Any) -> None:
    """Register onnxmltools' converter with skl2onnx for every booster class inside ``estimator``."""
    for obj in _objects(estimator):
        if is_booster(obj):
            _register(type(obj))


@functools.cache
def _register(cls: type) -> None:
    from skl2onnx import update_registered_converter
    from skl2onnx.common.shape_calculator import (
        calculate_linear_classifier_output_shapes,
        calculate_linear_regressor_output_shapes,
    )

    classifier = "Classifier" in cls.__name__
    lib = _library(cls)
    if lib == "lightgbm":
        from onnxmltools.convert.lightgbm.operator_converters.LightGbm import convert_lightgbm as converter
    else:
        from onnxmltools.convert.xgboost.operator_converters.XGBoost import convert_xgboost as converter
    alias = f"Mlpack{LIBRARIES[str(lib)].title}{cls.__name__}"
    if classifier:
        update_registered_converter(
            cls,
            alias,
            calculate_linear_classifier_output_shapes,
            converter,
            options={"nocl": [True, False], "zipmap": [True, False, "columns"]},
        )
    else:
        update_registered_converter(
            cls,
            alias,
            calculate_linear_regressor_output_shapes,
            converter,
            options={"split": None} if lib == "lightgbm" else None,
        )


def versions(estimator: Any) -> dict[str, str]:
    """Lineage: the versions of the booster libraries (and onnxmltools) a model uses; ``{}`` if none."""
    libs = sorted({lib for obj in _objects(estimator) if (lib := _library(type(obj))) is not None})
    if not libs:
        return {}
    out = {lib: importlib.import_module(lib).__version__ for lib in libs}
    out["onnxmltools"] = importlib.import_module("onnxmltools").__version__
    return out


def _objects(est: Any) -> Iterator[Any]:
    """The estimator and every step inside it (Pipeline steps, ColumnTransformer parts)."""
    yield est
    steps = getattr(est, "steps", None)
    if isinstance(steps, list):
        for _, step in steps:
            yield from _objects(step)
    parts = getattr(est, "transformers", None)
    if isinstance(parts, list):
        for part in parts:
            if isinstance(part, tuple) and len(part) >= 2:
                yield from _objects(part[1])


@functools.cache
def _xgb_classifier() -> type:
    """XGBClassifier that takes any class labels (see the module doc)."""
    from xgboost import XGBClassifier as _Base

    class XGBClassifier(_Base):  # type: ignore[misc,valid-type]
        """xgboost.XGBClassifier with its target's labels encoded as 0..n-1 for fitting."""

        _mlpack_library = "xgboost"

        def fit(self, X: Any, y: Any, **kwargs: Any) -> Any:
            labels, codes = np.unique(np.asarray(y), return_inverse=True)
            self._mlpack_labels = None  # the base class checks classes_ against the codes
            super().fit(X, codes, **kwargs)
            self._mlpack_labels = labels
            return self

        @property
        def classes_(self) -> np.ndarray:
            labels = getattr(self, "_mlpack_labels", None)
            return labels if labels is not None else np.arange(self.n_classes_)

        def predict(self, X: Any, **kwargs: Any) -> np.ndarray:
            codes = np.asarray(super().predict(X, **kwargs)).astype(np.int64)
            labels = getattr(self, "_mlpack_labels", None)
            return labels[codes] if labels is not None else codes

    return XGBClassifier
