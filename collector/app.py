"""The collector's HTTP routes: ingest, JSON API, web page, Prometheus metrics.

Routes stay thin: they parse parameters, call :mod:`.ingest` or :mod:`.queries`, and
shape the reply. Expected failures are JSON ``{"error": "..."}`` with a 4xx (or 503
with ``Retry-After``); nothing a client sends can produce a 500.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, PlainTextResponse, Response
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from mlpack_edge import __version__
from mlpack_edge.collector import metrics as prom
from mlpack_edge.collector import page, queries
from mlpack_edge.collector._openapi import INGEST_OPENAPI
from mlpack_edge.collector.auth import bearer_token, hash_token, peer_fingerprint
from mlpack_edge.collector.config import CollectorConfig
from mlpack_edge.collector.ingest import Ack, Rejected, Writer, decode_body, parse_batch
from mlpack_edge.collector.storage import Storage
from mlpack_edge.errors import StorageError

__all__ = ["create_app"]

log = logging.getLogger("mlpack_edge.collector")
_INLINE_DECODE = 64 * 1024  # bigger bodies are decoded off the event loop
_TOKEN_TTL = 2.0  # seconds a token lookup is trusted before the write re-checks it anyway


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
    from_: str | None = Query(None, alias="from", description="Range start: epoch seconds or ISO 8601 (UTC if no zone)."),
    to: str | None = Query(None, description="Range end (default: now)."),
    hours: float | None = Query(None, gt=0, description="Range length when 'from' is not given (default 24)."),
) -> _Span:
    """The time range every read endpoint accepts, widened to whole hours."""
    config: CollectorConfig = request.app.state.config
    try:
        rng = queries.time_range(_parse_time(from_, "from"), _parse_time(to, "to"), config.clock(), hours or 24.0)
    except ValueError as exc:
        raise Rejected(422, str(exc)) from None
    return _Span(rng, hours or (None if from_ or to else 24.0))


Span = Annotated[_Span, Depends(_span)]


class _TokenCache:
    """Recently seen token hashes (or certificate fingerprints) -> active device; only a
    pre-filter (the write transaction decides)."""

    def __init__(self, lookup: Callable[[str], str | None]) -> None:
        self._lookup = lookup
        self._hits: dict[str, tuple[str, float]] = {}

    def device(self, token_hash: str) -> str | None:
        now = time.monotonic()
        hit = self._hits.get(token_hash)
        if hit is not None and now - hit[1] < _TOKEN_TTL:
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


def create_app(storage: Storage, config: CollectorConfig) -> FastAPI:
    """The ASGI app over an open, migrated ``storage``; the writer thread lives with the app."""
    counters = prom.IngestCounters()
    writer = Writer(storage, config.clock, config.max_pending_batches, config.max_group, counters.group)
    tokens = _TokenCache(storage.device_for_token)

    def active_cert_owner(fingerprint: str) -> str | None:
        found = storage.device_for_cert(fingerprint)
        return found[0] if found is not None and not found[1] else None

    certs = _TokenCache(active_cert_owner)
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

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        writer.start()
        try:
            yield
        finally:
            await run_in_threadpool(writer.stop)

    app = FastAPI(
        title="mlpack collector",
        version=__version__,
        description="Fleet telemetry ingest for mlpack devices, fleet statistics, drift and alerts.",
        lifespan=lifespan,
    )
    app.state.storage = storage
    app.state.config = config
    app.state.counters = counters
    app.state.writer = writer

    @app.exception_handler(Rejected)
    async def _rejected(_: Request, exc: Rejected) -> JSONResponse:
        return _error(exc.status, exc.message, exc.retry_after)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ()) if p not in ("query", "path", "body"))
        return _error(422, f"{where or 'request'}: {first.get('msg', 'invalid')}")

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        return _error(exc.status_code, str(exc.detail))

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
            if exc.status >= 500:
                log.warning("ingest: %s", exc.message)
            return _error(exc.status, exc.message, exc.retry_after)
        counters.request(200, size)
        counters.stored(len(outcome.stored), len(outcome.duplicates))
        return JSONResponse(outcome.to_dict())

    # ------------------------------------------------------------------ JSON API

    @app.get("/api/v1/devices", tags=["fleet"], summary="Devices: last seen, model version, status")
    def api_devices(
        sp: Span
    ) -> dict[str, Any]:
        return {"range": sp.range.to_dict(), "devices": queries.device_table(storage, sp.range, config.clock(), config.silent_after)}

    @app.get("/api/v1/devices/{name}", tags=["fleet"], summary="One device: series per model, drift, audit")
    def api_device(
        name: str, sp: Span
    ) -> dict[str, Any]:
        data = queries.device_detail(storage, name, sp.range, config.clock(), config.silent_after)
        if data is None:
            raise Rejected(404, f"device {name!r} is not registered")
        return data

    @app.get("/api/v1/models", tags=["fleet"], summary="Known models (name, version, content hash)")
    def api_models() -> dict[str, Any]:
        return {
            "models": [
                {"hash": m.hash, "name": m.name, "version": m.version, "source": m.source, "thresholds": m.thresholds.to_dict()}
                for m in storage.models()
            ]
        }

    @app.get("/api/v1/models/{content_hash}", tags=["fleet"], summary="One model version: series, drift, devices")
    def api_model(
        content_hash: str, sp: Span
    ) -> dict[str, Any]:
        data = queries.model_detail(storage, content_hash, sp.range, config.clock(), config.silent_after)
        if data is None:
            raise Rejected(404, f"model {content_hash[:64]!r} is not known")
        return data

    def overview(r: queries.TimeRange) -> dict[str, Any]:
        return queries.fleet_overview(
            storage, r, config.clock(), config.silent_after,
            config.error_jump_factor, config.error_jump_min_rate, config.error_jump_min_requests,
        )

    @app.get("/api/v1/fleet", tags=["fleet"], summary="Everything on the fleet page")
    def api_fleet(
        sp: Span
    ) -> dict[str, Any]:
        return overview(sp.range)

    @app.get("/api/v1/alerts", tags=["fleet"], summary="Drift, error-rate jumps, silent devices, dropped windows")
    def api_alerts(
        sp: Span
    ) -> dict[str, Any]:
        data = overview(sp.range)
        return {"range": data["range"], "alerts": data["alerts"]}

    # ------------------------------------------------------------------ page, metrics, health

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def fleet_html(
        sp: Span
    ) -> str:
        return page.fleet_page(overview(sp.range), sp.hours)

    @app.get("/devices/{name}", response_class=HTMLResponse, include_in_schema=False)
    def device_html(
        name: str, sp: Span
    ) -> HTMLResponse:
        data = queries.device_detail(storage, name, sp.range, config.clock(), config.silent_after)
        if data is None:
            return HTMLResponse(page.not_found_page(f"No device named {name!r}."), status_code=404)
        return HTMLResponse(page.device_page(data, sp.hours))

    @app.get("/models/{content_hash}", response_class=HTMLResponse, include_in_schema=False)
    def model_html(
        content_hash: str, sp: Span
    ) -> HTMLResponse:
        data = queries.model_detail(storage, content_hash, sp.range, config.clock(), config.silent_after)
        if data is None:
            return HTMLResponse(page.not_found_page(f"No model with hash {content_hash!r}."), status_code=404)
        return HTMLResponse(page.model_page(data, sp.hours))

    @app.get("/metrics", response_class=PlainTextResponse, tags=["ops"], summary="Prometheus text format")
    def metrics() -> PlainTextResponse:
        fleet = overview(queries.time_range(None, None, config.clock(), 24.0))
        return PlainTextResponse(prom.render(counters, writer.pending, fleet), media_type="text/plain; version=0.0.4")

    @app.get("/healthz", tags=["ops"], summary="Liveness and schema version")
    def healthz() -> dict[str, Any]:
        return {"ok": True, "schema_version": storage.schema_version(), "pending": writer.pending}

    return app
