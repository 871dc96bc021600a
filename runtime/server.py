"""``serve``: the model over local HTTP, with the standard library only.

Endpoints (JSON unless noted; ``GET /openapi.json`` describes them all, with this
model's features):

* ``POST /predict`` — a JSON object is one row: ``200 {"label", "probabilities"}`` or
  ``{"value"}``; ``422 {"error", "row": null, "field"}`` when it fails validation.
  A JSON array is a batch: ``200 {"predictions": [...], "failed": k}`` where each item is
  a prediction or ``{"error", "row", "field"}`` (rows numbered from 0), in input order.
  With the monitoring agent every prediction also carries its ``"id"`` (generated, or the
  row's ``id_field`` when the server was given one), the key ``POST /feedback`` joins on.
  A body shaped for MLflow or KServe v2 gets a 400 naming the endpoint that takes it.
* ``POST /feedback`` — ground truth for earlier predictions (only with the monitoring
  agent): ``{"id", "label"}`` (a number for regression) answers ``200 {"id", "outcome"}``;
  an array of them answers ``200 {"outcomes": [...], "counts": {outcome: n}}``. Outcomes:
  ``matched``, ``duplicate`` (first label wins), ``late``, ``unmatched``, ``unknown_label``
  (see :mod:`mlpack_edge.monitor_agent.feedback`). A malformed item is a 400 naming it,
  and nothing of that request is counted.
* ``POST /invocations`` — MLflow's scoring protocol (:mod:`._mlflow`):
  ``{"predictions": [...]}``; errors ``{"error_code", "message"}``. ``GET /ping`` as
  MLflow's server answers it.
* ``GET /v2``, ``/v2/health/live``, ``/v2/health/ready``, ``/v2/models/<name>[/versions/<v>]``
  (metadata), ``.../ready``, ``POST .../infer`` — the Open Inference Protocol
  (KServe v2, :mod:`._v2`); errors ``{"error"}``.
* ``GET /health`` — ``{"status": "ok", "name", "version", "content_hash"}`` plus the
  ``health`` fields the caller adds (``"fallback"`` when an installed device serves its
  previous version because the current one failed its check at start)
* ``GET /info`` — the bundle's ``manifest.json``, byte for byte (its sha256 is the
  content hash)
* ``GET /metrics`` — Prometheus text (requests, rows, latency; drift when the agent runs)

Every prediction endpoint goes through the same schema validation and the same
monitoring recorder; MLflow and v2 requests are all-or-nothing (one invalid row fails
the request, naming the row and the field), since their answers have no slot for a
per-row error.

Limits, because a device has little to spare: the body must declare its length and stay
under ``max_body_bytes`` (411/413 otherwise, without reading it), a batch holds at most
``max_batch_rows`` rows, at most ``max_connections`` connections are served at once (503
beyond), and a client that stalls for ``timeout_s`` is dropped. It binds 127.0.0.1
unless told otherwise. It is HTTP/1.1 with keep-alive on one thread (:mod:`._http`, the
standard library's ``selectors``): every request is answered inline, which under load beat
a thread per connection (GIL turns) and a framework (uvicorn + starlette), and keeps the
device free of extra dependencies and the frozen executable small.
"""

from __future__ import annotations

import errno
import json
import logging
import random
import signal
import socket
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import unquote

import numpy as np

from mlpack_edge import __version__
from mlpack_edge.errors import InferenceError, InputError, MlpackError, ServeError
from mlpack_edge.runtime import _mlflow, _openapi, _v2
from mlpack_edge.runtime._http import HttpServer, Request, Response
from mlpack_edge.runtime._format import ENCODE, error_record, json_floats, predictions_json
from mlpack_edge.runtime.metrics import CONTENT_TYPE, ServeMetrics
from mlpack_edge.runtime.model import BatchResult, Model
from mlpack_edge.runtime.schema import Batch

__all__ = ["ServeConfig", "PredictServer", "limit_malloc_arenas"]

log = logging.getLogger("mlpack_edge.runtime.server")
_JSON = "application/json"


