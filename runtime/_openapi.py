"""The OpenAPI 3.1 document of ``serve`` (``GET /openapi.json``), written for this model.

Built once at start from the manifest, so a client generator (or a person) sees this
model's features as typed request fields, its classes as the label's values, and its
name in the KServe v2 paths. Schemas are JSON Schema 2020-12 (OpenAPI 3.1), so a
response can be checked against them with any JSON Schema validator. Plain dicts, no
library: the device carries no OpenAPI tooling.
"""

from __future__ import annotations

from typing import Any

from mlpack_edge.runtime import _v2
from mlpack_edge.runtime.manifest import Feature

__all__ = ["document"]

_REF = "#/components/schemas/"
_ID = {"type": "string", "description": "With the monitoring agent: the prediction's id, the key of POST /feedback"}


def _ref(name: str) -> dict[str, str]:
    return {"$ref": _REF + name}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _feature(f: Feature) -> dict[str, Any]:
    if f.kind == "numeric":
        s: dict[str, Any] = {"type": ["number", "null"] if f.nullable else "number"}
        s["description"] = "numeric" + (" (null: missing)" if f.nullable else "")
        return s
    s = {"type": ["string", "null"] if f.nullable else "string"}
    if f.unseen == "error":
        s["enum"] = [*f.categories, *([None] if f.nullable else [])]
        s["description"] = "categorical; another category is refused"
    else:
        s["description"] = "categorical, one of " + ", ".join(map(repr, f.categories)) + "; another is read as missing"
    return s


