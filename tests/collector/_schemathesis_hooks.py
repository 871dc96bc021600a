"""Schemathesis hooks for the collector's conformance run (loaded by path, not by pytest).

Two kinds of rule in the collector's API are beyond what OpenAPI can state, and both are
written in the API's own description (the range rules in the document's description,
the ingest rules in the ingest 422 reply's description):

* the read endpoints' range parameters: ``from`` before ``to`` (which defaults to now),
  at most 400 days between them, and a calendar date that exists;
* the ingest body: ``seq_last`` >= ``seq``, ``end`` >= ``start``, ``latency.index`` and
  ``latency.counts`` of equal length, bins matching the model's reference profile, a
  known model for every window.

``filter_failure`` drops a "schema-valid request rejected" failure only when the request
really breaks one of those rules, checked here independently of the server, and the
server said so in its 422; any other refusal of schema-valid data stays a failure.
``map_case`` puts the device of the test's token (``$MLPACK_ST_DEVICE``) into the
schema-valid ingest bodies (schema-invalid ones keep theirs: refused either way), so
generated data gets past the device check (401) and reaches validation and storage. It
drops their ``models`` entries: the reference profile inside one is described in the
documentation (``mlpack.profile/1``), not in JSON Schema, so it is not generated here.
"""

from __future__ import annotations

import math
import os
import re
import time
from datetime import UTC, datetime
from typing import Any

import schemathesis

_NUMBER = re.compile(r"-?[0-9]+(\.[0-9]+)?")
_DAY = 86400.0
_SLACK = 60.0  # this process's clock against the collector's, for ranges that end "now"


def _seconds(value: Any) -> float | None:
    """What a ``from``/``to`` value that matches the schema's pattern stands for."""
    text = str(value)
    if _NUMBER.fullmatch(text):
        return float(text)
    try:
        dt = datetime.fromisoformat(text)
    except ValueError:
        return None  # a date the calendar does not have
    return (dt if dt.tzinfo else dt.replace(tzinfo=UTC)).timestamp()


def breaks_range_rules(query: dict[str, Any] | None) -> bool:
    """True when ``from``/``to``/``hours`` break the cross-parameter range rules (or name a
    date that does not exist); ``False`` for ranges the server must answer."""
    query = query or {}
    lo_raw, hi_raw = query.get("from"), query.get("to")
    lo = None if lo_raw is None else _seconds(lo_raw)
    hi = None if hi_raw is None else _seconds(hi_raw)
    if (lo_raw is not None and lo is None) or (hi_raw is not None and hi is None):
        return True
    if lo is None:
        if hi is None:
            return False  # hours alone: bounded by the schema
        lo = hi - max(float(query.get("hours") or 24.0), 1 / 3600) * 3600
    slack = _SLACK if hi is None else 0.0
    hi = time.time() if hi is None else hi
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return True
    return not (lo < hi - slack and hi - lo <= 400 * _DAY - slack)


def _window_breaks_ingest_rules(w: Any) -> bool:
    if not isinstance(w, dict):
        return False
    latency = w.get("latency") or {}
    return (
        w.get("seq_last", w.get("seq")) < w.get("seq", 0)
        or w.get("end", 0) < w.get("start", 0)
        or (isinstance(latency, dict) and len(latency.get("index", [])) != len(latency.get("counts", [])))
        or True  # a generated window's model is never known to the collector: refused as unknown
    )


def breaks_ingest_rules(body: Any) -> bool:
    """True when a schema-valid ingest body breaks a rule JSON Schema cannot state."""
    if not isinstance(body, dict):
        return False
    return any(_window_breaks_ingest_rules(w) for w in body.get("windows") or [])


_INGEST_RULES = re.compile(
    r"^windows\[\d+\](\.seq_last: must be >= seq|\.end: must be >= start|\.latency: latency\.index and latency\.counts"
    r" differ in length|\.model: unknown model|\.features\.|\.predictions)"
)


@schemathesis.hook
def filter_failure(ctx: Any, failure: Any, case: Any, response: Any) -> bool:
    if getattr(failure, "code", None) != "ST202" or response.status_code != 422:
        return True
    try:
        error = str(response.json().get("error", ""))
    except Exception:
        return True
    if case.operation.path == "/api/v1/ingest":
        return not (breaks_ingest_rules(case.body) and _INGEST_RULES.match(error))
    return not (breaks_range_rules(case.query) and error.startswith(("range: ", "from: ", "to: ")))


@schemathesis.hook
def map_case(ctx: Any, case: Any) -> Any:
    device = os.environ.get("MLPACK_ST_DEVICE")
    positive = case.meta is not None and case.meta.generation.mode.is_positive
    if device and positive and case.operation.path == "/api/v1/ingest" and isinstance(case.body, dict):
        case.body = {**{k: v for k, v in case.body.items() if k != "models"}, "device": device}
    return case


# POST /api/v1/releases takes the bundle as application/gzip bytes: generated bodies are
# sent as they are, like application/octet-stream (the collector refuses them as archives).
schemathesis.serializer.alias("application/gzip", "application/octet-stream")
