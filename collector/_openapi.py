"""What the collector's OpenAPI document says: the ingest body and replies, the typed
replies of every read endpoint, the error body and the bearer security scheme.

The ingest body is plain JSON Schema (the wire format lives in
:mod:`mlpack_edge.monitor_agent.wire`, which checks it; this only documents it). Read
replies are pydantic models used as FastAPI ``response_model``: the app validates every
reply against them, and generated clients get real types. They allow extra keys, so a
field added to :mod:`.queries` reaches clients before it is described here.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "INGEST_OPENAPI",
    "BEARER",
    "CLIENT_CERT",
    "ingest_security",
    "DEVICE_NAME_PATTERN",
    "MODEL_HASH_PATTERN",
    "TIME_PATTERN",
    "MAX_HOURS",
    "ErrorReply",
    "DevicesReply",
    "DeviceDetail",
    "ModelsReply",
    "ModelDetail",
    "FleetReply",
    "AlertsReply",
    "AlertHistoryReply",
    "AlertRecord",
    "WebhooksReply",
    "Health",
]

#: Names of the device credentials in ``components.securitySchemes``.
BEARER = "deviceToken"
CLIENT_CERT = "deviceCertificate"
#: What :func:`~mlpack_edge.collector.auth.check_device_name` accepts.
DEVICE_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$"
MODEL_HASH_PATTERN = r"^[0-9a-f]{64}$"
#: Epoch seconds, or an ISO 8601 date or date-time (UTC when it has no zone). A date the
#: calendar does not have (2026-02-30, 0000-01-01) matches but is refused with 422.
TIME_PATTERN = (
    r"^(-?[0-9]{1,11}(\.[0-9]{1,9})?"
    r"|[0-9]{4}-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])"
    r"([T ]([01][0-9]|2[0-3]):[0-5][0-9](:[0-5][0-9](\.[0-9]{1,6})?)?(Z|[+-]([01][0-9]|2[0-3]):[0-5][0-9])?)?)$"
)
#: Longest range a query may span (400 days), in hours.
MAX_HOURS = 400 * 24

_COUNT = {"type": "integer", "minimum": 0, "maximum": 2**53 - 1}  # wire.MAX_COUNT
_FINITE = {"type": "number", "minimum": -1.7976931348623157e308, "maximum": 1.7976931348623157e308}
_AMOUNT = {"type": "number", "minimum": 0, "maximum": 1.7976931348623157e308}
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
        "start": {**_AMOUNT, "description": "epoch seconds"},
        "end": {**_AMOUNT, "description": "epoch seconds, >= start"},
        "requests": _COUNT,
        "rows": _COUNT,
        "errors": {"type": "object", "propertyNames": {"pattern": "^[a-z][a-z0-9_]{0,31}$"}, "additionalProperties": _COUNT,
                   "description": "failed requests by kind"},
        "latency": {
            "type": "object",
            "description": "empty, or both index and counts",
            "anyOf": [{"maxProperties": 0}, {"required": ["index", "counts"]}],
            "properties": {
                "alpha": {"type": "number", "enum": [0.01]},
                "index": {"type": "array", "items": {"type": "integer", "minimum": -10_000, "maximum": 10_000},
                          "description": "log-bucket indices (histogram.MAX_INDEX)"},
                "counts": {"type": "array", "items": _COUNT, "description": "one count per index"},
            },
        },
        "features": {"type": "object", "additionalProperties": _BINS, "description": "one count per bin of the model's reference profile"},
        "predictions": {"oneOf": [_BINS, {"type": "null"}]},
        "system": {
            "type": "object",
            "properties": {
                "samples": _COUNT,
                **{k: _AMOUNT for k in ("proc_cpu", "proc_rss_sum", "proc_rss_max", "cpu", "mem")},
                "disk_free_min": {"oneOf": [_AMOUNT, {"type": "null"}]},
            },
        },
    },
}
_BATCH = {
    "type": "object",
    "required": ["schema", "device"],
    "properties": {
        "schema": {"type": "integer", "enum": [1]},
        "device": {"type": "string", "pattern": DEVICE_NAME_PATTERN,
                   "description": "must be the device the bearer token belongs to"},
        "models": {
            "type": "object",
            "description": "content hash -> model, for every model the windows reference that the collector may not know",
            "propertyNames": {"pattern": MODEL_HASH_PATTERN},
            "additionalProperties": {
                "type": "object",
                "required": ["name", "version", "profile"],
                "properties": {
                    "name": {"type": "string", "minLength": 1, "maxLength": 200},
                    "version": {"type": "string", "maxLength": 100},
                    "profile": {"type": "object", "description": "mlpack.profile/1"},
                    "drift": {"type": "object", "properties": {
                        "psi_warn": {"type": "number"}, "psi_drift": {"type": "number"},
                        "alpha": {"type": "number"}, "min_count": {"type": "integer"},
                    }},
                },
            },
        },
        "windows": {"type": "array", "maxItems": 500, "items": _WINDOW},
        "audit": {"type": "array", "maxItems": 1000, "items": {"type": "object", "required": ["seq", "event"], "properties": {
            "seq": {**_COUNT, "description": "per-device audit sequence number (idempotency key)"},
            "event": {"type": "string", "minLength": 1, "maxLength": 64},
            "time": {"oneOf": [_FINITE, {"type": "null"}], "description": "epoch seconds"},
        }}},
        "outbox": {"type": "object", "additionalProperties": _COUNT},
    },
}
_ERROR = {"content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorReply"}}}}

def ingest_security(device_auth: str) -> list[dict[str, list[str]]]:
    """The ingest operation's security requirement for ``--device-auth`` token, cert or both."""
    return {"token": [{BEARER: []}], "cert": [{CLIENT_CERT: []}]}.get(device_auth, [{BEARER: [], CLIENT_CERT: []}])


