"""Where the collector keeps devices, models, windows and roll-ups.

:func:`open_storage` picks the back-end from the URL (``sqlite:///…`` or
``postgresql://…``) and migrates the schema. Both back-ends share their SQL
(:mod:`._sql`); :class:`Storage` is the surface the rest of the collector uses.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractContextManager
from typing import Any, Protocol

from mlpack_edge.collector.models import ModelInfo
from mlpack_edge.collector.storage._sql import DeviceCert, DeviceRow, SqlStorage, WriteTx
from mlpack_edge.collector.storage.migrations import LATEST
from mlpack_edge.errors import CollectorError

__all__ = ["Storage", "DeviceRow", "DeviceCert", "WriteTx", "open_storage", "LATEST"]


class Storage(Protocol):
    url: str
    dialect: str

    def migrate(self) -> int: ...
    def schema_version(self) -> int: ...
    def write(self) -> AbstractContextManager[WriteTx]: ...
    def close(self) -> None: ...
    def describe(self) -> str: ...
    def add_device(self, name: str, token_hash: str, now: float, certs: Sequence[DeviceCert] = ()) -> None: ...
    def add_device_certs(self, name: str, certs: Sequence[DeviceCert]) -> None: ...
    def device_for_cert(self, fingerprint: str) -> tuple[str, bool] | None: ...
    def device_certs(self, name: str | None = None) -> list[DeviceCert]: ...
    def revoke_device(self, name: str, now: float) -> None: ...
    def device_for_token(self, token_hash: str) -> str | None: ...
    def devices(self) -> list[DeviceRow]: ...
    def get_model(self, content_hash: str) -> ModelInfo | None: ...
    def models(self) -> list[ModelInfo]: ...
    def add_model(self, m: ModelInfo, now: float) -> bool: ...
    def rollups(self, level: str, start: int, end: int, **kw: Any) -> list[tuple[Any, ...]]: ...
    def window_count(self, device: str | None = None) -> int: ...
    def window_bodies_between(self, device: str, start: float, end: float, model: str | None = None) -> list[str]: ...
    def audit(self, device: str, limit: int = 100) -> list[dict[str, Any]]: ...
    def conflicts(self, device: str | None = None, since: float | None = None) -> list[dict[str, Any]]: ...


def open_storage(url: str, migrate: bool = True, readers: int = 4) -> SqlStorage:
    """Open the database at ``url`` and (by default) bring its schema up to date."""
    storage: SqlStorage
    if url.startswith("sqlite:///"):
        from mlpack_edge.collector.storage.sqlite import SqliteStorage

        storage = SqliteStorage(url, readers)
    elif url.startswith(("postgresql://", "postgres://")):
        from mlpack_edge.collector.storage.postgres import PostgresStorage

        storage = PostgresStorage(url, readers)
    else:
        raise CollectorError(f"database URL {url!r}: expected sqlite:///path or postgresql://…")
    if migrate:
        try:
            storage.migrate()
        except BaseException:
            storage.close()
            raise
    return storage