@dataclass(frozen=True)
class ServeConfig:
    host: str = "127.0.0.1"
    port: int = 8000
    max_body_bytes: int = 1 << 20
    max_batch_rows: int = 10_000
    max_connections: int = 64
    timeout_s: float = 30.0
    id_field: str | None = None  # a row field to use as the prediction id (else one is generated)


class FeedbackSink(Protocol):
    """Where prediction ids and labels go (the monitoring agent)."""

    def new_ids(self, n: int) -> list[str]: ...

    def remember(self, ids: list[str], predictions: Any) -> None: ...

    def add_labels(self, items: list[tuple[str, Any]]) -> list[str]: ...

    @property
    def capture_rate(self) -> float: ...

    def capture(self, ids: list[str], rows: list[dict[str, Any]], outputs: list[Any]) -> None: ...


MAX_ID_CHARS = 200


def limit_malloc_arenas(arenas: int = 2) -> bool:
    """Cap glibc's malloc arenas for this process (``mallopt(M_ARENA_MAX)``); ``False`` where unsupported.

    glibc gives threads new arenas (up to 8 per core) that each keep freed memory; with
    ``serve``'s requests on one thread only the agent's and onnxruntime's threads are
    left to take one, and 2 arenas cost no throughput (Python holds the GIL for most of a
    request). When ``serve`` answered each connection on its own thread, the linear
    model's server peaked 1.5-2 MB higher under 16 clients without this cap. The same as
    ``MALLOC_ARENA_MAX=2`` in the environment, but whoever starts the process.
    """
    import ctypes

    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):  # not glibc (or no C library to ask)
        return False
    m_arena_max = -8  # <malloc.h>
    return bool(mallopt(m_arena_max, arenas))