INGEST_OPENAPI: dict[str, Any] = {
    "security": [{BEARER: []}],
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
        "422": {"description": "Schema violation; `error` names the field. Besides this schema the server checks "
                "what JSON Schema cannot say: `seq_last` >= `seq`, `end` >= `start`, `latency.index` and "
                "`latency.counts` of equal length, one count per bin of the model's reference profile, a "
                "`models` entry for every model it does not know yet, and a model name of 1-200 characters.",
                **_ERROR},
        "503": {"description": "Overloaded or storage unavailable; retry after Retry-After seconds.", **_ERROR},
    },
}


# ---------------------------------------------------------------------------- read replies


class _Reply(BaseModel):
    model_config = ConfigDict(extra="allow", populate_by_name=True)


class ErrorReply(BaseModel):
    """Every 4xx/5xx body: one line naming the field and what was expected."""

    error: str


class TimeRange(_Reply):
    start: int = Field(alias="from", description="Range start, epoch seconds (widened to a whole hour).")
    to: int = Field(description="Range end, epoch seconds, exclusive.")
    bucket: int = Field(
        description="Chart resolution in seconds: 60 up to eight hours, 3600 up to two weeks, 86400 beyond "
        "(a series of windows stored before minute roll-ups existed says 3600)."
    )


class Thresholds(_Reply):
    psi_warn: float
    psi_drift: float
    missing_jump: float
    out_of_range: float
    alpha: float = Field(0.005, description="Family-wise false-alarm rate of the drift test over a model's features.")
    min_count: int = Field(20, description="The fewest observed values a feature needs for a drift verdict.")


class ModelRef(_Reply):
    hash: str = Field(description="sha256 of the bundle's manifest.json")
    name: str
    version: str
    thresholds: Thresholds


DriftStatus = Literal["ok", "warn", "drift", "not-enough-data", "no-data"]


class Worst(_Reply):
    feature: str
    psi: float
    status: DriftStatus
    n: int = Field(description="Values the verdict is based on.")
    min_count: int = Field(description="The fewest values for a verdict ('not enough data (n of min_count)').")
    p_value: float | None = Field(description="Chi-square test p-value; null when no test ran.")


