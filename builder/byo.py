"""Bring your own ONNX: a model trained elsewhere (PyTorch, Keras, anything that exports ONNX).

``[model] onnx = "model.onnx"`` (or ``mlpack build --onnx FILE``) takes the place of
``[estimator]``. The data CSV is still required: its held-out rows feed the gates, its
training rows the drift profile, and it fixes the input schema the device enforces.

What is checked, at build time, each failure one line and nothing written:

* the file is ONNX and the device's onnxruntime (the same version this build freezes
  into the executable) loads it: an operator or opset it cannot run fails here, not
  on a device;
* its inputs match the schema: one float tensor ``[N, F]`` over the numeric features
  (``matrix`` layout), or one ``[N, 1]`` tensor per feature named like it, float for
  numeric and string for categorical (``columns`` layout). Without ``[data.features]``
  and with several inputs, the features *are* the graph's inputs (names and kinds);
* its outputs are what the task needs: a float value for regression; class
  probabilities for a classifier (the bundle ships them and ``roc_auc`` needs them).

The device runtime expects a classifier's graph to answer ``label`` and
``probabilities [N, C]``; a network usually answers probabilities (or logits) only. So
mlpack appends what is missing to the graph, with standard operators: Softmax (logits),
``[1 - p, p]`` (a single binary column), a Cast to float, and ArgMax + Gather over the
class labels. The device executable does not change; only this graph goes to it.

Parity: with ``reference_outputs`` (a CSV of the outputs your framework gave for every
row of the data CSV: ``proba_<class>`` columns and optionally ``label``, or ``value``)
every row is compared. Without it the manifest records
``"status": "not proven (no reference outputs)"`` and the model card says so. The golden
set holds held-out rows with this graph's own answers, so a device still proves it
computes what the build machine computed.
"""

from __future__ import annotations

import csv
import hashlib
import io
import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from mlpack_edge.builder.convert import Converted
from mlpack_edge.builder.data import Dataset
from mlpack_edge.builder.parity import ParityResult, label_is_argmax
from mlpack_edge.builder.spec import DataSpec, FeatureSpec, OnnxSpec
from mlpack_edge.errors import ConversionError, DataError, ParityError
from mlpack_edge.runtime import _datetime
from mlpack_edge.runtime.golden import Golden
from mlpack_edge.runtime.manifest import Feature

__all__ = ["OnnxModel", "Bound", "Outputs", "read", "data_spec", "bind", "run", "prove", "not_proven", "golden"]

_GOLDEN_MAX = 48
_FLOAT = "tensor(float)"
_DOUBLE = "tensor(double)"
_STRING = "tensor(string)"
_INT64 = "tensor(int64)"
NOT_PROVEN = "not proven (no reference outputs)"


@dataclass(frozen=True)
class _Arg:
    name: str
    type: str
    shape: tuple[Any, ...]


@dataclass(frozen=True)
class OnnxModel:
    """The user's file, parsed and loaded once by onnxruntime."""

    path: Path
    raw: bytes
    proto: Any  # onnx.ModelProto
    inputs: tuple[_Arg, ...]
    outputs: tuple[_Arg, ...]

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.raw).hexdigest()

    @property
    def producer(self) -> str:
        p = self.proto
        return " ".join(x for x in (p.producer_name, p.producer_version) if x) or "unknown producer"


@dataclass(frozen=True)
class Bound:
    """The graph bound to the data's schema, as the bundle will carry it."""

    converted: Converted
    layout: str
    dataset: Dataset  # classes in the probability-column order
    added: tuple[str, ...]  # what mlpack appended to the graph, for the progress line


@dataclass(frozen=True)
class Outputs:
    labels: np.ndarray | None = None
    probabilities: np.ndarray | None = None
    values: np.ndarray | None = None


# --------------------------------------------------------------------------- reading


