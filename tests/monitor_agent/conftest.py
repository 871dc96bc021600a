"""Fixtures for the agent's tests (helpers live in ``helpers.py``, importable by child processes)."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from mlpack_edge.monitor_agent.agent import ModelInfo
from mlpack_edge.monitor_agent.drift import Thresholds
from mlpack_edge.monitor_agent.profile import Profile

from .helpers import MODEL_HASH, FakeClock, FakeCollector, make_profile


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def collector() -> FakeCollector:
    return FakeCollector()


@pytest.fixture(scope="session")
def profile() -> Profile:
    return make_profile()


@pytest.fixture(scope="session")
def model(profile: Profile) -> ModelInfo:
    return ModelInfo(MODEL_HASH, "churn", "1.2.0", profile, Thresholds())


@pytest.fixture
def state(tmp_path: Path) -> Iterator[Path]:
    """A state folder on tmpfs when the machine has one: file sizes are the same there and
    fsyncs free, so the cap tests' weeks of windows take seconds instead of minutes."""
    shm = Path("/dev/shm")
    if not (shm.is_dir() and os.access(shm, os.W_OK)):
        yield tmp_path / "state"
        return
    folder = Path(tempfile.mkdtemp(prefix="mlpack-state-", dir=shm))
    try:
        yield folder / "state"
    finally:
        shutil.rmtree(folder, ignore_errors=True)
