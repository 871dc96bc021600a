"""The device side of a rollout against a real collector process: offers, resumable downloads,
install through the real install path (signature under the device's trust, verify with the
golden set, atomic switch), refusals that fail the stage, and rollback.

The installed "executable" is the governance fixture's launcher script running the real device
CLI (no PyInstaller build here; the slow tier does it with real executables).
"""

from __future__ import annotations

import hashlib
import shutil
import time
from collections.abc import Callable, Mapping
from pathlib import Path

import httpx
import pytest

from mlpack_edge.builder.remote import pack_bundle
from mlpack_edge.monitor_agent.agent import ModelInfo
from mlpack_edge.monitor_agent.config import AgentConfig
from mlpack_edge.monitor_agent.download import DownloadError, download
from mlpack_edge.monitor_agent.outbox import Outbox
from mlpack_edge.monitor_agent.transport import Response, TransportError, UrllibTransport
from mlpack_edge.monitor_agent.uploader import Uploader
from mlpack_edge.monitor_agent.wire import Window
from mlpack_edge.runtime.install import Payload, install
from mlpack_edge.runtime.manifest import read_manifest
from mlpack_edge.runtime.update import apply_offers, installed_hash, poll_offers
from tests.governance.conftest import resign
from tests.rollout.conftest import Bundles, Fleet, Keys, NoSystemd, trusting

pytestmark = pytest.mark.usefixtures("clean_env")


class Device:
    """press-01 with gov 1.0.0 installed under its own prefix, configured for the fleet's collector."""

    def __init__(self, fleet: Fleet, prefix: Path, payload: Payload, name: str = "press-01") -> None:
        self.fleet, self.prefix, self.payload, self.name = fleet, prefix, payload, name
        self.config = AgentConfig(collector_url=fleet.url, device_id=name, token=fleet.token(name))
        self.headers = {"Authorization": f"Bearer {self.config.token}"}
        self.transport = UrllibTransport(timeout=30)

    @property
    def state(self) -> Path:
        return self.prefix / "gov" / "state"

    def update(self, fetcher: object | None = None):
        offers = poll_offers(self.transport, self.fleet.url, self.headers)
        return apply_offers(offers, prefix=self.prefix, name="gov", collector_url=self.fleet.url,
                            headers=self.headers, fetcher=fetcher or self.transport, payload=self.payload,
                            systemd=NoSystemd())

    def report(self, served: int = 0) -> None:
        """Deliver the audit events (the collector learns how the update went), after a window
        of ``served`` requests answered by the installed build (the hold judges its telemetry)."""
        with Outbox.open(self.state, self.config.cap_bytes) as box:
            if served:
                model = ModelInfo.from_bundle_dir(self.prefix / "gov" / "current" / "bundle")
                box.register_model(model.content_hash, model.wire(), model.thresholds.to_dict())
                now = time.time()
                box.add_window(Window(model=model.content_hash, seq=0, start=now - 60, end=now,
                                      requests=served, rows=served))
            assert Uploader(box, self.config, self.transport).sync().outcome in ("delivered", "nothing")

    def collector_events(self) -> list[tuple[str, str | None]]:
        """The device's audit trail as the collector stored it, oldest first: (event, rollout)."""
        doc = httpx.get(f"{self.fleet.url}/api/v1/devices/{self.name}", timeout=30).json()
        return [(e["event"], (e.get("detail") or {}).get("rollout")) for e in reversed(doc["audit"])]


@pytest.fixture
def device(fleet: Fleet, bundles: Bundles, keys: Keys, make_payload: Callable[[Path], Payload],
           tmp_path: Path) -> Device:
    prefix = tmp_path / "opt"
    payload = make_payload(bundles.v1)
    d = Device(fleet, prefix, payload)
    install(payload, prefix, trust=trusting(keys.signer), systemd=NoSystemd(), agent_config=d.config)
    return d


def admin(fleet: Fleet) -> httpx.Client:
    return httpx.Client(base_url=fleet.url, timeout=30, headers={"Authorization": f"Bearer {fleet.token('admin')}"})


def publish_and_start(fleet: Fleet, bundle: Path, version: str, **plan: object) -> dict:
    with admin(fleet) as c:
        assert c.post("/api/v1/releases", content=pack_bundle(bundle)).status_code in (200, 201)
        r = c.post("/api/v1/rollouts", json={"model": "gov", "version": version, "stages": [100], "hold": 0,
                                             "devices": ["press-01"], **plan})
        assert r.status_code == 201, r.text
        return r.json()


def rollout(fleet: Fleet) -> dict:
    with admin(fleet) as c:
        return c.get("/api/v1/rollouts/gov").json()


def settled(fleet: Fleet, state: str, within: float = 15.0) -> dict:
    """The rollout once the collector's tick (every 2 s) has moved it to ``state`` (or as it is then)."""
    deadline = time.monotonic() + within
    while True:
        doc = rollout(fleet)
        if doc["state"] == state or time.monotonic() > deadline:
            return doc
        time.sleep(0.2)