DeviceStatus = Literal["revoked", "never", "silent", "failing", "drift", "warn", "ok", "idle"]


class DeviceRow(_Reply):
    name: str
    status: DeviceStatus = Field(
        description="failing: at least 5% of at least 20 requests in the range answered with an error; "
        "drift/warn: its most severe feature; silent: no upload for silent_after seconds."
    )
    last_seen: float | None = Field(description="Epoch seconds of the last upload; null if never.")
    silent_for: float | None
    model: ModelRef | None = Field(description="The model its drift is scored for (its current one).")
    requests: int
    rows: int
    errors: int
    error_rate: float
    worst: Worst | None = Field(description="The most severe feature in the range (status first, then PSI).")
    outbox: dict[str, int] | None = Field(description="The device's outbox accounting at its last upload.")
    revoked: bool


class SystemLoad(_Reply):
    samples: int
    cpu: float | None
    proc_cpu: float | None
    mem: float | None
    proc_rss_max: float | None
    disk_free_min: float | None


class Stats(_Reply):
    windows: int
    requests: int
    rows: int
    errors: int
    error_kinds: dict[str, int]
    error_rate: float
    p50_ms: float | None
    p95_ms: float | None
    p99_ms: float | None
    system: SystemLoad


class Point(Stats):
    t: int = Field(description="Bucket start, epoch seconds.")
    psi: dict[str, float] | None = None
    js: dict[str, float] | None = None
    max_psi: float | None = None


class Bins(_Reply):
    labels: list[str] = Field(description="One label per bin: a category, or a numeric value range.")
    reference: list[float] = Field(description="Reference share per bin (training split).")
    observed: list[int] = Field(description="Observed count per bin in the range.")


class FeatureDrift(_Reply):
    psi: float = Field(description="Effect size: population stability index.")
    js: float = Field(description="Effect size: Jensen-Shannon divergence, bits.")
    status: DriftStatus = Field(
        description="drift/warn: PSI at its threshold AND the chi-square test significant at alpha "
        "(Bonferroni over the model's features); not-enough-data: n below min_count."
    )
    n: int = Field(description="Values the verdict is based on.")
    min_count: int
    test: str = Field(description="'chi2': two-sample Pearson chi-square of the binned counts against the reference.")
    statistic: float | None
    df: int | None
    p_value: float | None
    alpha: float | None = Field(description="The level p_value is held against (alpha / number of tests).")
    observed: int
    missing: int | None = None
    below: int | None = None
    above: int | None = None
    unseen: int | None = None
    bins: Bins | None = Field(None, description="Reference and observed distribution, bin by bin.")


class Total(Stats):
    drift: dict[str, FeatureDrift]
    worst: Worst | None


class Series(_Reply):
    model: ModelRef
    device: str | None
    range: TimeRange
    points: list[Point]
    total: Total


class Alert(_Reply):
    severity: Literal["critical", "warning"]
    kind: str = Field(description="drift, error_rate, silent, dropped, replay_conflict or production_gate")
    model: str | None
    device: str | None
    feature: str | None
    message: str


class AuditEvent(_Reply):
    seq: int | None = Field(description="The device's audit sequence number; null for the collector's own events.")
    time: float | None = Field(description="Epoch seconds on the device's clock, when it sent one (the collector's for its own).")
    event: str
    origin: Literal["device", "collector"] = Field(
        "device", description="'collector' for what the collector recorded about the device (replay_refused)"
    )


class DevicesReply(_Reply):
    range: TimeRange
    devices: list[DeviceRow]


class ProductionKpis(_Reply):
    """Production KPIs of one model version from ground-truth labels (see the README's
    *Production KPIs and feedback*): ``kpi`` fleet-wide, ``devices`` per device, ``series`` per bucket."""

    model: dict[str, str] = Field(description="hash, name, version")
    kpi: dict[str, Any] = Field(
        description="feedback counts (labels, matched, unmatched, late, duplicate, unknown_label), labelled, "
        "accuracy, per_class {precision, recall, f1, support, predicted, tp}, macro {precision, recall, f1}, "
        "confusion and classes (classifiers) or mae, rmse, bias (regression), min_labels, and gates "
        "[{gate, metric, measured_as, op, threshold, build, production, n, interval, status, certain}]"
    )
    devices: dict[str, dict[str, Any]] = Field(description="The same per device on this version.")
    series: list[dict[str, Any]] = Field(description="Per chart bucket: t, labels, labelled, and each gate's value.")


