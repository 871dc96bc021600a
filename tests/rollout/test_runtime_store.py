"""Runtimes in the release store and the device's choice between bundle only and the whole payload,
against a real collector process (SQLite and PostgreSQL).

The "runtime" here is a small shell script standing in for the 36 MB frozen one (the slow tier,
``test_whole_payload.py``, uses real executables): it travels, is stored once per sha256, is
downloaded with Range and resumed after a cut, and when the assembled executable's own install
refuses, the old version keeps serving and the stage fails.
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

import httpx
import pytest

from mlpack_edge.builder.remote import pack_bundle
from mlpack_edge.monitor_agent.transport import Response, TransportError, UrllibTransport
from mlpack_edge.runtime._runtime_record import record_runtime
from mlpack_edge.runtime.embedded import append_bundle
from mlpack_edge.runtime.manifest import MANIFEST_NAME, SIGNATURE_NAME, read_manifest
from mlpack_edge.runtime.update import installed_hash
from tests.rollout.conftest import Bundles, Fleet
from tests.rollout.test_device_update import Device, admin, device, rollout  # noqa: F401  (fixture)

pytestmark = pytest.mark.usefixtures("clean_env")

REFUSING = b'#!/bin/sh\necho "Error: not installed: this runtime refuses (test)" >&2\nexit 1\n' + b"#" * 20000 + b"\n"
SHA = hashlib.sha256(REFUSING).hexdigest()


def executable(bundle: Path, runtime: bytes, out: Path) -> Path:
    """A device executable of ``bundle`` on ``runtime`` (the build's own format, any runtime bytes)."""
    manifest = read_manifest(bundle)
    files = {MANIFEST_NAME: manifest.raw, SIGNATURE_NAME: (bundle / SIGNATURE_NAME).read_bytes(),
             **{n: (bundle / n).read_bytes() for n in manifest.files}}
    out.write_bytes(append_bundle(runtime, files, {"target": "linux-x86_64"}))
    out.chmod(0o755)
    return out


def mlpack(*args: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "mlpack_edge.cli", *map(str, args)], capture_output=True, text=True,
                          timeout=120)


def test_a_runtime_is_stored_once_checked_guarded_and_downloadable_with_range(fleet: Fleet) -> None:
    device = {"Authorization": f"Bearer {fleet.token('press-01')}"}
    with admin(fleet) as c:
        r = c.put(f"/api/v1/runtimes/{SHA}", content=REFUSING[:-1], params={"target": "linux-x86_64"})
        assert r.status_code == 422
        assert r.json()["error"].startswith(f"runtime {SHA[:12]}: the {len(REFUSING) - 1} bytes uploaded have sha256 ")
        assert c.get(f"/api/v1/runtimes/{SHA}/info").status_code == 404
        assert httpx.put(f"{fleet.url}/api/v1/runtimes/{SHA}", content=REFUSING, headers=device).status_code == 403
        first = c.put(f"/api/v1/runtimes/{SHA}", content=REFUSING, params={"target": "linux-x86_64"})
        assert first.status_code == 201 and first.json() == {
            "runtime": {"sha256": SHA, "size": len(REFUSING), "target": "linux-x86_64", "glibc_floor": None},
            "added": True}
        assert c.put(f"/api/v1/runtimes/{SHA}", content=REFUSING).status_code == 200  # kept once
    assert sorted(p.name for p in (fleet.data_dir / "releases" / "runtimes").iterdir()) == [f"{SHA}.bin", f"{SHA}.json"]
    part = httpx.get(f"{fleet.url}/api/v1/runtimes/{SHA}", headers={**device, "Range": "bytes=10-19"})
    assert part.status_code == 206 and part.content == REFUSING[10:20]
    assert httpx.get(f"{fleet.url}/api/v1/runtimes/{'0' * 64}", headers=device).status_code == 404
    assert httpx.get(f"{fleet.url}/api/v1/runtimes/{SHA}").status_code == 401


