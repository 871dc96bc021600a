"""The release store, through a real collector process and the real ``mlpack publish``/``rollout`` commands.

Signed bundles are stored once per content hash, next to the database; unsigned ones only
with ``--allow-unsigned-releases``; tampered ones never; admin routes refuse device tokens.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from mlpack_edge.builder.remote import pack_bundle
from mlpack_edge.collector import open_storage
from mlpack_edge.runtime.manifest import MANIFEST_NAME, read_manifest
from tests.collector.process import stop_collector
from tests.governance.conftest import _off_golden
from tests.rollout.conftest import Bundles, Fleet, Keys, start_fleet


def mlpack(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "mlpack_edge.cli", *map(str, args)], capture_output=True, text=True,
                          timeout=120)


def publish(fleet: Fleet, bundle: Path, token_file: Path | None = None) -> subprocess.CompletedProcess[str]:
    return mlpack("publish", bundle, "--collector", fleet.url, "--admin-token-file", token_file or fleet.admin_file)


def test_a_signed_bundle_is_published_once_next_to_the_database(fleet: Fleet, bundles: Bundles) -> None:
    first = publish(fleet, bundles.v1)
    assert first.returncode == 0, first.stderr
    content_hash = read_manifest(bundles.v1).content_hash
    assert first.stdout.startswith(f"published gov 1.0.0 ({content_hash[:12]}, ")
    assert "signed by " in first.stdout
    stored = fleet.data_dir / "releases" / f"{content_hash}.tar.gz"
    assert stored.read_bytes() == pack_bundle(bundles.v1)  # deterministic: the same bytes as packed here

    again = publish(fleet, bundles.v1)
    assert again.returncode == 0 and again.stdout.startswith("already published gov 1.0.0")
    assert sorted(p.name for p in stored.parent.iterdir()) == [stored.name]  # no temporary file left

    s = open_storage(fleet.collector.db_url)
    try:
        (release,) = s.releases("gov")
        assert (release.hash, release.version, release.size) == (content_hash, "1.0.0", stored.stat().st_size)
        assert release.sha256 == hashlib.sha256(stored.read_bytes()).hexdigest()
        assert release.published_by == "ops"
        assert s.get_model(content_hash) is not None  # the fleet page knows the model before any device runs it
    finally:
        s.close()


def test_unsigned_bundles_need_the_collectors_explicit_flag(fleet: Fleet, bundles: Bundles, tmp_path: Path) -> None:
    refused = publish(fleet, bundles.unsigned)
    assert refused.returncode == 1
    assert refused.stderr.strip().splitlines() == [
        f"Error: collector {fleet.url}: HTTP 422: uploaded bundle: unsigned; this collector publishes signed bundles "
        "only (mlpack build --sign-key KEY, or start the collector with --allow-unsigned-releases)"
    ]
    assert not list((fleet.data_dir / "releases").glob("*.tar.gz"))

    lax = start_fleet(tmp_path / "lax", "--allow-unsigned-releases")
    try:
        ok = publish(lax, bundles.unsigned)
        assert ok.returncode == 0, ok.stderr
        assert "unsigned" in ok.stdout
    finally:
        stop_collector(lax.collector)


def test_tampered_bundles_are_refused_naming_what_is_wrong(fleet: Fleet, bundles: Bundles, copy_bundle) -> None:
    model = copy_bundle(bundles.v1)
    onnx = read_manifest(model).data["onnx"]["file"]
    data = bytearray((model / onnx).read_bytes())
    data[-1] ^= 0xFF
    (model / onnx).write_bytes(bytes(data))
    r = publish(fleet, model)
    assert r.returncode == 1
    assert f"uploaded bundle: file {onnx} does not match its sha256 in the manifest" in r.stderr

    manifest = copy_bundle(bundles.v1)
    doc = json.loads((manifest / MANIFEST_NAME).read_bytes())
    doc["version"] = "1.0.1"  # edited after signing: the signature no longer covers it
    (manifest / MANIFEST_NAME).write_text(json.dumps(doc))
    r = publish(fleet, manifest)
    assert r.returncode == 1
    assert "manifest.sig does not verify (tampered manifest or signature)" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
    assert not list((fleet.data_dir / "releases").glob("*.tar.gz"))


def test_another_build_under_a_published_version_is_refused(fleet: Fleet, bundles: Bundles, keys: Keys,
                                                           tmp_path: Path) -> None:
    assert publish(fleet, bundles.v1).returncode == 0
    other = _off_golden(bundles.v1, tmp_path / "other" / "gov-1.0.0", "1.0.0", keys)  # signed, same name+version
    r = publish(fleet, other)
    assert r.returncode == 1
    assert r.stderr.strip() == (
        f"Error: collector {fleet.url}: HTTP 422: gov 1.0.0 is already published as another build "
        f"({read_manifest(bundles.v1).content_hash[:12]}); give the new build a new version")
    with httpx.Client(base_url=fleet.url) as c:  # the same build through the API: 200, nothing added
        again = c.post("/api/v1/releases", content=pack_bundle(bundles.v1),
                       headers={"Authorization": f"Bearer {fleet.token('admin')}"})
        assert again.status_code == 200 and again.json()["added"] is False
        assert [x["version"] for x in c.get("/api/v1/releases").json()["releases"]] == ["1.0.0"]


def test_admin_routes_refuse_device_tokens_and_downloads_resume(fleet: Fleet, bundles: Bundles) -> None:
    archive = pack_bundle(bundles.v1)
    device = {"Authorization": f"Bearer {fleet.token('press-01')}"}
    with httpx.Client(base_url=fleet.url, timeout=30) as c:
        r = c.post("/api/v1/releases", content=archive, headers=device)
        assert r.status_code == 403
        assert r.json()["error"] == "Authorization: a device token cannot publish or manage rollouts; use an admin token"
        assert c.post("/api/v1/releases", content=archive, headers={"Authorization": "Bearer mlpka_nope"}).status_code == 401
        assert c.post("/api/v1/releases", content=archive).status_code == 401
        assert c.post("/api/v1/rollouts", json={"model": "gov", "version": "1.0.0"}, headers=device).status_code == 403
        assert c.post("/api/v1/rollouts/gov/abort", headers=device).status_code == 403

        assert publish(fleet, bundles.v1).returncode == 0
        content_hash = read_manifest(bundles.v1).content_hash
        url = f"/api/v1/releases/{content_hash}/bundle"
        assert c.get(url).status_code == 401  # downloads need a device (or admin) token
        whole = c.get(url, headers=device)
        assert whole.status_code == 200 and whole.content == archive
        assert whole.headers["x-content-sha256"] == hashlib.sha256(archive).hexdigest()
        cut = 1000
        rest = c.get(url, headers={**device, "Range": f"bytes={cut}-"})
        assert rest.status_code == 206 and archive[:cut] + rest.content == archive
        assert c.get(f"/api/v1/releases/{'0' * 64}/bundle", headers=device).status_code == 404


def test_rollout_commands_through_the_cli(fleet: Fleet, bundles: Bundles) -> None:
    common = ("--collector", fleet.url, "--admin-token-file", fleet.admin_file)
    unknown = mlpack("rollout", "start", "gov", "1.1.0", *common)
    assert unknown.returncode == 1
    assert unknown.stderr.strip() == (f"Error: collector {fleet.url}: HTTP 422: gov 1.1.0: not published (published "
                                      "versions of gov: none); run mlpack publish first")
    assert publish(fleet, bundles.v2).returncode == 0
    started = mlpack("rollout", "start", "gov", "1.1.0", *common, "--stages", "50,100", "--hold", "1h",
                     "--label", "site=a")
    assert started.returncode == 0, started.stderr
    assert "active, stage 1/2, 2 devices targeted" in started.stdout
    assert "stage 1 50%: 1 waiting" in started.stdout

    second = mlpack("rollout", "start", "gov", "1.1.0", *common)
    assert second.returncode == 1 and "HTTP 409: model 'gov' already has an active rollout" in second.stderr

    paused = mlpack("rollout", "pause", "gov", *common)
    assert paused.returncode == 0 and ": paused, stage 1/2" in paused.stdout
    status = mlpack("rollout", "status", "gov", *common, "--json")
    assert json.loads(status.stdout)["state"] == "paused"
    assert mlpack("rollout", "resume", "gov", *common).returncode == 0
    aborted = mlpack("rollout", "abort", "gov", *common)
    assert aborted.returncode == 0 and ": aborted," in aborted.stdout
    assert "reason: aborted by an administrator" in aborted.stdout
    bad = mlpack("rollout", "start", "gov", "1.1.0", *common, "--stages", "10,5")
    assert bad.returncode == 1 and "--stages: percentages must increase" in bad.stderr


@pytest.mark.parametrize("args", [["--hold", "soon"], ["--label", "site"], ["--stages", "10,50"]])
def test_bad_rollout_options_are_one_line_errors(fleet: Fleet, args: list[str]) -> None:
    r = mlpack("rollout", "start", "gov", "1.1.0", "--collector", fleet.url, "--admin-token-file", fleet.admin_file,
               *args)
    assert r.returncode == 1
    assert len(r.stderr.strip().splitlines()) == 1 and r.stderr.startswith("Error: ")


def test_a_viewer_token_guards_the_page_and_read_api_but_not_devices(tmp_path: Path) -> None:
    viewer = tmp_path / "viewer.token"
    viewer.write_text("v" * 8 + "-viewer-secret-1234\n")
    f = start_fleet(tmp_path / "guarded", "--viewer-token-file", str(viewer))
    try:
        token = viewer.read_text().strip()
        with httpx.Client(base_url=f.url, timeout=30) as c:
            for path in ("/", "/rollouts", "/metrics", "/api/v1/devices", "/api/v1/fleet", "/api/v1/releases"):
                r = c.get(path)
                assert r.status_code == 401 and "needs a viewer token" in r.json()["error"], path
                assert c.get(path, headers={"Authorization": f"Bearer {token}"}).status_code == 200, path
            assert c.get("/api/v1/devices", headers={"Authorization": f"Bearer {f.token('admin')}"}).status_code == 200
            assert c.get("/api/v1/devices", headers={"Authorization": f"Bearer {f.token('press-01')}"}).status_code == 401
            opened = c.get(f"/?token={token}")
            assert opened.status_code == 200 and "mlpack_viewer" in opened.headers["set-cookie"]
            assert "HttpOnly" in opened.headers["set-cookie"]
            assert c.get("/rollouts").status_code == 200  # the cookie from here on
        with httpx.Client(base_url=f.url, timeout=30) as c:  # what stays open: health, and the devices' own routes
            assert c.get("/healthz").status_code == 200
            assert c.get("/api/v1/updates", headers={"Authorization": f"Bearer {f.token('press-01')}"}).json() == {
                "updates": []}
    finally:
        stop_collector(f.collector)
    short = tmp_path / "short.token"
    short.write_text("abc")
    r = mlpack("collector", "serve", "--data-dir", tmp_path / "x", "--viewer-token-file", short)
    assert r.returncode == 2 and "a viewer token needs at least 16 characters" in r.stderr
