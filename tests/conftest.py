"""Shared test configuration.

Services that a machine may lack (PostgreSQL, Chromium) are skipped with a reason on a
developer's machine but *required* in CI: ``.ci/run`` sets ``MLPACK_REQUIRE_POSTGRES=1``
and ``MLPACK_REQUIRE_BROWSER=1`` so a missing service fails the run instead.
"""

from __future__ import annotations

import os

import pytest


def require_or_skip(env_flag: str, reason: str) -> None:
    """Skip (developer machine) or fail (CI, ``env_flag`` set) when a service is missing."""
    if os.environ.get(env_flag) == "1":
        pytest.fail(f"{reason} (required because {env_flag}=1)")
    pytest.skip(reason)
