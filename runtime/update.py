"""Applying what the collector asks of this device during a rollout: install a release, or roll back.

The collector's offers arrive piggy-backed on the ingest acknowledgement (or from the
light poll ``GET /api/v1/updates``, which ``<model> update`` uses). For this model's
offer:

* ``install`` a release whose content hash is not the one running: download the bundle
  (when the release was built on the frozen runtime this device runs, only the bundle
  travels; otherwise the runtime too, and the assembled executable installs itself:
  :mod:`mlpack_edge.runtime._whole_update`; :mod:`mlpack_edge.monitor_agent.download`
  resumes a cut download and checks its sha256), then the same path as a manual
  ``install --bundle``: the signature against
  this device's own trust policy, every file, the new version's ``verify`` (golden set on
  this CPU), an atomic switch of ``current``. Any refusal leaves the old version serving.
* ``rollback`` when the running build is the one a failed or aborted rollout installed:
  ``previous`` becomes current again.

Each step is an audit event naming the rollout (``update_offered``,
``update_downloaded``, ``update_installed``, ``update_failed``, ``update_rolled_back``),
delivered to the collector with the telemetry: that is how the collector learns that a
stage failed. ``state/update.json`` remembers the last offer acted on, so a refused
release is not downloaded and refused again at every sync; a new rollout (or a new
release) is tried afresh. A device that cannot reach the collector keeps running what it
has; one that was offline catches up at its next sync.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlpack_edge._fs import atomic_write_text
from mlpack_edge.errors import MlpackError
from mlpack_edge.runtime import _audit
from mlpack_edge.runtime import install as _install
from mlpack_edge.runtime._whole_update import RUNTIME_SUFFIX, install_whole, runtime_file, runtime_needed
from mlpack_edge.runtime.manifest import read_manifest
from mlpack_edge.runtime.shadow import LiveShadow, ShadowStats, compare

if TYPE_CHECKING:
    from mlpack_edge.monitor_agent.wire import Window
    from mlpack_edge.runtime.model import Model

__all__ = ["UpdateOutcome", "apply_offers", "ServeUpdater", "judge", "finish", "restart_into", "installed_hash", "poll_offers", "UPDATE_STATE", "DOWNLOADS"]

log = logging.getLogger("mlpack_edge.runtime")

UPDATE_STATE = "update.json"
DOWNLOADS = "downloads"


@dataclass(frozen=True)
class UpdateOutcome:
    """What :func:`apply_offers` did: ``none``, ``installed``, ``rolled back``, ``failed``,
    ``skipped`` (this offer failed here before) or ``unreachable`` (download to be resumed)."""

    action: str
    detail: str = ""
    version: str | None = None


def installed_hash(prefix: Path, name: str) -> str | None:
    """Content hash of the installed current version's bundle, or ``None`` when nothing is current."""
    current = Path(prefix) / name / _install.CURRENT
    if not current.is_symlink():
        return None
    return read_manifest(current / _install.BUNDLE_DIR).content_hash


def poll_offers(fetcher: Any, collector_url: str, headers: Mapping[str, str]) -> list[dict[str, Any]]:
    """The light poll: ``GET /api/v1/updates`` with the device's credentials."""
    from mlpack_edge.errors import UploadError

    reply = fetcher.get(collector_url.rstrip("/") + "/api/v1/updates", headers)
    if reply.status != 200:
        raise UploadError(f"update poll: HTTP {reply.status}: {reply.body[:200].decode('utf-8', 'replace')}")
    try:
        updates = json.loads(reply.body).get("updates", [])
    except (ValueError, AttributeError):
        raise UploadError("update poll: the collector's reply is not JSON") from None
    return [u for u in updates if isinstance(u, dict)]


def _state(state_dir: Path) -> dict[str, Any]:
    try:
        doc = json.loads((state_dir / UPDATE_STATE).read_text(encoding="utf-8"))
        return doc if isinstance(doc, dict) else {}
    except (OSError, ValueError):
        return {}


def _remember(state_dir: Path, offer: Mapping[str, Any], state: str, reason: str | None = None) -> None:
    doc = {"rollout": offer.get("rollout"), "hash": offer.get("hash"), "action": offer.get("action"), "state": state,
           "reason": reason}
    try:
        atomic_write_text(state_dir / UPDATE_STATE, json.dumps(doc, sort_keys=True))
    except OSError as exc:
        log.warning("cannot write %s (%s)", state_dir / UPDATE_STATE, exc.strerror)


def _event(state_dir: Path, event: str, offer: Mapping[str, Any], **detail: Any) -> None:
    body = {"rollout": offer.get("rollout"), "version": offer.get("version"), "hash": offer.get("hash"), **detail}
    warning = _audit.record(state_dir, event, body)
    if warning:
        log.warning("%s", warning)


