"""The audit trail on the device: every governance event once, in order, delivered to a real collector."""

from __future__ import annotations

import hashlib
import json
import sqlite3
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from click.testing import CliRunner

from mlpack_edge.collector import admin
from mlpack_edge.errors import InstallError, IntegrityError
from mlpack_edge.monitor_agent._store import DB_NAME
from mlpack_edge.monitor_agent.cli import agent
from mlpack_edge.monitor_agent.config import AgentConfig
from mlpack_edge.runtime.install import Payload, install, rollback, uninstall
from tests.collector.process import Collector, start_collector, stop_collector

from .conftest import NAME, Bundles, Keys, NoSystemd, trusting

pytestmark = pytest.mark.usefixtures("clean_env")
MakePayload = Callable[[Path], Payload]


def _events(state: Path) -> list[tuple[str, dict[str, Any]]]:
    conn = sqlite3.connect(f"file:{state / DB_NAME}?mode=ro", uri=True)
    try:
        rows = conn.execute("SELECT event, detail FROM audit ORDER BY seq").fetchall()
    finally:
        conn.close()
    return [(event, json.loads(detail)) for event, detail in rows]


def _history(bundles: Bundles, keys: Keys, make_payload: MakePayload, prefix: Path, **kwargs: Any) -> None:
    """install 1.0.0, refuse a stranger-signed bundle, upgrade to 1.1.0, fail to install 1.3.0, roll back."""
    install(make_payload(bundles.v1), prefix, trust=trusting(keys.signer), systemd=NoSystemd(), **kwargs)
    with pytest.raises(IntegrityError):
        install(make_payload(bundles.unsigned), prefix, systemd=NoSystemd())
    install(make_payload(bundles.v2), prefix, systemd=NoSystemd())
    with pytest.raises(InstallError):
        install(make_payload(bundles.bad_golden), prefix, systemd=NoSystemd())
    rollback(prefix, NAME, systemd=NoSystemd())


def test_install_upgrade_refusal_failure_rollback_uninstall_are_recorded(
    bundles: Bundles, keys: Keys, make_payload: MakePayload, tmp_path: Path
) -> None:
    prefix = tmp_path / "opt"
    _history(bundles, keys, make_payload, prefix)
    uninstall(prefix, NAME, systemd=NoSystemd())
    events = _events(prefix / NAME / "state")
    assert [e for e, _ in events] == [
        "trust_changed",
        "install",
        "refused",
        "upgrade",
        "verify_failed",
        "rollback",
        "uninstall",
    ]
    detail = dict(events)
    assert detail["trust_changed"] == {"keys": [keys.signer.key_id], "allow_unsigned": False}
    assert detail["install"] == {
        "version": "1.0.0",
        "previous": None,
        "signed_by": keys.signer.key_id,
        "content_hash": hashlib.sha256((bundles.v1 / "manifest.json").read_bytes()).hexdigest(),
    }
    assert detail["refused"]["version"] == "1.2.0"
    assert detail["refused"]["reason"] == (
        f"{bundles.unsigned}: unsigned bundle refused (install with --trust-key KEY.pub, or --allow-unsigned)"
    )
    assert (detail["upgrade"]["version"], detail["upgrade"]["previous"]) == ("1.1.0", "1.0.0")
    assert (detail["verify_failed"]["version"], detail["verify_failed"]["during"]) == ("1.3.0", "install")
    assert "golden set: 0 of 28 labels differ" in detail["verify_failed"]["reason"]
    assert detail["rollback"] == {"from_version": "1.1.0", "to_version": "1.0.0"}
    assert detail["uninstall"] == {"version": "1.0.0"}


def test_a_failed_check_of_an_installed_version_is_recorded_once(
    bundles: Bundles, keys: Keys, make_payload: MakePayload, tmp_path: Path
) -> None:
    prefix = tmp_path / "opt"
    install(make_payload(bundles.v1), prefix, trust=trusting(keys.signer), systemd=NoSystemd())
    model = prefix / NAME / "1.0.0" / "bundle" / "model.onnx"
    data = model.read_bytes()
    model.write_bytes(data[:-1] + bytes([data[-1] ^ 0xFF]))  # always a change, whatever the last byte
    proc = subprocess.run(
        [str(prefix / NAME / "current" / NAME), "verify"], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 1
    events = _events(prefix / NAME / "state")
    assert [e for e, _ in events] == ["trust_changed", "install", "verify_failed"]
    assert events[-1][1] == {
        "version": "1.0.0",
        "reason": f"{model.parent}: file model.onnx does not match its sha256 in the manifest (tampered or corrupt)",
    }


def test_nothing_is_recorded_for_a_model_never_installed_here(
    bundles: Bundles, keys: Keys, make_payload: MakePayload, tmp_path: Path
) -> None:
    with pytest.raises(IntegrityError):
        install(make_payload(bundles.v1), tmp_path / "opt", trust=trusting(keys.stranger), systemd=NoSystemd())
    assert not (tmp_path / "opt").exists()  # a refused first install leaves no trace, not even a log


@pytest.fixture
def live(tmp_path: Path) -> Iterator[Collector]:
    c = start_collector("sqlite:///" + str(tmp_path / "collector.db"))
    yield c
    stop_collector(c)


def test_audit_events_reach_the_collector_and_its_device_page(
    bundles: Bundles, keys: Keys, make_payload: MakePayload, tmp_path: Path, live: Collector
) -> None:
    device = "gate-7"
    token = admin.add_device(live.db_url, device)
    prefix = tmp_path / "opt"
    config = AgentConfig(collector_url=live.url, device_id=device, token=token)
    _history(bundles, keys, make_payload, prefix, agent_config=config)
    state = prefix / NAME / "state"
    r = CliRunner().invoke(agent, ["sync", "--state-dir", str(state)])
    assert (r.exit_code, r.output) == (0, "delivered 0 windows and 6 audit events in 1 batches\n")
    with httpx.Client(base_url=live.url, timeout=30) as client:
        rows = client.get(f"/api/v1/devices/{device}").json()["audit"]
        page = client.get(f"/devices/{device}").text
    assert [(a["seq"], a["event"]) for a in rows] == list(
        enumerate(["trust_changed", "install", "refused", "upgrade", "verify_failed", "rollback"], start=1)
    )[::-1]
    assert {a["event"]: a["detail"] for a in rows}["rollback"] == {"from_version": "1.1.0", "to_version": "1.0.0"}
    assert (
        '<td>rollback</td><td class="detail">from_version <code>1.1.0</code> · to_version <code>1.0.0</code></td>'
        in page
    )
    for event in ("refused", "verify_failed"):  # failures are marked like a drifting row
        assert (
            f'<tr class="row-drift"><td class="num">{[a["seq"] for a in rows if a["event"] == event][0]}</td>' in page
        )
    assert f"signed_by <code>{keys.signer.key_id}</code>" in page
    r = CliRunner().invoke(agent, ["sync", "--state-dir", str(state)])
    assert (r.exit_code, r.output) == (3, "nothing to deliver\n")  # delivered once
