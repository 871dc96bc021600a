"""HTTP routes of fleet rollout: publish (admin), download (devices), rollouts (admin writes, open reads).

Admin routes take ``Authorization: Bearer <admin token>`` (``mlpack collector add-admin``);
a device token there is refused with 403 (it is a device's credential, never an
administrator's), any other token with 401. Downloads take a device token (or an admin
token) and honour HTTP ``Range``, so a device resumes a download cut at any byte.

What each device should do is computed by :class:`RolloutService` every
``rollout_tick`` seconds (which also advances the rollouts' state machines) and read by
the ingest reply with one dict lookup: a device no rollout concerns pays nothing.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Annotated, Any

from fastapi import FastAPI, Path, Query, Request
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, Response
from starlette.concurrency import run_in_threadpool

from mlpack_edge.collector import _rollout_openapi as api
from mlpack_edge.collector import rollout as ro
from mlpack_edge.collector._openapi import MODEL_HASH_PATTERN
from mlpack_edge.collector.auth import bearer_token, hash_token
from mlpack_edge.collector.config import CollectorConfig
from mlpack_edge.collector.ingest import Rejected
from mlpack_edge.collector.releases import ReleaseStore
from mlpack_edge.errors import CollectorError, MlpackError

__all__ = ["RolloutService", "register"]

log = logging.getLogger("mlpack_edge.collector")
_ADMIN = [{api.ADMIN_BEARER: []}]


class RolloutService:
    """The offers cache and the periodic evaluation of rollouts (one thread per process)."""

    def __init__(self, storage: Any, config: CollectorConfig) -> None:
        self.storage = storage
        self.config = config
        self._offers: dict[str, list[dict[str, Any]]] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self.releases = ReleaseStore(storage, config.releases_folder(), allow_unsigned=config.allow_unsigned_releases)

    def offers_for(self, device: str) -> list[dict[str, Any]]:
        return self._offers.get(device, [])

    def tick(self) -> None:
        """Advance every active rollout and recompute the offers."""
        with self._lock:
            self._offers = ro.offers(self.storage, self.config.clock(), self.releases.runtime_info)

    def observe(self, device: str, audit: list[dict[str, Any]]) -> None:
        """A device's ``update_*`` audit events move its rollout state (then re-evaluate)."""
        if ro.observe_audit(self.storage, device, audit, self.config.clock()):
            self.tick()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.tick()
            except MlpackError as exc:
                log.warning("rollout: %s", exc)
            except Exception:  # never let the tick thread die: the next tick retries
                log.exception("rollout: evaluation failed")
            self._stop.wait(self.config.rollout_tick)

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="mlpack-rollout", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)


def _admin(storage: Any, request: Request) -> str:
    token = bearer_token(request.headers.get("authorization"))
    if token is None:
        raise Rejected(401, "Authorization: expected 'Bearer <admin token>' (mlpack collector add-admin NAME)")
    token_hash = hash_token(token)
    name = storage.admin_for_token(token_hash)
    if name is not None:
        return str(name)
    if storage.device_for_token(token_hash) is not None:
        raise Rejected(403, "Authorization: a device token cannot publish or manage rollouts; use an admin token")
    raise Rejected(401, "Authorization: unknown, wrong or revoked admin token")


def _device_or_admin(storage: Any, request: Request) -> str:
    token = bearer_token(request.headers.get("authorization"))
    if token is None:
        raise Rejected(401, "Authorization: expected 'Bearer <device token>'")
    token_hash = hash_token(token)
    name = storage.device_for_token(token_hash) or storage.admin_for_token(token_hash)
    if name is None:
        raise Rejected(401, "Authorization: unknown, wrong or revoked token")
    return str(name)


def _one(storage: Any, model: str) -> Any:
    found = storage.rollouts(model)
    if not found:
        raise Rejected(404, f"model {model!r} has no rollout")
    return found[0]