class PredictServer:
    """A bound (not yet serving) HTTP server for ``model``; ``serve_forever`` runs it."""

    def __init__(
        self,
        model: Model,
        config: ServeConfig = ServeConfig(),
        extra_metrics: Callable[[], str] | None = None,
        health: Mapping[str, Any] | None = None,
        feedback: FeedbackSink | None = None,
    ) -> None:
        self.model = model
        self.feedback = feedback
        self.config = config
        #: A rollout's candidate running on the same requests (runtime.shadow.LiveShadow), or None.
        self.shadow: Any = None
        self.metrics = ServeMetrics(model.name, model.version, model.content_hash)
        self._extra_metrics = extra_metrics
        self._serving = threading.Event()
        self._info = model.manifest.raw
        self._health = json.dumps(
            {
                "status": "ok",
                "name": model.name,
                "version": model.version,
                "content_hash": model.content_hash,
                **(health or {}),
            }
        ).encode()
        self._v2_server = _dumps(_v2.server_metadata(__version__))
        self._v2_model = _dumps(
            _v2.model_metadata(model.name, model.version, model.task, model.classes, model.schema, feedback is not None)
        )
        self._openapi = _dumps(_openapi.document(model, __version__, feedback is not None))
        try:
            routes = _Routes(self)
            self._httpd = HttpServer(
                (config.host, config.port), routes.handle, routes.body_allowed,
                max_connections=config.max_connections, timeout_s=config.timeout_s, busy=lambda: _BUSY,
            )
        except socket.gaierror as exc:
            raise ServeError(f"cannot listen on {config.host}:{config.port}: unknown host ({exc.strerror})") from None
        except OSError as exc:
            reason = "address already in use" if exc.errno == errno.EADDRINUSE else (exc.strerror or str(exc))
            raise ServeError(f"cannot listen on {config.host}:{config.port}: {reason}") from None

    @property
    def port(self) -> int:
        return int(self._httpd.server_address[1])

    @property
    def url(self) -> str:
        host = self.config.host
        return f"http://{'[' + host + ']' if ':' in host else host}:{self.port}"

    def serve_forever(self) -> None:
        self._serving.set()
        self._httpd.serve_forever(poll_interval=0.2)

    def serve_until_signal(self, signals: tuple[int, ...] = (signal.SIGTERM, signal.SIGINT)) -> int:
        """Serve until one of ``signals`` arrives; returns its number (main thread only).

        The handler only sets an event; a helper thread then stops the loop with
        ``shutdown``. Raising from the handler instead (``KeyboardInterrupt``) lands the
        exception wherever the main thread happens to be — inside ``process_request``
        it was swallowed (a semaphore released twice, then logged as a request error)
        and the server served on after SIGTERM (5 of 40 stops under load).
        """
        arrived: list[int] = []
        stop = threading.Event()

        def handler(signum: int, frame: Any) -> None:
            arrived.append(signum)
            stop.set()  # no lock the interrupted main thread could hold: only the helper waits on it

        def stopper() -> None:
            stop.wait()
            if arrived:
                self._httpd.shutdown()  # returns once serve_forever has (also when it had not started yet)

        previous = {s: signal.signal(s, handler) for s in signals}
        try:
            threading.Thread(target=stopper, name="mlpack-serve-stop", daemon=True).start()
            self.serve_forever()
        finally:
            for s, h in previous.items():
                signal.signal(s, h)
            stop.set()  # serving ended another way (shutdown() from elsewhere): let the helper go
        return arrived[0] if arrived else 0

    def shutdown(self) -> None:
        """Stop ``serve_forever`` (from another thread) if it runs, and close the socket."""
        if self._serving.is_set():
            self._httpd.shutdown()
        self._httpd.server_close()

    # ------------------------------------------------------------------ endpoints

    def health(self) -> Reply:
        return 200, self._health, _JSON

    def info(self) -> Reply:
        return 200, self._info, _JSON

    def openapi(self) -> Reply:
        return 200, self._openapi, _JSON

    def ping(self) -> Reply:
        return 200, b'{"status": "ok"}', _JSON  # MLflow's client waits for a 200 here

    def v2_server(self) -> Reply:
        return 200, self._v2_server, _JSON

    def v2_live(self) -> Reply:
        return 200, b'{"live": true}', _JSON

    def v2_ready(self) -> Reply:
        return 200, b'{"ready": true}', _JSON  # the model is loaded and self-tested before the socket opens

    def render_metrics(self) -> Reply:
        text = self.metrics.render()
        if self._extra_metrics is not None:
            try:
                text += self._extra_metrics()
            except Exception:  # telemetry trouble must not take /metrics down
                log.exception("monitoring metrics failed")
        return 200, text.encode(), CONTENT_TYPE

    def predict(self, body: bytes, headers: Mapping[str, str] | None = None) -> Reply:
        try:
            payload = json.loads(body)
        except (UnicodeDecodeError, ValueError) as exc:
            if headers is not None and (headers.get("Content-Type") or "").lower().startswith("text/csv"):
                return _error(400, "/predict takes JSON; POST CSV to /invocations (MLflow's protocol, Content-Type: text/csv)")
            return _error(400, f"request body is not valid JSON ({exc})")
        except RecursionError:
            return _error(400, "request body is not valid JSON (nested too deeply)")
        try:
            fb, id_field = self.feedback, self.config.id_field
            if isinstance(payload, dict):
                given = None
                if id_field is not None and id_field in payload:
                    given = _row_id(payload, id_field, 0, "body") if fb is not None else None
                    payload = {k: v for k, v in payload.items() if k != id_field}
                try:
                    prediction = self.model.predict_one(payload)
                except InputError as exc:
                    elsewhere = self._meant_elsewhere(payload)
                    if elsewhere is not None:
                        return _error(400, elsewhere)
                    self.metrics.rows(0, 1)
                    return 422, _dumps(error_record(exc)), _JSON
                self.metrics.rows(1, 0)
                out = prediction.to_dict()
                if fb is not None:
                    ids = [given] if given is not None else fb.new_ids(1)
                    fb.remember(ids, (self.model.code(prediction),))
                    out["id"] = ids[0]
                    rate = fb.capture_rate
                    if rate and random.random() < rate:  # opt-in capture of real rows (see FeedbackSink)
                        fb.capture(ids, [payload], [prediction.value if prediction.value is not None else prediction.label])
                if self.shadow is not None:  # a rollout's candidate sees the row after the answer is made
                    self.shadow.submit(payload)
                return 200, _dumps(out), _JSON
            if isinstance(payload, list):
                if len(payload) > self.config.max_batch_rows:
                    return _error(413, f"batch of {len(payload)} rows exceeds the limit of {self.config.max_batch_rows}")
                given_ids = None
                if id_field is not None:
                    given_ids = [_row_id(r, id_field, i) if isinstance(r, dict) and fb is not None else None
                                 for i, r in enumerate(payload)]
                    payload = [{k: v for k, v in r.items() if k != id_field} if isinstance(r, dict) else r for r in payload]
                result = self.model.predict_rows(payload)
                self.metrics.rows(result.predicted, len(result.errors))
                ids: list[str] | None = None
                if fb is not None and result.predicted:
                    ok = result.ok.tolist()
                    fresh = fb.new_ids(len(ok))
                    ids = [given_ids[k] or fresh[j] for j, k in enumerate(ok)] if given_ids is not None else fresh
                    fb.remember(ids, self.model.codes(result))
                    rate = fb.capture_rate
                    if rate:
                        picked = [j for j in range(len(ok)) if random.random() < rate]
                        if picked:
                            outputs = result.labels.tolist() if result.values is None else json_floats(result.values)
                            fb.capture([ids[j] for j in picked], [payload[ok[j]] for j in picked],
                                       [outputs[j] for j in picked])
                if self.shadow is not None:
                    self.shadow.submit(payload)
                body = predictions_json(result, ids if fb is not None else None)
                if body is None:  # a non-finite output (null in JSON): the general encoder
                    records = result.records()
                    if ids is not None:
                        for j, k in enumerate(result.ok.tolist()):
                            records[k]["id"] = ids[j]
                    body = _dumps({"predictions": records, "failed": len(result.errors)})
                return 200, body, _JSON
        except InferenceError as exc:
            return _error(500, str(exc))
        except _BadId as exc:
            return _error(400, str(exc))
        return _error(400, "expected a JSON object (one row) or an array of rows")

    def _meant_elsewhere(self, payload: dict[str, Any]) -> str | None:
        """For a /predict body shaped for another protocol: which endpoint takes it."""
        key = _mlflow.looks_like_mlflow(payload, self.model.schema)
        if "inputs" not in self.model.schema.names and _v2.looks_like_v2(payload, self.model.schema):
            return f"{self._v2_hint()} (/predict takes one row {{feature: value}} or a list of rows)"
        if key is not None:
            return (
                f"this is an MLflow scoring request ({key!r}): POST it to /invocations"
                " (/predict takes one row {feature: value} or a list of rows)"
            )
        return None

    def _v2_hint(self) -> str:
        return f"this is a KServe v2 inference request: POST it to /v2/models/{self.model.name}/infer"

    def invocations(self, body: bytes, headers: Mapping[str, str]) -> Reply:
        """MLflow's scoring protocol: ``{"predictions": [...]}``, errors as ``{"error_code", "message"}``."""
        ctype = headers.get("Content-Type") or ""
        mime, _, rest = ctype.partition(";")
        mime = mime.strip().lower()
        charset = rest.strip().lower().partition("charset=")[2].strip('" ') if "charset=" in rest.lower() else "utf-8"
        if mime not in ("application/json", "text/csv"):
            return _mlflow_error(415, f"Content-Type must be application/json or text/csv, got {ctype!r}")
        if charset not in ("utf-8", "utf8"):
            return _mlflow_error(415, f"only UTF-8 text is accepted, got charset {charset!r}")
        probabilities = False
        try:
            if mime == "text/csv":
                try:
                    text = body.decode("utf-8-sig")
                except UnicodeDecodeError as exc:
                    return _mlflow_error(400, f"CSV body is not UTF-8 text (byte {exc.start}: {exc.reason})")
                batch = _mlflow.csv_batch(text, self.model.schema)
            else:
                try:
                    payload = json.loads(body)
                except (UnicodeDecodeError, ValueError) as exc:
                    return _mlflow_error(400, f"request body is not valid JSON ({exc})")
                except RecursionError:
                    return _mlflow_error(400, "request body is not valid JSON (nested too deeply)")
                if _v2.looks_like_v2(payload, self.model.schema):
                    return _mlflow_error(400, self._v2_hint())
                batch = _mlflow.json_batch(payload, self.model.schema)
                probabilities = _mlflow.wants_probabilities(payload)
            if batch.size > self.config.max_batch_rows:
                return _mlflow_error(413, f"batch of {batch.size} rows exceeds the limit of {self.config.max_batch_rows}")
            result = self._predict_all(batch)
            ids = self._remember(batch, result)
        except InputError as exc:
            return _mlflow_error(400, str(exc))
        except InferenceError as exc:
            return _mlflow_error(500, str(exc), "INTERNAL_ERROR")
        if result.values is not None:
            predictions: list[Any] = json_floats(result.values)
        elif probabilities:
            predictions = result.records()
        else:
            assert result.labels is not None
            predictions = result.labels.tolist()
        if ids is None:
            return 200, _dumps({"predictions": predictions}), _JSON
        return 200, _dumps({"predictions": predictions, "ids": ids}), _JSON  # MLflow clients keep extra keys

    def _remember(self, batch: Batch, result: BatchResult) -> list[str] | None:
        """With the monitoring agent: ids for the rows, remembered for ``/feedback``, and the
        opt-in capture, as ``/predict`` does; ``None`` without the agent."""
        fb = self.feedback
        if fb is None:
            return None
        ids = fb.new_ids(result.predicted) if result.predicted else []
        if ids:
            fb.remember(ids, self.model.codes(result))
            if fb.capture_rate:
                from mlpack_edge.runtime.io import _capture  # the CLI predict's sampler, rows as parsed

                _capture(self.model, batch, result, [ids], fb, 0)
        return ids

    def _predict_all(self, batch: Batch) -> BatchResult:
        try:
            result = self.model.predict_all(batch)
        except InputError:
            self.metrics.rows(0, len(batch.errors))
            raise
        self.metrics.rows(result.predicted, 0)
        return result

    def v2_model(self, name: str, version: str | None) -> Reply:
        missing = self._v2_missing(name, version)
        return missing if missing is not None else (200, self._v2_model, _JSON)

    def v2_model_ready(self, name: str, version: str | None) -> Reply:
        missing = self._v2_missing(name, version)
        return missing if missing is not None else (200, _dumps({"name": name, "ready": True}), _JSON)

    def v2_infer(self, name: str, version: str | None, body: bytes, headers: Mapping[str, str]) -> Reply:
        missing = self._v2_missing(name, version)
        if missing is not None:
            return missing
        model = self.model
        try:
            request = _v2.read_infer(
                body, headers.get("Inference-Header-Content-Length"), model.schema, model.task, self.feedback is not None
            )
            if request.batch.size > self.config.max_batch_rows:
                return _error(413, f"batch of {request.batch.size} rows exceeds the limit of {self.config.max_batch_rows}")
            result = self._predict_all(request.batch)
            ids = self._remember(request.batch, result)
        except InputError as exc:
            return _error(400, str(exc))
        except InferenceError as exc:
            return _error(500, str(exc))
        if result.values is not None:
            arrays = {"value": result.values}
        else:
            assert result.labels is not None and result.probabilities is not None
            arrays = {"label": result.labels, "probabilities": result.probabilities}
        if ids is not None:
            arrays["id"] = np.array(ids, dtype=object)
        out, header_length = _v2.infer_response(request, model.name, model.version, model.classes, arrays)
        if header_length is None:
            return 200, out, _JSON
        return 200, out, "application/octet-stream", {"Inference-Header-Content-Length": str(header_length)}

    def _v2_missing(self, name: str, version: str | None) -> Reply | None:
        if name != self.model.name or (version is not None and version != self.model.version):
            asked = f"{name!r}" + (f" version {version!r}" if version is not None else "")
            return _error(404, f"model {asked} is not served here (this is {self.model.name!r} version {self.model.version!r})")
        return None


    def add_feedback(self, body: bytes) -> Reply:
        if self.feedback is None:
            return _error(409, "feedback needs the monitoring agent: serve with a state folder (--state-dir) and without --no-monitor")
        try:
            payload = json.loads(body)
        except (UnicodeDecodeError, ValueError, RecursionError) as exc:
            return _error(400, f"request body is not valid JSON ({exc})")
        single = isinstance(payload, dict)
        items = [payload] if single else payload
        if not isinstance(items, list) or not items:
            return _error(400, 'expected {"id": ..., "label": ...} or a non-empty array of them')
        if len(items) > self.config.max_batch_rows:
            return _error(413, f"batch of {len(items)} labels exceeds the limit of {self.config.max_batch_rows}")
        pairs: list[tuple[str, Any]] = []
        for i, item in enumerate(items):
            where = "" if single else f"[{i}]"
            if not isinstance(item, dict):
                return _error(400, f'{where or "body"}: expected an object {{"id": ..., "label": ...}}')
            try:
                pid = _row_id(item, "id", i, where or "body")
            except _BadId as exc:
                return _error(400, str(exc))
            if pid is None:
                return _error(400, f"{where}.id: missing" if where else "id: missing")
            if "label" not in item:
                return _error(400, f"{where}.label: missing" if where else "label: missing")
            pairs.append((pid, item["label"]))
        try:
            outcomes = self.feedback.add_labels(pairs)
        except MlpackError as exc:
            log.error("feedback not stored: %s", exc)
            return _error(503, f"feedback not stored ({exc}); send it again")
        if single:
            return 200, _dumps({"id": pairs[0][0], "outcome": outcomes[0]}), _JSON
        counts: dict[str, int] = {}
        for o in outcomes:
            counts[o] = counts.get(o, 0) + 1
        return 200, _dumps({"outcomes": outcomes, "counts": counts}), _JSON


