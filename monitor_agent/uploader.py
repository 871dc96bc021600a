"""Delivering the outbox to the collector: batches, acknowledgement, backoff, dead letters.

One request = one batch (wire format, gzip JSON, ``Authorization: Bearer <token>``).
What the agent does with each reply:

========================  ==================================================================
200                       delete exactly the windows listed in ``stored`` + ``duplicates``
                          (the collector replies only after its commit); audit events of the
                          batch are acknowledged with it, and the models it carried are
                          recorded as known to this collector URL
network error, 5xx, 429   keep everything; retry with exponential backoff and full jitter
                          (1 s doubling to a 5 min cap; ``Retry-After`` is honoured)
TLS failure               keep everything (untrusted, expired or wrong-host server
                          certificate, client certificate refused); outcome ``tls``,
                          retried only at the backoff cap; never retried over plain HTTP
401, 403, 404, 405, 415   keep everything: the credentials or the URL are wrong, not the
                          batch; outcome ``refused``, retried only at the backoff cap
422 for a batch that      the collector may have lost a model it acknowledged (a database
left known models out     reset answers "unknown model"): forget that it knows them and
                          resend the same windows with their models, before anything else
other 4xx (400, 409,      the batch is bad: halve it until the offending window (or event)
413, 422, ...)            is alone, then move it to the dead-letter table (kept, reported
                          in ``outbox.dead_letter``, never retried) with the collector's
                          one-line reason. 409 is a window whose seq the collector holds
                          with other contents or bounds (this outbox was reset, or a bug):
                          the collector keeps its copy and raises an alert; resending would
                          never succeed
========================  ==================================================================

A model's ``models`` entry (name, version, reference profile: ~8 KiB for 20 features)
travels only until the collector has acknowledged a batch carrying it; the outbox
remembers that per collector URL, across restarts.

Rollout offers ride on the acknowledgements; an uploader with an ``on_updates`` hook that
has sent nothing for ``idle_poll`` seconds (an idle ``serve``: no request, no window) asks
the light poll ``GET /api/v1/updates`` instead, so an offer still reaches it. A failed poll
is an ``unreachable`` (or ``tls``) outcome like a failed upload, with the same backoff.

Only one process uploads a state dir at a time (``upload.lock``), so ``serve`` and a
cron ``agent sync`` never race each other. Nothing here logs a header: the token stays
out of logs, reprs and messages.
"""

from __future__ import annotations

import contextlib
import gzip
import json
import logging
import os
import random
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime
from typing import Any, Literal, Protocol

from mlpack_edge import __version__
from mlpack_edge.errors import AgentError
from mlpack_edge.monitor_agent.config import AgentConfig
from mlpack_edge.monitor_agent.outbox import Batch, Outbox
from mlpack_edge.monitor_agent.transport import Response, TlsError, Transport, TransportError, transport_for
from mlpack_edge.monitor_agent.wire import MAX_WINDOWS_PER_BATCH, SCHEMA_VERSION

try:  # POSIX; elsewhere a second uploader only causes duplicates, which the collector absorbs
    import fcntl
except ImportError:  # pragma: no cover
    fcntl = None  # type: ignore[assignment]

__all__ = ["Backoff", "SyncResult", "Uploader", "Outcome", "BACKOFF_BASE", "BACKOFF_CAP"]

log = logging.getLogger("mlpack_edge.monitor_agent")

BACKOFF_BASE = 1.0
BACKOFF_CAP = 300.0
_CONFIG_STATUSES = frozenset({401, 403, 404, 405, 415})

Outcome = Literal["delivered", "nothing", "unreachable", "refused", "busy", "tls"]


class Backoff:
    """Exponential backoff with full jitter: the n-th consecutive failure waits U(0, min(cap, base·2ⁿ))."""

    def __init__(self, rng: random.Random, base: float = BACKOFF_BASE, cap: float = BACKOFF_CAP) -> None:
        self.rng, self.base, self.cap = rng, base, cap
        self.failures = 0

    def failure(self, retry_after: float | None = None) -> float:
        ceiling = min(self.cap, self.base * 2.0 ** min(self.failures, 30))
        self.failures += 1
        delay = self.rng.uniform(0.0, ceiling)
        if retry_after is not None:
            delay = max(delay, min(retry_after, self.cap))
        return delay

    def success(self) -> None:
        self.failures = 0