def register(app: FastAPI, storage: Any, config: CollectorConfig, service: RolloutService,
             read_body: Callable[[Request, int], Any]) -> None:
    """Add the release and rollout routes to ``app``."""
    store = service.releases

    def rejected(exc: MlpackError) -> Rejected:
        return Rejected(422, str(exc))

    @app.post("/api/v1/releases", tags=["rollout"], summary="Publish a bundle (admin token)",
              description="Body: the bundle as a .tar.gz (`mlpack publish` packs it). Checked like a device would "
              "(signature over the manifest, every file's digest, nothing unlisted); unsigned bundles are refused "
              "unless the collector runs with --allow-unsigned-releases. Idempotent per manifest content hash: "
              "201 when stored, 200 when that build was published already.",
              response_model=api.PublishReply, responses=api.errors(401, 403, 413, 422),
              openapi_extra={"security": _ADMIN, "requestBody": {"required": True, "content": {"application/gzip": {
                  "schema": {"type": "string", "format": "binary"}}}}})
    async def publish(request: Request,
                      runtime: Annotated[str | None, Query(pattern=MODEL_HASH_PATTERN, description=(
                          "sha256 of the frozen runtime the build's executable carries (uploaded before with PUT "
                          "/api/v1/runtimes/{sha256}): devices on another runtime download it too"))] = None,
                      ) -> Response:
        who = _admin(storage, request)
        body = await read_body(request, config.max_release_bytes)
        try:
            result = await run_in_threadpool(store.publish, body, who, config.clock(), runtime)
        except MlpackError as exc:
            raise rejected(exc) from None
        return JSONResponse({"release": result.release.to_dict(), "added": result.added},
                            status_code=201 if result.added else 200)

    @app.get("/api/v1/releases", tags=["rollout"], summary="Published releases", response_model=api.ReleasesReply)
    def list_releases(model: str | None = None) -> dict[str, Any]:
        return {"releases": [r.to_dict() for r in storage.releases(model)]}

    @app.get("/api/v1/releases/{content_hash}/bundle", tags=["rollout"],
             summary="Download a release's bundle (device or admin token; HTTP Range supported)",
             response_class=Response,
             responses={200: {"content": {"application/gzip": {"schema": {"type": "string", "format": "binary"}}},
                              "description": "The .tar.gz."},
                        206: {"description": "The requested byte range."}, **api.errors(401, 404, 422)},
             openapi_extra={"security": [{"deviceToken": []}, {api.ADMIN_BEARER: []}]})
    def download(
        content_hash: Annotated[str, Path(pattern=MODEL_HASH_PATTERN, description="sha256 of the bundle's manifest.json.")],
        request: Request,
    ) -> Response:
        _device_or_admin(storage, request)
        release = storage.release(content_hash)
        path = store.path(content_hash)
        if release is None or not path.is_file():
            raise Rejected(404, f"release {content_hash[:12]} is not published here")
        return FileResponse(path, media_type="application/gzip", headers={"X-Content-SHA256": release.sha256})

    @app.put("/api/v1/runtimes/{runtime_sha256}", tags=["rollout"], summary="Store a frozen runtime (admin token)",
             description="Body: the runtime part of a device executable (the bytes in front of its appended bundle, "
             "`runtime_size` long). Checked against the sha256 in the path; kept once per sha256 however many "
             "releases use it: 201 when stored, 200 when it was there already.",
             response_model=api.RuntimeReply, responses=api.errors(401, 403, 413, 422),
             openapi_extra={"security": _ADMIN, "requestBody": {"required": True, "content": {
                 "application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}}})
    async def put_runtime(
        runtime_sha256: Annotated[str, Path(pattern=MODEL_HASH_PATTERN, description="sha256 of the runtime bytes.")],
        request: Request,
        target: Annotated[str | None, Query(max_length=64, description="e.g. linux-x86_64 (from the trailer)")] = None,
        glibc_floor: Annotated[str | None, Query(max_length=16, description="from the trailer")] = None,
    ) -> Response:
        _admin(storage, request)
        body = await read_body(request, config.max_release_bytes)
        facts = {k: v for k, v in (("target", target), ("glibc_floor", glibc_floor)) if v}
        try:
            added = await run_in_threadpool(store.add_runtime, runtime_sha256, body, facts)
        except MlpackError as exc:
            raise rejected(exc) from None
        return JSONResponse({"runtime": store.runtime_info(runtime_sha256), "added": added},
                            status_code=201 if added else 200)

    @app.get("/api/v1/runtimes/{runtime_sha256}/info", tags=["rollout"], summary="Is this runtime stored here?",
             response_model=api.RuntimeReply, responses=api.errors(401, 404, 422),
             openapi_extra={"security": [{"deviceToken": []}, {api.ADMIN_BEARER: []}]})
    def runtime_info(
        runtime_sha256: Annotated[str, Path(pattern=MODEL_HASH_PATTERN, description="sha256 of the runtime bytes.")],
        request: Request,
    ) -> dict[str, Any]:
        _device_or_admin(storage, request)
        info = store.runtime_info(runtime_sha256)
        if info is None:
            raise Rejected(404, f"runtime {runtime_sha256[:12]} is not stored here")
        return {"runtime": info, "added": False}

    @app.get("/api/v1/runtimes/{runtime_sha256}", tags=["rollout"],
             summary="Download a frozen runtime (device or admin token; HTTP Range supported)",
             response_class=Response,
             responses={200: {"content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}},
                              "description": "The runtime bytes."},
                        206: {"description": "The requested byte range."}, **api.errors(401, 404, 422)},
             openapi_extra={"security": [{"deviceToken": []}, {api.ADMIN_BEARER: []}]})
    def download_runtime(
        runtime_sha256: Annotated[str, Path(pattern=MODEL_HASH_PATTERN, description="sha256 of the runtime bytes.")],
        request: Request,
    ) -> Response:
        _device_or_admin(storage, request)
        if store.runtime_info(runtime_sha256) is None:
            raise Rejected(404, f"runtime {runtime_sha256[:12]} is not stored here")
        return FileResponse(store.runtime_path(runtime_sha256), media_type="application/octet-stream",
                            headers={"X-Content-SHA256": runtime_sha256})

    @app.get("/api/v1/updates", tags=["rollout"], summary="What this device should install or roll back (device token)",
             description="The light poll of `<model> update`; `serve` gets the same list piggy-backed on every "
             "ingest reply (`updates`, present only when non-empty).",
             response_model=api.UpdatesReply, responses=api.errors(401),
             openapi_extra={"security": [{"deviceToken": []}]})
    def updates(request: Request) -> dict[str, Any]:
        token = bearer_token(request.headers.get("authorization"))
        device = storage.device_for_token(hash_token(token)) if token else None
        if device is None:
            raise Rejected(401, "Authorization: expected 'Bearer <device token>' of an active device")
        return {"updates": service.offers_for(device)}

    @app.post("/api/v1/rollouts", tags=["rollout"], summary="Start a rollout (admin token)", status_code=201,
              response_model=api.RolloutStatus, responses=api.errors(401, 403, 409, 422),
              openapi_extra={"security": _ADMIN, "requestBody": {"required": True, "content": {"application/json": {
                  "schema": api.RolloutRequest.model_json_schema()}}}})
    async def start(request: Request) -> JSONResponse:
        _admin(storage, request)
        try:
            doc = await request.json()
        except ValueError:
            raise Rejected(422, "body: expected a JSON object") from None
        if not isinstance(doc, dict) or not isinstance(doc.get("model"), str) or not isinstance(doc.get("version"), str):
            raise Rejected(422, "body: expected {\"model\": NAME, \"version\": VERSION, ...plan}")

        def go() -> dict[str, Any]:
            plan = ro.RolloutPlan.from_dict(doc)
            r = ro.start_rollout(storage, doc["model"], doc["version"], plan, config.clock())
            service.tick()
            return ro.status(storage, storage.rollouts(r.model)[0])

        try:
            data = await run_in_threadpool(go)
        except CollectorError as exc:
            status = 409 if "already has" in str(exc) else 422
            raise Rejected(status, str(exc)) from None
        return JSONResponse(data, status_code=201)

    @app.post("/api/v1/rollouts/{model}/{action}", tags=["rollout"],
              summary="Pause, resume or abort a model's rollout (admin token)",
              response_model=api.RolloutStatus, responses=api.errors(401, 403, 404, 422),
              openapi_extra={"security": _ADMIN})
    def change(model: str, action: str, request: Request) -> dict[str, Any]:
        _admin(storage, request)
        if action not in ("pause", "resume", "abort"):
            raise Rejected(404, f"rollout action {action!r}: expected pause, resume or abort")
        try:
            r = ro.set_state(storage, model, action, config.clock())
        except CollectorError as exc:
            raise Rejected(404, str(exc)) from None
        service.tick()
        return ro.status(storage, storage.rollouts(r.model)[0])

    @app.get("/api/v1/rollouts", tags=["rollout"], summary="Rollouts, newest first", response_model=api.RolloutsReply)
    def list_rollouts(model: str | None = None) -> dict[str, Any]:
        return {"rollouts": [ro.status(storage, r) for r in storage.rollouts(model)]}

    @app.get("/rollouts", response_class=HTMLResponse, include_in_schema=False)
    def rollouts_html() -> str:
        from mlpack_edge.collector.rollout_page import rollouts_page

        return rollouts_page([ro.status(storage, r) for r in storage.rollouts()])

    @app.get("/api/v1/rollouts/{model}", tags=["rollout"], summary="A model's newest rollout, per stage and device",
             response_model=api.RolloutStatus, responses=api.errors(404, 422))
    def one_rollout(model: str) -> dict[str, Any]:
        return ro.status(storage, _one(storage, model))