def read(spec: OnnxSpec) -> OnnxModel:
    """Parse the file and load it in onnxruntime; not ONNX or not runnable is a ConversionError."""
    import onnx
    import onnxruntime as ort
    from google.protobuf.message import DecodeError

    where = str(spec.path)
    try:
        raw = spec.path.read_bytes()
    except FileNotFoundError:
        raise ConversionError(f"{where}: ONNX file not found (model.onnx is relative to the spec)") from None
    except OSError as exc:
        raise ConversionError(f"{where}: cannot read ({exc.strerror or exc})") from None
    try:
        proto = onnx.load_from_string(raw)
    except (DecodeError, ValueError, RuntimeError):
        proto = None
    if proto is None or proto.ir_version <= 0 or not proto.HasField("graph") or not proto.graph.output:
        raise ConversionError(f"{where}: not an ONNX model (expected an ONNX protobuf file, e.g. from torch.onnx.export)")
    if any(t.data_location == onnx.TensorProto.EXTERNAL for t in proto.graph.initializer):
        raise ConversionError(f"{where}: keeps its weights in external data files; export it as one self-contained file")
    session = _session(raw, where, proto)
    inputs = tuple(_Arg(i.name, i.type, tuple(i.shape)) for i in session.get_inputs())
    outputs = tuple(_Arg(o.name, o.type, tuple(o.shape)) for o in session.get_outputs())
    del ort
    return OnnxModel(spec.path, raw, proto, inputs, outputs)


