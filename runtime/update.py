"""Applying what the collector asks of this device during a rollout: install a release, or roll back.

The collector's offers arrive piggy-backed on the ingest acknowledgement (or from the
light poll ``GET /api/v1/updates``, which ``<model> update`` uses). For this model's
offer:

* ``install`` a release whose content hash is not the one running: download the bundle
  (only the bundle travels: it is installed with the runtime this device already has;
  :mod:`mlpack_edge.monitor_agent.download` resumes a cut download and checks its
  sha256), then the same path as a manual ``install --bundle``: the signature against
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
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mlpack_edge._fs import atomic_write_text
from mlpack_edge.errors import MlpackError
from mlpack_edge.runtime import _audit
from mlpack_edge.runtime import install as _install
from mlpack_edge.runtime.manifest import read_manifest

__all__ = ["UpdateOutcome", "apply_offers", "installed_hash", "poll_offers", "UPDATE_STATE", "DOWNLOADS"]

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
) -> UpdateOutcome:
    """Act on this model's offer among ``offers`` (see the module doc). Never raises for an
    expected failure: it becomes an audit event and an ``UpdateOutcome``."""
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
    _event(state_dir, "update_downloaded", offer, bytes=archive.stat().st_size)
    try:
        base = payload if payload is not None else _install.current_payload()
        result = _install.install(_install.with_bundle(base, archive), prefix, verifier=verifier, systemd=systemd)
    except MlpackError as exc:
        _event(state_dir, "update_failed", offer, reason=str(exc))
        _remember(state_dir, offer, "failed", str(exc))
        archive.unlink(missing_ok=True)
        return UpdateOutcome("failed", str(exc))
    archive.unlink(missing_ok=True)
    _event(state_dir, "update_installed", offer, previous=result.previous)
    _remember(state_dir, offer, "installed")
    return UpdateOutcome("installed", f"{result.name} {result.version} is current (previous: {result.previous})",
                         result.version)
