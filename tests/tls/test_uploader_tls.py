"""The uploader's handling of TLS failures and certificate-only devices (through the Transport seam)."""

from __future__ import annotations

import random
from pathlib import Path

from mlpack_edge.monitor_agent.config import AgentConfig, load_config
from mlpack_edge.monitor_agent.outbox import Outbox
from mlpack_edge.monitor_agent.transport import TlsError
from mlpack_edge.monitor_agent.uploader import BACKOFF_CAP, SyncResult, Uploader
from mlpack_edge.monitor_agent.wire import Window
from tests.monitor_agent.helpers import MODEL_HASH, T0, FakeCollector, fixed_sampler

WIRE = {"name": "churn", "version": "1.2.0", "profile": {"format": "mlpack.profile/1", "features": [], "prediction": None}}


def _box(path: Path, n: int) -> Outbox:
    box = Outbox.open(path)
    box.register_model(MODEL_HASH, WIRE, {})
    for i in range(n):
        w = Window(model=MODEL_HASH, seq=0, start=T0 + 60 * i, end=T0 + 60 * (i + 1), requests=1, rows=3)
        w.system.add(fixed_sampler())
        box.add_window(w)
    return box


class Waiter:
    def __init__(self, rounds: int) -> None:
        self.delays: list[float] = []
        self.rounds = rounds

    def is_set(self) -> bool:
        return len(self.delays) >= self.rounds

    def wait(self, timeout: float | None = None) -> bool:
        assert timeout is not None
        self.delays.append(timeout)
        return self.is_set()


def test_a_tls_failure_keeps_everything_and_waits_at_the_cap(tmp_path: Path) -> None:
    collector = FakeCollector(script=[TlsError("c.example:443: server certificate has expired (certificate has expired)")])
    config = AgentConfig(collector_url="https://c.example", device_id="press-07", token="tok")
    with _box(tmp_path, 2) as box:
        waiter, seen = Waiter(2), []
        Uploader(box, config, collector, random.Random(0)).run(waiter, 60.0, seen.append)
        assert [r.outcome for r in seen] == ["tls", "delivered"]
        assert waiter.delays == [BACKOFF_CAP, 60.0]
        assert seen[0].summary() == ("TLS failure talking to the collector, 2 windows kept (c.example:443: server "
                                     "certificate has expired (certificate has expired))")
        assert len(collector.windows) == 2


def test_a_certificate_only_device_sends_no_authorization_header(tmp_path: Path) -> None:
    collector = FakeCollector()
    config = AgentConfig(collector_url="https://c.example", device_id="press-07", client_cert="/d.pem", client_key="/d.key")
    assert config.can_upload
    with _box(tmp_path, 1) as box:
        result: SyncResult = Uploader(box, config, collector, random.Random(0)).sync()
    assert result.outcome == "delivered"
    assert "Authorization" not in collector.headers[0]


def test_tls_settings_from_the_environment(tmp_path: Path) -> None:
    env = {"MLPACK_CA_FILE": "/ca.pem", "MLPACK_CLIENT_CERT": "/d.pem", "MLPACK_CLIENT_KEY": "/d.key"}
    cfg = load_config(tmp_path, environ=env)
    assert (cfg.ca_file, cfg.client_cert, cfg.client_key) == ("/ca.pem", "/d.pem", "/d.key")
    assert cfg.public_dict() == {
        "collector_url": None, "device_id": None, "token": None, "window_seconds": 60.0, "cap_bytes": 64 * 1024 * 1024,
        "ca_file": "/ca.pem", "client_cert": "/d.pem", "client_key": "/d.key",
    }
