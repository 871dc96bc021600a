"""The collector's HTTP routes: ingest, JSON API, web page, Prometheus metrics, API docs.

Routes stay thin: they parse parameters, call :mod:`.ingest` or :mod:`.queries`, and
shape the reply. Expected failures are JSON ``{"error": "..."}`` with a 4xx (or 503
with ``Retry-After``); nothing a client sends can produce a 500.

The OpenAPI document (``/openapi.json``) says what the server does: every read reply is
a typed model (:mod:`._openapi`), every status a route can answer is listed, parameters
carry the patterns and bounds the server enforces, and ingest names its bearer scheme.
``/docs`` (Swagger UI) and ``/redoc`` load their scripts from this server
(``fastapi-offline`` ships them), so they work on a network with no internet.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable, Sequence
from datetime import UTC, datetime
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from fastapi import Depends, FastAPI, Path, Query, Request
from fastapi.exceptions import RequestValidationError, ResponseValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import HTMLResponse, JSONResponse, Response
from fastapi_offline import FastAPIOffline
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from mlpack_edge import __version__
from mlpack_edge.collector import _openapi as api
from mlpack_edge.collector import page, queries
from mlpack_edge.collector.alerts import Alerter, Condition, alert_dict
from mlpack_edge.collector.delivery import Dispatcher, RetryPolicy
from mlpack_edge.collector.webhooks import public_url
from mlpack_edge.collector._fast_route import route_first
from mlpack_edge.collector._openapi import INGEST_OPENAPI
from mlpack_edge.collector.auth import bearer_token, hash_token, peer_fingerprint
from mlpack_edge.collector.metrics import CONTENT_TYPE, Metrics
from mlpack_edge.collector.config import CollectorConfig
from mlpack_edge.collector.ingest import REPLAY_CONFLICT, Ack, Rejected, Writer, decode_body, parse_batch
from mlpack_edge.collector.storage import Storage
from mlpack_edge.errors import StorageError

__all__ = ["create_app"]

log = logging.getLogger("mlpack_edge.collector")
_INLINE_DECODE = 64 * 1024  # bigger bodies are decoded off the event loop
# Seconds a token -> device lookup is trusted. Only a pre-filter: the write transaction
# checks the token against the device's row again (a revoked or replaced token is refused
# there with the same 401), so it can outlive a device's upload interval (a minute):
# with 2 s, nearly every upload of a real fleet was a blocking query on the event loop.
_TOKEN_TTL = 600.0
# Certificate fingerprints: the write re-checks the device, not the certificate, so a
# certificate removed from an active device is refused within this many seconds.
_CERT_TTL = 2.0
_MIN_HOURS = 1 / 3600  # ranges widen to whole hours anyway; a shorter one is the same range
_ERROR_BODY = {"model": api.ErrorReply}
_INVALID = {422: {**_ERROR_BODY, "description": "A parameter is malformed or out of range; `error` names it."}}
_RANGE_DOC = (
    "Every read takes a time range: `from`/`to` (epoch seconds or ISO 8601, UTC when no zone is given; `to` "
    "defaults to now) or `hours` back from `to` (default 24). The range is widened to whole hours; `from` must be "
    "before `to` and the range at most 400 days (else 422)."
)


def _error(status: int, message: str, retry_after: int | None = None) -> JSONResponse:
    headers = {"Retry-After": str(retry_after)} if retry_after else None
    return JSONResponse({"error": message}, status_code=status, headers=headers)


def _parse_time(value: str | None, name: str) -> float | None:
    if value is None or value == "":
        return None
    try:
        return float(value)
    except ValueError:
        pass
    try:
        dt = datetime.fromisoformat(value)
    except ValueError:
        raise Rejected(422, f"{name}: expected epoch seconds or an ISO 8601 time, got {value!r}") from None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return dt.timestamp()


@dataclass(frozen=True)
class _Span:
    range: queries.TimeRange
    hours: float | None  # what the page's range links show as chosen (None for from/to)


def _span(
    request: Request,
    from_: str | None = Query(None, alias="from", pattern=api.TIME_PATTERN,
                              description="Range start: epoch seconds or ISO 8601 (UTC if no zone)."),
    to: str | None = Query(None, pattern=api.TIME_PATTERN, description="Range end (default: now)."),
    hours: float | None = Query(None, gt=0, le=api.MAX_HOURS,
                                description="Range length in hours when 'from' is not given (default 24)."),
) -> _Span:
    """The time range every read endpoint accepts, widened to whole hours."""
    config: CollectorConfig = request.app.state.config
    length = max(hours, _MIN_HOURS) if hours else 24.0
    try:
        rng = queries.time_range(_parse_time(from_, "from"), _parse_time(to, "to"), config.clock(), length)
    except ValueError as exc:
        raise Rejected(422, str(exc)) from None
    return _Span(rng, hours or (None if from_ or to else 24.0))


Span = Annotated[_Span, Depends(_span)]


@dataclass(frozen=True)
class _Page:
    page: int
    per_page: int


def _page(
    page: int = Query(1, ge=1, le=1_000_000, description="Page of the device table, worst first (1 = the first)."),
    per_page: int = Query(queries.PER_PAGE, ge=1, le=queries.MAX_PER_PAGE, description="Devices per page."),
) -> _Page:
    """Which page of the device table to show: the table is worst first, so page 1 is what needs attention."""
    return _Page(page, per_page)


Page = Annotated[_Page, Depends(_page)]


class _TokenCache:
    """Recently seen token hashes (or certificate fingerprints) -> active device; only a
    pre-filter (the write transaction decides)."""

    def __init__(self, lookup: Callable[[str], str | None], ttl: float) -> None:
        self._lookup = lookup
        self._ttl = ttl
        self._hits: dict[str, tuple[str, float]] = {}

    def device(self, token_hash: str) -> str | None:
        now = time.monotonic()
        hit = self._hits.get(token_hash)
        if hit is not None and now - hit[1] < self._ttl:
            return hit[0]
        name = self._lookup(token_hash)
        if name is None:
            self._hits.pop(token_hash, None)
        else:
            if len(self._hits) > 100_000:
                self._hits.clear()
            self._hits[token_hash] = (name, now)
        return name


async def _read_limited(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None:
        try:
            if int(declared) > limit:
                raise Rejected(413, f"body: {declared} bytes is more than the {limit} allowed")
        except ValueError:
            raise Rejected(400, "Content-Length: not an integer") from None
    chunks: list[bytes] = []
    total = 0
    async for chunk in request.stream():
        total += len(chunk)
        if total > limit:
            raise Rejected(413, f"body: more than the {limit} bytes allowed")
        chunks.append(chunk)
    return b"".join(chunks)


#: What a parameter's pattern means, for the 422 message (the pattern itself is in the schema).
def _allowed_methods(request: Request) -> list[str]:
    """Every method some route of this app serves at the request's path."""
    path = request.url.path
    methods: set[str] = set()
    for route in request.app.router.routes:
        regex, allowed = getattr(route, "path_regex", None), getattr(route, "methods", None)
        if regex is not None and allowed and regex.match(path):
            methods.update(allowed)
    return sorted(methods)


