"""``kill -9`` of a device in the middle of an update, at spread-out moments: afterwards it always
has a verified current version (the old or the new one, never neither), and the next run
finishes the update and the rollout converges.

The update runs in a child process (the real ``apply_offers`` against a real collector
process, downloading through a slowed fetcher so the kills land in the download as well as
in the install); the installed launcher is the governance fixture's script running the real
device CLI.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from mlpack_edge.runtime.install import Payload, install, verify_failure
from mlpack_edge.runtime.manifest import read_manifest
from tests.rollout.conftest import Bundles, Fleet, Keys, NoSystemd, trusting
from tests.rollout.test_device_update import Device, publish_and_start, settled

pytestmark = pytest.mark.usefixtures("clean_env")

_CHILD = """
import sys, time
from pathlib import Path
from mlpack_edge.monitor_agent.transport import UrllibTransport
from mlpack_edge.runtime.install import Payload
from mlpack_edge.runtime.update import apply_offers, poll_offers

prefix, launcher, meipass, bundle, url, token, delay = sys.argv[1:]

class Slow:
    def __init__(self):
        self.inner = UrllibTransport()
    def get(self, u, h):
        time.sleep(float(delay))
        return self.inner.get(u, h)

headers = {"Authorization": "Bearer " + token}
offers = poll_offers(UrllibTransport(), url, headers)
outcome = apply_offers(offers, prefix=Path(prefix), name="gov", collector_url=url, headers=headers, fetcher=Slow(),
                       payload=Payload(Path(launcher), Path(meipass), Path(bundle)))
print(outcome.action, flush=True)
"""


def _child(device: Device, payload: Payload, delay: float) -> subprocess.Popen[str]:
    args = [str(device.prefix), str(payload.launcher), str(payload.internal), str(payload.bundle), device.fleet.url,
            str(device.config.token), str(delay)]
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLPACK_")}
    return subprocess.Popen([sys.executable, "-c", _CHILD, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=env)


def test_kill_9_at_any_step_of_an_update_leaves_a_verified_version(
        fleet: Fleet, bundles: Bundles, keys: Keys, make_payload: Callable[[Path], Payload], tmp_path: Path) -> None:
    payload = make_payload(bundles.v1)
    device = Device(fleet, tmp_path / "opt", payload)
    install(payload, device.prefix, trust=trusting(keys.signer), systemd=NoSystemd(), agent_config=device.config)
    publish_and_start(fleet, bundles.v2, "1.1.0", shadow=0)
    model_dir = device.prefix / "gov"
    versions = {read_manifest(bundles.v1).content_hash: "1.0.0", read_manifest(bundles.v2).content_hash: "1.1.0"}

    # About how long an uninterrupted update takes here: the download (slowed to 0.3 s) plus an install.
    t0 = time.monotonic()
    install(make_payload(bundles.v2), tmp_path / "probe", trust=trusting(keys.signer), systemd=NoSystemd())
    took = 0.3 + (time.monotonic() - t0)
    kills = []
    for fraction in (0.1, 0.25, 0.4, 0.55, 0.7, 0.85):
        proc = _child(device, payload, 0.3)
        time.sleep(fraction * took + 0.5)  # + the child's own start (imports)
        killed = proc.poll() is None
        if killed:
            proc.send_signal(signal.SIGKILL)
        proc.communicate(timeout=60)
        current = (model_dir / "current").readlink().name
        kills.append((killed, current))
        assert current in ("1.0.0", "1.1.0")
        assert verify_failure(model_dir / "current" / "gov") is None  # never neither: current verifies
        if current == "1.1.0":
            break
    assert (True, "1.0.0") in kills, f"no kill landed before the switch: {kills}"

    proc = _child(device, payload, 0.0)  # the next run finishes what the killed ones started
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    assert out.strip() in ("installed", "none")
    assert (model_dir / "current").readlink().name == "1.1.0"
    assert versions[read_manifest(model_dir / "current" / "bundle").content_hash] == "1.1.0"
    assert not [p for p in model_dir.iterdir() if p.name.startswith(".") and p.name != ".lock"]  # no half layout left
    device.report(served=30)
    assert settled(fleet, "completed")["state"] == "completed"
