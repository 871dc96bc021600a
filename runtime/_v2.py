"""The Open Inference Protocol (KServe v2, Triton's HTTP API): metadata, requests, responses.

https://kserve.github.io/website/latest/modelserving/data_plane/v2_protocol/ — a model
takes named tensors ``{"name", "datatype", "shape", "data"}`` and answers with named
tensors. Here:

* inputs: one tensor per feature, shape ``[N]`` or ``[N, 1]``; numeric features take a
  numeric datatype (FP32, FP64, INT64, ...; ``null`` or NaN is missing), categorical
  ones BYTES (text; an INT tensor is read as decimal text, as elsewhere). A model whose
  features are all numeric also takes one ``[N, F]`` tensor (any name, columns in
  manifest order), as KServe's sklearn server does.
* outputs: classification ``label`` (``[N]``, INT64 when every class is an integer,
  else BYTES) and ``probabilities`` (FP32 ``[N, C]``, columns in the manifest's class
  order); regression ``value`` (FP32 ``[N]``); with the monitoring agent also ``id``
  (BYTES ``[N]``, the key of ``POST /feedback``). ``outputs`` in the request picks some.
* Triton's binary tensor extension, which ``tritonclient`` uses by default: a body of
  JSON followed by raw tensor bytes (header ``Inference-Header-Content-Length``), inputs
  with ``parameters.binary_data_size``, and binary outputs when asked for
  (``parameters.binary_data`` on an output, or ``binary_data_output`` on the request).

As with MLflow's protocol, one invalid row fails the request (400 naming the row and
the field): a tensor has no slot for a per-row error.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from mlpack_edge.errors import InputError
from mlpack_edge.runtime._format import json_floats
from mlpack_edge.runtime.schema import Batch, Schema

__all__ = ["PLATFORM", "DATATYPES", "looks_like_v2", "InferRequest", "server_metadata", "model_metadata", "read_infer", "infer_response"]

PLATFORM = "onnxruntime_onnx"
EXTENSIONS = ["binary_tensor_data"]
_NUMPY = {
    "BOOL": "?", "UINT8": "<u1", "UINT16": "<u2", "UINT32": "<u4", "UINT64": "<u8",
    "INT8": "<i1", "INT16": "<i2", "INT32": "<i4", "INT64": "<i8",
    "FP16": "<f2", "FP32": "<f4", "FP64": "<f8",
}  # fmt: skip
_NUMERIC = frozenset(_NUMPY) - {"BOOL"}
_INTEGER = frozenset(k for k in _NUMERIC if "INT" in k)
DATATYPES = (*_NUMPY, "BYTES")
_DATATYPES = ", ".join(DATATYPES)


@dataclass(frozen=True)
class InferRequest:
    """A parsed ``infer`` request: the validated rows and which outputs to send, how."""

    id: str | None
    batch: Batch
    outputs: tuple[tuple[str, bool], ...]  # (name, binary)


def server_metadata(version: str) -> dict[str, Any]:
    return {"name": "mlpack", "version": version, "extensions": EXTENSIONS}


def _label_datatype(classes: Sequence[Any]) -> str:
    return "INT64" if classes and all(type(c) is int for c in classes) else "BYTES"


def output_specs(task: str, classes: Sequence[Any], ids: bool = False) -> list[dict[str, Any]]:
    """The model's output tensors (names, datatypes, shapes; -1 is the batch size).

    ``ids``: the monitoring agent runs, so each prediction has an id (BYTES ``id``), the
    key ``POST /feedback`` joins ground truth on, as on ``/predict``.
    """
    id_spec = [{"name": "id", "datatype": "BYTES", "shape": [-1]}] if ids else []
    if task == "regression":
        return [{"name": "value", "datatype": "FP32", "shape": [-1]}, *id_spec]
    return [
        {"name": "label", "datatype": _label_datatype(classes), "shape": [-1]},
        {"name": "probabilities", "datatype": "FP32", "shape": [-1, len(classes)]},
        *id_spec,
    ]


def input_specs(schema: Schema) -> list[dict[str, Any]]:
    return [
        {"name": f.name, "datatype": "FP32" if f.kind == "numeric" else "BYTES", "shape": [-1, 1]}
        for f in schema.features
    ]


def model_metadata(
    name: str, version: str, task: str, classes: Sequence[Any], schema: Schema, ids: bool = False
) -> dict[str, Any]:
    return {
        "name": name,
        "versions": [version],
        "platform": PLATFORM,
        "inputs": input_specs(schema),
        "outputs": output_specs(task, classes, ids),
    }


# ---------------------------------------------------------------------------- requests


def looks_like_v2(payload: Any, schema: Schema) -> bool:
    """A body shaped for ``infer`` (``inputs``: tensors with a name and a datatype), for pointing a client there."""
    inputs = payload.get("inputs") if isinstance(payload, dict) else None
    return (
        isinstance(inputs, list)
        and bool(inputs)
        and all(isinstance(t, dict) and "name" in t and "datatype" in t for t in inputs)
        and not {"name", "datatype"} & set(schema.names)
    )


def read_infer(body: bytes, header_length: str | None, schema: Schema, task: str, ids: bool = False) -> InferRequest:
    """Parse and validate an ``infer`` body (JSON, or JSON + binary tensors) into rows."""
    head, binary = _split_body(body, header_length)
    try:
        payload = json.loads(head)
    except (UnicodeDecodeError, ValueError) as exc:
        raise InputError(f"request body is not valid JSON ({exc})") from None
    except RecursionError:
        raise InputError("request body is not valid JSON (nested too deeply)") from None
    if not isinstance(payload, dict):
        raise InputError("expected a JSON object with 'inputs' (a list of tensors)")
    inputs = payload.get("inputs")
    if not isinstance(inputs, list) or not inputs:
        mlflow = [k for k in ("dataframe_split", "dataframe_records", "instances") if k in payload]
        if mlflow:
            raise InputError(f"this is an MLflow scoring request ({mlflow[0]!r}): POST it to /invocations")
        raise InputError("'inputs': expected a non-empty list of tensors {name, datatype, shape, data}")
    tensors: dict[str, tuple[str, list[int], Any]] = {}
    offset = 0
    for i, t in enumerate(inputs):
        name, datatype, shape, values, used = _tensor(t, i, binary, offset)
        offset += used
        if name in tensors:
            raise InputError(f"input {name!r} appears more than once")
        tensors[name] = (datatype, shape, values)
    if offset != len(binary):
        raise InputError(f"{len(binary) - offset} bytes of binary data after the last binary input")
    request_id = payload.get("id")
    if request_id is not None and not isinstance(request_id, str):
        raise InputError("'id' must be text")
    return InferRequest(request_id, _batch(tensors, schema), _outputs(payload, task, ids))


def _split_body(body: bytes, header_length: str | None) -> tuple[bytes, bytes]:
    if header_length is None:
        return body, b""
    try:
        n = int(header_length)
    except ValueError:
        n = -1
    if not 0 <= n <= len(body):
        raise InputError(
            f"Inference-Header-Content-Length: expected a byte count within the body's {len(body)}, got {header_length!r}"
        )
    return body[:n], body[n:]


def _tensor(t: Any, i: int, binary: bytes, offset: int) -> tuple[str, str, list[int], Any, int]:
    """One input tensor: name, datatype, shape, flat values, binary bytes consumed."""
    if not isinstance(t, dict) or not isinstance(t.get("name"), str):
        raise InputError(f"inputs[{i}]: expected a tensor object with a 'name'")
    name = t["name"]
    where = f"input {name!r}"
    datatype = t.get("datatype")
    if not isinstance(datatype, str) or (datatype not in _NUMPY and datatype != "BYTES"):
        raise InputError(f"{where}: datatype must be one of {_DATATYPES}, got {datatype!r}")
    shape = t.get("shape")
    if not isinstance(shape, list) or not shape or not all(type(d) is int and d >= 0 for d in shape):
        raise InputError(f"{where}: shape must be a list of non-negative integers, got {shape!r}")
    count = math.prod(shape)
    params = t.get("parameters") or {}
    size = params.get("binary_data_size") if isinstance(params, dict) else None
    if size is not None:
        if type(size) is not int or size < 0 or offset + size > len(binary):
            raise InputError(f"{where}: binary_data_size {size!r} does not fit the {len(binary) - offset} binary bytes left")
        return name, datatype, shape, _from_binary(binary[offset : offset + size], datatype, count, where), size
    if "data" not in t:
        raise InputError(f"{where}: no 'data' (and no binary_data_size)")
    values = _flatten(t["data"])
    if len(values) != count:
        raise InputError(f"{where}: shape {shape} holds {count} values, 'data' has {len(values)}")
    return name, datatype, shape, values, 0


def _flatten(data: Any) -> list[Any]:
    """Row-major values of ``data`` (the protocol allows nested or flat lists)."""
    if not isinstance(data, list):
        return [data]
    if not any(isinstance(v, list) for v in data):
        return data
    out: list[Any] = []
    for v in data:
        out.extend(_flatten(v))
    return out


def _from_binary(raw: bytes, datatype: str, count: int, where: str) -> Any:
    if datatype != "BYTES":
        dtype = np.dtype(_NUMPY[datatype])
        if len(raw) != count * dtype.itemsize:
            raise InputError(f"{where}: {len(raw)} bytes of {datatype} data, expected {count * dtype.itemsize}")
        return np.frombuffer(raw, dtype=dtype)
    values: list[str] = []
    pos = 0
    while pos < len(raw):
        if pos + 4 > len(raw):
            raise InputError(f"{where}: BYTES data ends inside a length prefix")
        n = int.from_bytes(raw[pos : pos + 4], "little")
        item = raw[pos + 4 : pos + 4 + n]
        if len(item) != n:
            raise InputError(f"{where}: BYTES element {len(values)} is shorter than its length prefix")
        try:
            values.append(item.decode("utf-8"))
        except UnicodeDecodeError:
            raise InputError(f"{where}: BYTES element {len(values)} is not UTF-8 text") from None
        pos += 4 + n
    if len(values) != count:
        raise InputError(f"{where}: shape holds {count} values, the BYTES data has {len(values)}")
    return values


def _batch(tensors: dict[str, tuple[str, list[int], Any]], schema: Schema) -> Batch:
    if len(tensors) == 1 and schema.all_numeric:
        name, (datatype, shape, values) = next(iter(tensors.items()))
        if len(shape) == 2 and shape[1] == schema.width and (schema.width > 1 or name not in schema.names):
            return _matrix(name, datatype, shape, values, schema)
    missing = [n for n in schema.names if n not in tensors]
    unknown = [n for n in tensors if n not in schema.names]
    if unknown:
        matrix = f", or one [N, {schema.width}] tensor" if schema.all_numeric else ""
        raise InputError(
            f"unknown input{'s' if len(unknown) > 1 else ''} {', '.join(map(repr, unknown))}"
            f" (the model takes one tensor per feature: {', '.join(schema.names)}{matrix})"
        )
    if missing:
        raise InputError(f"missing input tensor{'s' if len(missing) > 1 else ''} {', '.join(map(repr, missing))}")
    rows: int | None = None
    columns: list[Any] = []
    for f in schema.features:
        datatype, shape, values = tensors[f.name]
        where = f"input {f.name!r}"
        if len(shape) > 2 or (len(shape) == 2 and shape[1] != 1):
            raise InputError(f"{where}: shape must be [N] or [N, 1] (one value per row), got {shape}")
        if rows is None:
            rows = shape[0]
        elif shape[0] != rows:
            raise InputError(f"{where}: {shape[0]} rows, but the other inputs have {rows}")
        if f.kind == "numeric":
            if datatype not in _NUMERIC:
                raise InputError(f"{where}: feature {f.name!r} is numeric: send FP32, FP64 or INT64, not {datatype}")
            columns.append(values.astype(np.float64) if isinstance(values, np.ndarray) else values)
        else:
            if datatype != "BYTES" and datatype not in _INTEGER:
                raise InputError(f"{where}: feature {f.name!r} is categorical: send BYTES (text), not {datatype}")
            columns.append(values.tolist() if isinstance(values, np.ndarray) else values)
    assert rows is not None
    return schema.columns(columns, rows, 0)


def _matrix(name: str, datatype: str, shape: list[int], values: Any, schema: Schema) -> Batch:
    where = f"input {name!r}"
    if datatype not in _NUMERIC:
        raise InputError(f"{where}: an [N, {schema.width}] tensor must be numeric (FP32, FP64, INT64), not {datatype}")
    try:
        x = np.asarray(values, dtype=np.float64).reshape(shape)  # null -> NaN
    except (TypeError, ValueError, OverflowError):
        bad = next((v for v in values if not isinstance(v, (int, float)) or isinstance(v, bool)), None)
        raise InputError(f"{where}: expected numbers, got {bad!r}") from None
    return schema.matrix(x, 0)


def _outputs(payload: dict[str, Any], task: str, ids: bool) -> tuple[tuple[str, bool], ...]:
    names = [o["name"] for o in output_specs(task, (), ids)]
    params = payload.get("parameters")
    default_binary = bool(params.get("binary_data_output")) if isinstance(params, dict) else False
    asked = payload.get("outputs")
    if asked is None or asked == []:  # not specified (or an empty list): every output, as the protocol says
        return tuple((n, default_binary) for n in names)
    if not isinstance(asked, list) or not all(isinstance(o, dict) and isinstance(o.get("name"), str) for o in asked):
        raise InputError("'outputs': expected a list of objects with a 'name'")
    out = []
    for o in asked:
        if o["name"] not in names:
            raise InputError(f"unknown output {o['name']!r} (the model gives: {', '.join(names)})")
        p = o.get("parameters")
        if isinstance(p, dict) and p.get("classification"):
            raise InputError(f"output {o['name']!r}: the classification extension is not supported; read 'probabilities'")
        out.append((o["name"], bool(p.get("binary_data", default_binary)) if isinstance(p, dict) else default_binary))
    return tuple(out)


# ---------------------------------------------------------------------------- responses


def infer_response(
    request: InferRequest, name: str, version: str, classes: Sequence[Any], arrays: dict[str, np.ndarray]
) -> tuple[bytes, int | None]:
    """The response body and, when some output is binary, the JSON header's length.

    ``arrays`` maps output names to results for every row: ``label`` [N], ``probabilities``
    [N, C], ``value`` [N], ``id`` [N] (text).
    """
    outputs: list[dict[str, Any]] = []
    chunks: list[bytes] = []
    for out_name, binary in request.outputs:
        arr = arrays[out_name]
        if out_name == "label":
            datatype = _label_datatype(classes)
        elif out_name == "id":
            datatype = "BYTES"
        else:
            datatype, arr = "FP32", arr.astype(np.float32, copy=False)
        entry: dict[str, Any] = {"name": out_name, "datatype": datatype, "shape": list(arr.shape)}
        if binary:
            raw = _to_binary(arr, datatype)
            entry["parameters"] = {"binary_data_size": len(raw)}
            chunks.append(raw)
        elif datatype == "FP32":
            entry["data"] = json_floats(arr.reshape(-1))
        else:
            entry["data"] = [int(v) if datatype == "INT64" else str(v) for v in arr.tolist()]
        outputs.append(entry)
    head: dict[str, Any] = {"model_name": name, "model_version": version, "outputs": outputs}
    if request.id is not None:
        head["id"] = request.id
    text = json.dumps(head, ensure_ascii=False, allow_nan=False).encode()
    if not chunks:
        return text, None
    return text + b"".join(chunks), len(text)


def _to_binary(arr: np.ndarray, datatype: str) -> bytes:
    if datatype != "BYTES":
        return np.ascontiguousarray(arr, dtype=_NUMPY[datatype]).tobytes()
    parts = []
    for v in arr.reshape(-1).tolist():
        b = str(v).encode("utf-8")
        parts.append(len(b).to_bytes(4, "little") + b)
    return b"".join(parts)