def _session(raw: bytes, where: str, proto: Any) -> Any:
    import onnx
    import onnxruntime as ort

    from mlpack_edge.runtime.session import session_options

    try:
        return ort.InferenceSession(raw, session_options(1), providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime's own exception types
        first = " ".join(str(exc).split())
        default = max((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), default=0)
        if default > onnx.defs.onnx_opset_version() or "ValidateOpsetForDomain" in first:
            raise ConversionError(
                f"{where}: opset ai.onnx {default} is newer than onnxruntime {ort.__version__} (the device's runtime)"
                " can run; export with an older opset (e.g. opset_version=17)"
            ) from None
        if "FAIL : " in first:
            first = first.split("FAIL : ", 1)[1]
        raise ConversionError(
            f"{where}: onnxruntime {ort.__version__} (the device's runtime) cannot load it: {first[:300]}"
        ) from None


# --------------------------------------------------------------------------- schema


def data_spec(spec: DataSpec, model: OnnxModel) -> DataSpec:
    """``[data]`` with the features read from the graph when the spec leaves them out.

    Only for a graph with one input per feature: a single ``[N, F]`` input says how many
    features there are but not which, so then every CSV column but target/exclude is one.
    """
    if spec.features is not None or len(model.inputs) < 2:
        return spec
    feats = []
    for arg in model.inputs:
        kind = {_FLOAT: "numeric", _STRING: "categorical"}.get(arg.type)
        if kind is None:
            raise ConversionError(
                f"{model.path}: input '{arg.name}' is {arg.type}; mlpack feeds float (numeric) or string"
                " (categorical) tensors: export the model with float32 inputs"
            )
        feats.append(FeatureSpec(arg.name, kind))  # type: ignore[arg-type]
    return replace(spec, features=tuple(feats))


def bind(model: OnnxModel, ds: Dataset, spec: OnnxSpec) -> Bound:
    """Check inputs and outputs against the data and task; append label/probabilities as needed."""
    layout, inputs = _bind_inputs(model, ds)
    ds = _ordered_classes(ds, spec)
    proto, output, added = _bind_outputs(model, ds, spec)
    raw = proto.SerializeToString(deterministic=True)
    session = _session(raw, f"{model.path} (with the outputs mlpack appended)", proto)
    del session
    opset: dict[str, int] = {}
    for o in proto.opset_import:
        domain = "" if o.domain == "ai.onnx" else o.domain
        opset[domain] = max(opset.get(domain, 0), int(o.version))
    converted = Converted(raw, opset, inputs, output)
    return Bound(converted, layout, ds, tuple(added))


def _bind_inputs(model: OnnxModel, ds: Dataset) -> tuple[str, list[dict[str, Any]]]:
    where = str(model.path)
    feats = ds.features
    if len(model.inputs) == 1 and not (len(feats) == 1 and model.inputs[0].name == feats[0].name and feats[0].kind == "categorical"):
        arg = model.inputs[0]
        cats = [f.name for f in feats if f.kind == "categorical"]
        if arg.type != _FLOAT:
            raise ConversionError(
                f"{where}: input '{arg.name}' is {arg.type}; a single input must be float32 [N, {len(feats)}]"
                " (mlpack feeds float32: export the model with float32 inputs)"
            )
        if cats:
            raise ConversionError(
                f"{where}: the model takes one float tensor '{arg.name}', but features {', '.join(cats)} are"
                " categorical; declare them numeric in [data.features] or give the model one input per feature"
            )
        _check_batch(arg, where)
        width = arg.shape[1] if len(arg.shape) == 2 else None
        if len(arg.shape) != 2 or (isinstance(width, int) and width != len(feats)):
            raise ConversionError(
                f"{where}: input '{arg.name}' has shape {_shape(arg)}, expected [N, {len(feats)}] for the"
                f" {len(feats)} features ({_names([f.name for f in feats])})"
            )
        return "matrix", [{"name": arg.name, "dtype": "float32", "width": len(feats)}]
    names = [a.name for a in model.inputs]
    wanted = [f.name for f in feats]
    if set(names) != set(wanted):
        missing = [n for n in wanted if n not in names]
        extra = [n for n in names if n not in wanted]
        parts = ([f"no input for feature(s) {_names(missing)}"] if missing else []) + (
            [f"input(s) {_names(extra)} are not features"] if extra else []
        )
        raise ConversionError(
            f"{where}: the model's inputs ({_names(names)}) do not match the features ({_names(wanted)}): {'; '.join(parts)}"
        )
    by_name = {a.name: a for a in model.inputs}
    for f in feats:
        arg = by_name[f.name]
        want = _FLOAT if f.kind == "numeric" else _STRING
        if arg.type != want:
            raise ConversionError(
                f"{where}: input '{f.name}' is {arg.type}, but feature '{f.name}' is {f.kind} and needs {want}"
            )
        _check_batch(arg, where)
        if len(arg.shape) != 2 or (isinstance(arg.shape[1], int) and arg.shape[1] != 1):
            raise ConversionError(f"{where}: input '{f.name}' has shape {_shape(arg)}, expected [N, 1] (one column)")
    inputs = [{"name": f.name, "dtype": "float32" if f.kind == "numeric" else "string", "width": 1} for f in feats]
    return "columns", inputs


def _check_batch(arg: _Arg, where: str) -> None:
    if arg.shape and isinstance(arg.shape[0], int) and arg.shape[0] >= 0:
        raise ConversionError(
            f"{where}: input '{arg.name}' has a fixed batch size {arg.shape[0]} ({_shape(arg)}); export it with a"
            f" dynamic first dimension (torch.onnx.export(..., dynamic_axes={{'{arg.name}': {{0: 'batch'}}}}))"
        )


def _ordered_classes(ds: Dataset, spec: OnnxSpec) -> Dataset:
    if ds.task == "regression" or spec.classes is None:
        return ds
    declared = list(spec.classes)
    if sorted(map(str, declared)) != sorted(map(str, ds.classes)) or len(declared) != len(ds.classes):
        raise DataError(
            f"model.classes {declared} are not the target's classes {list(ds.classes)} (same labels, any order)"
        )
    by_text = {str(c): c for c in ds.classes}
    return replace(ds, classes=tuple(by_text[str(c)] for c in declared))


# --------------------------------------------------------------------------- outputs


def _bind_outputs(model: OnnxModel, ds: Dataset, spec: OnnxSpec) -> tuple[Any, dict[str, str], list[str]]:
    import onnx

    where = str(model.path)
    outs = {o.name: o for o in model.outputs}
    roles = dict(spec.outputs)
    for role, name in roles.items():
        if name not in outs:
            raise ConversionError(
                f"{where}: model.onnx_outputs.{role} names output '{name}', but the model's outputs are {_names(list(outs))}"
            )
    proto = onnx.ModelProto()
    proto.CopyFrom(model.proto)
    g = _Graph(proto)
    if ds.task == "regression":
        name = roles.get("value") or _only(outs, (_FLOAT, _DOUBLE), where, "value", "a float prediction")
        arg = outs[name]
        if arg.type not in (_FLOAT, _DOUBLE):
            raise ConversionError(f"{where}: output '{name}' is {arg.type}; a regression needs a float value")
        if len(arg.shape) > 2 or (len(arg.shape) == 2 and isinstance(arg.shape[1], int) and arg.shape[1] != 1):
            raise ConversionError(f"{where}: output '{name}' has shape {_shape(arg)}, expected [N] or [N, 1] (one value per row)")
        g.set_outputs([name])
        return proto, {"value": name}, []
    n_classes = len(ds.classes)
    logits = "logits" in roles
    proba_name = roles.get("logits") or roles.get("probabilities")
    if proba_name is None:
        floats = [n for n, o in outs.items() if o.type in (_FLOAT, _DOUBLE)]
        if not floats:
            raise ConversionError(
                f"{where}: the model has no class probabilities (outputs: {_described(outs)}); a classifier bundle ships"
                " them and gates such as roc_auc need them: export probabilities [N, C] or logits"
                ' ([model] onnx_outputs = { logits = "..." })'
            )
        if len(floats) > 1:
            raise ConversionError(
                f"{where}: several float outputs ({_names(floats)}); name the one that holds the probabilities:"
                f' [model] onnx_outputs = {{ probabilities = "{floats[0]}" }} (or logits)'
            )
        proba_name = floats[0]
    arg = outs[proba_name]
    if arg.type not in (_FLOAT, _DOUBLE):
        raise ConversionError(f"{where}: output '{proba_name}' is {arg.type}; probabilities must be a float tensor")
    cols = arg.shape[1] if len(arg.shape) == 2 else 1 if len(arg.shape) == 1 else None
    if cols is None or (isinstance(cols, int) and cols not in (n_classes, 1 if n_classes == 2 else n_classes)):
        raise ConversionError(
            f"{where}: output '{proba_name}' has shape {_shape(arg)}; expected [N, {n_classes}] for the"
            f" {n_classes} classes ({_names([str(c) for c in ds.classes])})"
            + (" or [N, 1] / [N] (probability of the second class)" if n_classes == 2 else "")
        )
    added: list[str] = []
    single = cols == 1 or len(arg.shape) == 1
    p = proba_name
    if single:
        p = g.node("Reshape", [p, g.const_i64("shape", [-1, 1])])
        if logits:
            p = g.node("Sigmoid", [p])
            added.append("sigmoid")
        p = g.node("Cast", [p], to=onnx.TensorProto.FLOAT) if arg.type == _DOUBLE else p
        one_minus = g.node("Sub", [g.const_f32("one", 1.0), p])
        p = g.node("Concat", [one_minus, p], axis=1)
        added.append("[1 - p, p]")
    else:
        if logits:
            p = g.node("Softmax", [p], axis=1)
            added.append("softmax")
        if arg.type == _DOUBLE:
            p = g.node("Cast", [p], to=onnx.TensorProto.FLOAT)
            added.append("cast to float")
    label = roles.get("label") or _auto_label(outs, ds.classes)
    if label is not None:
        _check_label(outs[label], ds.classes, where)
        if len(outs[label].shape) == 2:
            label = g.node("Reshape", [label, g.const_i64("flat", [-1])])
    else:
        index = g.node("ArgMax", [p], axis=1, keepdims=0)
        if list(ds.classes) == list(range(n_classes)):
            label = index
        else:
            strings = all(isinstance(c, str) for c in ds.classes)
            table = g.const_labels([str(c) if strings else int(c) for c in ds.classes], strings)
            label = g.node("Gather", [table, index], axis=0)
        added.append("label (argmax)")
    label_out, proba_out = g.name_output(label, "label"), g.name_output(p, "probabilities")
    g.set_outputs([label_out, proba_out], types={label_out: _label_elem(ds.classes), proba_out: onnx.TensorProto.FLOAT})
    return proto, {"label": label_out, "probabilities": proba_out}, added


def _auto_label(outs: dict[str, _Arg], classes: Sequence[Any]) -> str | None:
    want = _STRING if all(isinstance(c, str) for c in classes) else _INT64
    found = [n for n, o in outs.items() if o.type == want and len(o.shape) <= 2]
    return found[0] if len(found) == 1 else None


def _check_label(arg: _Arg, classes: Sequence[Any], where: str) -> None:
    want = _STRING if all(isinstance(c, str) for c in classes) else _INT64
    if arg.type != want:
        raise ConversionError(
            f"{where}: label output '{arg.name}' is {arg.type}, but the classes ({_names([str(c) for c in classes])})"
            f" need {want}; leave label out of model.onnx_outputs and mlpack derives it from the probabilities"
        )


def _label_elem(classes: Sequence[Any]) -> int:
    import onnx

    return onnx.TensorProto.STRING if all(isinstance(c, str) for c in classes) else onnx.TensorProto.INT64


class _Graph:
    """Appends nodes to a copied graph with names that cannot clash with the user's."""

    def __init__(self, proto: Any) -> None:
        self.proto = proto
        self.graph = proto.graph
        self.taken = {n for node in self.graph.node for n in (*node.input, *node.output)}
        self.taken |= {i.name for i in self.graph.input} | {i.name for i in self.graph.initializer}
        self.count = 0
        if not any(o.domain in ("", "ai.onnx") for o in proto.opset_import):
            proto.opset_import.add(domain="", version=13)

    def fresh(self, hint: str) -> str:
        name = f"mlpack_{hint}"
        while name in self.taken:
            self.count += 1
            name = f"mlpack_{hint}_{self.count}"
        self.taken.add(name)
        return name

    def node(self, op: str, inputs: list[str], **attrs: Any) -> str:
        from onnx import helper

        out = self.fresh(op.lower())
        self.graph.node.append(helper.make_node(op, inputs, [out], name=out, **attrs))
        return out

    def const_i64(self, hint: str, values: list[int]) -> str:
        from onnx import helper

        name = self.fresh(hint)
        self.graph.initializer.append(helper.make_tensor(name, 7, [len(values)], values))  # INT64
        return name

    def const_f32(self, hint: str, value: float) -> str:
        from onnx import helper

        name = self.fresh(hint)
        self.graph.initializer.append(helper.make_tensor(name, 1, [], [value]))  # FLOAT scalar
        return name

    def const_labels(self, labels: list[Any], strings: bool) -> str:
        from onnx import helper

        name = self.fresh("classes")
        data = [str(v).encode("utf-8") for v in labels] if strings else labels
        self.graph.initializer.append(helper.make_tensor(name, 8 if strings else 7, [len(labels)], data))
        return name

    def name_output(self, value: str, wanted: str) -> str:
        """An Identity so the output has a clear name (unless ``value`` already is an output of the model)."""
        if value in {o.name for o in self.graph.output}:
            return value
        from onnx import helper

        out = wanted if wanted not in self.taken else self.fresh(wanted)
        self.taken.add(out)
        self.graph.node.append(helper.make_node("Identity", [value], [out], name=f"mlpack_{out}_out"))
        return out

    def set_outputs(self, names: list[str], types: dict[str, int] | None = None) -> None:
        from onnx import helper

        existing = {o.name: o for o in self.graph.output}
        new = []
        for n in names:
            if n in existing:
                new.append(existing[n])
            else:
                new.append(helper.make_tensor_value_info(n, (types or {})[n], None))
        del self.graph.output[:]
        self.graph.output.extend(new)


# --------------------------------------------------------------------------- running


def feeds(frame: pd.DataFrame, features: Sequence[Feature], bound: Bound) -> dict[str, np.ndarray]:
    if bound.layout == "matrix":
        return {bound.converted.inputs[0]["name"]: frame[[f.name for f in features]].to_numpy(dtype=np.float32)}
    out = {}
    for f in features:
        col = frame[f.name].to_numpy()
        if f.kind == "numeric":
            out[f.name] = col.astype(np.float32).reshape(-1, 1)
        else:
            out[f.name] = np.array([str(v) for v in col], dtype=object).reshape(-1, 1)
    return out


def run(bound: Bound, frame: pd.DataFrame, where: str) -> Outputs:
    """The bound graph's answers for ``frame`` (model-form rows)."""
    import onnxruntime as ort

    session = ort.InferenceSession(bound.converted.model, providers=["CPUExecutionProvider"])
    names = list(bound.converted.output.values())
    try:
        out = session.run(names, feeds(frame, bound.dataset.features, bound))
    except Exception as exc:  # onnxruntime's own exception types
        raise ConversionError(f"{where}: onnxruntime failed running the model: {' '.join(str(exc).split())[:300]}") from None
    if bound.dataset.task == "regression":
        return Outputs(values=np.asarray(out[0], dtype=np.float64).reshape(-1))
    return Outputs(labels=np.asarray(out[0]).reshape(-1), probabilities=np.asarray(out[1], dtype=np.float64))


def check_probabilities(outputs: Outputs, bound: Bound, where: str, spec: OnnxSpec) -> None:
    """Probabilities must look like probabilities, or the gates and the device's answers are meaningless."""
    p = outputs.probabilities
    if p is None or p.size == 0:
        return
    nonfinite = ~np.isfinite(p).all(axis=1)
    if nonfinite.any():
        raise ConversionError(
            f"{where}: the model answers NaN or infinity on {int(nonfinite.sum())} of {len(p)} held-out rows"
            f"{_missing_note(bound, nonfinite)}"
        )
    if "logits" in spec.outputs:
        return  # mlpack applied the softmax / sigmoid itself
    sums = p.sum(axis=1)
    lo, hi = float(np.nanmin(p)), float(np.nanmax(p))
    bad = not np.isfinite(p).all() or lo < -1e-6 or hi > 1 + 1e-6 or np.abs(sums - 1).max() > 1e-3
    if bad:
        name = spec.outputs.get("probabilities") or _source_output(bound)
        raise ConversionError(
            f"{where}: output '{name}' does not hold probabilities on the held-out rows (values {lo:.3g} to {hi:.3g},"
            f" row sums {float(np.nanmin(sums)):.3g} to {float(np.nanmax(sums)):.3g}); if it holds logits, set"
            f' [model] onnx_outputs = {{ logits = "{name}" }}'
        )


def _missing_note(bound: Bound, rows: np.ndarray) -> str:
    if _missing(bound.dataset.x_test, bound.dataset)[rows].all():
        return (
            ", each with a missing value: the model does not handle missing values; fill them in before export"
            " (or in the graph), or make those features non-nullable"
        )
    return ""


def check_values(outputs: Outputs, bound: Bound, where: str) -> None:
    v = outputs.values
    if v is not None and v.size and not np.isfinite(v).all():
        rows = ~np.isfinite(v)
        raise ConversionError(
            f"{where}: the model answers NaN or infinity on {int(rows.sum())} of {len(v)} held-out rows"
            f"{_missing_note(bound, rows)}"
        )


def _source_output(bound: Bound) -> str:
    return bound.converted.output.get("probabilities", "?")


# --------------------------------------------------------------------------- parity


def all_rows(ds: Dataset, data: DataSpec) -> pd.DataFrame:
    """Every row of the data CSV in file order, in model form (float32 + NaN, strings + "")."""
    text = data.path.read_bytes().decode("utf-8-sig")
    table = pd.read_csv(io.StringIO(text), dtype=str, keep_default_na=False, na_filter=False)
    tokens = set(data.missing)
    cols: dict[str, Any] = {}
    derived: dict[str, np.ndarray] = {}
    for d in ds.datetimes:  # parts of a date column, derived as the build and the device derive them
        parts, _ = _datetime.derive(table[d["name"]].tolist(), d["format"], d["parts"], tokens)
        for j, name in enumerate(_datetime.part_names(d["name"], d["parts"])):
            derived[name] = parts[:, j].astype(np.float32)
    for f in ds.features:
        if f.name in derived:
            cols[f.name] = derived[f.name]
            continue
        cells = table[f.name]
        missing = cells.str.strip().isin(tokens)
        if f.kind == "numeric":
            parsed = pd.to_numeric(cells.str.strip().where(~missing), errors="coerce")
            cols[f.name] = parsed.to_numpy(dtype=np.float64).astype(np.float32)
        else:
            cols[f.name] = cells.where(~missing, "").astype(object).to_numpy()
    return pd.DataFrame(cols)


def read_reference(path: Path, ds: Dataset, rows: int) -> Outputs:
    """The user's expected outputs: one row per data row; ``proba_<class>`` (+ ``label``) or ``value``."""
    where = str(path)
    try:
        text = path.read_bytes().decode("utf-8-sig")
    except FileNotFoundError:
        raise DataError(f"{where}: reference outputs not found (model.reference_outputs is relative to the spec)") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"{where}: cannot read the reference outputs ({exc})") from None
    reader = list(csv.reader(io.StringIO(text)))
    if not reader or not reader[0]:
        raise DataError(f"{where}: empty; expected a CSV with a header row and one row per data row")
    header, body = reader[0], [r for r in reader[1:] if r]
    if len(body) != rows:
        raise DataError(f"{where}: {len(body)} rows of reference outputs, but the data has {rows} rows (one per data row, same order)")
    widths = {len(r) for r in body}
    if widths - {len(header)}:
        line = next(i for i, r in enumerate(body) if len(r) != len(header)) + 2
        raise DataError(f"{where}: line {line}: {len(body[line - 2])} fields, the header has {len(header)}")
    if ds.task == "regression":
        col = "value" if "value" in header else (header[0] if len(header) == 1 else None)
        if col is None:
            raise DataError(f"{where}: expected one column (or a column named value), got {_names(header)}")
        return Outputs(values=_numbers(body, header.index(col), col, where))
    wanted = [f"proba_{c}" for c in ds.classes]
    missing = [w for w in wanted if w not in header]
    if missing:
        raise DataError(
            f"{where}: expected columns {_names(wanted)} (one per class, optionally label), missing {_names(missing)}"
            f" (found {_names(header)})"
        )
    proba = np.column_stack([_numbers(body, header.index(w), w, where) for w in wanted])
    labels = None
    if "label" in header:
        k = header.index("label")
        labels = np.array([r[k] for r in body], dtype=object)
    return Outputs(labels=labels, probabilities=proba)


