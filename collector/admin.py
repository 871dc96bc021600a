"""Administration the CLI exposes: devices and their tokens, models from bundles."""

from __future__ import annotations

import json
import time
from pathlib import Path

from collections.abc import Sequence
from typing import Any

from mlpack_edge._rollout_plan import parse_labels
from mlpack_edge.collector.auth import check_device_name, hash_token, new_token, read_cert
from mlpack_edge.collector.models import ModelInfo, model_from_upload
from mlpack_edge.collector.storage import AlertRow, DeviceCert, DeviceRow, WebhookRow, open_storage
from mlpack_edge.collector.webhooks import FORMATS, check_url, read_secret
from mlpack_edge.errors import BundleError, CollectorError
from mlpack_edge.monitor_agent.wire import WireError
from mlpack_edge.runtime.manifest import read_manifest, verify_files

__all__ = ["add_admin", "revoke_admin", "set_labels", "parse_labels", "export_samples", "test_webhook", "alert_history",
           "add_webhook", "remove_webhook", "list_webhooks", "set_webhooks", "read_webhooks_file", "add_device",
           "add_device_certs", "revoke_device", "list_devices", "device_certs", "add_model",
           "model_from_bundle"]


def add_device(db_url: str, name: str, cert_files: Sequence[str | Path] = (),
               labels: dict[str, str] | None = None) -> str:
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
        if labels:
            storage.set_device_labels(name, labels)
    finally:
        storage.close()
    return token


ADMIN_TOKEN_PREFIX = "mlpka_"


def add_admin(db_url: str, name: str) -> str:
    """Register an administrator and return its token (shown once: only its hash is stored).

    Admin tokens publish releases and manage rollouts; they live in their own table, so a
    device token can never act as one (and the other way round).
    """
    import secrets

    try:
        check_device_name(name)
    except ValueError as exc:
        raise CollectorError(str(exc).replace("device name", "admin name")) from None
    token = ADMIN_TOKEN_PREFIX + secrets.token_urlsafe(32)
    storage = open_storage(db_url)
    try:
        storage.add_admin(name, hash_token(token), time.time())
    finally:
        storage.close()
    return token


def revoke_admin(db_url: str, name: str) -> None:
    storage = open_storage(db_url)
    try:
        storage.revoke_admin(name, time.time())
    finally:
        storage.close()


def set_labels(db_url: str, name: str, labels: dict[str, str]) -> None:
    """Replace a device's labels (rollouts can target devices by label)."""
    storage = open_storage(db_url)
    try:
        storage.set_device_labels(name, labels)
    finally:
        storage.close()


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


def add_webhook(db_url: str, url: str, fmt: str = "json", secret_file: str | Path | None = None) -> int:
    """Register a webhook every alert transition is sent to (from the next one on); returns its id.

    The secret (for the HMAC signature header) is read from a file so it never appears in
    the shell history or the process list; it is stored in the collector database.
    """
    check_url(url)
    if fmt not in FORMATS:
        raise CollectorError(f"--format {fmt!r}: expected one of {', '.join(FORMATS)}")
    secret = read_secret(secret_file) if secret_file is not None else None
    storage = open_storage(db_url)
    try:
        return storage.add_webhook(url, fmt, secret, time.time())
    finally:
        storage.close()


def remove_webhook(db_url: str, webhook_id: int) -> None:
    """Stop sending to a webhook; its pending deliveries are cancelled (history stays)."""
    storage = open_storage(db_url)
    try:
        if not storage.remove_webhook(webhook_id, time.time()):
            raise CollectorError(f"webhook {webhook_id}: no such active webhook (see list-webhooks)")
    finally:
        storage.close()


def list_webhooks(db_url: str) -> tuple[list[WebhookRow], dict[int, dict[str, int]]]:
    """Every webhook (removed ones too) and its deliveries per state."""
    storage = open_storage(db_url)
    try:
        return storage.webhooks(include_removed=True), storage.delivery_counts()
    finally:
        storage.close()