def test_an_offered_release_is_downloaded_verified_installed_and_reported(device: Device, bundles: Bundles) -> None:
    publish_and_start(device.fleet, bundles.v2, "1.1.0")
    outcome = device.update()
    assert outcome.action == "installed" and outcome.version == "1.1.0", outcome
    assert installed_hash(device.prefix, "gov") == read_manifest(bundles.v2).content_hash
    assert (device.prefix / "gov" / "previous").readlink().name == "1.0.0"
    assert not list((device.state / "downloads").iterdir())  # the archive is gone once installed
    device.report()
    assert rollout(device.fleet)["state"] == "active"  # installed, but no telemetry from 1.1.0 yet
    device.report(served=30)
    doc = settled(device.fleet, "completed")
    assert doc["state"] == "completed", doc
    assert [e for e in device.collector_events() if e[0].startswith("update_")] == [
        ("update_offered", doc["id"]), ("update_downloaded", doc["id"]), ("update_shadow", doc["id"]),
        ("update_installed", doc["id"])]
    assert [e["event"] for e in doc["events"]] == ["started", "completed"]
    (stage,) = doc["stages"]
    assert [d["device"] for d in stage["devices"]] == ["press-01"]
    assert stage["devices"][0]["state"] == "updated"
    assert stage["agreement"] == stage["devices"][0]["detail"]["shadow"]["agreement"] == 1.0
    assert device.update().action == "none"  # running it already: nothing downloaded again


def test_a_bundle_signed_by_a_key_the_device_does_not_trust_fails_the_stage(
        device: Device, bundles: Bundles, keys: Keys, copy_bundle: Callable[[Path], Path]) -> None:
    stranger = copy_bundle(bundles.v2)
    resign(stranger, keys.stranger)
    publish_and_start(device.fleet, stranger, "1.1.0")
    outcome = device.update()
    assert outcome.action == "failed"
    assert "which is not trusted here" in outcome.detail
    assert installed_hash(device.prefix, "gov") == read_manifest(bundles.v1).content_hash  # old one still current
    device.report()
    doc = rollout(device.fleet)
    assert doc["state"] == "failed"
    assert doc["reason"].startswith("stage 1 (100%): device press-01: ")
    assert "not trusted here" in doc["reason"]
    assert device.update().action == "none"  # the offer is now a rollback of a build this device never ran


def test_a_candidate_that_disagrees_with_the_current_model_fails_its_shadow_phase(
        device: Device, inverted: Path) -> None:
    """Trained on inverted labels, it passes its own gates and golden set: only the shadow phase
    (here on the golden probe inputs of both builds: ``update`` has no live traffic) catches it."""
    publish_and_start(device.fleet, inverted, "1.4.0", shadow=60, agreement_floor=0.9)
    outcome = device.update()
    assert outcome.action == "failed"
    assert outcome.detail.startswith("shadow: agreement ") and "is below the floor 0.9" in outcome.detail
    assert installed_hash(device.prefix, "gov") != read_manifest(inverted).content_hash
    assert not (device.prefix / "gov" / "1.4.0").exists()
    device.report()
    doc = rollout(device.fleet)
    assert doc["state"] == "failed" and "shadow: agreement" in doc["reason"]
    (d,) = doc["stages"][0]["devices"]
    assert d["state"] == "failed"
    assert d["detail"]["shadow"]["passed"] is False
    assert doc["stages"][0]["agreement"] == d["detail"]["shadow"]["agreement"] < 0.5
    html = httpx.get(f"{device.fleet.url}/rollouts").text  # the page says the same
    assert f"Halted: stage 1 (100%): device press-01: shadow: agreement" in html
    assert f"lowest shadow agreement {doc['stages'][0]['agreement'] * 100:.1f} %" in html
    shadow = [e for e in httpx.get(f"{device.fleet.url}/api/v1/devices/press-01").json()["audit"]
              if e["event"] == "update_shadow"][0]["detail"]
    assert shadow["passed"] is False and shadow["agreement"] < 0.5 and shadow["rows"] >= 20


def test_a_golden_set_this_cpu_cannot_reproduce_fails_the_stage(device: Device, bundles: Bundles) -> None:
    publish_and_start(device.fleet, bundles.bad_golden, "1.3.0")
    outcome = device.update()
    assert outcome.action == "failed" and "verify failed" in outcome.detail and "golden" in outcome.detail
    assert installed_hash(device.prefix, "gov") == read_manifest(bundles.v1).content_hash
    assert not (device.prefix / "gov" / "1.3.0").exists()
    device.report()
    assert rollout(device.fleet)["state"] == "failed"


def test_an_aborted_rollout_rolls_its_devices_back(device: Device, bundles: Bundles) -> None:
    publish_and_start(device.fleet, bundles.v2, "1.1.0", hold=3600)
    assert device.update().action == "installed"
    device.report()
    with admin(device.fleet) as c:
        assert c.post("/api/v1/rollouts/gov/abort").json()["state"] == "aborted"
    outcome = device.update()
    assert outcome.action == "rolled back" and outcome.version == "1.0.0"
    assert installed_hash(device.prefix, "gov") == read_manifest(bundles.v1).content_hash
    device.report()
    (d,) = rollout(device.fleet)["stages"][0]["devices"]
    assert d["state"] == "rolled_back"


