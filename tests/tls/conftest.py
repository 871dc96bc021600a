"""TLS fixtures: a private PKI made with the example's own code, and real HTTPS collectors.

``pki`` (session) writes, with ``examples/tls/make_certs.py``'s functions (so the example is
exercised too):

* ``ca``: the fleet CA; ``server``: the collector's certificate for localhost/127.0.0.1;
  ``expired``: one that ended yesterday; ``wrong_host``: one for ``collector.example`` only;
* ``device_a``/``device_b``: device client certificates of the fleet CA;
* ``stranger_ca`` and ``stranger``: another CA and a device certificate it issued.
"""

from __future__ import annotations

import datetime as dt
import importlib.util
import random
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pytest

from mlpack_edge.monitor_agent.agent import Agent, ModelInfo
from mlpack_edge.monitor_agent.config import AgentConfig
from mlpack_edge.monitor_agent.drift import Thresholds
from tests.collector.process import Collector, start_collector, stop_collector
from tests.monitor_agent.helpers import MODEL_HASH, FakeClock, FakeCollector, fixed_sampler, make_profile, traffic

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "examples" / "tls" / "make_certs.py"


def load_example() -> ModuleType:
    spec = importlib.util.spec_from_file_location("make_certs", EXAMPLE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@dataclass(frozen=True)
class Pair:
    cert: Path
    key: Path


@dataclass(frozen=True)
class Pki:
    folder: Path
    ca: Path
    server: Pair
    expired: Pair
    wrong_host: Pair
    device_a: Pair
    device_b: Pair
    stranger_ca: Path
    stranger: Pair


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    mc = load_example()
    folder = tmp_path_factory.mktemp("pki")
    ca, ca_key = mc.make_ca()
    mc._write(folder, "ca", ca, ca_key)

    def issue(stem: str, *args: Any, **kw: Any) -> Pair:
        cert, key = mc.issue(*args, **kw)
        mc._write(folder, stem, cert, key)
        return Pair(folder / f"{stem}.pem", folder / f"{stem}.key")

    past = dt.datetime.now(dt.timezone.utc) - dt.timedelta(days=30)
    other, other_key = mc.make_ca("stranger CA")
    mc._write(folder, "stranger-ca", other, other_key)
    return Pki(
        folder,
        folder / "ca.pem",
        server=issue("server", ca, ca_key, "localhost", server=True, hosts=("localhost", "127.0.0.1")),
        expired=issue("expired", ca, ca_key, "localhost", server=True, hosts=("localhost", "127.0.0.1"),
                      days=29, not_before=past),
        wrong_host=issue("wrong-host", ca, ca_key, "collector.example", server=True, hosts=("collector.example",)),
        device_a=issue("device-a", ca, ca_key, "device-a", server=False),
        device_b=issue("device-b", ca, ca_key, "device-b", server=False),
        stranger_ca=folder / "stranger-ca.pem",
        stranger=issue("stranger", other, other_key, "device-a", server=False),
    )


@pytest.fixture
def https_collector(tmp_path: Path) -> Iterator[Callable[..., Collector]]:
    """``start(server_pair, *extra)``: a real ``collector serve`` over HTTPS on 127.0.0.1 (stopped after)."""
    started: list[Collector] = []

    def start(pair: Pair, *extra: str) -> Collector:
        db = "sqlite:///" + str(tmp_path / f"collector-{len(started)}.db")
        c = start_collector(db, "--tls-cert", str(pair.cert), "--tls-key", str(pair.key), *extra)
        started.append(c)
        assert c.url.startswith("https://127.0.0.1:"), c.url
        return c

    yield start
    for c in started:
        stop_collector(c)


MODEL = ModelInfo(MODEL_HASH, "churn", "1.2.0", make_profile(), Thresholds())


def record(state: Path, windows: int) -> None:
    """``windows`` closed telemetry windows of MODEL in ``state``'s outbox (ended in the last hour)."""
    clock = FakeClock(time.time() - 60 * (windows + 1))
    a = Agent.open(MODEL, state, AgentConfig(), clock=clock, transport=FakeCollector(), rng=random.Random(0),
                   sampler=fixed_sampler)
    rng = np.random.default_rng(windows)
    for _ in range(windows):
        a.recorder.record(*traffic(rng, 50, 0.0), 0.003)
        clock.advance(60)
        a.tick()
    a.outbox.close()


def run_cli(*args: str | Path, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """``python -m mlpack_edge.cli ARGS`` as a user runs it (its own process, clean of SSL_CERT_* settings)."""
    import os
    import sys

    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLPACK_", "SSL_CERT_"))}
    return subprocess.run([sys.executable, "-m", "mlpack_edge.cli", *map(str, args)], capture_output=True,
                          text=True, timeout=timeout, env=env)
