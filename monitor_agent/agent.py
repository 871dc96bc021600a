"""The agent inside a serving process: recorder + outbox + system sampler + uploader.

The runtime builds a :class:`ModelInfo` from the bundle it opened (folder or archive
appended to the executable: the agent never reads bundle files) and calls
:meth:`Agent.open`; ``Model.predict`` feeds ``agent.recorder``. Two ways to run it:

* **long-running** (``serve``, ``agent run``): :meth:`Agent.start` / :meth:`Agent.stop`.
  Two daemon threads: one closes windows on time (so requests never wait for the
  outbox's fsync), samples the system, checkpoints the open window every
  ``checkpoint_seconds`` and stores the checkpoints dead processes left; the other
  uploads (only when a collector is configured).
* **one-shot** (batch ``predict``): ``Agent.open(..., deferred=True)`` and no
  :meth:`Agent.start`. Nothing touches the disk or loads SQLite, psutil or HTTP until a
  window is stored or checkpointed: windows close from ``record`` (``auto_roll``) and at
  :meth:`stop`, ``record`` checkpoints between chunks every ``checkpoint_seconds`` and
  ``checkpoint_rows``, and each stored window gets one system sample. A 0.2 s process
  thus pays for the agent only at exit (benchmarks/executable.py), and one that recorded
  nothing stores nothing.

Checkpoints (:meth:`Agent.checkpoint`) bound what a ``kill -9`` or a power cut loses to
the rows of the last ``checkpoint_seconds`` plus one write: the next process to open the
outbox stores a dead process's last checkpoint as a normal window (see
:mod:`.outbox` and :mod:`._checkpoint`). One lock orders checkpoints and window stores
within a process, so a checkpoint of a window already stored is never written.

Everything the threads do is also callable directly (:meth:`tick`, :meth:`sync`), which
is how tests drive the agent with an injected clock and transport. The outbox, the
uploader and the psutil sampler are made on first use, so a process imports only the
parts it runs.
"""

from __future__ import annotations

import collections
import json
import math
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlpack_edge.errors import AgentError, BundleError, MlpackError
from mlpack_edge.monitor_agent._log import log
from mlpack_edge.monitor_agent.config import AgentConfig, load_config
from mlpack_edge._record import Frozen
from mlpack_edge._digest import sha256_hex
from mlpack_edge.monitor_agent._thresholds import Thresholds
from mlpack_edge.monitor_agent._ids import IdMaker, IdRun, IdSpan  # a tiny module: remember() needs the types
from mlpack_edge.monitor_agent.kpi import kpi_reference
from mlpack_edge.monitor_agent.profile import Profile
from mlpack_edge.monitor_agent.recorder import Recorder
from mlpack_edge.monitor_agent.system import DEFAULT_SAMPLE_SECONDS, Sampler, SystemSampler

if TYPE_CHECKING:  # imported where used: a one-shot predict loads them only at exit, if at all
    import random

    from mlpack_edge.monitor_agent import _checkpoint
    from mlpack_edge.monitor_agent.feedback import FeedbackStore, Target
    from mlpack_edge.monitor_agent.outbox import Outbox
    from mlpack_edge.monitor_agent.status import StatusReport
    from mlpack_edge.monitor_agent.transport import Transport
    from mlpack_edge.monitor_agent.uploader import SyncResult, Uploader
    from mlpack_edge.monitor_agent.wire import Window

__all__ = ["ModelInfo", "Agent"]


