"""Fixtures for the agent's tests (helpers live in ``helpers.py``, importable by child processes)."""

from __future__ import annotations

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
