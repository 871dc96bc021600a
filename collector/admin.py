"""Administration the CLI exposes: devices and their tokens, models from bundles."""

from __future__ import annotations

import json
import time
from pathlib import Path

from collections.abc import Sequence

from mlpack_edge.collector.auth import check_device_name, hash_token, new_token, read_cert
from mlpack_edge.collector.models import ModelInfo, model_from_upload
from mlpack_edge.collector.storage import DeviceCert, DeviceRow, open_storage
from mlpack_edge.errors import BundleError, CollectorError
from mlpack_edge.monitor_agent.wire import WireError
from mlpack_edge.runtime.manifest import read_manifest, verify_files

__all__ = ["export_samples", "add_device", "add_device_certs", "revoke_device", "list_devices", "device_certs", "add_model",
           "model_from_bundle"]


def add_device(db_url: str, name: str, cert_files: Sequence[str | Path] = ()) -> str:
    """Register ``name`` (with client certificates, for mutual TLS) and return its token
    (shown once: only its hash is stored)."""
    try:
        check_device_name(name)
    except ValueError as exc:
        raise CollectorError(str(exc)) from None
    now = time.time()
    certs = _certs(name, cert_files, now)  # every file checked before anything is stored
    token = new_token()
    storage = open_storage(db_url)
    try:
        storage.add_device(name, hash_token(token), now, certs)
    finally:
        storage.close()
    return token


def add_device_certs(db_url: str, name: str, cert_files: Sequence[str | Path]) -> list[DeviceCert]:
    """Register more client certificates for an active device (e.g. a renewed one)."""
    certs = _certs(name, cert_files, time.time())
    storage = open_storage(db_url)
    try:
        storage.add_device_certs(name, certs)
    finally:
        storage.close()
    return certs


def device_certs(db_url: str, name: str | None = None) -> list[DeviceCert]:
    storage = open_storage(db_url)
    try:
        return storage.device_certs(name)
    finally:
        storage.close()


def _certs(name: str, cert_files: Sequence[str | Path], now: float) -> list[DeviceCert]:
    certs: dict[str, DeviceCert] = {}
    for path in cert_files:
        info = read_cert(path, now)
        certs[info.fingerprint] = DeviceCert(info.fingerprint, name, info.subject, info.not_after, now)
    return list(certs.values())


def revoke_device(db_url: str, name: str) -> None:
    """Refuse every later upload with ``name``'s token (its data stays)."""
    storage = open_storage(db_url)
    try:
        storage.revoke_device(name, time.time())
    finally:
        storage.close()


def list_devices(db_url: str) -> list[DeviceRow]:
    storage = open_storage(db_url)
    try:
        return storage.devices()
    finally:
        storage.close()


def model_from_bundle(bundle_dir: str | Path) -> ModelInfo:
    """Name, version, content hash, profile and drift thresholds of a verified bundle folder."""
    folder = Path(bundle_dir)
    manifest = read_manifest(folder)

    def read(name: str) -> bytes:
        return (folder / name).read_bytes()

    verify_files(manifest, read, str(folder))
    profile_path = folder / "profile.json"
    try:
        profile = json.loads(profile_path.read_bytes())
    except FileNotFoundError:
        raise BundleError(f"{profile_path}: missing; the collector needs the reference profile") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BundleError(f"{profile_path}: not valid JSON ({exc})") from None
    entry = {"name": manifest.name, "version": manifest.version, "profile": profile, "drift": manifest.data.get("drift")}
    try:
        return model_from_upload(manifest.content_hash, entry, str(profile_path), source="bundle")
    except WireError as exc:
        raise BundleError(str(exc)) from None


def export_samples(db_url: str, model_ref: str, out: str | Path, include_unlabelled: bool = False) -> tuple[ModelInfo, int]:
    """Write ``model_ref``'s captured rows as a CSV in the training data's columns (features in the
    profile's order, then the target column); returns the model and the row count.

    ``model_ref``: a content hash (or a unique prefix of at least 8 characters) or ``NAME:VERSION``.
    Only labelled rows unless ``include_unlabelled`` (their target cell is empty). A feature left
    out by the device's ``capture_exclude`` is an empty column. Written atomically.
    """
    import csv
    import io

    from mlpack_edge._fs import atomic_write_text

    storage = open_storage(db_url)
    try:
        model = _find_model(storage.models(), model_ref)
        target = (storage.model_kpis().get(model.hash) or {}).get("target") or "label"
        rows = storage.samples(model.hash, labelled_only=not include_unlabelled)
    finally:
        storage.close()
    names = [f["name"] for f in model.profile.get("features") or []]
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow([*names, target])
    for _device, _t, row, _output, label in rows:
        w.writerow([_cell(row.get(n)) for n in names] + [_cell(label)])
    atomic_write_text(out, buf.getvalue())
    return model, len(rows)


def _cell(v: object) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        return repr(v)
    return str(v)


def _find_model(models: list[ModelInfo], ref: str) -> ModelInfo:
    if ":" in ref:
        name, _, version = ref.partition(":")
        found = [m for m in models if m.name == name and m.version == version]
    elif len(ref) >= 8:
        found = [m for m in models if m.hash.startswith(ref.lower())]
    else:
        raise CollectorError(f"model {ref!r}: give a content hash (at least 8 characters) or NAME:VERSION")
    if len(found) != 1:
        known = ", ".join(f"{m.name}:{m.version}" for m in models[:8]) or "none"
        raise CollectorError(f"model {ref!r}: {'no' if not found else 'more than one'} such model (known: {known})")
    return found[0]


def add_model(db_url: str, bundle_dir: str | Path) -> tuple[ModelInfo, bool]:
    """Teach the collector a model before any device uploads it; ``(model, newly_added)``."""
    from mlpack_edge.monitor_agent.kpi import kpi_reference
    from mlpack_edge.runtime.manifest import read_manifest

    model = model_from_bundle(bundle_dir)
    kpi = kpi_reference(read_manifest(Path(bundle_dir)).data)
    storage = open_storage(db_url)
    try:
        added = storage.add_model(model, time.time())
        if kpi is not None:
            storage.set_model_kpi(model.hash, kpi)
        return model, added
    finally:
        storage.close()