_PATTERN_TEXT = {
    api.TIME_PATTERN: "epoch seconds or an ISO 8601 time",
    api.DEVICE_NAME_PATTERN: "a device name (letters, digits, '.', '_' or '-', at most 128, starting with a letter or digit)",
    api.MODEL_HASH_PATTERN: "a content hash (64 lowercase hex digits, the sha256 of manifest.json)",
}
_DeviceName = Annotated[str, Path(pattern=api.DEVICE_NAME_PATTERN, description="A registered device's name.")]
_ModelHash = Annotated[str, Path(pattern=api.MODEL_HASH_PATTERN, description="sha256 of the bundle's manifest.json.")]


def _not_found(what: str) -> dict[int | str, dict[str, Any]]:
    return {404: {**_ERROR_BODY, "description": f"No such {what}."}, **_INVALID}


def _openapi_document(app: FastAPI, device_auth: str) -> dict[str, Any]:
    """FastAPI's document plus the device credentials ingest takes (per ``--device-auth``)
    and the error body every route may answer."""
    if app.openapi_schema is None:
        doc = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes,
                          tags=app.openapi_tags)
        components = doc.setdefault("components", {})
        schemes = components.setdefault("securitySchemes", {})
        schemes[api.BEARER] = {
            "type": "http",
            "scheme": "bearer",
            "description": "A device token from `mlpack collector add-device NAME` (shown once; stored as a hash).",
        }
        schemes["adminToken"] = {
            "type": "http",
            "scheme": "bearer",
            "description": "An admin token from `mlpack collector add-admin NAME` (publish, rollouts); a device "
            "token is refused there with 403.",
        }
        schemes[api.CLIENT_CERT] = {
            "type": "mutualTLS",
            "description": "A TLS client certificate registered with `mlpack collector add-device NAME --cert FILE` "
            "(collectors serving HTTPS with --tls-client-ca and --device-auth cert or both).",
        }
        ingest = doc.get("paths", {}).get("/api/v1/ingest", {}).get("post")
        if ingest is not None:
            ingest["security"] = api.ingest_security(device_auth)
        components.setdefault("schemas", {})["ErrorReply"] = api.ErrorReply.model_json_schema()
        app.openapi_schema = doc
    return app.openapi_schema