CHECKED_CAPS_BELOW = 16 * 1024 * 1024
RECOVER_SECONDS = 10.0  # how often a long-running agent looks for dead processes' checkpoints
TICK_SECONDS = 1.0
REMEMBER_ROWS = 50_000  # one-shot: prediction ids buffered before they go to the join store
# Long-running: ids buffered before the tick thread is woken to write them, rather than at its
# next tick. A second of ids held as Python objects (list, str, tuple per request: ~250 B a
# row) was ~2.5 MB of a loaded single-row serve's memory at 10k requests/s, more with batches;
# 2,048 rows bound it near 0.5 MB for a transaction (no fsync: synchronous=NORMAL) every ~0.2 s.
TICK_DRAIN_ROWS = 2_048
# A run of generated ids (a batch request's) is held as an IdSpan and its predictions array,
# ~9 B a row against ~250 for a single id: it counts one row per this many of its ids (plus
# one) towards TICK_DRAIN_ROWS. Batches of 100 then drain ~79 requests a transaction instead
# of ~20 (fleet_faults: tick thread 7.3 -> 4.7 us a request, process_time; a quarter of the
# wakes). 16 (~290 a transaction, 4.2 us) cost serve ~2.5 MB more USS under batch load.
RUN_IDS_PER_HELD_ROW = 4
# How often (at most) the tick thread hands the C heap's free pages back to the OS (glibc's
# malloc_trim) after it wrote something: opening the stores and writing ids leave freed but
# kept pages behind (~1.2 MB of an idle serve's 31 MB after start); a trim costs 0.1-0.3 ms of
# this thread (a few ms the first time), the GIL released meanwhile.
TRIM_SECONDS = 5.0
_SPOOL_MAX_IDS = 10_000  # one-shot: more ids than this go to the join store at exit, not the spool (_spool.MAX_IDS)


class ModelInfo(Frozen):
    """What the agent needs to know about the model it watches."""

    __slots__ = ("content_hash", "name", "version", "profile", "thresholds", "classes", "kpi")
    _fields = __slots__
    content_hash: str  # sha256 of the bundle's manifest.json bytes
    name: str
    version: str
    profile: Profile
    thresholds: Thresholds
    #: Classes in prediction-code order (``str``), ``None`` for regression: what labels are.
    classes: tuple[str, ...] | None
    #: What production KPIs are judged against (:func:`kpi_reference`): task, classes, the
    #: positive class, the build's held-out metrics and its gates. ``None``: unknown.
    kpi: dict[str, Any] | None

    def __init__(
        self,
        content_hash: str,
        name: str,
        version: str,
        profile: Profile,
        thresholds: Thresholds | None = None,
        classes: tuple[str, ...] | None = None,
        kpi: dict[str, Any] | None = None,
    ) -> None:
        s = object.__setattr__
        s(self, "content_hash", content_hash)
        s(self, "name", name)
        s(self, "version", version)
        s(self, "profile", profile)
        s(self, "thresholds", Thresholds() if thresholds is None else thresholds)
        s(self, "classes", classes)
        s(self, "kpi", kpi)

    def wire(self) -> dict[str, Any]:
        """The ``models[hash]`` entry of an upload batch (``kpi``: collectors before it ignore it)."""
        out: dict[str, Any] = {"name": self.name, "version": self.version, "profile": self.profile.to_dict()}
        if self.kpi is not None:
            out["kpi"] = self.kpi
        return out

    @property
    def target(self) -> Target:
        from mlpack_edge.monitor_agent.feedback import Target

        return Target(self.classes)

    @classmethod
    def from_bundle_bytes(cls, manifest: bytes, profile: bytes, source: str = "bundle") -> ModelInfo:
        """From the raw ``manifest.json`` and ``profile.json`` bytes (wherever the bundle lives)."""
        try:
            data = json.loads(manifest)
            prof = json.loads(profile)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise BundleError(f"{source}: manifest.json or profile.json is not valid JSON ({exc})") from None
        if not isinstance(data, dict) or not isinstance(data.get("name"), str) or not isinstance(
            data.get("version"), str
        ):
            raise BundleError(f"{source}/manifest.json: expected name and version strings")
        drift = data.get("drift")
        if drift is not None and not isinstance(drift, dict):
            raise BundleError(f"{source}/manifest.json: 'drift' must be an object")
        try:
            thresholds = Thresholds.from_dict(drift)
        except (TypeError, ValueError) as exc:
            raise BundleError(f"{source}/manifest.json: drift thresholds must be numbers ({exc})") from None
        kpi = kpi_reference(data)
        return cls(
            content_hash=sha256_hex(manifest),
            name=data["name"],
            version=data["version"],
            profile=Profile.from_dict(prof, f"{source}/profile.json"),
            thresholds=thresholds,
            classes=None if kpi is None or kpi["task"] == "regression" else tuple(kpi["classes"]),
            kpi=kpi,
        )

    @classmethod
    def from_bundle_dir(cls, bundle_dir: str | os.PathLike[str]) -> ModelInfo:
        """Read a bundle folder's manifest and profile (integrity is the runtime's job)."""
        d = Path(bundle_dir)
        try:
            return cls.from_bundle_bytes((d / "manifest.json").read_bytes(), (d / "profile.json").read_bytes(), str(d))
        except OSError as exc:
            raise BundleError(f"{d}: cannot read {Path(exc.filename or '').name} ({exc.strerror})") from None