def _numbers(body: list[list[str]], k: int, name: str, where: str) -> np.ndarray:
    out = np.empty(len(body), dtype=np.float64)
    for i, r in enumerate(body):
        try:
            out[i] = float(r[k])
        except ValueError:
            raise DataError(f"{where}: line {i + 2}: column '{name}' expects a number, got {r[k]!r}") from None
    return out


def prove(got: Outputs, expected: Outputs, frame: pd.DataFrame, ds: Dataset, tolerance: float, where: str) -> ParityResult:
    """Compare the graph's answers with the reference outputs, row for row; ParityError on mismatch."""
    n = len(frame)
    if ds.task == "regression":
        assert got.values is not None and expected.values is not None
        diff = np.abs(got.values - expected.values)
        labels_bad = np.zeros(n, dtype=bool)
    else:
        assert got.probabilities is not None and expected.probabilities is not None and got.labels is not None
        diff = np.abs(got.probabilities - expected.probabilities).max(axis=1)
        if expected.labels is not None:
            labels_bad = np.array([str(_plain(a)) != str(b) for a, b in zip(got.labels, expected.labels, strict=True)])
        else:
            labels_bad = np.zeros(n, dtype=bool)
    diff = np.where(np.isnan(diff), np.inf, diff)
    missing = _missing(frame, ds)
    bad = labels_bad | (diff > tolerance)
    agreement = None if ds.task == "regression" or expected.labels is None else float(1.0 - labels_bad.mean())
    worst = float(diff.max()) if n else 0.0
    if bad.any():
        first = int(np.flatnonzero(bad)[0]) + 2
        detail = f"labels differ on {int(labels_bad.sum())}; " if expected.labels is not None else ""
        hint = ""
        if missing[bad].all():
            hint = " — every disagreeing row has a missing value: the graph does not handle missing values as your framework did"
        raise ParityError(
            f"{where}: the ONNX model disagrees with the reference outputs on {int(bad.sum())} of {n} rows"
            f" ({detail}max abs diff {'NaN' if math.isinf(worst) else f'{worst:.3g}'}, tolerance {tolerance:g});"
            f" first at data line {first}{hint}"
        )
    argmax = None
    if ds.task != "regression":
        assert got.labels is not None and got.probabilities is not None
        argmax = label_is_argmax(got.labels, got.probabilities, ds.classes)
    return ParityResult(n, 0, agreement, worst, tolerance, int(missing.sum()), argmax)


