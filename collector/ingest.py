"""Ingest: decode and check an upload, then store it exactly once.

The path of one ``POST /api/v1/ingest``:

1. :func:`decode_body` — bounded gunzip (a gzip bomb stops at the limit) and JSON;
2. :func:`parse_batch` — :func:`mlpack_edge.monitor_agent.wire.validate_batch` plus the
   collector's own shape checks (audit rows);
3. :class:`Writer` — one thread per process applies queued batches in *groups*, one
   transaction per group (group commit: one durable commit for many uploads), and
   resolves each batch's future only after that commit;
4. :func:`apply_batches` — inside the transaction: token still valid, models known and
   consistent, bins match the profile, (device, seq) idempotency, then windows, audit,
   device state and roll-ups.

Idempotency is by content, not by number alone: a window replayed with the seq range of
a stored one is acknowledged as a duplicate only when its body is the stored one. A
replay with other contents (a device whose outbox was reset, a bug, or a forgery) or
other bounds is refused with 409, the stored window is kept, and the refusal is recorded
per (device, seq) in ``ingest_conflicts`` — the fleet page's alert, the device's audit
list and the collector's conflict counter come from it. Comparing costs nothing for new
windows: only a seq range that meets a stored one reads that one's body back.

Every refusal is a :class:`Rejected` carrying the HTTP status and a one-line message.
"""

from __future__ import annotations

import concurrent.futures
import json
import logging
import queue
import threading
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from mlpack_edge.collector.auth import token_matches
from mlpack_edge.collector.models import ModelInfo, model_from_upload
from mlpack_edge.collector.rollup import Rollup, RollupKey, bucket_of, expand_minutes
from mlpack_edge.collector.storage import Storage, WriteTx
from mlpack_edge.errors import StorageError
from mlpack_edge.monitor_agent.wire import MAX_COUNT, Window, WireError, validate_batch

__all__ = ["Rejected", "REPLAY_CONFLICT", "Batch", "Ack", "decode_body", "parse_batch", "apply_batches", "Writer"]

log = logging.getLogger("mlpack_edge.collector")

MAX_AUDIT_PER_BATCH = 1000
_RETRIES = 3
_compact = json.JSONEncoder(separators=(",", ":")).encode
#: Days of captured rows the collector keeps (with each device's per-day reservoir, the bound).
SAMPLE_DAYS = 90


#: :attr:`Rejected.kind` of a batch refused because it replays a stored window differently.
REPLAY_CONFLICT = "replay_conflict"


