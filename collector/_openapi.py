"""OpenAPI description of the ingest body and replies (the wire format lives in
:mod:`mlpack_edge.monitor_agent.wire`; this only documents it for API readers)."""

from __future__ import annotations

from typing import Any

__all__ = ["INGEST_OPENAPI"]

_COUNT = {"type": "integer", "minimum": 0}
_BINS = {
    "type": "object",
    "required": ["bins"],
    "properties": {"bins": {"type": "array", "items": _COUNT}, "missing": _COUNT, "below": _COUNT, "above": _COUNT, "unseen": _COUNT},
}
_WINDOW = {
    "type": "object",
    "required": ["model", "seq", "start", "end"],
    "properties": {
        "model": {"type": "string", "pattern": "^[0-9a-f]{64}$", "description": "sha256 of the bundle's manifest.json"},
        "seq": {**_COUNT, "description": "per-device sequence number; (device, seq) is the idempotency key"},
        "seq_last": {**_COUNT, "description": ">= seq; > seq when the device merged windows"},
        "start": {"type": "number", "description": "epoch seconds"},
        "end": {"type": "number", "description": "epoch seconds, >= start"},
        "requests": _COUNT,
        "rows": _COUNT,
        "errors": {"type": "object", "additionalProperties": _COUNT},
        "latency": {
            "type": "object",
            "properties": {"alpha": {"type": "number", "enum": [0.01]}, "index": {"type": "array", "items": {"type": "integer"}}, "counts": {"type": "array", "items": _COUNT}},
        },
        "features": {"type": "object", "additionalProperties": _BINS, "description": "one count per bin of the model's reference profile"},
        "predictions": {"oneOf": [_BINS, {"type": "null"}]},
        "system": {"type": "object"},
    },
}
_BATCH = {
    "type": "object",
    "required": ["schema", "device"],
    "properties": {
        "schema": {"type": "integer", "enum": [1]},
        "device": {"type": "string", "description": "must be the device the bearer token belongs to"},
        "models": {
            "type": "object",
            "description": "content hash -> model, for every model the windows reference that the collector may not know",
            "additionalProperties": {
                "type": "object",
                "required": ["name", "version", "profile"],
                "properties": {
                    "name": {"type": "string"},
                    "version": {"type": "string"},
                    "profile": {"type": "object", "description": "mlpack.profile/1"},
                    "drift": {"type": "object", "properties": {"psi_warn": {"type": "number"}, "psi_drift": {"type": "number"}}},
                },
            },
        },
        "windows": {"type": "array", "maxItems": 500, "items": _WINDOW},
        "audit": {"type": "array", "items": {"type": "object", "required": ["seq", "event"]}},
        "outbox": {"type": "object", "additionalProperties": _COUNT},
    },
}
_ERROR = {"content": {"application/json": {"schema": {"type": "object", "properties": {"error": {"type": "string"}}}}}}

INGEST_OPENAPI: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "description": "A telemetry batch, gzip-compressed (Content-Encoding: gzip) or plain JSON.",
        "content": {"application/json": {"schema": _BATCH}},
    },
    "responses": {
        "200": {
            "description": "Committed. `stored` were new; `duplicates` were already stored (a replay is a success).",
            "content": {"application/json": {"schema": {"type": "object", "properties": {
                "stored": {"type": "array", "items": {"type": "integer"}},
                "duplicates": {"type": "array", "items": {"type": "integer"}}}}}},
        },
        "400": {"description": "Malformed gzip or JSON.", **_ERROR},
        "401": {"description": "Missing, unknown, wrong or revoked token, or a batch for another device.", **_ERROR},
        "409": {"description": "A window overlaps a stored window of the device with different bounds.", **_ERROR},
        "413": {"description": "Body (compressed or inflated) too large.", **_ERROR},
        "415": {"description": "Unsupported Content-Encoding.", **_ERROR},
        "422": {"description": "Schema violation; `error` names the field.", **_ERROR},
        "503": {"description": "Overloaded or storage unavailable; retry after Retry-After seconds.", **_ERROR},
    },
}