class _BadId(ValueError):
    pass


def _row_id(row: Mapping[str, Any], name: str, i: int, where: str | None = None) -> str | None:
    """``row[name]`` as a prediction id (``None`` when absent); a bad one is a ``_BadId`` naming the row."""
    v = row.get(name)
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, (str, int)) or not str(v) or len(str(v)) > MAX_ID_CHARS:
        at = where if where is not None else f"row {i}"
        raise _BadId(f"{at}.{name}: expected a string or integer id of 1-{MAX_ID_CHARS} characters, got {json.dumps(v)[:40]}")
    return str(v)


Reply = tuple[Any, ...]  # (status, body, content type[, extra headers])


def _dumps(obj: Any) -> bytes:
    return ENCODE(obj).encode()


def _error(status: int, message: str) -> Reply:
    return status, _dumps({"error": message}), _JSON


def _mlflow_error(status: int, message: str, code: str = "BAD_REQUEST") -> Reply:
    return status, _dumps({"error_code": code, "message": message}), _JSON


_GET: dict[str, Callable[[PredictServer], Reply]] = {
    "/health": PredictServer.health,
    "/info": PredictServer.info,
    "/metrics": PredictServer.render_metrics,
    "/openapi.json": PredictServer.openapi,
    "/ping": PredictServer.ping,
    "/v2": PredictServer.v2_server,
    "/v2/health/live": PredictServer.v2_live,
    "/v2/health/ready": PredictServer.v2_ready,
}
_POST = ("/predict", "/feedback", "/invocations")