def apply_offers(
    offers: Sequence[Mapping[str, Any]],
    *,
    prefix: Path,
    name: str,
    collector_url: str,
    headers: Mapping[str, str],
    fetcher: Any,
    payload: _install.Payload | None = None,
    verifier: _install.Verifier = _install.run_verify,
    systemd: _install.Systemd | None = None,
    live: Callable[[Model, Model, Mapping[str, Any]], bool] | None = None,
) -> UpdateOutcome:
    """Act on this model's offer among ``offers`` (see the module doc). Never raises for an
    expected failure: it becomes an audit event and an ``UpdateOutcome``.

    With a shadow time in the offer, ``live(current, candidate, offer)`` may start a live
    shadow (``serve``) and return True: the outcome is then ``shadowing`` and the caller
    finishes it (:func:`judge`, :func:`finish`). Otherwise the two models are compared on
    the golden probe inputs of both builds before installing.
    """
    from mlpack_edge.monitor_agent.download import DownloadError, download
    from mlpack_edge.monitor_agent.transport import TransportError

    prefix = Path(prefix).absolute()
    offer = next((o for o in offers if o.get("name") == name), None)
    if offer is None:
        return UpdateOutcome("none")
    state_dir = prefix / name / _install.STATE
    current = installed_hash(prefix, name)
    target = str(offer.get("hash", ""))
    before = _state(state_dir)
    same_offer = before.get("rollout") == offer.get("rollout") and before.get("hash") == target \
        and before.get("action") == offer.get("action")

    if offer.get("action") == "rollback":
        if current != target:
            return UpdateOutcome("none")
        try:
            result = _install.rollback(prefix, name, verifier=verifier, systemd=systemd)
        except MlpackError as exc:
            _event(state_dir, "update_failed", offer, reason=f"rollback: {exc}")
            _remember(state_dir, offer, "failed", str(exc))
            return UpdateOutcome("failed", f"rollback: {exc}")
        _event(state_dir, "update_rolled_back", offer, to_version=result.version, from_version=result.previous)
        _remember(state_dir, offer, "rolled_back")
        return UpdateOutcome("rolled back", f"rolled back to {result.version}", result.version)

    if offer.get("action") != "install":
        return UpdateOutcome("none", f"unknown action {offer.get('action')!r}")
    if current == target:
        if not (same_offer and before.get("state") == "installed"):
            _event(state_dir, "update_installed", offer, already=True)
            _remember(state_dir, offer, "installed")
        return UpdateOutcome("none", "already running it")
    if same_offer and before.get("state") == "failed":
        return UpdateOutcome("skipped", f"refused here before: {before.get('reason')}")
    if not same_offer:
        _event(state_dir, "update_offered", offer, from_hash=current)
        _remember(state_dir, offer, "offered")

    url = collector_url.rstrip("/") + str(offer.get("url", ""))
    try:
        archive = download(fetcher, url, headers, state_dir / DOWNLOADS, str(offer.get("sha256", "")),
                           int(offer.get("size", 0)))
    except TransportError as exc:
        return UpdateOutcome("unreachable", f"download paused ({exc}); it resumes at the next attempt")
    except DownloadError as exc:
        _event(state_dir, "update_download_failed", offer, reason=str(exc))
        return UpdateOutcome("unreachable", str(exc))
    got = archive.stat().st_size
    runtime = runtime_needed(offer, prefix, name)
    if runtime is not None:  # built on another frozen runtime: the whole payload travels
        try:
            got += download(fetcher, collector_url.rstrip("/") + str(runtime.get("url", "")), headers,
                            state_dir / DOWNLOADS, str(runtime.get("sha256", "")), int(runtime.get("size", 0)),
                            suffix=RUNTIME_SUFFIX).stat().st_size
        except TransportError as exc:
            return UpdateOutcome("unreachable", f"runtime download paused ({exc}); it resumes at the next attempt")
        except DownloadError as exc:
            _event(state_dir, "update_download_failed", offer, reason=str(exc))
            return UpdateOutcome("unreachable", str(exc))
    _event(state_dir, "update_downloaded", offer, bytes=got,
           **({"runtime": runtime["sha256"]} if runtime is not None else {}))
    if float(offer.get("shadow") or 0) > 0:
        try:
            current_model, candidate = _models(prefix / name, archive)
        except MlpackError as exc:
            return _failed(state_dir, offer, archive, str(exc))
        if live is not None and live(current_model, candidate, offer):
            _event(state_dir, "update_shadow", offer, phase="started", seconds=float(offer.get("shadow") or 0))
            _remember(state_dir, offer, "shadowing")
            return UpdateOutcome("shadowing", f"running {offer.get('version')} in shadow for {offer.get('shadow')} s")
        try:
            stats = compare(current_model, candidate, _probe_rows(current_model, candidate))
        except Exception as exc:  # never switch on a comparison that did not run: fail safe, say why
            return _failed(state_dir, offer, archive, f"shadow: the comparison failed here ({exc.__class__.__name__}: {exc})")
        reason = judge(state_dir, offer, stats)
        if reason is not None:
            return _failed(state_dir, offer, archive, reason)
    return finish(offer, archive, prefix=prefix, name=name, payload=payload, verifier=verifier, systemd=systemd)