def test_the_ingest_reply_carries_the_offer_only_to_devices_it_concerns(device: Device, bundles: Bundles) -> None:
    publish_and_start(device.fleet, bundles.v2, "1.1.0")
    seen: list[list[dict]] = []
    for name in ("press-01", "press-02"):
        config = AgentConfig(collector_url=device.fleet.url, device_id=name, token=device.fleet.token(name))
        state = device.prefix.parent / f"state-{name}"
        state.mkdir()
        with Outbox.open(state, config.cap_bytes) as box:
            box.append_audit("note", {"hello": name})
            result = Uploader(box, config, on_updates=seen.append).sync()
        assert result.outcome == "delivered"
        assert (result.updates is not None) == (name == "press-01")
    assert len(seen) == 1 and seen[0][0]["action"] == "install" and seen[0][0]["version"] == "1.1.0"


class Cutting:
    """A fetcher that delivers ``keep`` bytes of the transfer, then loses the connection (once)."""

    def __init__(self, inner: UrllibTransport, keep: int) -> None:
        self.inner, self.keep, self.sent, self.cut = inner, keep, 0, False

    def get(self, url: str, headers: Mapping[str, str]) -> Response:
        if self.cut or self.keep < 0:
            return self.inner.get(url, headers)
        reply = self.inner.get(url, headers)
        if self.sent + len(reply.body) <= self.keep:
            self.sent += len(reply.body)
            return reply
        self.cut = True
        left = self.keep - self.sent
        if left <= 0:
            raise TransportError("connection reset by peer")
        return Response(reply.status, reply.headers, reply.body[:left])  # a short read, then nothing


@pytest.mark.parametrize("keep", [0, 1, 4095, 4096, 4097, -2])
def test_a_download_cut_at_any_byte_resumes_where_it_stopped(fleet: Fleet, bundles: Bundles, tmp_path: Path,
                                                             keep: int) -> None:
    archive = pack_bundle(bundles.v2)
    with admin(fleet) as c:
        c.post("/api/v1/releases", content=archive)
    digest = hashlib.sha256(archive).hexdigest()
    url = f"{fleet.url}/api/v1/releases/{read_manifest(bundles.v2).content_hash}/bundle"
    headers = {"Authorization": f"Bearer {fleet.token('press-01')}"}
    inner = UrllibTransport(timeout=30)
    keep = len(archive) + keep if keep < 0 else keep  # -2: cut two bytes before the end
    cutting = Cutting(inner, keep)
    dest = tmp_path / "dl"
    got = None
    for _ in range(3):
        try:
            got = download(cutting, url, headers, dest, digest, len(archive), chunk=4096)
            break
        except TransportError:
            continue
    assert got is not None and got.read_bytes() == archive
    assert sorted(p.name for p in dest.iterdir()) == [f"{digest}.tar.gz"]


def test_a_corrupted_download_is_discarded_and_fetched_again(fleet: Fleet, bundles: Bundles, tmp_path: Path) -> None:
    archive = pack_bundle(bundles.v2)
    with admin(fleet) as c:
        c.post("/api/v1/releases", content=archive)
    digest = hashlib.sha256(archive).hexdigest()
    url = f"{fleet.url}/api/v1/releases/{read_manifest(bundles.v2).content_hash}/bundle"
    headers = {"Authorization": f"Bearer {fleet.token('press-01')}"}
    inner = UrllibTransport(timeout=30)

    class Flip:
        def get(self, url: str, headers: Mapping[str, str]) -> Response:
            r = inner.get(url, headers)
            return Response(r.status, r.headers, bytes([r.body[0] ^ 1]) + r.body[1:])

    with pytest.raises(DownloadError, match=r"expected \d+ bytes with sha256 .*discarded, the next attempt starts over"):
        download(Flip(), url, headers, tmp_path, digest, len(archive))
    assert not list(tmp_path.glob("*.part")) and not list(tmp_path.glob("*.tar.gz"))
    assert download(inner, url, headers, tmp_path, digest, len(archive)).read_bytes() == archive


def test_a_full_disk_mid_download_keeps_the_old_version(device: Device, bundles: Bundles, tmp_path: Path) -> None:
    """The downloads folder is a file here, so writing fails like a full disk would: one line, nothing installed."""
    publish_and_start(device.fleet, bundles.v2, "1.1.0")
    shutil.rmtree(device.state / "downloads", ignore_errors=True)
    (device.state / "downloads").write_bytes(b"")  # mkdir/open fail: an OSError mid-download
    outcome = device.update()
    assert outcome.action == "unreachable" and outcome.detail.startswith(f"download to {device.state / 'downloads'}: ")
    assert "the installed version keeps running" in outcome.detail
    assert installed_hash(device.prefix, "gov") == read_manifest(bundles.v1).content_hash
