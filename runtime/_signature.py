"""Prove that model.onnx is the model manifest.json describes, before the first row.

Digests prove each file is the one the builder wrote; they cannot prove the manifest
and the model belong together (a bundle assembled from two builds). Comparing the
session's inputs and outputs with the manifest's schema catches that at load time
with a one-line error instead of an onnxruntime shape error on the first request.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np
import onnxruntime as ort

from mlpack_edge.errors import BundleError
from mlpack_edge.runtime.manifest import Manifest

__all__ = ["Signature", "bind"]

_TENSOR_KIND = {"numeric": "tensor(float)", "categorical": "tensor(string)"}


class Signature(NamedTuple):
    outputs: list[str]  # [label, probabilities] or [value]
    matrix_input: str | None  # the single float32 [N, F] input, for the "matrix" layout
    label_dtype: Any  # numpy dtype of labels (classification)


def bind(manifest: Manifest, session: ort.InferenceSession, where: str) -> Signature:
    """Check ``session`` against ``manifest``; raise a ``BundleError`` naming the first mismatch."""

    def mismatch(what: str) -> BundleError:
        return BundleError(f"{where} does not match manifest.json ({manifest.name} {manifest.version}): {what}")

    inputs = {i.name: i for i in session.get_inputs()}
    features = manifest.features
    matrix_input: str | None = None
    if manifest.layout == "matrix":
        declared = manifest.data["onnx"].get("inputs") or [{"name": "X"}]
        name = str(declared[0].get("name", "X"))
        if list(inputs) != [name]:
            raise mismatch(f"expected one input {name!r}, the model has {sorted(inputs)}")
        arg = inputs[name]
        width = arg.shape[1] if len(arg.shape) == 2 else None
        if arg.type != "tensor(float)" or (isinstance(width, int) and width != len(features)):
            raise mismatch(f"input {name!r} is {arg.type} {arg.shape}, expected tensor(float) [N, {len(features)}]")
        matrix_input = name
    else:
        names = {f.name for f in features}
        if set(inputs) != names:
            extra, missing = sorted(set(inputs) - names), sorted(names - set(inputs))
            raise mismatch(f"model inputs {sorted(inputs)} differ from the features (missing {missing}, extra {extra})")
        for f in features:
            if inputs[f.name].type != _TENSOR_KIND[f.kind]:
                raise mismatch(f"input {f.name!r} is {inputs[f.name].type}, a {f.kind} feature needs {_TENSOR_KIND[f.kind]}")

    outputs = {o.name: o for o in session.get_outputs()}
    spec = manifest.data["output"]
    if manifest.task == "regression":
        value = str(spec.get("value", ""))
        if value not in outputs:
            raise mismatch(f"no output {value!r} (the model has {sorted(outputs)})")
        if outputs[value].type not in ("tensor(float)", "tensor(double)"):
            raise mismatch(f"output {value!r} is {outputs[value].type}, expected a float tensor")
        return Signature([value], matrix_input, None)

    label, proba = str(spec.get("label", "")), str(spec.get("probabilities", ""))
    classes = manifest.classes
    for name in (label, proba):
        if name not in outputs:
            raise mismatch(f"no output {name!r} (the model has {sorted(outputs)})")
    if len(classes) < 2:
        raise mismatch(f"output.classes must list at least two classes, got {classes}")
    p = outputs[proba]
    n_cols = p.shape[1] if len(p.shape) == 2 else None
    if p.type != "tensor(float)" or (isinstance(n_cols, int) and n_cols != len(classes)):
        raise mismatch(f"output {proba!r} is {p.type} {p.shape}, expected tensor(float) [N, {len(classes)}]")
    strings = all(isinstance(c, str) for c in classes)
    ints = all(isinstance(c, int) and not isinstance(c, bool) for c in classes)
    want = "tensor(string)" if strings else "tensor(int64)" if ints else None
    if want is None or outputs[label].type != want:
        raise mismatch(f"output {label!r} is {outputs[label].type}, classes {classes[:5]} need {want or 'all ints or all strings'}")
    return Signature([label, proba], matrix_input, object if strings else np.int64)