def judge(state_dir: Path, offer: Mapping[str, Any], stats: ShadowStats) -> str | None:
    """Record the shadow phase's figures (an ``update_shadow`` event) and say why it fails, if it does."""
    reason = stats.verdict(float(offer.get("agreement_floor", 0.0)), float(offer.get("error_factor", 2.0)),
                           float(offer.get("p95_factor", 1.5)))
    _event(state_dir, "update_shadow", offer, phase="done", passed=reason is None, **stats.summary())
    return reason


def finish(offer: Mapping[str, Any], archive: Path, *, prefix: Path, name: str, payload: _install.Payload | None = None,
           verifier: _install.Verifier = _install.run_verify, systemd: _install.Systemd | None = None) -> UpdateOutcome:
    """Install a downloaded (and shadowed) candidate through the install path; events either way."""
    state_dir = prefix / name / _install.STATE
    runtime = runtime_needed(offer, prefix, name)
    if runtime is not None:
        return _finish_whole(offer, archive, runtime, prefix=prefix, name=name)
    try:
        base = payload if payload is not None else _install.current_payload()
        result = _install.install(_install.with_bundle(base, archive), prefix, verifier=verifier, systemd=systemd)
    except MlpackError as exc:
        return _failed(state_dir, offer, archive, str(exc))
    archive.unlink(missing_ok=True)
    _event(state_dir, "update_installed", offer, previous=result.previous)
    _remember(state_dir, offer, "installed")
    return UpdateOutcome("installed", f"{result.name} {result.version} is current (previous: {result.previous})",
                         result.version)


def _finish_whole(offer: Mapping[str, Any], archive: Path, runtime: Mapping[str, Any], *, prefix: Path,
                  name: str) -> UpdateOutcome:
    """The whole-payload install (:mod:`mlpack_edge.runtime._whole_update`); events either way."""
    state_dir = prefix / name / _install.STATE
    runtime_path = runtime_file(state_dir / DOWNLOADS, runtime)
    try:
        version = install_whole(archive, runtime, runtime_path, prefix, name)
    except MlpackError as exc:
        runtime_path.unlink(missing_ok=True)
        return _failed(state_dir, offer, archive, str(exc))
    runtime_path.unlink(missing_ok=True)
    archive.unlink(missing_ok=True)
    _, previous, _ = _install.installed_versions(prefix, name)
    _event(state_dir, "update_installed", offer, previous=previous, runtime=runtime.get("sha256"))
    _remember(state_dir, offer, "installed")
    return UpdateOutcome("installed", f"{name} {version} is current (previous: {previous}; new runtime "
                         f"{str(runtime.get('sha256'))[:12]})", version)


def _failed(state_dir: Path, offer: Mapping[str, Any], archive: Path, reason: str) -> UpdateOutcome:
    _event(state_dir, "update_failed", offer, reason=reason)
    _remember(state_dir, offer, "failed", reason)
    archive.unlink(missing_ok=True)
    return UpdateOutcome("failed", reason)


def _models(model_dir: Path, archive: Path) -> tuple[Model, Model]:
    """The running model and the candidate, the candidate checked against this device's trust."""
    from mlpack_edge.runtime._trust import TRUST_DIR, read_trust_dir
    from mlpack_edge.runtime.bundle import Bundle
    from mlpack_edge.runtime.model import Model

    current = Model(Bundle.open(model_dir / _install.CURRENT / _install.BUNDLE_DIR), threads=1)
    policy = read_trust_dir(model_dir / TRUST_DIR)
    candidate = Model(Bundle.open(archive, trust=policy, label=f"release {archive.name[:12]}"), threads=1)
    return current, candidate


def _probe_rows(current: Model, candidate: Model) -> list[dict[str, Any]]:
    """Rows to shadow on when there is no live traffic: the golden probe inputs of both builds."""
    rows: list[dict[str, Any]] = []
    for m in (current, candidate):
        golden = m.bundle.golden()
        if golden is not None:
            rows.extend(golden.rows)
    return rows


