"""A real collector process (and a private PostgreSQL schema) for tests in any folder."""

from __future__ import annotations

import contextlib
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field

import httpx
import psycopg

from mlpack_edge.collector import admin
from mlpack_edge.monitor_agent.profile import Profile
from tests._services import require_postgres
from tests._proc import start_and_wait
from tests.collector.sim import SimDevice

__all__ = ["Collector", "start_collector", "stop_collector", "pg_schema"]


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
    """Start ``python -m mlpack_edge.cli collector serve --port 0`` and wait for its 'listening on' line."""
    cmd = [sys.executable, "-m", "mlpack_edge.cli", "collector", "serve", "--db", db_url, "--port", "0", *extra]
    started = start_and_wait(cmd, "listening on ", stream="stdout", stderr=subprocess.STDOUT)
    if started.line is None:
        raise AssertionError("collector did not start:\n" + started.output())
    return Collector(started.line.split()[2], db_url, started.proc, started.lines)


def stop_collector(c: Collector) -> int:
    c.proc.terminate()
    try:
        return c.proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        c.proc.kill()
        return c.proc.wait()


@contextlib.contextmanager
def pg_schema() -> Iterator[str]:
    """A PostgreSQL URL whose search_path is a fresh schema of its own, dropped afterwards,
    so parallel runs never see each other's tables."""
    base = require_postgres()
    schema = f"mlpack_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(base, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
    try:
        sep = "&" if "?" in base else "?"
        yield f"{base}{sep}options=-csearch_path%3D{schema}"
    finally:
        with psycopg.connect(base, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA {schema} CASCADE")