@dataclass
class SyncResult:
    """What one :meth:`Uploader.sync` achieved."""

    outcome: Outcome
    delivered: int = 0  # windows the collector acknowledged
    audit: int = 0  # audit events acknowledged
    dead_lettered: int = 0
    batches: int = 0
    status: int | None = None  # last HTTP status, if any
    detail: str = ""
    retry_after: float | None = None
    pending: int = 0
    #: What the collector asked this device to do (a rollout's install or rollback), piggy-backed
    #: on its last acknowledgement; ``None`` when no reply said anything.
    updates: list[dict[str, Any]] | None = None

    def summary(self) -> str:
        text = {
            "delivered": f"delivered {self.delivered} windows and {self.audit} audit events in {self.batches} batches",
            "nothing": "nothing to deliver",
            "unreachable": f"collector unreachable, {self.pending} windows kept for later",
            "refused": f"collector refused the upload, {self.pending} windows kept",
            "busy": "another process is uploading this outbox",
            "tls": f"TLS failure talking to the collector, {self.pending} windows kept",
        }[self.outcome]
        if self.dead_lettered:
            text += f"; {self.dead_lettered} windows moved to the dead-letter table"
        return f"{text} ({self.detail})" if self.detail else text


class Waiter(Protocol):
    def is_set(self) -> bool: ...
    def wait(self, timeout: float | None = None) -> bool: ...


