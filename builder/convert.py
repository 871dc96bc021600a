"""Fitted scikit-learn model -> ONNX bytes with skl2onnx, deterministically.

The opset is fixed and recorded (a device's onnxruntime must support it); classifiers
output plain ``label`` + ``probabilities`` tensors (``zipmap=False``) rather than a list
of dicts; the graph is named after the model, because skl2onnx otherwise names it with
a random uuid and two builds of the same spec would differ.

skl2onnx turns input names that are not identifiers ("temp C") into identifiers
("temp_C"); in the ``columns`` layout the device feeds inputs by feature name, so the
graph inputs are renamed back to the exact feature names (ONNX allows any string).
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from skl2onnx import convert_sklearn, get_model_alias
from skl2onnx.common.data_types import FloatTensorType, StringTensorType
from sklearn.base import BaseEstimator, is_classifier, is_regressor
from sklearn.compose import ColumnTransformer
from sklearn.pipeline import FeatureUnion, Pipeline
from sklearn.utils import all_estimators

from mlpack_edge.builder import boosters
from mlpack_edge.builder.data import Dataset
from mlpack_edge.builder.estimators import Model, describe
from mlpack_edge.errors import ConversionError

__all__ = ["OPSET", "Converted", "convert", "unsupported_step"]

#: The opset every bundle is converted to (IsolationForest needs ai.onnx.ml 3, see DESIGN.md).
OPSET: dict[str, int] = {"": 18, "ai.onnx.ml": 3}


@dataclass(frozen=True)
class Converted:
    model: bytes
    opset: dict[str, int]
    inputs: list[dict[str, Any]]  # manifest onnx.inputs
    output: dict[str, str]  # ONNX output names: label/probabilities, or value

    def manifest_section(self, file: str) -> dict[str, Any]:
        return {"file": file, "opset": dict(self.opset), "inputs": list(self.inputs)}


def convert(model: Model, data: Dataset, graph_name: str) -> Converted:
    """Convert ``model``; an unsupported step or a converter failure is a ConversionError."""
    boosters.register_converters(model.estimator)
    bad = unsupported_step(model.estimator)
    if bad is not None:
        raise ConversionError(bad)
    if model.layout == "matrix":
        types: list[tuple[str, Any]] = [("X", FloatTensorType([None, len(data.features)]))]
        inputs = [{"name": "X", "dtype": "float32", "width": len(data.features)}]
    else:
        types = [
            (f.name, FloatTensorType([None, 1]) if f.kind == "numeric" else StringTensorType([None, 1]))
            for f in data.features
        ]
        inputs = [
            {"name": f.name, "dtype": "float32" if f.kind == "numeric" else "string", "width": 1} for f in data.features
        ]
    options = None
    if data.task != "regression":
        options = {id(_final(model.estimator)): {"zipmap": False}}
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            onx = convert_sklearn(
                model.estimator, initial_types=types, target_opset=dict(OPSET), options=options, name=graph_name
            )
    except Exception as exc:  # skl2onnx raises a zoo of types; all mean "cannot convert"
        message = " ".join(str(exc).split())[:300]
        raise ConversionError(
            f"skl2onnx could not convert {describe(model.estimator)}: {type(exc).__name__}: {message}"
        ) from None
    if model.layout == "columns":
        _restore_input_names(onx.graph, [f.name for f in data.features])
    _sort_opsets(onx)
    output = _outputs([o.name for o in onx.graph.output], data.task)
    return Converted(onx.SerializeToString(deterministic=True), dict(OPSET), inputs, output)


def unsupported_step(estimator: Any) -> str | None:
    """A message naming the first step skl2onnx has no converter for, else ``None``."""
    for path, obj in _walk(estimator, ""):
        if _has_converter(type(obj)):
            continue
        role, flt = (
            ("classifiers", "classifier")
            if is_classifier(obj)
            else ("regressors", "regressor")
            if is_regressor(obj)
            else ("transformers", "transformer")
        )
        same = sorted(n for n, cls in all_estimators(type_filter=flt) if _has_converter(cls))
        same += [d for d, (_, _, r) in boosters.SUPPORTED.items() if r == flt]
        return (
            f"step '{path}' ({type(obj).__name__}) cannot be converted to ONNX: skl2onnx has no converter for it;"
            f" supported {role}: {', '.join(same)}"
        )
    return None


def _has_converter(cls: type) -> bool:
    try:
        get_model_alias(cls)
    except RuntimeError:
        return False
    return True


def _walk(est: Any, path: str) -> Iterator[tuple[str, Any]]:
    """Every estimator inside ``est`` (pipeline steps, column transformers, wrapped models)."""
    if isinstance(est, str) or not isinstance(est, BaseEstimator):
        return
    yield path or type(est).__name__, est
    prefix = f"{path}/" if path else ""
    if isinstance(est, Pipeline):
        children: list[tuple[str, Any]] = list(est.steps)
    elif isinstance(est, ColumnTransformer):
        children = [(n, t) for n, t, _ in getattr(est, "transformers_", est.transformers)]
    elif isinstance(est, FeatureUnion):
        children = list(est.transformer_list)
    else:
        children = []
        for key, value in est.get_params(deep=False).items():
            if isinstance(value, BaseEstimator):
                children.append((key, value))
            elif isinstance(value, (list, tuple)):
                for i, item in enumerate(value):
                    if isinstance(item, tuple) and len(item) == 2:
                        children.append((f"{key}/{item[0]}", item[1]))
                    elif isinstance(item, BaseEstimator):
                        children.append((f"{key}[{i}]", item))
    for name, child in children:
        yield from _walk(child, f"{prefix}{name}")


def _final(est: Any) -> Any:
    return est.steps[-1][1] if isinstance(est, Pipeline) else est


def _sort_opsets(onx: Any) -> None:
    """Order ``opset_import`` by domain: onnxmltools' converters collect domains in a set,
    so their order (and the file's bytes) followed the process's hash seed."""
    imports = sorted((o.domain, o.version) for o in onx.opset_import)
    del onx.opset_import[:]
    for domain, version in imports:
        onx.opset_import.add(domain=domain, version=version)


def _restore_input_names(graph: Any, names: list[str]) -> None:
    """Rename graph inputs (in order) to ``names`` wherever they are referenced."""
    if len(graph.input) != len(names):
        raise ConversionError(f"the ONNX graph has {len(graph.input)} inputs for {len(names)} features")
    renames = {i.name: n for i, n in zip(graph.input, names, strict=True) if i.name != n}
    if not renames:
        return
    for i in graph.input:
        i.name = renames.get(i.name, i.name)
    _rename_uses(graph, renames)


def _rename_uses(graph: Any, renames: dict[str, str]) -> None:
    for node in graph.node:
        for k, name in enumerate(node.input):
            if name in renames:
                node.input[k] = renames[name]
        for attr in node.attribute:  # subgraphs (If/Loop/Scan) may read outer names
            for sub in ([attr.g] if attr.HasField("g") else []) + list(attr.graphs):
                _rename_uses(sub, renames)


def _outputs(names: list[str], task: str) -> dict[str, str]:
    if task == "regression":
        if len(names) != 1:
            raise ConversionError(f"expected one ONNX output for a regressor, got {names}")
        return {"value": names[0]}
    if len(names) != 2:
        raise ConversionError(f"expected ONNX outputs label and probabilities for a classifier, got {names}")
    return {"label": names[0], "probabilities": names[1]}