def read_webhooks_file(path: str | Path) -> list[tuple[str, str, str | None]]:
    """``(url, format, secret)`` of each ``[[webhook]]`` table in a TOML file, every entry
    checked (a one-line error names the file and the entry) before anything is used.

    ``secret_file`` paths are relative to the file::

        [[webhook]]
        url = "https://ci.example.org/hooks/retrain"
        format = "alertmanager"          # or "json" (the default)
        secret_file = "retrain.secret"   # optional: sign requests
    """
    import tomllib

    file = Path(path)
    try:
        data = tomllib.loads(file.read_text("utf-8"))
    except OSError as exc:
        raise CollectorError(f"{file}: cannot read ({exc.strerror or exc})") from None
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise CollectorError(f"{file}: not valid TOML ({exc})") from None
    unknown = sorted(set(data) - {"webhook"})
    if unknown:
        raise CollectorError(f"{file}: unknown key {unknown[0]!r}; expected [[webhook]] tables")
    entries = data.get("webhook", [])
    if not isinstance(entries, list):
        raise CollectorError(f"{file}: 'webhook' must be an array of tables ([[webhook]])")
    out: list[tuple[str, str, str | None]] = []
    for i, e in enumerate(entries, 1):
        where = f"{file}: webhook {i}"
        extra = sorted(set(e) - {"url", "format", "secret_file"})
        if extra:
            raise CollectorError(f"{where}: unknown key {extra[0]!r} (expected url, format, secret_file)")
        url, fmt, secret_file = e.get("url"), e.get("format", "json"), e.get("secret_file")
        if not isinstance(url, str):
            raise CollectorError(f"{where}: 'url' is required (a string)")
        try:
            check_url(url)
            if fmt not in FORMATS:
                raise CollectorError(f"format {fmt!r}: expected one of {', '.join(FORMATS)}")
            if secret_file is not None and not isinstance(secret_file, str):
                raise CollectorError("'secret_file' must be a string (a path relative to this file)")
            secret = read_secret(file.parent / secret_file, "secret_file") if secret_file is not None else None
        except CollectorError as exc:
            raise CollectorError(f"{where}: {exc}") from None
        out.append((url, fmt, secret))
    return out


def set_webhooks(db_url: str, path: str | Path) -> tuple[list[int], list[int], list[int]]:
    """Make the active webhooks exactly those of a TOML file: ``(kept, added, removed)`` ids.

    A webhook is kept when its URL, format and secret are unchanged, so its pending
    deliveries go on; a changed one is removed (its pending deliveries cancelled) and added anew.
    """
    wanted = read_webhooks_file(path)
    now = time.time()
    storage = open_storage(db_url)
    try:
        active = storage.webhooks()
        kept: list[int] = []
        added: list[int] = []
        left = list(wanted)
        for h in active:
            key = (h.url, h.format, h.secret)
            if key in left:
                left.remove(key)
                kept.append(h.id)
        removed = [h.id for h in active if h.id not in kept]
        for hook_id in removed:
            storage.remove_webhook(hook_id, now)
        for url, fmt, secret in left:
            added.append(storage.add_webhook(url, fmt, secret, now))
        return kept, added, removed
    finally:
        storage.close()


def alert_history(db_url: str, state: str = "all", limit: int = 50) -> list[tuple[AlertRow, list[dict[str, Any]]]]:
    """Alert episodes, newest first, each with its webhook deliveries (oldest first)."""
    storage = open_storage(db_url)
    try:
        rows = storage.alert_history(state, limit=limit)
        sent: dict[int, list[dict[str, Any]]] = {}
        for d in storage.deliveries(alerts=[a.id for a in rows]):
            sent.setdefault(d["alert"], []).insert(0, d)
        return [(a, sent.get(a.id, [])) for a in rows]
    finally:
        storage.close()


def test_webhook(db_url: str, webhook_id: int, timeout: float = 5.0) -> tuple[WebhookRow, int | None, str | None, float]:
    """Send a test alert (kind ``test``, not stored) to a webhook now, through the same
    rendering, signing and sending code as real ones: ``(webhook, status, error, seconds)``."""
    from mlpack_edge.collector.delivery import new_client, send_once
    from mlpack_edge.collector.storage import DueDelivery
    from mlpack_edge.collector.webhooks import render_payload

    storage = open_storage(db_url)
    try:
        hook = next((h for h in storage.webhooks() if h.id == webhook_id), None)
    finally:
        storage.close()
    if hook is None:
        raise CollectorError(f"webhook {webhook_id}: no such active webhook (see list-webhooks)")
    now = time.time()
    alert = AlertRow(0, "test|||", "test", "warning", None, None, None,
                     "test alert from mlpack collector test-webhook", now, None, now)
    body = render_payload(hook, alert, "firing", None, "")
    with new_client(timeout) as client:
        t0 = time.monotonic()
        out = send_once(client, DueDelivery(0, hook.id, hook.url, hook.format, hook.secret, 0, "firing", body, 0), timeout)
        return hook, out.status, out.error, time.monotonic() - t0