def not_proven(tolerance: float) -> dict[str, Any]:
    """The manifest's parity section when there was nothing to compare with."""
    return {
        "status": NOT_PROVEN,
        "proven": False,
        "passed": False,
        "rows": 0,
        "probe_rows": 0,
        "missing_rows": 0,
        "label_agreement": None,
        "max_abs_diff": None,
        "tolerance": tolerance,
    }


def _missing(frame: pd.DataFrame, ds: Dataset) -> np.ndarray:
    mask = np.zeros(len(frame), dtype=bool)
    for f in ds.features:
        col = frame[f.name].to_numpy()
        mask |= np.isnan(col.astype(np.float64)) if f.kind == "numeric" else (col == "")
    return mask


def _plain(v: Any) -> Any:
    return v.item() if isinstance(v, np.generic) else v


# --------------------------------------------------------------------------- golden


def golden(bound: Bound, tolerance: float, where: str) -> Golden:
    """Held-out rows the device accepts, with this graph's answers on the build machine."""
    from mlpack_edge.builder.parity import _admissible, _device_row, _to_model_frame

    ds = bound.dataset
    rows = []
    for i in range(len(ds.x_test)):
        row = _device_row(ds.x_test.iloc[i], ds.features)
        if _admissible(row, ds.features):
            rows.append(row)
        if len(rows) == _GOLDEN_MAX:
            break
    out = run(bound, _to_model_frame(rows, ds.features), where)
    if ds.task == "regression":
        assert out.values is not None
        return Golden(rows=rows, tolerance=tolerance, values=[float(v) for v in out.values])
    assert out.labels is not None and out.probabilities is not None
    return Golden(
        rows=rows,
        tolerance=tolerance,
        labels=[_plain(v) for v in out.labels],
        probabilities=[[float(x) for x in r] for r in out.probabilities],
    )


# --------------------------------------------------------------------------- helpers


def _only(outs: dict[str, _Arg], types: tuple[str, ...], where: str, role: str, what: str) -> str:
    found = [n for n, o in outs.items() if o.type in types]
    if len(found) == 1:
        return found[0]
    if not found:
        raise ConversionError(f"{where}: the model has no {what} (outputs: {_described(outs)})")
    raise ConversionError(
        f'{where}: several outputs could be the {role} ({_names(found)}); name one: [model] onnx_outputs = {{ {role} = "{found[0]}" }}'
    )


def _shape(arg: _Arg) -> str:
    return "[" + ", ".join("N" if i == 0 and not isinstance(d, int) else str(d) for i, d in enumerate(arg.shape)) + "]"


def _names(items: Sequence[str]) -> str:
    shown = ", ".join(items[:8])
    return shown + (f", … (+{len(items) - 8})" if len(items) > 8 else "")


def _described(outs: dict[str, _Arg]) -> str:
    return ", ".join(f"{n} {o.type.removeprefix('tensor(').removesuffix(')')} {_shape(o)}" for n, o in outs.items())