class ServeUpdater:
    """The uploader's ``on_updates`` hook in ``serve``: offers are applied in the upload thread
    while the running model keeps answering. With a shadow time, the candidate first runs
    on the live requests (:class:`~mlpack_edge.runtime.shadow.LiveShadow`, attached to the
    server) until that time is over; the next acknowledgement after it decides. Once
    ``current`` changed, ``on_switch`` lets ``serve`` restart into it."""

    def __init__(self, model_dir: Path, config: Any, fetcher: Any, server: Callable[[], Any],
                 on_switch: Callable[[UpdateOutcome], None], clock: Callable[[], float] | None = None,
                 emit: Callable[[Window], Any] | None = None) -> None:
        import time

        self.model_dir, self.config, self.fetcher, self._server = model_dir, config, fetcher, server
        self.on_switch = on_switch
        self.clock = clock or time.time
        #: Stores a telemetry window (the agent's outbox): the shadow figures travel as windows.
        self.emit = emit
        self._shadow_since = 0.0
        self.headers = {"Authorization": f"Bearer {config.token}"} if config.token else {}
        self.live: LiveShadow | None = None
        self.archive: Path | None = None

    @property
    def server(self) -> Any:
        return self._server()

    def __call__(self, offers: list[dict[str, Any]]) -> None:
        name = self.model_dir.name
        if self.server is None:  # not listening yet: the next acknowledgement brings the offer again
            return
        if self.live is not None:
            offer = next((o for o in offers if o.get("name") == name), None)
            same = offer is not None and offer.get("rollout") == self.live.offer.get("rollout") \
                and offer.get("action") == "install"
            if same and not self.live.done():
                self._emit_shadow()
                return
            outcome = self._end_shadow(same)
        else:
            outcome = apply_offers(offers, prefix=self.model_dir.parent, name=name,
                                   collector_url=self.config.collector_url, headers=self.headers,
                                   fetcher=self.fetcher, live=self._start)
        if outcome.action in ("installed", "rolled back"):
            self.on_switch(outcome)
        elif outcome.action in ("failed", "unreachable"):
            log.warning("update: %s: %s", outcome.action, outcome.detail)

    def _start(self, current: Model, candidate: Model, offer: Mapping[str, Any]) -> bool:
        from mlpack_edge.runtime.shadow import LiveShadow

        # Compare with the model that answers the requests (the one the server holds).
        self.live = LiveShadow(self.server.model, candidate, dict(offer), self.clock(), self.clock)
        self.archive = self.model_dir / _install.STATE / DOWNLOADS / f"{offer.get('sha256')}.tar.gz"
        self.server.shadow = self.live
        self._shadow_since = self.clock()
        return True

    def _emit_shadow(self) -> None:
        """The comparison since the last window as a telemetry window of the serving model
        (a ``shadow`` section only), so the collector shows it while the phase runs."""
        if self.emit is None or self.live is None:
            return
        section = self.live.take_window()
        if section is None:
            return
        from mlpack_edge.monitor_agent.wire import Window

        now = self.clock()
        window = Window(model=self.live.current.content_hash, seq=0, start=min(self._shadow_since, now), end=now,
                        shadow=section)
        self._shadow_since = now
        try:
            self.emit(window)
        except Exception:  # telemetry must never break the update; the audit event still carries the figures
            log.exception("shadow window could not be stored")

    def _end_shadow(self, still_wanted: bool) -> UpdateOutcome:
        live, archive = self.live, self.archive
        assert live is not None and archive is not None
        self.server.shadow = None
        stats = live.stop()
        self._emit_shadow()
        self.live = self.archive = None
        state_dir = self.model_dir / _install.STATE
        if not still_wanted:  # paused, aborted or replaced meanwhile: drop the candidate
            archive.unlink(missing_ok=True)
            return UpdateOutcome("none", "the rollout no longer offers this release")
        if stats.rows == 0:  # no traffic during the shadow time: judge on the probe inputs
            compare(live.current, live.candidate, _probe_rows(live.current, live.candidate), stats)
        reason = judge(state_dir, live.offer, stats)
        if reason is not None:
            return _failed(state_dir, live.offer, archive, reason)
        return finish(live.offer, archive, prefix=self.model_dir.parent, name=self.model_dir.name)


def restart_into(launcher: Path, argv: Sequence[str]) -> None:
    """Replace this process with the now-current version's launcher (no return unless exec fails)."""
    import os
    import sys

    from mlpack_edge.runtime._fallback import FALLBACK_ENV

    env = {k: v for k, v in os.environ.items() if k != FALLBACK_ENV}
    env["PYINSTALLER_RESET_ENVIRONMENT"] = "1"  # a PyInstaller app starting another must not look like its child
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(str(launcher), [str(launcher), *argv], env)