class Agent:
    """Telemetry for one model in one process; see the module docstring."""

    def __init__(
        self,
        model: ModelInfo,
        state_dir: Path,
        config: AgentConfig,
        recorder: Recorder,
        sampler: Sampler | None,
        clock: Callable[[], float],
        sample_seconds: float = DEFAULT_SAMPLE_SECONDS,
        transport: Transport | None = None,
        rng: random.Random | None = None,
        deferred: bool = False,
    ) -> None:
        self.model = model
        self.state_dir = state_dir
        self.config = config
        self.recorder = recorder
        self._sampler = sampler
        self._clock = clock
        self._sample_seconds = sample_seconds
        self._transport = transport
        self._rng = rng
        self._deferred = deferred
        self._started = False
        self._outbox: Outbox | None = None
        self._uploader: Uploader | None = None
        self._feedback: FeedbackStore | None = None
        self._ids: IdMaker | None = None
        self._remembered: collections.deque[tuple[list[str] | IdSpan, Any, float]] = collections.deque()
        # What the remembered ids hold (in single-id rows, see RUN_IDS_PER_HELD_ROW), as totals
        # in (written by remember only) and out (by the drains, under _draining only): one
        # counter with += on the request thread and -= on the tick thread lost updates when
        # the GIL changed hands between the tick's read and write (its -= called sum).
        self._held_in = self._held_out = 0
        self._drain_rows = REMEMBER_ROWS  # TICK_DRAIN_ROWS once started
        self._wake = threading.Event()  # the tick thread's: ids to write (or stop)
        self._writes = 0  # ids drained, windows stored, checkpoints written: when a malloc_trim may help
        self._trim_mark = -1  # _writes at the last malloc_trim
        self._draining = threading.Lock()  # orders drains of the buffers and label joins (see add_labels)
        self._to_capture: collections.deque[tuple[list[tuple[str, dict[str, Any], Any]], float]] = collections.deque()
        self._next_handoff = 0.0
        self._opening = threading.Lock()
        self._next_sample = 0.0
        self._next_checkpoint = 0.0
        self._next_recover = 0.0
        self._persist = threading.Lock()  # orders checkpoints and window stores (module docstring)
        self._owner: _checkpoint.Owner | None = None
        self._stored_start = float("-inf")  # start of the last window this process stored
        self._checkpointed: tuple[Any, ...] | None = None  # what the last checkpoint held
        self._store_failed = False  # a window could not be stored: its checkpoint must outlive us
        self._checkpoint_logged = float("-inf")
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._stopped = False
        self._spooled: list[Window] | None = None  # at a one-shot exit: windows kept for the spool
        self.last_sync: SyncResult | None = None

    @classmethod
    def open(
        cls,
        model: ModelInfo,
        state_dir: str | os.PathLike[str],
        config: AgentConfig | None = None,
        *,
        clock: Callable[[], float] = time.time,
        transport: Transport | None = None,
        rng: random.Random | None = None,
        sampler: Sampler | None = None,
        sample_seconds: float = DEFAULT_SAMPLE_SECONDS,
        deferred: bool = False,
    ) -> Agent:
        """Get ready to record ``model`` into the state dir's outbox (``start`` runs threads).

        The outbox is opened (and the model registered in it) now, so a bad state dir
        fails here; with ``deferred`` (one-shot use, see the module docstring) only when
        the first window is stored. ``config`` defaults to :func:`load_config` (file +
        environment); ``sampler`` defaults to psutil (:class:`SystemSampler`).
        """
        state = Path(state_dir)
        config = load_config(state) if config is None else config
        if config.capture_rate > 0:
            try:
                check_capture(model, config)
            except AgentError as exc:  # install refuses it; a hand-edited agent.json keeps the rest of monitoring
                log.error("capture is off: %s", exc)
                config = config.replace(capture_rate=0.0)
        recorder = Recorder(model.profile, model.content_hash, window_seconds=config.window_seconds, clock=clock)
        agent = cls(
            model, state, config, recorder, SystemSampler(state) if sampler is None else sampler, clock,
            sample_seconds, transport, rng, deferred,
        )
        recorder.on_window = agent._store
        if config.checkpoint_seconds > 0:
            recorder.set_checkpoints(agent.checkpoint, config.checkpoint_seconds, config.checkpoint_rows)
        if not deferred:
            agent.outbox  # noqa: B018 - opens it: a bad state dir fails now, not at the first window
        return agent

    @property
    def outbox(self) -> Outbox:
        """The state dir's outbox, opened (and ``model`` registered) on first use."""
        if self._outbox is None:
            with self._opening:
                if self._outbox is None:
                    from mlpack_edge.monitor_agent.outbox import Outbox

                    outbox = Outbox.open(self.state_dir, self.config.cap_bytes, self._clock)
                    try:
                        m = self.model
                        wire, thresholds = m.wire(), m.thresholds.to_dict()
                        # A cap this large holds any model's windows: spare a one-shot
                        # predict's exit the estimate (it sizes the headroom of small caps).
                        if self.config.cap_bytes < CHECKED_CAPS_BELOW:
                            window_bytes = _window_bytes(m.profile)
                            outbox.expect(window_bytes)
                            smallest = outbox.smallest_cap(window_bytes, {"wire": wire, "thresholds": thresholds})
                        else:
                            smallest = 0
                        if self.config.cap_bytes < smallest:
                            raise AgentError(
                                f"outbox cap of {self.config.cap_bytes} bytes is too small for the telemetry windows"
                                f" of {m.name} {m.version}: the smallest workable cap is {smallest} bytes"
                                f" ({-(-smallest // 1024)} KiB; cap_bytes in agent.json or MLPACK_OUTBOX_CAP)"
                            )
                        outbox.register_model(m.content_hash, wire, thresholds)
                        if not self._deferred:  # a long-running agent: also rows whose owner file is gone
                            outbox.recover_checkpoints(orphans=True)
                    except BaseException:
                        outbox.close()
                        raise
                    self._outbox = outbox
        return self._outbox

    @property
    def uploader(self) -> Uploader:
        """Delivers the outbox to the collector (made on first use: HTTP is imported only then)."""
        if self._uploader is None:
            import random

            from mlpack_edge.monitor_agent.uploader import Uploader

            # No transport given: urllib with the config's TLS settings (CA file or system roots).
            self._uploader = Uploader(self.outbox, self.config, self._transport, self._rng or random.Random())
        return self._uploader

    @property
    def feedback(self) -> FeedbackStore:
        """The state folder's join store (``feedback.sqlite``), opened on first use."""
        if self._feedback is None:
            with self._opening:
                if self._feedback is None:
                    from mlpack_edge.monitor_agent.feedback import FeedbackStore

                    c = self.config
                    self._feedback = FeedbackStore(self.state_dir, c.feedback_join_seconds, c.feedback_max_pending,
                                                   self._clock, c.capture_max_rows_per_day)
        return self._feedback

    @property
    def _remembered_rows(self) -> int:
        """Ids remembered and not yet drained (or spooled): counted when asked (a one-shot exit), not per request."""
        return sum(map(len, next(zip(*self._remembered), ())))

    def new_ids(self, n: int) -> list[str]:
        """``n`` fresh prediction ids (unique across processes and restarts)."""
        if self._ids is None:
            self._ids = IdMaker()
        return [self._ids.one()] if n == 1 else self._ids.many(n)

    def remember(self, ids: list[str], predictions: Any) -> None:
        """Keep what a later label for ``ids`` is compared with (class indices or values).

        Only a list append here: the tick thread (every tick, and woken every
        :data:`TICK_DRAIN_ROWS` rows) or, one-shot, the exit or every :data:`REMEMBER_ROWS`
        rows writes them to the join store, so a one-shot ``predict`` loads SQLite only at
        exit, as the rest of the agent does.
        """
        if type(ids) is IdRun:  # held without its strings (the reply has them)
            self._held_in += 1 + len(ids) // RUN_IDS_PER_HELD_ROW
            ids = ids.span()
        else:
            self._held_in += len(ids)
        self._remembered.append((ids, predictions, self._clock()))
        if self._held_in - self._held_out >= self._drain_rows:
            if not self._started:
                self._drain_remembered()
            elif not self._wake.is_set():
                self._wake.set()  # the tick thread writes them now (see TICK_DRAIN_ROWS)

    @property
    def capture_rate(self) -> float:
        """Share of predicted rows offered to the capture reservoir (0: capture is off, the default)."""
        return self.config.capture_rate

    def capture(self, ids: list[str], rows: list[dict[str, Any]], outputs: list[Any]) -> None:
        """Offer sampled input rows (with their prediction) to the day's reservoir; ``capture_exclude``
        columns are dropped here, before anything is written."""
        drop = self.config.capture_exclude
        kept = [{k: _finite(v) for k, v in r.items() if k not in drop} for r in rows]
        self._to_capture.append((list(zip(ids, kept, outputs)), self._clock()))

    def _drain_remembered(self) -> None:
        """Hand what :meth:`remember` and :meth:`capture` buffered to the join store (opening it) and write it."""
        if not self._remembered and not self._to_capture:
            return
        with self._draining:  # a label must never be joined while its prediction is between the buffers
            self._drain_locked()

    def _drain_locked(self) -> None:
        store, h = self.feedback, self.model.content_hash
        while True:
            try:
                items, t = self._to_capture.popleft()
            except IndexError:
                break
            store.capture(h, items, t)
        pending = self._remembered
        items = [pending.popleft() for _ in range(len(pending))]  # what is there now; later ones wait
        if items:
            taken = next(zip(*items))
            rows = sum(map(len, taken))
            spans = list(map(len, filter(IdSpan.__instancecheck__, taken)))  # C loops: ~2,048 items a drain
            self._held_out += rows - sum(spans) + len(spans) + sum(map(RUN_IDS_PER_HELD_ROW.__rfloordiv__, spans))
            store.remember_many(h, items)
        if store.flush():
            self._writes += 1

    def _has_feedback_store(self) -> bool:
        from mlpack_edge.monitor_agent.feedback import DB_NAME

        return (self.state_dir / DB_NAME).exists()

    def add_labels(self, items: list[tuple[str, Any]]) -> list[str]:
        """Join ground-truth labels to this model's predictions; durable on return (see :mod:`.feedback`).

        A one-shot process (never started) hands the counts to the outbox at once.
        """
        with self._draining:
            self._drain_locked()
            outcomes = self.feedback.add_labels(self.model.content_hash, self.model.target, items)
        if not self._started:
            self.feedback.handoff(self.outbox)
        return outcomes

    def _store(self, window: Window) -> None:
        """The recorder's ``on_window``: a closed window into the outbox (one log line if it cannot).

        One-shot (deferred, never started), the window gets its system sample here.
        """
        if self._deferred and not self._started and self._sampler is not None:
            try:  # once: a one-shot process samples at exit only (SystemSampler.once spares psutil's import)
                sample = getattr(self._sampler, "once", self._sampler)
                window.system.add(sample())
            except Exception:  # no sample is better than no window
                log.exception("system sample failed")
        if self._spooled is not None:
            self._spooled.append(window)
            return
        with self._persist:
            try:
                self.outbox.add_window(window, self._owner.name if self._owner is not None else None)
            except MlpackError as exc:
                self._store_failed = True
                log.error("telemetry window %s..%s not stored: %s", window.start, window.end, exc)
            else:
                self._stored_start = max(self._stored_start, window.start)
                self._writes += 1

    def _may_spool(self) -> bool:
        """Whether this exit writes the spool (:mod:`._spool`) instead of the two SQLite stores:
        a one-shot run that opened neither store, checkpointed nothing, captured no rows and
        remembered few ids, while the spool has room."""
        if not self._deferred or self._started or self._outbox is not None or self._feedback is not None:
            return False
        if self._owner is not None or self._to_capture or self._remembered_rows > _SPOOL_MAX_IDS:
            return False
        from mlpack_edge.monitor_agent import _spool

        return _spool.room(self.state_dir)

    def _write_spool(self) -> bool:
        """Write the closed windows and remembered ids to the spool; ``False`` (windows stored the
        usual way, ids left for the feedback store) if it cannot be written."""
        from mlpack_edge.monitor_agent import _spool

        windows, self._spooled = self._spooled or [], None
        m = self.model
        parts: dict[str, dict[str, Any]] = {}
        if windows:
            parts["window"] = {
                "model": {"hash": m.content_hash, "wire": m.wire(), "thresholds": m.thresholds.to_dict()},
                "windows": [w.to_dict() for w in windows],
            }
        if self._remembered_rows:
            parts["ids"] = {
                "model": m.content_hash,
                "items": [[list(ids), [float(p) for p in preds], t] for ids, preds, t in self._remembered],
            }
        if parts:
            try:
                _spool.write(self.state_dir, parts)
            except (OSError, ValueError) as exc:
                log.error("telemetry spool not written (%s): storing it directly", exc)
                for w in windows:
                    self._store(w)
                return False
        self._remembered.clear()
        self._held_out = self._held_in
        return True

    def checkpoint(self) -> bool:
        """Durably checkpoint the open window now; ``False`` when there was nothing new to write.

        Called by the tick thread (``serve``) or by ``record`` between chunks (one-shot
        ``predict``). The first checkpoint opens the outbox (if deferred) and takes this
        process's owner file (:mod:`._checkpoint`).
        """
        with self._persist:
            snap = self.recorder.snapshot()
            if snap is None or snap.start <= self._stored_start:
                return False  # nothing recorded, or a window this process already stored
            key = (snap.start, snap.requests, snap.rows, sum(snap.errors.values()), snap.system.samples)
            if key == self._checkpointed:
                return False  # idle: no write (and no fsync) for nothing
            try:
                outbox = self.outbox
                if self._owner is None:
                    from mlpack_edge.monitor_agent._checkpoint import Owner

                    try:
                        self._owner = Owner(self.state_dir)
                    except OSError as exc:
                        raise AgentError(f"{self.state_dir}: cannot create a checkpoint owner file ({exc.strerror})") from None
                outbox.save_checkpoint(snap, self._owner.name)
            except MlpackError as exc:
                now = time.monotonic()
                if now - self._checkpoint_logged >= 60:  # twice a second is too often to repeat it
                    self._checkpoint_logged = now
                    log.error("telemetry checkpoint of window %s not stored: %s", snap.start, exc)
                return False
            self._checkpointed = key
            self._writes += 1
            return True

    # ------------------------------------------------------------------ one step at a time

    def tick(self) -> None:
        """Close the window when due, sample the system when due, checkpoint the open window
        when due, and now and then store the checkpoints of processes that died."""
        now = self._clock()
        self.recorder.roll(now)  # first, so a sample taken now lands in the window it belongs to
        if self._sampler is not None and now >= self._next_sample:
            self.recorder.add_system(self._sampler())
            self._next_sample = now + self._sample_seconds
        every = self.config.checkpoint_seconds
        if every > 0 and now >= self._next_checkpoint:
            self.checkpoint()
            self._next_checkpoint = now + every
        if self._remembered or self._to_capture:
            self._drain_remembered()
        if self._feedback is not None:
            self._feedback.flush()
            if now >= self._next_handoff:
                self._next_handoff = now + self.config.window_seconds
                self._feedback.handoff(self.outbox)
        if now >= self._next_recover:
            self._next_recover = now + RECOVER_SECONDS
            self.outbox.recover_checkpoints(skip_owner=self._owner.name if self._owner is not None else None)

    def sync(self) -> SyncResult:
        """One upload pass now (see :meth:`Uploader.sync`)."""
        self.last_sync = self.uploader.sync()
        return self.last_sync

    def status(self, hours: float = 24.0) -> StatusReport:
        """Drift status over the last ``hours``, including the window still open here."""
        now = self._clock()
        since = now - hours * 3600
        windows = self.outbox.recent(
            self.model.content_hash, since, skip_owner=self._owner.name if self._owner is not None else None
        )
        live = self.recorder.snapshot()
        if live is not None:
            windows.append(live)
        m = self.model
        if self._feedback is not None:  # labels joined here but not yet handed to the outbox
            unsent = self._feedback.unsent(m.content_hash)
            if unsent is not None:
                from mlpack_edge.monitor_agent.wire import Window

                windows.append(Window(model=m.content_hash, seq=0, start=now, end=now, feedback=unsent))
        from mlpack_edge.monitor_agent.status import build_status

        return build_status(
            m.content_hash, m.name, m.version, m.profile, m.thresholds, windows, since, now,
            self.outbox.accounting().to_dict(), m.kpi,
        )

    def metrics_text(self, hours: float = 24.0) -> str:
        """Prometheus text for the device's ``/metrics`` endpoint."""
        from mlpack_edge.monitor_agent.status import render_metrics

        return render_metrics(self.status(hours))

    # ------------------------------------------------------------------ threads

    def start(self) -> None:
        """Run the background threads (idempotent)."""
        if self._threads or self._stopped:
            return
        self._stop.clear()
        self._started = True
        self._drain_rows = TICK_DRAIN_ROWS
        self.outbox  # noqa: B018 - a deferred agent that becomes long-running opens it now
        if self._has_feedback_store():
            self.feedback  # noqa: B018 - opened now: counts a dead process left are handed over by the tick
        self.recorder.auto_roll = False  # the tick thread closes windows and checkpoints, off the request path
        self._threads = [threading.Thread(target=self._tick_loop, name="mlpack-agent-tick", daemon=True)]
        if self.config.can_upload:
            self.uploader  # noqa: B018 - made here, not in the thread (imports are not thread-friendly)
            self._threads.append(
                threading.Thread(target=self._upload_loop, name="mlpack-agent-upload", daemon=True)
            )
        for t in self._threads:
            t.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the threads and store the open window; final (a second call does nothing)."""
        if self._stopped:
            return
        self._stopped = True
        self._stop.set()
        self._wake.set()
        for t in self._threads:
            t.join(timeout)
        busy = any(t.is_alive() for t in self._threads)  # an upload stuck in a slow request
        self._threads = []
        self.recorder.set_checkpoints(None, 0, 0)
        self.recorder.auto_roll = True
        spool = self._may_spool()
        if spool:
            self._spooled = []
        self.recorder.close()  # stores the open window (and deletes its checkpoint with it)
        # Spooled: the window and ids wait in the spool for the next store to open (which also
        # hands over labels left behind); no SQLite at this exit.
        spooled = spool and self._write_spool()
        if not spooled and (
            self._remembered or self._to_capture or self._feedback is not None or self._has_feedback_store()
        ):
            try:
                self._drain_remembered()
                self.feedback.flush()
                self.feedback.handoff(self.outbox)
            except MlpackError as exc:
                log.error("feedback not handed to the outbox: %s", exc)
            if self._feedback is not None:
                self._feedback.close()
        owner = self._owner
        if owner is not None:
            if self._store_failed:  # keep the last checkpoint: the next process stores it
                owner.release(keep_file=True)
            else:
                try:
                    self.outbox.drop_checkpoints(owner.name)
                    owner.release()
                except MlpackError as exc:
                    log.error("could not clear this process's telemetry checkpoint: %s", exc)
                    owner.release(keep_file=True)
        if not busy and self._outbox is not None:
            self._outbox.close()

    def __enter__(self) -> Agent:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _tick_loop(self) -> None:
        trim = _malloc_trim()
        next_trim = 0.0
        while not self._stop.is_set():
            try:
                self.tick()
            except Exception:  # keep monitoring alive; the next tick may succeed
                log.exception("telemetry tick failed")
            if trim is not None and time.monotonic() >= next_trim and self._wrote_since_trim():
                trim(0)
                next_trim = time.monotonic() + TRIM_SECONDS
            # Wake at the window boundary (not up to a second late): records arriving
            # between the boundary and this tick still count in the closing window.
            now = self._clock()
            until = min(TICK_SECONDS, self.recorder.window_end - now + 0.001)
            if self.config.checkpoint_seconds > 0:
                until = min(until, self._next_checkpoint - now)
            self._wake.wait(max(0.001, until))
            self._wake.clear()  # before the tick: ids remembered from here on wake the next one

    def _wrote_since_trim(self) -> bool:
        """Whether this agent wrote to its stores since the last call (the first call: yes, start opened them)."""
        if self._writes == self._trim_mark:
            return False
        self._trim_mark = self._writes
        return True

    def _upload_loop(self) -> None:
        def remember(result: SyncResult) -> None:
            self.last_sync = result

        self.uploader.run(self._stop, self.config.window_seconds, remember)

    def __repr__(self) -> str:
        return f"Agent(model={self.model.name!r}, state_dir={str(self.state_dir)!r}, config={self.config!r})"


def _malloc_trim() -> Callable[[int], int] | None:
    """glibc's ``malloc_trim`` (free heap pages back to the OS), ``None`` where there is none."""
    import ctypes

    try:
        return ctypes.CDLL(None).malloc_trim  # type: ignore[no-any-return]
    except (OSError, AttributeError):  # not glibc
        return None


