"""Services a machine may lack (PostgreSQL, Chromium).

On a developer's machine a missing service skips its tests with a reason; in CI
(``.ci/run`` sets ``MLPACK_REQUIRE_POSTGRES=1`` and ``MLPACK_REQUIRE_BROWSER=1``) it fails
them, so a green CI run cannot hide a service that never started.
"""

from __future__ import annotations

import os
import shutil
import socket

import pytest

POSTGRES_URL = os.environ.get("MLPACK_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")


def require_or_skip(env_flag: str, reason: str) -> None:
    """Skip (developer machine) or fail (CI, ``env_flag`` set) when a service is missing."""
    if os.environ.get(env_flag) == "1":
        pytest.fail(f"{reason} (required because {env_flag}=1)")
    pytest.skip(reason)


def require_postgres() -> str:
    """The test database URL, or skip/fail when nothing listens on 127.0.0.1:5432."""
    try:
        socket.create_connection(("127.0.0.1", 5432), timeout=1).close()
    except OSError:
        require_or_skip("MLPACK_REQUIRE_POSTGRES", "PostgreSQL is not running on 127.0.0.1:5432")
    return POSTGRES_URL


def require_chromium() -> str:
    """The path of a headless-capable Chromium, or skip/fail."""
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    require_or_skip("MLPACK_REQUIRE_BROWSER", "Chromium is not installed (apt-get install chromium)")
    raise AssertionError("unreachable")