def test_publish_records_the_runtime_and_the_offer_names_it(fleet: Fleet, bundles: Bundles, tmp_path: Path) -> None:
    common = ("--collector", fleet.url, "--admin-token-file", fleet.admin_file)
    with admin(fleet) as c:  # a runtime the collector does not hold: refused, nothing published
        r = c.post("/api/v1/releases", content=pack_bundle(bundles.v2), params={"runtime": SHA})
        assert (r.status_code, r.json()["error"]) == (
            422, f"runtime {SHA[:12]} is not stored here; upload it first (PUT /api/v1/runtimes/{SHA})")
    exe = executable(bundles.v2, REFUSING, tmp_path / "gov-1.1.0-linux-x86_64")
    other = mlpack("publish", bundles.v2, *common, "--executable", executable(bundles.v1, REFUSING, tmp_path / "v1"))
    assert other.returncode == 1
    assert "carries another build (gov 1.0.0" in other.stderr and other.stderr.startswith("Error: --executable ")
    done = mlpack("publish", bundles.v2, *common, "--executable", exe)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().endswith(f"; runtime {SHA[:12]}, {len(REFUSING)} bytes uploaded)")
    again = mlpack("publish", bundles.v2, *common, "--executable", exe)
    assert again.stdout.startswith("already published gov 1.1.0") and "stored already" in again.stdout
    with admin(fleet) as c:
        (release,) = c.get("/api/v1/releases").json()["releases"]
        assert release["runtime"] == SHA
        assert c.post("/api/v1/rollouts", json={"model": "gov", "version": "1.1.0", "stages": [100], "hold": 0,
                                                "devices": ["press-01"]}).status_code == 201
    (offer,) = httpx.get(f"{fleet.url}/api/v1/updates",
                         headers={"Authorization": f"Bearer {fleet.token('press-01')}"}).json()["updates"]
    assert offer["runtime"] == {"sha256": SHA, "size": len(REFUSING), "target": "linux-x86_64", "glibc_floor": None,
                                "url": f"/api/v1/runtimes/{SHA}"}


class Dropping:
    """Delivers ``keep`` bytes in all, then the link is down (every later request fails)."""

    def __init__(self, inner: UrllibTransport, keep: int) -> None:
        self.inner, self.left = inner, keep

    def get(self, url: str, headers: Mapping[str, str]) -> Response:
        if self.left <= 0:
            raise TransportError("connection reset by peer")
        reply = self.inner.get(url, headers)
        body, self.left = reply.body[: self.left], self.left - len(reply.body)
        return Response(reply.status, reply.headers, body)


class Recording:
    def __init__(self, inner: object) -> None:
        self.inner, self.urls = inner, []

    def get(self, url: str, headers: Mapping[str, str]) -> Response:
        self.urls.append(url)
        return self.inner.get(url, headers)  # type: ignore[attr-defined]


def _publish_with_runtime(fleet: Fleet, bundles: Bundles, tmp_path: Path) -> None:
    exe = executable(bundles.v2, REFUSING, tmp_path / "gov-1.1.0-linux-x86_64")
    done = mlpack("publish", bundles.v2, "--collector", fleet.url, "--admin-token-file", fleet.admin_file,
                  "--executable", exe)
    assert done.returncode == 0, done.stderr
    with admin(fleet) as c:
        assert c.post("/api/v1/rollouts", json={"model": "gov", "version": "1.1.0", "stages": [100], "hold": 0,
                                                "devices": ["press-01"]}).status_code == 201


def test_on_the_same_runtime_only_the_bundle_travels(device: Device, fleet: Fleet, bundles: Bundles,
                                                     tmp_path: Path) -> None:
    record_runtime(device.state, "1.0.0", SHA)  # what install records from an executable built on it
    _publish_with_runtime(fleet, bundles, tmp_path)
    fetcher = Recording(UrllibTransport(timeout=30))
    outcome = device.update(fetcher)
    assert outcome.action == "installed" and outcome.version == "1.1.0", outcome
    assert fetcher.urls and all("/api/v1/releases/" in u for u in fetcher.urls)  # no runtime request at all


def test_on_another_runtime_the_whole_payload_travels_resumes_after_a_cut_and_a_refusal_keeps_the_old_version(
        device: Device, fleet: Fleet, bundles: Bundles, tmp_path: Path) -> None:
    record_runtime(device.state, "1.0.0", "f" * 64)
    _publish_with_runtime(fleet, bundles, tmp_path)
    archive = len(pack_bundle(bundles.v2))
    dropping = Dropping(UrllibTransport(timeout=30), archive + 5000)  # the bundle, then 5000 bytes of the runtime
    first = device.update(dropping)
    assert first.action == "unreachable" and first.detail.startswith("runtime download paused (")
    assert (device.state / "downloads" / f"{SHA}.part").stat().st_size == 5000
    fetcher = Recording(UrllibTransport(timeout=30))
    outcome = device.update(fetcher)
    assert [u.split("/api/v1/")[1].split("/")[0] for u in fetcher.urls] == ["runtimes"]  # the rest, bundle kept
    assert outcome.action == "failed" and outcome.detail == "not installed: this runtime refuses (test)", outcome
    assert installed_hash(device.prefix, "gov") == read_manifest(bundles.v1).content_hash  # old version serving
    assert not list((device.state / "downloads").iterdir())  # runtime, bundle and executable removed
    device.report()
    audit = httpx.get(f"{fleet.url}/api/v1/devices/press-01", timeout=30).json()["audit"]
    (downloaded,) = [e["detail"] for e in audit if e["event"] == "update_downloaded"]
    assert downloaded["runtime"] == SHA and downloaded["bytes"] == archive + len(REFUSING)
    doc = rollout(fleet)
    assert doc["state"] == "failed" and doc["reason"].endswith("device press-01: not installed: this runtime refuses (test)")