def create_app(storage: Storage, config: CollectorConfig, conditions: Sequence[Condition] | None = None) -> FastAPI:
    """The ASGI app over an open, migrated ``storage``; the writer, alert and webhook
    threads live with the app. ``conditions`` replaces :data:`.alerts.CONDITIONS`."""
    tokens = _TokenCache(storage.device_for_token, _TOKEN_TTL)

    def active_cert_owner(fingerprint: str) -> str | None:
        found = storage.device_for_cert(fingerprint)
        return found[0] if found is not None and not found[1] else None

    certs = _TokenCache(active_cert_owner, _CERT_TTL)
    mode = config.device_auth

    def authenticate(request: Request) -> tuple[str, str | None, str]:
        """``(device, token hash or None, credential)`` by the fleet's rule, or a 401 saying what is wrong."""
        device = token_hash = None
        if mode != "cert":
            token = bearer_token(request.headers.get("authorization"))
            if token is None:
                raise Rejected(401, "Authorization: expected 'Bearer <device token>'")
            token_hash = hash_token(token)
            device = tokens.device(token_hash)
            if device is None:
                raise Rejected(401, "Authorization: unknown, wrong or revoked device token")
            if mode == "token":
                return device, token_hash, "token"
        fingerprint = peer_fingerprint(request.scope)
        if fingerprint is None:
            raise Rejected(401, "client certificate: this collector authenticates devices by TLS client "
                                "certificate and none was presented")
        owner = certs.device(fingerprint)
        if owner is None:
            known = storage.device_for_cert(fingerprint)
            if known is not None:
                raise Rejected(401, f"client certificate {fingerprint[:16]}…: device {known[0]!r} is revoked")
            raise Rejected(401, f"client certificate {fingerprint[:16]}…: not registered to any device "
                                "(mlpack collector add-device NAME --cert FILE)")
        if device is not None and owner != device:
            raise Rejected(401, f"client certificate: belongs to device {owner!r}, not to the token's device")
        return owner, token_hash, "client certificate" if mode == "cert" else "token"

    def overview(r: queries.TimeRange, page: int = 1, per_page: int | None = None) -> dict[str, Any]:
        return queries.fleet_overview(
            storage, r, config.clock(), config.silent_after,
            config.error_jump_factor, config.error_jump_min_rate, config.error_jump_min_requests, config.kpi_min_labels,
            page=page, per_page=per_page,
        )

    def delivery_counts() -> list[tuple[int, str, str, int]]:
        counts = storage.delivery_counts()
        return [(h.id, h.format, state, counts.get(h.id, {}).get(state, 0))
                for h in storage.webhooks(include_removed=True)
                for state in ("pending", "delivered", "failed", "cancelled")]

    metrics = Metrics(lambda: overview(queries.time_range(None, None, config.clock(), 24.0)), lambda: writer.pending,
                      delivery_counts)
    counters = metrics.ingest
    policy = RetryPolicy(config.webhook_timeout, config.webhook_backoff, config.webhook_max_backoff,
                         config.webhook_max_attempts)
    dispatcher = Dispatcher(storage, policy, config.clock)
    alerter = Alerter(storage, config, conditions, on_transitions=lambda _: dispatcher.wake(), overview=overview)

    def after_group(batches: int, seconds: float) -> None:
        counters.group(batches, seconds)
        alerter.wake()  # evaluated by the alert thread, never on the ingest path

    writer = Writer(storage, config.clock, config.max_pending_batches, config.max_group, after_group)
    from mlpack_edge.collector.rollout_api import RolloutService, register as register_rollout

    rollouts = RolloutService(storage, config)

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        writer.start()
        alerter.start()
        dispatcher.start()
        rollouts.start()
        try:
            yield
        finally:
            await run_in_threadpool(rollouts.stop)
            await run_in_threadpool(writer.stop)
            await run_in_threadpool(alerter.stop)
            await run_in_threadpool(dispatcher.stop)

    app = FastAPIOffline(
        title="mlpack collector",
        version=__version__,
        description="Fleet telemetry ingest for mlpack devices, fleet statistics, drift and alerts.\n\n" + _RANGE_DOC,
        lifespan=lifespan,
        static_url="/_docs-assets",
        # Swagger UI would otherwise ask an online validator about the document.
        swagger_ui_parameters={"validatorUrl": None},
    )
    app.openapi = lambda: _openapi_document(app, config.device_auth)  # type: ignore[method-assign]
    if config.viewer_token_hash:
        from mlpack_edge.collector.viewer import viewer_middleware

        app.middleware("http")(viewer_middleware(config.viewer_token_hash, lambda h: storage.admin_for_token(h) is not None))
    app.state.storage = storage
    app.state.config = config
    app.state.metrics = metrics
    app.state.counters = counters
    app.state.writer = writer
    app.state.alerter = alerter
    app.state.dispatcher = dispatcher

    @app.exception_handler(Rejected)
    async def _rejected(_: Request, exc: Rejected) -> JSONResponse:
        return _error(exc.status, exc.message, exc.retry_after)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ()) if p not in ("query", "path", "body"))
        expected = _PATTERN_TEXT.get((first.get("ctx") or {}).get("pattern", ""))
        if first.get("type") == "string_pattern_mismatch" and expected:
            shown = str(first.get("input", ""))
            shown = shown if len(shown) <= 80 else shown[:77] + "..."
            return _error(422, f"{where or 'request'}: expected {expected}, got {shown!r}")
        return _error(422, f"{where or 'request'}: {first.get('msg', 'invalid')}")

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        reply = _error(exc.status_code, str(exc.detail))
        reply.headers.update(exc.headers or {})  # e.g. 405's Allow (RFC 9110)
        if exc.status_code == 405:
            # Starlette's Allow names only the first route whose path matched; a path served
            # by several routes (GET and POST /api/v1/releases) allows all of their methods.
            reply.headers["Allow"] = ", ".join(_allowed_methods(request))
        return reply

    @app.exception_handler(ResponseValidationError)
    async def _bad_reply(request: Request, exc: ResponseValidationError) -> JSONResponse:
        log.error("%s %s: reply does not match its documented schema: %s", request.method, request.url.path, exc)
        return _error(500, "collector: internal error (the reply does not match its documented schema)")

    @app.exception_handler(StorageError)
    async def _storage(_: Request, exc: StorageError) -> JSONResponse:
        log.warning("storage: %s", exc)
        return _error(503, "collector: storage unavailable, retry later", retry_after=5)

    # ------------------------------------------------------------------ ingest

    @app.post(
        "/api/v1/ingest",
        summary="Upload a telemetry batch",
        description="Authenticated by `Authorization: Bearer <device token>`, the TLS client certificate, or "
        "both (the collector's `--device-auth`). Idempotent on (device, seq): the "
        "reply is sent only after the batch is committed.",
        openapi_extra=INGEST_OPENAPI,
        response_model=None,
        tags=["ingest"],
    )
    async def ingest(request: Request) -> Response:
        size = 0
        try:
            device, token_hash, credential = authenticate(request)
            body = await _read_limited(request, config.max_body_bytes)
            size = len(body)
            encoding = request.headers.get("content-encoding")

            def decode() -> Any:
                return parse_batch(decode_body(body, encoding, config.max_decompressed_bytes), device, token_hash,
                                   credential)

            batch = decode() if size <= _INLINE_DECODE else await run_in_threadpool(decode)
            outcome = await asyncio.wrap_future(writer.submit(batch))
            if isinstance(outcome, Rejected):
                raise outcome
            assert isinstance(outcome, Ack)
        except Rejected as exc:
            counters.request(exc.status, size)
            if exc.kind == REPLAY_CONFLICT:
                counters.conflict()
            if exc.status >= 500:
                log.warning("ingest: %s", exc.message)
            return _error(exc.status, exc.message, exc.retry_after)
        counters.request(200, size)
        counters.stored(len(outcome.stored), len(outcome.duplicates))
        reply: dict[str, Any] = outcome.to_dict()
        if batch.audit and any(str(a.get("event", "")).startswith("update_") for a in batch.audit):
            await run_in_threadpool(rollouts.observe, device, batch.audit)
        updates = rollouts.offers_for(device)
        if updates:  # piggy-backed: a device no rollout concerns gets the reply it always got
            reply["updates"] = updates
        return JSONResponse(reply)

    route_first(app, "POST", "/api/v1/ingest", ingest)
    register_rollout(app, storage, config, rollouts, _read_limited)

    # ------------------------------------------------------------------ JSON API

    @app.get("/api/v1/devices", tags=["fleet"], summary="Devices: last seen, model version, status",
             response_model=api.DevicesReply, responses=_INVALID)
    def api_devices(sp: Span) -> dict[str, Any]:
        table = queries.device_table(storage, sp.range, config.clock(), config.silent_after, totals=True)
        return {"range": sp.range.to_dict(), "devices": table}

    @app.get("/api/v1/devices/{name}", tags=["fleet"], summary="One device: series per model, drift, audit",
             response_model=api.DeviceDetail, responses=_not_found("device"))
    def api_device(name: _DeviceName, sp: Span) -> dict[str, Any]:
        data = queries.device_detail(storage, name, sp.range, config.clock(), config.silent_after, config.kpi_min_labels)
        if data is None:
            raise Rejected(404, f"device {name!r} is not registered")
        return data

    @app.get("/api/v1/models", tags=["fleet"], summary="Known models (name, version, content hash)",
             response_model=api.ModelsReply)
    def api_models() -> dict[str, Any]:
        return {
            "models": [
                {"hash": m.hash, "name": m.name, "version": m.version, "source": m.source, "thresholds": m.thresholds.to_dict()}
                for m in storage.models()
            ]
        }

    @app.get("/api/v1/models/{content_hash}", tags=["fleet"], summary="One model version: series, drift, devices",
             response_model=api.ModelDetail, responses=_not_found("model"))
    def api_model(content_hash: _ModelHash, sp: Span) -> dict[str, Any]:
        data = queries.model_detail(storage, content_hash, sp.range, config.clock(), config.silent_after, config.kpi_min_labels)
        if data is None:
            raise Rejected(404, f"model {content_hash!r} is not known")
        return data

    @app.get("/api/v1/fleet", tags=["fleet"], summary="Everything on the fleet page",
             response_model=api.FleetReply, responses=_INVALID)
    def api_fleet(sp: Span, pg: Page) -> dict[str, Any]:
        return overview(sp.range, pg.page, pg.per_page)

    @app.get("/api/v1/alerts", tags=["fleet"], summary="Drift, error-rate jumps, silent devices, dropped windows, production gate breaches",
             response_model=api.AlertsReply, responses=_INVALID)
    def api_alerts(sp: Span) -> dict[str, Any]:
        data = overview(sp.range)
        return {"range": data["range"], "alerts": data["alerts"]}

    def history(state: str, kind: str | None, device: str | None, limit: int) -> dict[str, Any]:
        rows = storage.alert_history(state, kind, device, limit=limit)
        models = {m.hash: m for m in storage.models()}
        sent: dict[int, list[dict[str, Any]]] = {}
        for d in storage.deliveries(alerts=[a.id for a in rows]):
            sent.setdefault(d["alert"], []).append(d)
        return {"generated_at": config.clock(),
                "alerts": [alert_dict(a, sorted(sent.get(a.id, []), key=lambda d: d["id"]), models) for a in rows]}

    @app.get("/api/v1/alerts/history", tags=["alerts"], summary="Alert episodes (opened/resolved) and their webhook deliveries",
             response_model=api.AlertHistoryReply, responses=_INVALID)
    def api_alert_history(
        state: Literal["all", "open", "resolved"] = Query("all", description="Only open or only resolved alerts."),
        kind: str | None = Query(None, max_length=64, description="Only alerts of this kind (drift, silent, …)."),
        device: str | None = Query(None, pattern=api.DEVICE_NAME_PATTERN, description="Only this device's alerts."),
        limit: int = Query(200, ge=1, le=1000, description="Newest first, at most this many."),
    ) -> dict[str, Any]:
        return history(state, kind, device, limit)

    @app.get("/api/v1/webhooks", tags=["alerts"], summary="Configured webhooks and their delivery counts",
             response_model=api.WebhooksReply)
    def api_webhooks() -> dict[str, Any]:
        return {"webhooks": webhook_rows()}

    def webhook_rows() -> list[dict[str, Any]]:
        counts = storage.delivery_counts()
        return [
            {"id": h.id, "url": public_url(h.url), "format": h.format, "signed": bool(h.secret),
             "created_at": h.created_at, "removed_at": h.removed_at,
             **{s: counts.get(h.id, {}).get(s, 0) for s in ("delivered", "pending", "failed")}}
            for h in storage.webhooks(include_removed=True)
        ]

    # ------------------------------------------------------------------ page, metrics, health

    @app.get("/alerts", response_class=HTMLResponse, include_in_schema=False)
    def alerts_html(state: Literal["all", "open", "resolved"] = "all") -> str:
        return page.alerts_page(history(state, None, None, 500), webhook_rows(), state)

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def fleet_html(
        sp: Span, pg: Page
    ) -> str:
        return page.fleet_page(overview(sp.range, pg.page, pg.per_page), sp.hours)

    @app.get("/devices/{name}", response_class=HTMLResponse, include_in_schema=False)
    def device_html(
        name: str, sp: Span
    ) -> HTMLResponse:
        data = queries.device_detail(storage, name, sp.range, config.clock(), config.silent_after, config.kpi_min_labels)
        if data is None:
            return HTMLResponse(page.not_found_page(f"No device named {name!r}."), status_code=404)
        return HTMLResponse(page.device_page(data, sp.hours))

    @app.get("/models/{content_hash}", response_class=HTMLResponse, include_in_schema=False)
    def model_html(
        content_hash: str, sp: Span
    ) -> HTMLResponse:
        data = queries.model_detail(storage, content_hash, sp.range, config.clock(), config.silent_after, config.kpi_min_labels)
        if data is None:
            return HTMLResponse(page.not_found_page(f"No model with hash {content_hash!r}."), status_code=404)
        return HTMLResponse(page.model_page(data, sp.hours))

    @app.get("/metrics", tags=["ops"], summary="Prometheus text format (prometheus_client)", response_class=Response,
             responses={200: {"content": {CONTENT_TYPE: {"schema": {"type": "string"}}},
                              "description": "Ingest counters of this process; fleet and per-device gauges."}})
    def metrics_text() -> Response:
        return Response(metrics.render(), media_type=CONTENT_TYPE)

    @app.get("/healthz", tags=["ops"], summary="Liveness and schema version", response_model=api.Health)
    def healthz() -> dict[str, Any]:
        return {"ok": True, "schema_version": storage.schema_version(), "pending": writer.pending}

    return app