@dataclass
class Uploader:
    """Sends the outbox of one device to its collector."""

    outbox: Outbox
    config: AgentConfig
    transport: Transport | None = None  # None: urllib with the config's TLS settings
    rng: random.Random = field(default_factory=random.Random)
    max_windows: int = 200
    max_bytes: int = 2_000_000
    #: Called with the collector's ``updates`` (rollout offers) whenever an acknowledgement carries
    #: them; the runtime applies them (this package never installs anything itself).
    on_updates: Callable[[list[dict[str, Any]]], None] | None = None
    #: With ``on_updates``: poll ``GET /api/v1/updates`` when nothing was exchanged for this long (s).
    idle_poll: float = 300.0
    clock: Callable[[], float] = time.monotonic
    _last_contact: float | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        self.max_windows = max(1, min(self.max_windows, MAX_WINDOWS_PER_BATCH))
        self.backoff = Backoff(self.rng)
        if self.transport is None:
            self.transport = transport_for(self.config)

    def __repr__(self) -> str:
        return f"Uploader(collector_url={self.config.collector_url!r}, device_id={self.config.device_id!r})"

    def check_configured(self) -> None:
        """Raise a one-line :class:`AgentError` naming what is missing to upload."""
        if not self.config.can_upload:
            missing = [k for k in ("collector_url", "device_id", "token") if not getattr(self.config, k)]
            raise AgentError(
                f"cannot upload: {', '.join(missing)} not configured "
                f"(agent.json in {self.outbox.state_dir}, MLPACK_* environment variables or flags)"
            )
        self.config.check_transport()

    def sync(self, max_batches: int | None = None) -> SyncResult:
        """Send batches until the outbox is empty, a request fails, or ``max_batches`` were sent."""
        self.check_configured()
        with self._exclusive() as mine:
            if not mine:
                return SyncResult("busy")
            return self._sync(max_batches)

    def _sync(self, max_batches: int | None) -> SyncResult:
        result = SyncResult("nothing")
        limit = self.max_windows
        while max_batches is None or result.batches < max_batches:
            if not self.outbox.needs_report():
                break
            only_windows = limit == 1 and self.outbox.accounting().pending > 0
            url = self.config.ingest_url
            batch = self.outbox.take_batch(limit, self.max_bytes, 0 if only_windows else min(100, limit), collector=url)
            assert self.transport is not None
            try:
                reply = self.transport.send(url, self._encode(batch), self._headers())
            except TlsError as exc:
                return self._stop(result, "tls", None, str(exc))
            except TransportError as exc:
                return self._stop(result, "unreachable", None, str(exc))
            result.batches += 1
            result.status = reply.status
            if 200 <= reply.status < 300:
                acked = self._acknowledge(batch, reply, result)
                if acked is None:
                    return self._stop(result, "unreachable", reply.status, "unreadable acknowledgement")
                result.delivered += acked
                result.audit += len(batch.audit)
                result.outcome = "delivered"
                self._last_contact = self.clock()
                if batch.windows and acked == 0:
                    return self._stop(result, "unreachable", reply.status, "collector acknowledged no window")
                continue
            reason = f"HTTP {reply.status}: {_text(reply.body)}"
            if reply.status == 429 or reply.status >= 500:
                retry = _retry_after(reply)
                result.retry_after = retry
                return self._stop(result, "unreachable", reply.status, reason)
            if reply.status in _CONFIG_STATUSES or reply.status < 400:
                return self._stop(result, "refused", reply.status, reason)
            if reply.status == 422 and batch.known:
                self.outbox.forget_known(url, batch.known)
                log.warning("collector refused a batch sent without its models (%s); resending with them", reason)
                continue
            if len(batch) > 1:  # a bad item in the batch: find it by halving
                limit = max(1, len(batch) // 2)
                log.warning("collector refused a batch of %d (%s); retrying in halves", len(batch), reason)
                continue
            moved = self.outbox.dead_letter(batch.window_seqs, batch.audit_seqs, reply.status, reason)
            log.error("collector refused window %s (%s): moved to the dead-letter table", batch.window_seqs or batch.audit_seqs, reason)
            result.dead_lettered += moved
            limit = self.max_windows  # the culprit is out: full batches again
            if not batch.windows and not batch.audit:  # only counters, and they were refused
                return self._stop(result, "refused", reply.status, reason)
        result.pending = self.outbox.accounting().pending
        if result.dead_lettered:  # delivered the rest, but some windows were refused for good
            result.outcome = "refused"
        if result.batches == 0 and self._idle():
            stopped = self._poll_updates(result)
            if stopped is not None:
                return stopped
        if result.updates and self.on_updates is not None:
            try:
                self.on_updates(result.updates)
            except Exception:  # an update must never stop uploads
                log.exception("applying the collector's update failed")
        return result

    def _idle(self) -> bool:
        """An update hook, a transport that can GET, and no exchange for ``idle_poll`` seconds."""
        if self.on_updates is None or not callable(getattr(self.transport, "get", None)):
            return False
        return self._last_contact is None or self.clock() - self._last_contact >= self.idle_poll

    def _poll_updates(self, result: SyncResult) -> SyncResult | None:
        """The light poll (module doc); a stopped result on an outage, else ``None``."""
        assert self.config.collector_url is not None
        url = self.config.collector_url.rstrip("/") + "/api/v1/updates"
        headers = {"User-Agent": f"mlpack-agent/{__version__}"}
        if self.config.token:
            headers["Authorization"] = f"Bearer {self.config.token}"
        try:
            reply = self.transport.get(url, headers)  # type: ignore[union-attr]
        except TlsError as exc:
            return self._stop(result, "tls", None, str(exc))
        except TransportError as exc:
            return self._stop(result, "unreachable", None, str(exc))
        if reply.status == 429 or reply.status >= 500:
            result.retry_after = _retry_after(reply)
            return self._stop(result, "unreachable", reply.status, f"HTTP {reply.status}: {_text(reply.body)}")
        self._last_contact = self.clock()  # answered: the next poll waits idle_poll again
        if not 200 <= reply.status < 300:  # e.g. a collector without rollouts: uploads are unaffected
            log.warning("update poll: HTTP %s: %s", reply.status, _text(reply.body))
            return None
        try:
            updates = json.loads(reply.body).get("updates", [])
        except (ValueError, AttributeError):
            log.warning("update poll: unreadable reply")
            return None
        if isinstance(updates, list):
            result.updates = [u for u in updates if isinstance(u, dict)]
        return None

    def _stop(self, result: SyncResult, outcome: Outcome, status: int | None, detail: str) -> SyncResult:
        result.outcome = outcome
        result.status = status
        result.detail = detail
        result.pending = self.outbox.accounting().pending
        log.warning("upload to %s stopped: %s", self.config.collector_url, detail)
        return result

    def _acknowledge(self, batch: Batch, reply: Response, result: SyncResult | None = None) -> int | None:
        try:
            data = json.loads(reply.body)
            acked = {int(s) for s in list(data.get("stored", [])) + list(data.get("duplicates", []))}
        except (ValueError, TypeError, AttributeError):
            return None
        updates = data.get("updates")
        if isinstance(updates, list) and result is not None:
            result.updates = [u for u in updates if isinstance(u, dict)]
        sent = batch.window_seqs
        missing = [s for s in sent if s not in acked]
        if missing:
            log.warning("collector did not acknowledge windows %s; they stay in the outbox", missing[:10])
        n = self.outbox.ack([s for s in sent if s in acked], batch.audit_seqs, batch.outbox)
        if len(missing) < len(sent):  # the batch was committed, with the models it carried
            self.outbox.mark_known(self.config.ingest_url, sorted(batch.models))
        return n

    def _encode(self, batch: Batch) -> bytes:
        payload = {
            "schema": SCHEMA_VERSION,
            "device": self.config.device_id,
            "models": batch.models,
            "windows": batch.windows,
            "audit": batch.audit,
            "outbox": batch.outbox,
        }
        raw = json.dumps(payload, separators=(",", ":"), allow_nan=False).encode("utf-8")
        return gzip.compress(raw, compresslevel=6, mtime=0)

    def _headers(self) -> dict[str, str]:
        headers = {
            "Content-Type": "application/json",
            "Content-Encoding": "gzip",
            "User-Agent": f"mlpack-agent/{__version__}",
        }
        if self.config.token:  # a device may authenticate by its client certificate alone
            headers["Authorization"] = f"Bearer {self.config.token}"
        return headers

    @contextlib.contextmanager
    def _exclusive(self) -> Iterator[bool]:
        if fcntl is None:  # pragma: no cover
            yield True
            return
        path = self.outbox.state_dir / "upload.lock"
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                yield False
                return
            yield True
        finally:
            os.close(fd)  # closing releases the lock

    def run(self, stop: Waiter, interval: float, on_result: Callable[[SyncResult], None] | None = None) -> None:
        """Upload until ``stop`` is set: every ``interval`` s when healthy, with backoff when not.

        ``stop.wait(delay)`` is the only sleep, so tests drive the loop with their own waiter.
        """
        while not stop.is_set():
            try:
                result = self.sync()
            except AgentError as exc:  # e.g. the outbox became unusable: log, wait, try again
                log.error("upload failed: %s", exc)
                result = SyncResult("unreachable", detail=str(exc))
            if on_result is not None:
                on_result(result)
            if result.outcome == "unreachable":
                delay = self.backoff.failure(result.retry_after)
            elif result.outcome in ("refused", "tls"):
                delay = self.backoff.cap
            else:
                self.backoff.success()
                delay = interval
            stop.wait(delay)


def _text(body: bytes, limit: int = 200) -> str:
    text = body.decode("utf-8", "replace").replace("\n", " ").strip()
    try:  # the collector's {"error": "..."}, or FastAPI's {"detail": "..."}
        data = json.loads(text)
        detail = data.get("error") or data.get("detail")
        if detail:
            text = detail if isinstance(detail, str) else json.dumps(detail)
    except (ValueError, AttributeError):
        pass
    return text[:limit]


def _retry_after(reply: Response) -> float | None:
    value = {k.lower(): v for k, v in reply.headers.items()}.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError):
        return None