def _finite(v: Any) -> Any:
    """A captured value as JSON can carry it: NaN and infinities (missing) become ``None``."""
    return None if isinstance(v, float) and not math.isfinite(v) else v


def check_capture(model: ModelInfo, config: AgentConfig) -> None:
    """Refuse a capture setting whose day of rows could not fit the outbox (a quarter of its cap)."""
    row = {f.name: 123456.789 if f.kind == "numeric" else "x" * 12 for f in model.profile.features
           if f.name not in config.capture_exclude}
    sample = {"day": 20000, "slot": 999, "time": 1.7e9, "id": "0123abcd-fffff", "row": row, "output": "x" * 12, "label": "x" * 12}
    per_row = len(json.dumps(sample, separators=(",", ":"))) // 2  # zlib level 1 halves such rows at least
    day = per_row * config.capture_max_rows_per_day
    if day > config.cap_bytes // 4:
        raise AgentError(
            f"capture_max_rows_per_day {config.capture_max_rows_per_day} keeps about {day} bytes of rows a day for"
            f" {model.name} ({per_row} bytes per row), more than a quarter of the outbox cap ({config.cap_bytes} bytes):"
            f" lower capture_max_rows_per_day to at most {max(1, config.cap_bytes // 4 // per_row)} or raise cap_bytes"
        )