def _v2_path(path: str) -> tuple[str, str | None, str] | None:
    """``/v2/models/<name>[/versions/<v>][/ready|/infer]`` -> (name, version, action)."""
    parts = path.split("/")
    if len(parts) < 4 or parts[:3] != ["", "v2", "models"] or not parts[3]:
        return None
    name, rest = unquote(parts[3]), parts[4:]
    version = None
    if rest[:1] == ["versions"]:
        if len(rest) < 2 or not rest[1]:
            return None
        version, rest = unquote(rest[1]), rest[2:]
    if rest == []:
        return name, version, ""
    if rest in (["ready"], ["infer"]):
        return name, version, rest[0]
    return None


def _v2_endpoint(action: str) -> str:
    """The metrics label of a v2 model path (bounded: no model names in it)."""
    return "/v2/models/{name}" + (f"/{action}" if action else "")


class _Routes:
    """Requests (parsed by :mod:`._http`) to ``PredictServer``'s endpoints, and the request metrics."""

    def __init__(self, app: PredictServer) -> None:
        self.app = app

    def body_allowed(self, req: Request) -> Response | None:
        """``None``: read the body. Else the answer without reading it: 411 for a chunked or
        unsized body, 413 for one over ``max_body_bytes`` (then the connection closes)."""
        limit = self.app.config.max_body_bytes
        raw = req.headers.get("content-length")
        try:
            length = int(raw) if raw is not None else -1
        except ValueError:
            length = -1
        if req.method == "POST" and _takes_body(req.path):
            if req.headers.get("transfer-encoding"):
                return self._done(req, _error(411, "send the body with a Content-Length (chunked transfer is not accepted)"), close=True)
            if length < 0:
                return self._done(req, _error(411, "a Content-Length header is required"), close=True)
            if length > limit:  # do not read (or wait for) an oversized body
                return self._done(req, _error(413, f"request body of {length} bytes exceeds the limit of {limit}"), close=True)
            return None
        if (raw is not None and not 0 <= length <= limit) or req.headers.get("transfer-encoding"):
            return self._done(req, self._route(req), close=True)  # answered without the body it cannot skip
        return None  # a small body an endpoint ignores is read and dropped, so the connection stays usable

    def handle(self, req: Request) -> Response:
        return self._done(req, self._route(req), close=req.method == "HEAD")  # HEAD's client reads no body

    @staticmethod
    def _done(req: Request, reply: Reply, close: bool = False) -> Response:
        return reply[0], reply[1], reply[2], reply[3] if len(reply) > 3 else None, close

    def _route(self, req: Request) -> Reply:
        app, path, method = self.app, req.path, req.method
        if method == "POST":
            if path == "/predict":
                return self._timed(path, req, app.predict)
            if path == "/invocations":
                return self._timed(path, req, app.invocations)
            if path == "/feedback":
                return self._timed(path, req, lambda body, headers: app.add_feedback(body))
            v2 = _v2_path(path)
            if v2 is not None and v2[2] == "infer":
                name, version, _ = v2
                return self._timed(_v2_endpoint("infer"), req,
                                   lambda body, headers: app.v2_infer(name, version, body, headers))
        elif method == "GET":
            route = _GET.get(path)
            if route is not None:
                return self._count(path, route(app))
            v2 = _v2_path(path)
            if v2 is not None and v2[2] != "infer":
                name, version, action = v2
                handler = app.v2_model_ready if action == "ready" else app.v2_model
                return self._count(_v2_endpoint(action), handler(name, version))
        return self._count(path, self._not_here(req))

    def _timed(self, endpoint: str, req: Request, call: Callable[[bytes, Any], Reply]) -> Reply:
        t0 = time.perf_counter()
        try:
            reply = call(req.body, req.headers)
        except Exception:  # a bug, not the client's fault: answer 500, keep serving
            log.exception("%s failed", req.path)
            reply = _error(500, "internal error")
        return self._count(endpoint, reply, t0)

    def _count(self, endpoint: str, reply: Reply, t0: float | None = None) -> Reply:
        known = endpoint if endpoint in _POST or endpoint in _GET or endpoint.startswith("/v2/models/{") else "other"
        self.app.metrics.request(known, reply[0], time.perf_counter() - t0 if t0 is not None else None)
        return reply

    def _not_here(self, req: Request) -> Reply:
        path = req.path
        v2 = _v2_path(path)
        allow = None
        if path in _POST or (v2 is not None and v2[2] == "infer"):
            allow = "POST"
        elif path in _GET or v2 is not None:
            allow = "GET"
        if allow is not None:
            status, body, ctype = _error(405, f"{req.method} is not allowed on {path} (use {allow})")
            return status, body, ctype, {"Allow": allow}
        return _error(
            404,
            f"no such endpoint {path}; try POST /predict, /feedback, /invocations (MLflow), /v2/models/{self.app.model.name}/infer"
            " (KServe v2), GET /health, /info, /metrics, /openapi.json",
        )


def _takes_body(path: str) -> bool:
    if path in _POST:
        return True
    v2 = _v2_path(path)
    return v2 is not None and v2[2] == "infer"


_BUSY_BODY = b'{"error": "too many connections, try again later"}'
_BUSY = (
    b"HTTP/1.1 503 Service Unavailable\r\nServer: mlpack\r\nContent-Type: application/json\r\nConnection: close\r\n"
    + f"Content-Length: {len(_BUSY_BODY)}\r\n\r\n".encode()
    + _BUSY_BODY
)
