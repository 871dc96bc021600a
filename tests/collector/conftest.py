"""Collector fixtures: a real collector process per backend, devices, simulated telemetry."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from mlpack_edge.monitor_agent.profile import Profile
from tests.collector.process import Collector, pg_schema, start_collector, stop_collector
from tests.collector.sim import make_profile, model_hash


@pytest.fixture(scope="session")
def pg_url() -> Iterator[str]:
    with pg_schema() as url:
        yield url


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