def _schemas(model: Any, ids: bool) -> dict[str, Any]:
    features = model.schema.features
    classes = list(model.classes)
    regression = model.task == "regression"
    label: dict[str, Any] = {"enum": classes}
    prediction = (
        {"type": "object", "required": ["value"], "additionalProperties": False,
         "properties": {"value": {"type": ["number", "null"]}, "id": _ID}}
        if regression
        else {
            "type": "object",
            "required": ["label", "probabilities"],
            "additionalProperties": False,
            "properties": {
                "label": label,
                "probabilities": {
                    "type": "object",
                    "required": [str(c) for c in classes],
                    "additionalProperties": False,
                    "properties": {str(c): {"type": ["number", "null"]} for c in classes},
                },
                "id": _ID,
            },
        }
    )
    mlflow_item: dict[str, Any] = {"type": ["number", "null"]} if regression else {"anyOf": [label, _ref("Prediction")]}
    tensor_meta = {
        "type": "object",
        "required": ["name", "datatype", "shape"],
        "properties": {"name": {"type": "string"}, "datatype": {"type": "string"},
                       "shape": {"type": "array", "items": {"type": "integer"}}},
    }
    values = {"type": "array", "items": {}}
    return {
        "Row": {
            "type": "object",
            "description": "One row: every feature, nothing else. Numeric features also take numbers as text.",
            "required": [f.name for f in features],
            "additionalProperties": False,
            "properties": {f.name: _feature(f) for f in features},
        },
        "Prediction": prediction,
        "RowError": {
            "type": "object",
            "required": ["error", "row", "field"],
            "properties": {"error": {"type": "string"}, "row": {"type": ["integer", "null"]},
                           "field": {"type": ["string", "null"]}},
        },
        "Batch": {
            "type": "object",
            "required": ["predictions", "failed"],
            "properties": {
                "predictions": {"type": "array", "items": {"anyOf": [_ref("Prediction"), _ref("RowError")]}},
                "failed": {"type": "integer", "minimum": 0},
            },
        },
        "Error": {"type": "object", "required": ["error"], "properties": {"error": {"type": "string"}}},
        "Health": {
            "type": "object",
            "required": ["status", "name", "version", "content_hash"],
            "properties": {"status": {"const": "ok"}, "name": {"type": "string"}, "version": {"type": "string"},
                           "content_hash": {"type": "string", "pattern": "^[0-9a-f]{64}$"},
                           "fallback": {"type": "object"}},
        },
        "Manifest": {"type": "object", "required": ["format", "name", "version", "task", "input", "output", "files"],
                     "description": "The bundle's manifest.json byte for byte; its sha256 is the content hash."},
        "MlflowRequest": {
            "type": "object",
            "description": "Exactly one of the four MLflow input fields, and optionally params.",
            "minProperties": 1,
            "maxProperties": 2,
            "properties": {
                "dataframe_split": {
                    "type": "object",
                    "required": ["data"],
                    "properties": {"columns": {"type": "array", "items": {"type": "string"}},
                                   "data": {"type": "array", "items": {"type": "array"}}, "index": {"type": "array"}},
                },
                "dataframe_records": {"type": "array", "items": _ref("Row")},
                "instances": {"type": "array"},
                "inputs": {"anyOf": [{"type": "array"}, {"type": "object", "additionalProperties": values}]},
                "params": {"type": "object", "properties": {"probabilities": {"type": "boolean"}}},
            },
            "additionalProperties": False,
        },
        "MlflowPredictions": {
            "type": "object",
            "required": ["predictions"],
            "properties": {"predictions": {"type": "array", "items": mlflow_item},
                           "ids": {"type": "array", "items": {"type": "string"},
                                   "description": "With the monitoring agent: each row's prediction id (POST /feedback)."}},
            "description": "Labels (classification), values (regression), or with params.probabilities"
            " {label, probabilities} records.",
        },
        "MlflowError": {"type": "object", "required": ["error_code", "message"],
                        "properties": {"error_code": {"type": "string"}, "message": {"type": "string"}}},
        "Feedback": {
            "type": "object",
            "required": ["id", "label"],
            "properties": {"id": {"type": ["string", "integer"]},
                           "label": {"type": "number"} if regression else {"enum": classes,
                                     "description": "The true class (another value counts as unknown_label)"}},
        },
        "FeedbackOutcome": {"enum": ["matched", "duplicate", "late", "unmatched", "unknown_label"]},
        "FeedbackReply": {
            "anyOf": [
                {"type": "object", "required": ["id", "outcome"],
                 "properties": {"id": {"type": "string"}, "outcome": _ref("FeedbackOutcome")}},
                {"type": "object", "required": ["outcomes", "counts"],
                 "properties": {"outcomes": {"type": "array", "items": _ref("FeedbackOutcome")},
                                "counts": {"type": "object", "additionalProperties": {"type": "integer"}}}},
            ]
        },
        "V2ServerMetadata": {"type": "object", "required": ["name", "version", "extensions"],
                             "properties": {"name": {"type": "string"}, "version": {"type": "string"},
                                            "extensions": {"type": "array", "items": {"type": "string"}}}},
        "V2Live": {"type": "object", "required": ["live"], "properties": {"live": {"type": "boolean"}}},
        "V2Ready": {"type": "object", "required": ["ready"], "properties": {"ready": {"type": "boolean"}}},
        "V2ModelReady": {"type": "object", "required": ["name", "ready"],
                         "properties": {"name": {"type": "string"}, "ready": {"type": "boolean"}}},
        "V2TensorMetadata": tensor_meta,
        "V2ModelMetadata": {
            "type": "object",
            "required": ["name", "versions", "platform", "inputs", "outputs"],
            "properties": {"name": {"type": "string"}, "versions": {"type": "array", "items": {"type": "string"}},
                           "platform": {"type": "string"},
                           "inputs": {"type": "array", "items": _ref("V2TensorMetadata")},
                           "outputs": {"type": "array", "items": _ref("V2TensorMetadata")}},
        },
        "V2InferRequest": {
            "type": "object",
            "required": ["inputs"],
            "description": "One tensor per feature (shape [N] or [N, 1]; BYTES for categorical features, a numeric"
            " datatype for numeric ones)" + (f", or one [N, {len(features)}] numeric tensor" if model.schema.all_numeric else "")
            + ". Triton's binary tensor extension is accepted (Inference-Header-Content-Length).",
            "properties": {
                "id": {"type": "string"},
                "parameters": {"type": "object"},
                "inputs": {"type": "array", "minItems": 1, "items": {
                    "type": "object",
                    "required": ["name", "shape", "datatype"],
                    "properties": {"name": {"type": "string"}, "shape": {"type": "array", "items": {"type": "integer"}},
                                   "datatype": {"enum": list(_v2.DATATYPES)}, "parameters": {"type": "object"},
                                   "data": {}},
                }},
                "outputs": {"type": "array", "items": {"type": "object", "required": ["name"],
                                                       "properties": {"name": {"enum": [o["name"] for o in _v2.output_specs(model.task, classes, ids)]},
                                                                      "parameters": {"type": "object"}}}},
            },
        },
        "V2InferResponse": {
            "type": "object",
            "required": ["model_name", "outputs"],
            "properties": {
                "model_name": {"const": model.name},
                "model_version": {"const": model.version},
                "id": {"type": "string"},
                "outputs": {"type": "array", "items": {
                    "type": "object",
                    "required": ["name", "shape", "datatype"],
                    "properties": {"name": {"type": "string"}, "shape": {"type": "array", "items": {"type": "integer"}},
                                   "datatype": {"type": "string"}, "parameters": {"type": "object"},
                                   "data": {"type": "array"}},
                }},
            },
        },
    }


def _errors(*codes: int, schema: str = "Error") -> dict[str, Any]:
    why = {400: "Bad request (the message names the row, field or tensor)", 404: "Not this model",
           409: "No monitoring agent: feedback is off", 411: "No Content-Length", 413: "Body or batch too large", 415: "Unsupported Content-Type",
           422: "The row failed validation", 500: "Inference failed", 503: "Too many connections, or feedback not stored (send it again)"}
    return {str(c): _json(_ref(schema), why[c]) for c in codes}