class DeviceDetail(_Reply):
    device: DeviceRow
    range: TimeRange
    models: list[Series]
    audit: list[AuditEvent]
    production: list[ProductionKpis] = Field(default_factory=list)


class KnownModel(_Reply):
    hash: str
    name: str
    version: str
    source: str = Field(description="'upload' (sent by a device) or 'bundle' (mlpack collector add-model)")
    thresholds: Thresholds


class ModelsReply(_Reply):
    models: list[KnownModel]


class ModelDetail(_Reply):
    series: Series
    devices: list[DeviceRow]
    profile: dict[str, Any] = Field(description="The reference profile (mlpack.profile/1).")
    production: list[ProductionKpis] = Field(default_factory=list)


class Paging(_Reply):
    """Which page of the device table a reply holds (worst first: failing, drift, warn, silent, ok, idle, never, revoked; then by name)."""

    page: int = Field(description="1 for the first page")
    per_page: int
    total: int = Field(description="Devices in the whole table")
    pages: int


class FleetReply(_Reply):
    range: TimeRange
    generated_at: float
    silent_after: float
    models: list[Series]
    devices: list[DeviceRow] = Field(description="One page of the device table, worst first (see paging).")
    paging: Paging
    status_counts: dict[str, int] = Field(description="Devices per status, over every device (not only this page).")
    production: list[ProductionKpis] = Field(default_factory=list)
    alerts: list[Alert]


class AlertsReply(_Reply):
    range: TimeRange
    alerts: list[Alert]


class Delivery(_Reply):
    id: int
    webhook: int = Field(description="The webhook's id (mlpack collector list-webhooks).")
    alert: int
    event: Literal["firing", "resolved"]
    state: Literal["pending", "delivered", "failed", "cancelled"] = Field(
        description="pending: waiting for its (next) attempt; failed: gave up after the maximum attempts")
    attempts: int = Field(description="Attempts made so far (each a POST with a bounded timeout).")
    next_at: float = Field(description="Epoch seconds of the next attempt while pending.")
    created_at: float
    last_at: float | None = Field(description="When the last attempt started.")
    last_status: int | None = Field(description="HTTP status of the last answer; null when none came.")
    last_error: str | None = Field(description="Why the last attempt failed (status and body, or timeout).")
    delivered_at: float | None


class AlertRecord(_Reply):
    id: int
    kind: str = Field(description="drift, error_rate, silent, dropped, replay_conflict, production_gate, or a "
                                   "kind another condition adds")
    severity: Literal["critical", "warning"]
    state: Literal["open", "resolved"]
    model: str | None
    model_name: str | None
    model_version: str | None
    device: str | None
    feature: str | None
    message: str = Field(description="The latest message while open; the last one seen when resolved.")
    opened_at: float = Field(description="Epoch seconds when the condition was first seen to hold.")
    resolved_at: float | None = Field(description="Epoch seconds when it was first seen not to hold; null while open.")
    deliveries: list[Delivery]


class AlertHistoryReply(_Reply):
    generated_at: float
    alerts: list[AlertRecord]


class Webhook(_Reply):
    id: int
    url: str = Field(description="Scheme, host, port and path only (credentials and query are not shown).")
    format: Literal["json", "alertmanager"]
    signed: bool = Field(description="Requests carry X-Mlpack-Signature (HMAC-SHA256 of the body).")
    created_at: float
    removed_at: float | None
    delivered: int
    pending: int
    failed: int


class WebhooksReply(_Reply):
    webhooks: list[Webhook]


class Health(_Reply):
    ok: bool
    schema_version: int
    pending: int
