"""A client of the collector's admin API (publish, rollouts), stdlib only, and the bundle packer.

``mlpack publish`` and ``mlpack rollout`` run on a workstation that may not have the
collector's web stack installed, so this speaks HTTP with :mod:`urllib`. Every failure
is a one-line :class:`~mlpack_edge.errors.CollectorError`: the collector's own
``{"error": …}`` message when it answered, else why it could not be reached.
"""

from __future__ import annotations

import gzip
import io
import json
import os
import ssl
import tarfile
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mlpack_edge.errors import BundleError, CollectorError
from mlpack_edge.runtime.manifest import MANIFEST_NAME, SIGNATURE_NAME, read_manifest

__all__ = ["AdminClient", "read_token_file", "pack_bundle"]

_FIXED_MTIME = 315532800  # 1980-01-01, like the appended zip: same bundle, same bytes


def pack_bundle(folder: str | os.PathLike[str]) -> bytes:
    """A deterministic ``.tar.gz`` of a bundle folder: ``manifest.json``, ``manifest.sig``
    (when present) and exactly the files the manifest lists, sorted, fixed times and modes."""
    folder = Path(folder)
    manifest = read_manifest(folder)
    names = [MANIFEST_NAME, *([SIGNATURE_NAME] if (folder / SIGNATURE_NAME).is_file() else []), *sorted(manifest.files)]
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.USTAR_FORMAT) as tf:
        for name in names:
            try:
                data = (folder / name).read_bytes()
            except FileNotFoundError:
                raise BundleError(f"{folder}: file {name} listed in the manifest is missing") from None
            info = tarfile.TarInfo(name)
            info.size, info.mtime, info.mode = len(data), _FIXED_MTIME, 0o644
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            tf.addfile(info, io.BytesIO(data))
    out = io.BytesIO()
    with gzip.GzipFile(fileobj=out, mode="wb", compresslevel=9, mtime=0) as gz:
        gz.write(raw.getvalue())
    return out.getvalue()


def read_token_file(path: str | Path, option: str = "--admin-token-file") -> str:
    try:
        token = Path(path).read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise CollectorError(f"{option} {path}: cannot read ({exc.strerror or exc})") from None
    if not token:
        raise CollectorError(f"{option} {path}: the file is empty (mlpack collector add-admin NAME > FILE)")
    return token


@dataclass
class AdminClient:
    url: str
    token: str
    ca_file: str | None = None
    timeout: float = 60.0

    def _request(self, method: str, path: str, body: bytes | None = None,
                 content_type: str = "application/json", missing_ok: bool = False) -> tuple[int, Any]:
        headers = {"Authorization": f"Bearer {self.token}", "Accept": "application/json"}
        if body is not None:
            headers["Content-Type"] = content_type
        req = urllib.request.Request(self.url.rstrip("/") + path, data=body, headers=headers, method=method)
        context = ssl.create_default_context(cafile=self.ca_file) if self.ca_file else None
        try:
            with urllib.request.urlopen(req, timeout=self.timeout, context=context) as reply:
                return reply.status, json.loads(reply.read() or b"{}")
        except urllib.error.HTTPError as exc:
            with exc:
                raw = exc.read() if exc.fp is not None else b""
            if missing_ok and exc.code == 404:
                return 404, {}
            try:
                message = json.loads(raw).get("error") or raw.decode("utf-8", "replace")
            except (ValueError, AttributeError):
                message = raw.decode("utf-8", "replace")[:200]
            raise CollectorError(f"collector {self.url}: HTTP {exc.code}: {message}") from None
        except urllib.error.URLError as exc:
            raise CollectorError(f"collector {self.url}: unreachable ({exc.reason})") from None
        except (OSError, ValueError) as exc:
            raise CollectorError(f"collector {self.url}: {exc.__class__.__name__}: {exc}") from None

    def publish(self, archive: bytes, runtime: str | None = None) -> tuple[bool, dict[str, Any]]:
        """Upload a packed bundle (built on the stored ``runtime``, when given); ``(newly stored, release)``."""
        query = f"?runtime={runtime}" if runtime else ""
        _, doc = self._request("POST", f"/api/v1/releases{query}", archive, "application/gzip")
        return bool(doc.get("added")), dict(doc.get("release") or {})

    def has_runtime(self, sha256: str) -> bool:
        status, _ = self._request("GET", f"/api/v1/runtimes/{sha256}/info", missing_ok=True)
        return status == 200

    def put_runtime(self, sha256: str, data: bytes, facts: dict[str, str]) -> bool:
        """Store a frozen runtime under its sha256; ``False`` when the collector had it already."""
        from urllib.parse import urlencode

        query = urlencode({k: v for k, v in facts.items() if v})
        _, doc = self._request("PUT", f"/api/v1/runtimes/{sha256}" + (f"?{query}" if query else ""), data,
                               "application/octet-stream")
        return bool(doc.get("added"))

    def start(self, model: str, version: str, plan: dict[str, Any]) -> dict[str, Any]:
        body = json.dumps({"model": model, "version": version, **plan}).encode()
        return dict(self._request("POST", "/api/v1/rollouts", body)[1])

    def change(self, model: str, action: str) -> dict[str, Any]:
        return dict(self._request("POST", f"/api/v1/rollouts/{model}/{action}", b"{}")[1])

    def status(self, model: str) -> dict[str, Any]:
        return dict(self._request("GET", f"/api/v1/rollouts/{model}")[1])