def _window_bytes(profile: Profile) -> int:
    """About how many bytes (packed, as the outbox stores it) a busy window of ``profile`` takes:
    every bin counted, a latency spread over 200 histogram buckets, all system stats."""
    import random
    import zlib

    from mlpack_edge.monitor_agent.histogram import LatencyHistogram
    from mlpack_edge.monitor_agent.wire import BinCounts, SystemStats, Window

    rnd = random.Random(0)

    def counts(n: int) -> BinCounts:
        return BinCounts([rnd.randrange(10**6) for _ in range(n)], rnd.randrange(10**4), rnd.randrange(10**4),
                         rnd.randrange(10**4), rnd.randrange(10**4))

    features = {f.name: counts(f.n_bins) for f in profile.features}
    pred = counts(profile.prediction.n_bins) if profile.prediction is not None else None
    first = LatencyHistogram.index(0.0005)
    w = Window(model="0" * 64, seq=10**9, start=1.7e9, end=1.7e9 + 60.123456, requests=10**6, rows=10**7,
               errors={"validation": 12345, "runtime": 123}, latency=LatencyHistogram(
                   {first + i: rnd.randrange(1, 10**5) for i in range(200)}),
               features=features, predictions=pred,
               system=SystemStats(samples=6, proc_cpu=123.4, proc_rss_sum=6.1e8, proc_rss_max=1.1e8, cpu=345.6,
                                  mem=234.5, disk_free_min=1.23e10))
    return len(zlib.compress(json.dumps(w.to_dict(), separators=(",", ":")).encode(), 1))