class Rejected(Exception):
    """An upload refused with an HTTP ``status`` and a one-line ``message``.

    ``kind`` names refusals that are counted on their own (:data:`REPLAY_CONFLICT`).
    """

    def __init__(self, status: int, message: str, retry_after: int | None = None, kind: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.retry_after = retry_after
        self.kind = kind


@dataclass
class Batch:
    """A decoded, shape-checked upload from an authenticated token."""

    device: str
    token_hash: str | None  # None: authenticated by its client certificate alone
    models: dict[str, dict[str, Any]]
    windows: list[Window]
    audit: list[dict[str, Any]]
    outbox: dict[str, int] | None


@dataclass
class Ack:
    stored: list[int] = field(default_factory=list)
    duplicates: list[int] = field(default_factory=list)

    def to_dict(self) -> dict[str, list[int]]:
        return {"stored": self.stored, "duplicates": self.duplicates}


def decode_body(body: bytes, encoding: str | None, max_decompressed: int) -> Any:
    """The JSON value of a request body, inflating at most ``max_decompressed`` bytes."""
    enc = (encoding or "identity").strip().lower()
    if enc == "gzip":
        inflater = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
        try:
            data = inflater.decompress(body, max_decompressed + 1)
        except zlib.error as exc:
            raise Rejected(400, f"body: not valid gzip ({exc})") from None
        if len(data) > max_decompressed or inflater.unconsumed_tail:
            raise Rejected(413, f"body: inflates to more than {max_decompressed} bytes")
        if not inflater.eof:
            raise Rejected(400, "body: truncated gzip stream")
        if inflater.unused_data:
            raise Rejected(400, "body: unexpected data after the gzip stream")
    elif enc == "identity":
        if len(body) > max_decompressed:
            raise Rejected(413, f"body: more than {max_decompressed} bytes")
        data = body
    else:
        raise Rejected(415, f"Content-Encoding: {enc!r} is not supported, use gzip or identity")
    try:
        return json.loads(data)
    except UnicodeDecodeError as exc:
        where = "after inflating, " if enc == "gzip" else ""
        raise Rejected(400, f"body: not UTF-8 JSON ({where}byte {exc.start}: {exc.reason})") from None
    except json.JSONDecodeError as exc:
        raise Rejected(400, f"body: not valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno})") from None
    except RecursionError:
        raise Rejected(400, "body: JSON nested too deeply") from None


def parse_batch(payload: Any, device: str, token_hash: str | None, credential: str = "token") -> Batch:
    """Check ``payload`` against the wire schema; the batch must be ``device``'s own
    (``credential`` names what identified it, for the refusal)."""
    try:
        name, models, windows, audit, outbox = validate_batch(payload)
    except WireError as exc:
        raise Rejected(422, str(exc)) from None
    if name != device:
        raise Rejected(401, f"device: the {credential} does not belong to device {name!r}")
    if len(audit) > MAX_AUDIT_PER_BATCH:
        raise Rejected(422, f"audit: at most {MAX_AUDIT_PER_BATCH} rows per batch, got {len(audit)}")
    for i, row in enumerate(audit):
        seq, event, when = row.get("seq"), row.get("event"), row.get("time")
        if type(seq) is float and seq.is_integer():  # JSON does not tell 7 from 7.0
            row["seq"] = seq = int(seq)
        if not isinstance(seq, int) or isinstance(seq, bool) or not 0 <= seq <= MAX_COUNT:
            raise Rejected(422, f"audit[{i}].seq: expected an integer from 0 to 2**53-1")
        if not isinstance(event, str) or not 0 < len(event) <= 64:
            raise Rejected(422, f"audit[{i}].event: expected a string of 1-64 characters")
        if when is not None and (not isinstance(when, (int, float)) or isinstance(when, bool)):
            raise Rejected(422, f"audit[{i}].time: expected epoch seconds")
    has_outbox = isinstance(payload, dict) and "outbox" in payload
    return Batch(name, token_hash, models, windows, audit, outbox if has_outbox else None)


def apply_batches(
    storage: Storage, batches: list[Batch], known: dict[str, ModelInfo], now: float
) -> list[Ack | Rejected]:
    """Store ``batches`` in one transaction; each gets its own outcome.

    ``known`` caches committed models (hash -> model; immutable, so safe to cache); it
    is updated only after the commit succeeds.
    """
    with storage.write(pipelined=True) as tx:
        # The devices' rows locked, whether each upload meets a stored window (a device's rows
        # are locked, so the answer holds until commit) and the running totals' ranges: one
        # round trip for the group.
        devices = tx.open_group(
            sorted({b.device for b in batches}),
            [(b.device, max(w.seq_last or w.seq for w in b.windows)) for b in batches if b.windows],
            [(w.model, b.device, w.start) for b in batches for w in b.windows],
        )
        learned: dict[str, ModelInfo] = {}
        minutes: dict[RollupKey, Rollup] = {}
        outcomes: list[Ack | Rejected] = []
        for b in batches:
            try:
                outcomes.append(_apply_one(tx, b, devices, known, learned, minutes, now))
            except Rejected as exc:
                outcomes.append(exc)
        # Windows and device rows first: the roll-up rows (the fleet's are shared by every
        # collector process) are then locked for the roll-up statements and COMMIT only.
        tx.flush()
        tx.add_to_rollups(expand_minutes(minutes))
    known.update(learned)
    return outcomes


def _apply_one(
    tx: WriteTx,
    b: Batch,
    devices: dict[str, tuple[str, float | None] | None],
    known: dict[str, ModelInfo],
    learned: dict[str, ModelInfo],
    minutes: dict[RollupKey, Rollup],
    now: float,
) -> Ack:
    """Check and store one batch; its windows are added to ``minutes`` (device, minute) deltas."""
    row = devices.get(b.device)
    if b.token_hash is None:  # certificate only: the pre-check mapped it; revocation is re-checked here
        if row is None or row[1] is not None:
            raise Rejected(401, f"client certificate: device {b.device!r} is revoked")
    elif row is None or row[1] is not None or not token_matches(b.token_hash, row[0]):
        raise Rejected(401, "Authorization: unknown, wrong or revoked device token")

    def lookup(h: str) -> ModelInfo | None:
        m = known.get(h) or learned.get(h)
        if m is None:
            m = tx.model(h)
            if m is not None:
                known[h] = m
        return m

    new_models: dict[str, ModelInfo] = {}
    kpis: list[tuple[str, str]] = []
    for h, entry in b.models.items():
        where = f"models.{h[:12]}"
        kpi = entry.get("kpi")
        if kpi is not None:
            if not isinstance(kpi, dict) or kpi.get("task") not in ("binary", "multiclass", "regression"):
                raise Rejected(422, f"{where}.kpi: expected an object with task binary, multiclass or regression")
            kpis.append((h, _compact(kpi)))
        known_model = lookup(h)
        if known_model is not None and known_model.matches_entry(entry):
            continue
        try:
            m = model_from_upload(h, entry, where)
        except WireError as exc:
            raise Rejected(422, str(exc)) from None
        if known_model is None:
            new_models[h] = m
        elif not known_model.same_as(m):
            raise Rejected(
                422, f"{where}: conflicts with the stored model {known_model.name} {known_model.version} (same content hash)"
            )
    model_of: list[ModelInfo] = []
    for i, w in enumerate(b.windows):
        m = new_models.get(w.model) or lookup(w.model)
        if m is None:
            raise Rejected(
                422,
                f"windows[{i}].model: unknown model {w.model[:12]}; send it in the batch's models section "
                "or register the bundle with add-model",
            )
        try:
            m.check_window(w, f"windows[{i}]")
        except WireError as exc:
            raise Rejected(422, str(exc)) from None
        model_of.append(m)

    ack = Ack()
    fresh: list[int] = []
    replayed: list[int] = []  # same bounds as a stored window: a duplicate if the contents agree
    prev: Window | None = None
    # New windows (the common case) are checked against the device's stored ones with one
    # query for the batch's whole seq span; only a span that meets a stored window is
    # checked window by window (replays, overlaps).
    span_clear = len(b.windows) > 1 and tx.overlapping(
        b.device, min(w.seq for w in b.windows), max(w.seq_last or w.seq for w in b.windows)
    ) is None
    for i in sorted(range(len(b.windows)), key=lambda k: b.windows[k].seq):
        w = b.windows[i]
        assert w.seq_last is not None
        if prev is not None and prev.seq_last is not None and w.seq <= prev.seq_last:
            if (w.seq, w.seq_last) != (prev.seq, prev.seq_last):
                raise Rejected(409, f"windows[{i}]: seq {w.seq}-{w.seq_last} overlaps seq {prev.seq}-{prev.seq_last} in the same batch")
            if _body(w) != _body(prev):
                raise Rejected(409, f"windows[{i}]: seq {w.seq}-{w.seq_last} appears twice in the batch with different contents")
            ack.duplicates.append(w.seq)
            continue
        prev = w
        hit = None if span_clear else tx.overlapping(b.device, w.seq, w.seq_last)
        if hit is None:
            fresh.append(i)
        elif hit == (w.seq, w.seq_last):
            replayed.append(i)
        else:
            reason = f"other bounds than the stored window seq {hit[0]}-{hit[1]}"
            tx.record_conflict(b.device, w.seq, w.seq_last, hit, reason, now)
            raise Rejected(
                409,
                f"windows[{i}]: seq {w.seq}-{w.seq_last} overlaps the stored window seq {hit[0]}-{hit[1]} "
                f"of device {b.device} with different bounds",
                kind=REPLAY_CONFLICT,
            )
    if replayed:
        stored = tx.window_bodies(b.device, [b.windows[i].seq for i in replayed])
        for i in replayed:
            w = b.windows[i]
            assert w.seq_last is not None
            if not _same_body(stored.get(w.seq), _body(w)):
                tx.record_conflict(b.device, w.seq, w.seq_last, (w.seq, w.seq_last), "other contents than the stored window", now)
                raise Rejected(
                    409,
                    f"windows[{i}]: seq {w.seq}-{w.seq_last} of device {b.device} was stored with other contents;"
                    " the stored window is kept and this one refused (outbox reset, device bug or forgery)",
                    kind=REPLAY_CONFLICT,
                )
            ack.duplicates.append(w.seq)

    for m in new_models.values():
        tx.insert_model(m, now)
        learned[m.hash] = m
    window_rows = []
    for i in fresh:
        w, m = b.windows[i], model_of[i]
        window_rows.append((b.device, w.seq, w.seq_last, w.model, w.start, w.end, now, _body(w)))
        key = ("m", w.model, b.device, bucket_of(w.start, "m"))
        delta = minutes.get(key)
        if delta is None:
            minutes[key] = delta = Rollup()
        delta.add_window(w, m.vector(w))
        ack.stored.append(w.seq)
    tx.insert_windows(window_rows)
    feedback_rows = [
        (b.device, b.windows[i].seq, b.windows[i].model, b.windows[i].start, _compact(b.windows[i].feedback.to_dict()))
        for i in fresh
        if b.windows[i].feedback is not None
    ]
    if feedback_rows:
        tx.insert_feedback(feedback_rows)
    sample_rows = [
        (b.device, b.windows[i].model, x["day"], x["slot"], x["time"], x["id"], _compact(x["row"]),
         _compact(x["output"]), None if x["label"] is None else _compact(x["label"]))
        for i in fresh
        for x in b.windows[i].samples or ()
    ]
    if sample_rows:
        tx.upsert_samples(sample_rows, int(now // 86400) - SAMPLE_DAYS)
    for h, body in kpis:
        tx.set_model_kpi(h, body)
    tx.insert_audit(
        [
            (b.device, a["seq"], a.get("time"), a["event"], json.dumps(a, sort_keys=True, default=str), now)
            for a in b.audit
        ]
    )
    latest = max(b.windows, key=lambda w: w.seq_last or w.seq, default=None)
    tx.touch_device(
        b.device,
        now,
        latest.model if latest else None,
        latest.seq_last if latest else None,
        b.outbox,
    )
    ack.stored.sort()
    ack.duplicates.sort()
    return ack


def _body(w: Window) -> str:
    """A window as stored: compact JSON of its canonical dict."""
    return _compact(w.to_dict())


def _same_body(stored: str | None, body: str) -> bool:
    """Whether a replay carries the stored contents (byte-equal, else equal as JSON values:
    a body stored by another collector version may order its keys differently)."""
    if stored is None or stored == body:
        return stored is not None
    try:
        return bool(json.loads(stored) == json.loads(body))
    except ValueError:
        return False


class Writer:
    """The one thread per process that writes: queued batches are committed in groups."""

    def __init__(
        self,
        storage: Storage,
        clock: Callable[[], float] = time.time,
        max_pending: int = 2000,
        max_group: int = 128,
        on_group: Callable[[int, float], None] | None = None,
    ) -> None:
        self._storage = storage
        self._clock = clock
        self._max_pending = max_pending
        self._max_group = max_group
        self._on_group = on_group
        self._queue: queue.Queue[tuple[Batch, concurrent.futures.Future[Ack | Rejected]] | None] = queue.Queue()
        self._known: dict[str, ModelInfo] = {}
        self._thread = threading.Thread(target=self._run, name="mlpack-collector-writer", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Finish what is queued, then end the thread."""
        if self._thread.is_alive():
            self._queue.put(None)
            self._thread.join(timeout)

    @property
    def pending(self) -> int:
        return self._queue.qsize()

    def submit(self, batch: Batch) -> concurrent.futures.Future[Ack | Rejected]:
        if self._queue.qsize() >= self._max_pending:
            raise Rejected(503, "collector: too many uploads waiting to be written, retry later", retry_after=2)
        fut: concurrent.futures.Future[Ack | Rejected] = concurrent.futures.Future()
        self._queue.put((batch, fut))
        return fut

    def _run(self) -> None:
        stopping = False
        while not stopping:
            item = self._queue.get()
            if item is None:
                break
            group = [item]
            while len(group) < self._max_group:
                try:
                    nxt = self._queue.get_nowait()
                except queue.Empty:
                    break
                if nxt is None:
                    stopping = True
                    break
                group.append(nxt)
            self._write_group(group)

    def _write_group(self, group: list[tuple[Batch, concurrent.futures.Future[Ack | Rejected]]]) -> None:
        batches = [b for b, _ in group]
        t0 = time.perf_counter()
        outcomes: list[Ack | Rejected]
        for attempt in range(_RETRIES):
            try:
                outcomes = apply_batches(self._storage, batches, self._known, self._clock())
                break
            except StorageError as exc:
                log.warning("ingest: write of %d batches failed (attempt %d): %s", len(batches), attempt + 1, exc)
                time.sleep(0.05 * (attempt + 1))
            except Exception as exc:  # a bug must not leave devices waiting forever
                log.exception("ingest: unexpected failure writing %d batches", len(batches))
                outcomes = [Rejected(503, f"collector: internal error ({exc.__class__.__name__}), retry later", 5)] * len(batches)
                break
        else:
            outcomes = [Rejected(503, "collector: storage unavailable, retry later", retry_after=5)] * len(batches)
        if self._on_group is not None:
            self._on_group(len(batches), time.perf_counter() - t0)
        for (_, fut), out in zip(group, outcomes):
            fut.set_result(out)
