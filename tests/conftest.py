"""Shared test configuration; service helpers live in ``tests/_services.py``."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest


@pytest.fixture(scope="session", autouse=True)
def _private_runtime_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Builds in tests freeze into a cache of this session, never the user's ~/.cache/mlpack.

    A test that needs its own (e.g. empty) cache sets MLPACK_CACHE_DIR itself.
    """
    saved = os.environ.get("MLPACK_CACHE_DIR")
    os.environ["MLPACK_CACHE_DIR"] = str(tmp_path_factory.mktemp("mlpack-cache"))
    yield
    if saved is None:
        os.environ.pop("MLPACK_CACHE_DIR", None)
    else:
        os.environ["MLPACK_CACHE_DIR"] = saved
