"""Webhook targets and what is sent to them: a generic JSON body or Alertmanager's shape.

Two formats:

* ``json`` — ``{"schema": "mlpack.alert/1", "event": "firing"|"resolved", "alert": {…}}``;
* ``alertmanager`` — the body Prometheus Alertmanager posts to a ``webhook_config``
  receiver (``version: "4"``, ``status``, ``alerts[]`` with ``labels``, ``annotations``,
  ``startsAt``/``endsAt``, ``fingerprint``), so a receiver written for Alertmanager
  (or an Alertmanager-compatible router) routes mlpack alerts with its existing rules.

With a secret, every request carries ``X-Mlpack-Signature: sha256=<hex>``, the
HMAC-SHA256 of the exact body bytes under the secret (:func:`signature`; a receiver
compares with :func:`hmac.compare_digest`). The payload is rendered once, when the
transition is recorded, and stored with the delivery: a retry sends the same bytes.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlsplit

from mlpack_edge.collector.models import ModelInfo
from mlpack_edge.collector.storage import AlertRow, WebhookRow
from mlpack_edge.errors import CollectorError

__all__ = ["FORMATS", "SIGNATURE_HEADER", "check_url", "read_secret", "signature", "render_payload", "public_url",
           "alert_name"]

FORMATS = ("json", "alertmanager")
SIGNATURE_HEADER = "X-Mlpack-Signature"
_ZERO_TIME = "0001-01-01T00:00:00Z"  # Alertmanager's "no end yet"
_MAX_SECRET = 4096


def check_url(url: str) -> str:
    """An ``http(s)://host…`` URL, or a one-line :class:`CollectorError`."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise CollectorError(f"webhook URL {url!r}: expected http://HOST[:PORT]/PATH or https://…")
    try:
        parts.port  # noqa: B018 - raises on a malformed port
    except ValueError:
        raise CollectorError(f"webhook URL {url!r}: the port is not a number from 1 to 65535") from None
    return url


def public_url(url: str) -> str:
    """The URL without credentials, query or fragment (they may hold tokens) for lists and pages."""
    p = urlsplit(url)
    host = p.hostname or ""
    host = f"[{host}]" if ":" in host else host
    return f"{p.scheme}://{host}{f':{p.port}' if p.port else ''}{p.path}" + ("?…" if p.query else "")


def read_secret(path: str | Path, what: str = "--secret-file") -> str:
    """The signing secret in ``path`` (surrounding whitespace dropped), or a one-line error
    starting with ``what`` (the option or key that named the file)."""
    try:
        raw = Path(path).read_bytes()
    except OSError as exc:
        raise CollectorError(f"{what} {path}: cannot read ({exc.strerror or exc})") from None
    try:
        secret = raw.decode("utf-8").strip()
    except UnicodeDecodeError:
        raise CollectorError(f"{what} {path}: not UTF-8 text") from None
    if not secret or len(secret) > _MAX_SECRET or "\n" in secret:
        raise CollectorError(f"{what} {path}: expected one line of 1 to {_MAX_SECRET} characters")
    return secret


def signature(secret: str, body: bytes) -> str:
    """The ``X-Mlpack-Signature`` value of ``body``: ``sha256=`` + HMAC-SHA256 hex."""
    return "sha256=" + hmac.new(secret.encode("utf-8"), body, hashlib.sha256).hexdigest()


def _rfc3339(t: float | None) -> str:
    if t is None:
        return _ZERO_TIME
    return datetime.fromtimestamp(t, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def alert_name(kind: str) -> str:
    """``drift`` -> ``MlpackDrift``, ``error_rate`` -> ``MlpackErrorRate`` (Prometheus style)."""
    return "Mlpack" + "".join(p.capitalize() for p in kind.split("_"))


def _labels(a: AlertRow, model: ModelInfo | None) -> dict[str, str]:
    labels = {"alertname": alert_name(a.kind), "kind": a.kind, "severity": a.severity, "source": "mlpack"}
    for name, value in (("device", a.device), ("model", a.model), ("feature", a.feature),
                        ("model_name", model.name if model else None), ("model_version", model.version if model else None)):
        if value:
            labels[name] = value
    return labels


def render_payload(hook: WebhookRow, a: AlertRow, event: str, model: ModelInfo | None, external_url: str) -> str:
    """The body sent to ``hook`` for ``event`` (``firing`` or ``resolved``) of alert ``a``."""
    link = f"{external_url.rstrip('/')}/alerts#alert-{a.id}" if external_url else ""
    if hook.format == "alertmanager":
        labels = _labels(a, model)
        body = {
            "version": "4",
            "groupKey": f"{{}}:{{alertname=\"{labels['alertname']}\"}}/mlpack/{a.key}",
            "truncatedAlerts": 0,
            "status": event,
            "receiver": f"mlpack-webhook-{hook.id}",
            "groupLabels": {"alertname": labels["alertname"]},
            "commonLabels": labels,
            "commonAnnotations": {"summary": a.message},
            "externalURL": external_url,
            "alerts": [{
                "status": event,
                "labels": labels,
                "annotations": {"summary": a.message, "description": a.message},
                "startsAt": _rfc3339(a.opened_at),
                "endsAt": _rfc3339(a.resolved_at if event == "resolved" else None),
                "generatorURL": link,
                "fingerprint": hashlib.sha256(a.key.encode()).hexdigest()[:16],
            }],
        }
    else:
        body = {
            "schema": "mlpack.alert/1",
            "event": event,
            "alert": {
                "id": a.id, "kind": a.kind, "severity": a.severity, "state": "open" if event == "firing" else "resolved",
                "model": a.model, "model_name": model.name if model else None,
                "model_version": model.version if model else None, "device": a.device, "feature": a.feature,
                "message": a.message, "opened_at": a.opened_at,
                "resolved_at": a.resolved_at if event == "resolved" else None, "url": link or None,
            },
        }
    return json.dumps(body, sort_keys=True, separators=(",", ":"))
