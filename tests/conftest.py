"""Shared test configuration; service helpers live in ``tests/_services.py``."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from mlpack_edge.collector.storage import SqlStorage


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


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def storage(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[SqlStorage]:
    """A migrated collector storage of its own: a SQLite file, or a fresh PostgreSQL schema."""
    from mlpack_edge.collector import open_storage
    from tests.collector.process import pg_schema

    if request.param == "sqlite":
        s = open_storage("sqlite:///" + str(tmp_path / "c.db"))
        yield s
        s.close()
        return
    with pg_schema() as url:
        s = open_storage(url)
        yield s
        s.close()
