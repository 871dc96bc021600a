"""Collector fixtures: a real collector process per backend, devices, simulated telemetry."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import psycopg
import pytest

from mlpack.collector import admin
from mlpack.monitor_agent.profile import Profile
from tests._services import require_postgres
from tests.collector.sim import SimDevice, make_profile, model_hash


@dataclass
class Collector:
    """A running ``mlpack collector serve`` process and what it was started with."""

    url: str
    db_url: str
    proc: subprocess.Popen[str]
    output: list[str] = field(default_factory=list)

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=30.0)

    def device(self, profile: Profile, model: str, shift: float = 0.0, seed: int = 1,
               error_rate: float = 0.0) -> tuple[SimDevice, str]:
        """A freshly registered device (unique name) and its token."""
        name = f"dev-{uuid.uuid4().hex[:10]}"
        token = admin.add_device(self.db_url, name)
        return SimDevice(name, profile, model, seed=seed, shift=shift, error_rate=error_rate), token


def start_collector(db_url: str, *extra: str) -> Collector:
    """Start ``python -m mlpack.cli collector serve --port 0`` and wait for its 'listening on' line."""
    cmd = [sys.executable, "-m", "mlpack.cli", "collector", "serve", "--db", db_url, "--port", "0", *extra]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert proc.stdout is not None
    lines: list[str] = []
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        lines.append(line)
        if line.startswith("listening on "):
            out = proc.stdout
            threading.Thread(target=lambda: lines.extend(out), daemon=True).start()  # never block on a full pipe
            return Collector(line.split()[2], db_url, proc, lines)
    proc.kill()
    proc.wait()
    raise AssertionError("collector did not start:\n" + "".join(lines))


def stop_collector(c: Collector) -> int:
    c.proc.terminate()
    try:
        return c.proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        c.proc.kill()
        return c.proc.wait()


def _pg_schema_url(base: str, schema: str) -> str:
    sep = "&" if "?" in base else "?"
    return f"{base}{sep}options=-csearch_path%3D{schema}"


@pytest.fixture(scope="session")
def pg_url() -> Iterator[str]:
    """A PostgreSQL URL whose search_path is a schema of its own, dropped afterwards."""
    base = require_postgres()
    schema = f"mlpack_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(base, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
    try:
        yield _pg_schema_url(base, schema)
    finally:
        with psycopg.connect(base, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA {schema} CASCADE")


@pytest.fixture(scope="session", params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> str:
    if request.param == "sqlite":
        return "sqlite:///" + str(tmp_path_factory.mktemp("collector") / "collector.db")
    return str(request.getfixturevalue("pg_url"))


@pytest.fixture(scope="session")
def collector(db_url: str) -> Iterator[Collector]:
    """One collector process per backend for the API suite (tests use their own devices)."""
    c = start_collector(db_url)
    yield c
    stop_collector(c)


@pytest.fixture(scope="session")
def profile() -> Profile:
    return make_profile()


@pytest.fixture(scope="session")
def demo_hash() -> str:
    return model_hash("demo", "1.0.0")


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return "sqlite:///" + str(tmp_path / "collector.db")
