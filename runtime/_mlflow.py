"""The MLflow scoring protocol (``POST /invocations``) read into a :class:`Batch`.

What ``mlflow models serve`` (MLflow 2.x and 3.x, and the containers built from it)
accepts, so clients written for it work unchanged:

* ``application/json``: an object with exactly one of

  - ``dataframe_split``: ``{"columns": [...], "data": [[...], ...]}`` (``index`` ignored;
    without ``columns`` the values are in manifest order) — ``df.to_dict(orient="split")``;
  - ``dataframe_records``: ``[{feature: value}, ...]`` — ``df.to_dict(orient="records")``;
  - ``instances`` (TF-serving row format): a list of rows, each an object or a list of
    values in manifest order (a one-feature model also takes bare values);
  - ``inputs`` (TF-serving columnar format): ``{feature: [values]}``, or a list of rows
    as for ``instances``;

  plus an optional ``params`` object. ``params.probabilities = true`` (ours, not
  MLflow's) returns ``{"label", "probabilities"}`` records instead of bare labels.
* ``text/csv``: a header naming the features, one row per line (a leading unnamed
  column, the index ``df.to_csv()`` writes, is ignored). Rows are numbered from 1.

Unlike ``/predict``, the protocol has no room for a per-row error, so one invalid row
fails the request (400, naming the row and the field; rows count from 0 in JSON as in
the payload's lists). Values go through the same :class:`Schema` as every other input.
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from typing import Any

from mlpack_edge.errors import InputError
from mlpack_edge.runtime.schema import Batch, Schema, row_error

__all__ = ["FORMATS", "looks_like_mlflow", "json_batch", "csv_batch", "wants_probabilities"]

FORMATS = ("dataframe_split", "dataframe_records", "instances", "inputs")
_REQUIRED = "expected a JSON object with exactly one of 'dataframe_split', 'dataframe_records', 'instances', 'inputs'"


def looks_like_mlflow(payload: Mapping[str, Any], schema: Schema) -> str | None:
    """The MLflow key of a request meant for ``/invocations`` (none of its keys is a feature)."""
    keys = [k for k in payload if k in FORMATS or k == "params"]
    if keys and not any(k in schema.names for k in payload) and len(keys) == len(payload):
        return next((k for k in keys if k != "params"), None)
    return None


def wants_probabilities(payload: Mapping[str, Any]) -> bool:
    params = payload.get("params")
    if params is None:
        return False
    if not isinstance(params, dict):
        raise InputError(f"'params' must be an object, got {_kind(params)}")
    flag = params.get("probabilities", False)
    if not isinstance(flag, bool):
        raise InputError(f"params.probabilities must be true or false, got {_kind(flag)}")
    return flag


def json_batch(payload: Any, schema: Schema) -> Batch:
    """Validate an MLflow JSON request body (already parsed) into a batch (rows from 0)."""
    if not isinstance(payload, dict):
        raise InputError(f"{_REQUIRED}; got {_kind(payload)}")
    keys = [k for k in payload if k in FORMATS]
    other = [k for k in payload if k not in FORMATS and k != "params"]
    if len(keys) != 1 or other:
        got = ", ".join(repr(k) for k in payload) or "no fields"
        hint = "; POST one row {feature: value} to /predict" if any(k in schema.names for k in payload) else ""
        raise InputError(f"{_REQUIRED}; got {got}{hint}")
    key = keys[0]
    data = payload[key]
    if key == "dataframe_split":
        return _split(data, schema)
    if key == "dataframe_records":
        if not isinstance(data, list):
            raise InputError(f"dataframe_records: expected a list of objects, got {_kind(data)}")
        return schema.rows(data, 0)
    if key == "inputs" and isinstance(data, dict):
        return _columnar(data, schema, key)
    return _rows(data, schema, key)


def csv_batch(text: str, schema: Schema) -> Batch:
    """Validate a CSV request body (header + rows) into a batch (rows from 1)."""
    from mlpack_edge.runtime.io import csv_batch as read  # io imports the model; only CSV needs it

    return read(io.StringIO(text, newline=""), schema, "CSV body")


def _split(data: Any, schema: Schema) -> Batch:
    if not isinstance(data, dict):
        raise InputError(f"dataframe_split: expected an object with 'columns' and 'data', got {_kind(data)}")
    rows = data.get("data")
    if not isinstance(rows, list):
        raise InputError(f"dataframe_split.data: expected a list of rows (lists of values), got {_kind(rows)}")
    columns = data.get("columns")
    if columns is None:
        return _rows(rows, schema, "dataframe_split.data")
    if not isinstance(columns, list) or not all(isinstance(c, str) for c in columns):
        raise InputError("dataframe_split.columns: expected a list of column names (text)")
    order = _feature_order(columns, schema, "dataframe_split.columns")
    width = len(columns)
    errors: dict[int, InputError] = {}
    table: list[Sequence[Any]] = []
    for pos, r in enumerate(rows):
        if not isinstance(r, list) or len(r) != width:
            got = f"{len(r)} values" if isinstance(r, list) else _kind(r)
            errors[pos] = row_error(pos, None, f"expected a list of {width} values as in 'columns', got {got}")
            table.append([None] * width)
        else:
            table.append(r)
    cols = list(zip(*table)) if table else [()] * width
    return schema.columns([cols[i] for i in order], len(table), 0, errors)


def _columnar(data: dict[str, Any], schema: Schema, where: str) -> Batch:
    order = _feature_order(list(data), schema, where)
    values = list(data.values())
    if all(not isinstance(v, list) for v in values):  # one row given as scalars
        values = [[v] for v in values]
    lengths = {len(v) if isinstance(v, list) else -1 for v in values}
    if len(lengths) != 1 or -1 in lengths:
        shown = ", ".join(f"{k!r}: {len(v) if isinstance(v, list) else _kind(v)}" for k, v in data.items())
        raise InputError(f"{where}: expected one list of values per feature, all of one length; got {shown}")
    return schema.columns([values[i] for i in order], lengths.pop(), 0)


def _rows(data: Any, schema: Schema, where: str) -> Batch:
    if not isinstance(data, list):
        raise InputError(f"{where}: expected a list of rows, got {_kind(data)}")
    if data and all(not isinstance(r, (dict, list)) for r in data):
        if schema.width != 1:
            raise InputError(
                f"{where}: expected a list of rows (objects, or lists of {schema.width} values in manifest order),"
                " got a list of single values"
            )
        data = [[v] for v in data]
    return schema.rows(data, 0)


def _feature_order(names: Sequence[str], schema: Schema, where: str) -> list[int]:
    """Positions in ``names`` of each feature (manifest order); one line on any mismatch."""
    index: dict[str, int] = {}
    for i, n in enumerate(names):
        if n in index:
            raise InputError(f"{where}: column {n!r} appears more than once")
        index[n] = i
    missing = [n for n in schema.names if n not in index]
    if missing:
        raise InputError(f"{where}: missing feature{'s' if len(missing) > 1 else ''} {', '.join(map(repr, missing))}")
    unknown = [n for n in names if n not in schema.names]
    if unknown:
        raise InputError(
            f"{where}: unknown column{'s' if len(unknown) > 1 else ''} {', '.join(map(repr, unknown))}"
            f" (the model takes: {', '.join(schema.names)})"
        )
    return [index[n] for n in schema.names]


def _kind(v: Any) -> str:
    return {dict: "an object", list: "a list", str: "text", bool: "a boolean", type(None): "null"}.get(
        type(v), "a number" if isinstance(v, (int, float)) else type(v).__name__
    )
