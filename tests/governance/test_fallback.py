"""Local fallback: an installed current version that fails its start-up check serves the previous one."""

from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
import sys
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from mlpack_edge.monitor_agent._store import DB_NAME
from mlpack_edge.runtime.install import Payload, install
from tests._proc import start_and_wait

from .conftest import NAME, Bundles, Keys, NoSystemd, trusting

pytestmark = pytest.mark.usefixtures("clean_env")
MakePayload = Callable[[Path], Payload]


@dataclass
class Started:
    proc: subprocess.Popen[str]
    lines: list[str]  # stderr up to "serving ..." (or to the end, when it exited)
    url: str | None


def _serve(cmd: list[str]) -> Started:
    got = start_and_wait([*cmd, "serve", "--port", "0", "--no-monitor"], "serving ")
    lines = [line.rstrip("\n") for line in got.lines]
    return Started(got.proc, lines, got.line.split(" on ")[1].split()[0] if got.line else None)


@pytest.fixture
def serving() -> Iterator[Callable[[list[str]], Started]]:
    started: list[Started] = []

    def start(cmd: list[str]) -> Started:
        started.append(_serve(cmd))
        return started[-1]

    yield start
    for s in started:
        if s.proc.poll() is None:
            s.proc.kill()
        s.proc.wait(timeout=30)


def _health(url: str) -> dict[str, Any]:
    with urllib.request.urlopen(f"{url}/health", timeout=30) as r:
        return dict(json.loads(r.read()))


def _events(prefix: Path) -> list[tuple[str, dict[str, Any]]]:
    conn = sqlite3.connect(f"file:{prefix / NAME / 'state' / DB_NAME}?mode=ro", uri=True)
    try:
        return [(e, json.loads(d)) for e, d in conn.execute("SELECT event, detail FROM audit ORDER BY seq")]
    finally:
        conn.close()


def _two_versions(
    bundles: Bundles, keys: Keys, make_payload: MakePayload, prefix: Path, second: Path | None = None, **kwargs: Any
) -> Path:
    """1.0.0 then ``second`` (default 1.1.0) installed; returns the current launcher."""
    install(make_payload(bundles.v1), prefix, trust=trusting(keys.signer), systemd=NoSystemd())
    install(make_payload(second or bundles.v2), prefix, systemd=NoSystemd(), **kwargs)
    return prefix / NAME / "current" / NAME


def _tamper(prefix: Path, version: str) -> str:
    model = prefix / NAME / version / "bundle" / "model.onnx"
    data = model.read_bytes()
    model.write_bytes(data[:-1] + bytes([data[-1] ^ 0xFF]))  # always a change, whatever the last byte
    return f"{model.parent}: file model.onnx does not match its sha256 in the manifest (tampered or corrupt)"


def test_a_tampered_current_version_hands_over_to_the_previous_one(
    bundles: Bundles, keys: Keys, make_payload: MakePayload, tmp_path: Path, serving: Callable[[list[str]], Started]
) -> None:
    prefix = tmp_path / "opt"
    launcher = _two_versions(bundles, keys, make_payload, prefix)
    reason = _tamper(prefix, "1.1.0")
    started = serving([str(launcher)])
    assert started.url is not None, started.lines
    assert started.lines == [
        f"fallback: 1.1.0 failed its check at start ({reason}); serving previous version 1.0.0",
        f"fallback: serving {NAME} 1.0.0 because 1.1.0 failed its check at start ({reason})",
        f"serving {NAME} 1.0.0 on {started.url} (Ctrl-C to stop)",
    ]
    health = _health(started.url)
    assert (health["status"], health["version"]) == ("ok", "1.0.0")
    assert health["fallback"] == {"from_version": "1.1.0", "reason": reason}
    with urllib.request.urlopen(f"{started.url}/info", timeout=30) as r:
        assert r.read() == (prefix / NAME / "1.0.0" / "bundle" / "manifest.json").read_bytes()
    assert _events(prefix)[-2:] == [
        ("verify_failed", {"version": "1.1.0", "reason": reason}),
        ("fallback", {"from_version": "1.1.0", "to_version": "1.0.0", "reason": reason}),
    ]
    started.proc.send_signal(signal.SIGTERM)  # the same process (exec), so the service manager can stop it
    assert started.proc.wait(timeout=30) == 0


def test_a_failed_golden_replay_at_start_also_falls_back(
    bundles: Bundles, keys: Keys, make_payload: MakePayload, tmp_path: Path, serving: Callable[[list[str]], Started]
) -> None:
    """1.3.0 is intact and signed but this CPU no longer reproduces its golden set."""
    prefix = tmp_path / "opt"
    launcher = _two_versions(bundles, keys, make_payload, prefix, bundles.bad_golden, verifier=lambda f, n: None)
    started = serving([str(launcher)])
    assert started.url is not None, started.lines
    assert started.lines[0].startswith(f"fallback: 1.3.0 failed its check at start ({NAME} 1.3.0 at ")
    assert "golden set: 0 of 28 labels differ" in started.lines[0]
    assert _health(started.url)["version"] == "1.0.0"


def test_no_previous_version_means_a_plain_failure(
    bundles: Bundles, keys: Keys, make_payload: MakePayload, tmp_path: Path, serving: Callable[[list[str]], Started]
) -> None:
    prefix = tmp_path / "opt"
    install(make_payload(bundles.v1), prefix, trust=trusting(keys.signer), systemd=NoSystemd())
    reason = _tamper(prefix, "1.0.0")
    started = serving([str(prefix / NAME / "current" / NAME)])
    assert (started.proc.returncode, started.lines) == (1, [f"Error: {reason}"])
    assert [e for e, _ in _events(prefix)] == ["trust_changed", "install", "verify_failed"]


def test_a_fallback_never_falls_back_again(
    bundles: Bundles, keys: Keys, make_payload: MakePayload, tmp_path: Path, serving: Callable[[list[str]], Started]
) -> None:
    prefix = tmp_path / "opt"
    launcher = _two_versions(bundles, keys, make_payload, prefix)
    first, second = _tamper(prefix, "1.1.0"), _tamper(prefix, "1.0.0")
    started = serving([str(launcher)])
    assert (started.proc.returncode, started.lines) == (
        1,
        [
            f"fallback: 1.1.0 failed its check at start ({first}); serving previous version 1.0.0",
            f"Error: {second}",
        ],
    )
    assert [e for e, _ in _events(prefix)][-3:] == ["verify_failed", "fallback", "verify_failed"]


def test_an_ad_hoc_run_of_an_installed_bundle_does_not_fall_back(
    bundles: Bundles, keys: Keys, make_payload: MakePayload, tmp_path: Path, serving: Callable[[list[str]], Started]
) -> None:
    prefix = tmp_path / "opt"
    _two_versions(bundles, keys, make_payload, prefix)
    reason = _tamper(prefix, "1.1.0")
    bundle = prefix / NAME / "1.1.0" / "bundle"
    started = serving([sys.executable, "-m", "mlpack_edge.cli", "device", "--bundle", str(bundle)])
    assert (started.proc.returncode, started.lines) == (1, [f"Error: {reason}"])