def document(model: Any, version: str, ids: bool = False) -> dict[str, Any]:
    """The OpenAPI 3.1 document for ``model`` served by mlpack-edge ``version``.

    ``ids``: the monitoring agent runs (predictions carry ids; ``/feedback`` takes labels).
    """
    name = model.name
    common = _errors(503)
    body_errors = _errors(400, 411, 413, 500, 503)
    mlflow_errors = _errors(400, 411, 413, 415, 500, 503, schema="MlflowError")
    model_param = {"name": "model_name", "in": "path", "required": True, "schema": {"const": name}}
    version_param = {"name": "model_version", "in": "path", "required": True, "schema": {"const": model.version}}

    def get(summary: str, response: dict[str, Any], tag: str) -> dict[str, Any]:
        return {"get": {"summary": summary, "tags": [tag], "responses": {"200": response, **common}}}

    def v2_model_paths(suffix: str) -> dict[str, Any]:
        base = {"": [model_param], "/versions/{model_version}": [model_param, version_param]}
        out: dict[str, Any] = {}
        for middle, params in base.items():
            path = "/v2/models/{model_name}" + middle + suffix
            if suffix == "/infer":
                op = {"post": {
                    "summary": "Infer (Open Inference Protocol)", "tags": ["KServe v2"], "parameters": params,
                    "requestBody": {"required": True, "content": {"application/json": {"schema": _ref("V2InferRequest")}}},
                    "responses": {"200": {"description": "Output tensors (application/octet-stream with binary outputs)",
                                          "content": {"application/json": {"schema": _ref("V2InferResponse")},
                                                      "application/octet-stream": {"schema": {}}}},
                                  **_errors(400, 404, 411, 413, 500, 503)},
                }}
            elif suffix == "/ready":
                op = {"get": {"summary": "Model readiness", "tags": ["KServe v2"], "parameters": params,
                              "responses": {"200": _json(_ref("V2ModelReady"), "Ready"), **_errors(404, 503)}}}
            else:
                op = {"get": {"summary": "Model metadata: input and output tensors", "tags": ["KServe v2"],
                              "parameters": params,
                              "responses": {"200": _json(_ref("V2ModelMetadata"), "Metadata"), **_errors(404, 503)}}}
            out[path] = op
        return out

    paths: dict[str, Any] = {
        "/predict": {"post": {
            "summary": "Predict one row (an object) or a batch (an array of rows)",
            "tags": ["mlpack"],
            "requestBody": {"required": True, "content": {"application/json": {"schema": {
                "anyOf": [_ref("Row"), {"type": "array", "items": _ref("Row")}]}}}},
            "responses": {
                "200": _json({"anyOf": [_ref("Prediction"), _ref("Batch")]},
                             "One row: its prediction. A batch: one item per row, in order (a prediction or an error)."),
                "422": _json(_ref("RowError"), "The row failed validation"),
                **body_errors,
            },
        }},
        "/feedback": {"post": {
            "summary": "Ground truth for earlier predictions, by id (needs the monitoring agent)",
            "tags": ["mlpack"],
            "requestBody": {"required": True, "content": {"application/json": {"schema": {
                "anyOf": [_ref("Feedback"), {"type": "array", "minItems": 1, "items": _ref("Feedback")}]}}}},
            "responses": {"200": _json(_ref("FeedbackReply"), "One outcome per label"),
                          **_errors(400, 409, 411, 413, 500, 503)},
        }},
        "/health": get("Liveness and identity of the served model", _json(_ref("Health"), "Serving"), "mlpack"),
        "/info": get("The bundle's manifest", _json(_ref("Manifest"), "manifest.json"), "mlpack"),
        "/metrics": get("Prometheus metrics", {"description": "Text exposition format 0.0.4",
                                               "content": {"text/plain": {"schema": {"type": "string"}}}}, "mlpack"),
        "/openapi.json": get("This document", _json({"type": "object"}, "OpenAPI 3.1"), "mlpack"),
        "/invocations": {"post": {
            "summary": "MLflow scoring protocol",
            "tags": ["MLflow"],
            "requestBody": {"required": True, "content": {
                "application/json": {"schema": _ref("MlflowRequest")},
                "text/csv": {"schema": {"type": "string"}},
            }},
            "responses": {"200": _json(_ref("MlflowPredictions"), "One prediction per row"), **mlflow_errors},
        }},
        "/ping": get("MLflow scoring server health check", _json({}, "Serving"), "MLflow"),
        "/v2": get("Server metadata", _json(_ref("V2ServerMetadata"), "Metadata"), "KServe v2"),
        "/v2/health/live": get("Server liveness", _json(_ref("V2Live"), "Live"), "KServe v2"),
        "/v2/health/ready": get("Server readiness", _json(_ref("V2Ready"), "Ready"), "KServe v2"),
        **v2_model_paths(""),
        **v2_model_paths("/ready"),
        **v2_model_paths("/infer"),
    }
    return {
        "openapi": "3.1.0",
        "info": {
            "title": f"{name} {model.version} (mlpack-edge serve)",
            "version": version,
            "description": f"Model {name!r} version {model.version} ({model.task}), content hash {model.content_hash}."
            " Served by mlpack-edge's device runtime: its own /predict, MLflow's scoring protocol and KServe's"
            " Open Inference Protocol v2.",
        },
        "paths": paths,
        "components": {"schemas": _schemas(model, ids)},
    }
