"""``examples/tls/make_certs.py`` as a user runs it, then a collector and a device on what it made."""

from __future__ import annotations

import stat
import subprocess
import sys
from pathlib import Path

from click.testing import CliRunner

from mlpack_edge.collector import admin
from mlpack_edge.monitor_agent.cli import agent
from tests.collector.process import start_collector, stop_collector

from .conftest import EXAMPLE, record


class Obj:
    def __init__(self, state: Path) -> None:
        self.state_dir = state


def make(out: Path, *args: str) -> list[str]:
    proc = subprocess.run([sys.executable, str(EXAMPLE), str(out), *args], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.splitlines()


def test_the_example_pki_serves_https_and_authenticates_a_device(tmp_path: Path) -> None:
    pki = tmp_path / "pki"
    assert make(pki, "--host", "collector.local", "--device", "press-07") == [
        f"CA             {pki / 'ca.pem'} (key {pki / 'ca.key'}: keep it offline)",
        f"collector      {pki / 'collector.pem'} for localhost, 127.0.0.1, collector.local",
        f"device         {pki / 'press-07.pem'} (CN=press-07)",
    ]
    for key in ("ca.key", "collector.key", "press-07.key"):
        assert stat.S_IMODE((pki / key).stat().st_mode) == 0o600, key
    ca = (pki / "ca.pem").read_bytes()
    assert make(pki, "--device", "press-08") == [  # a later run reuses the CA and keeps the server certificate
        f"CA             {pki / 'ca.pem'} (reused)",
        f"device         {pki / 'press-08.pem'} (CN=press-08)",
    ]
    assert (pki / "ca.pem").read_bytes() == ca

    db = "sqlite:///" + str(tmp_path / "c.db")
    c = start_collector(db, "--tls-cert", str(pki / "collector.pem"), "--tls-key", str(pki / "collector.key"),
                        "--tls-client-ca", str(pki / "ca.pem"), "--device-auth", "cert")
    try:
        admin.add_device(db, "press-08", [pki / "press-08.pem"])
        state = tmp_path / "state"
        record(state, 2)
        res = CliRunner().invoke(agent, [
            "sync", "--collector-url", c.url, "--device-id", "press-08", "--ca-file", str(pki / "ca.pem"),
            "--client-cert", str(pki / "press-08.pem"), "--client-key", str(pki / "press-08.key"),
        ], obj=Obj(state))
        assert (res.exit_code, res.output) == (0, "delivered 2 windows and 0 audit events in 1 batches\n")
    finally:
        stop_collector(c)
