"""SQLite back-end: the embedded default, one file, no set-up.

WAL mode lets the page read while the writer commits; ``synchronous=FULL`` makes a
commit durable before the device is told its batch is stored (the device then deletes
it from its outbox). The cost is amortised by group commit in the ingest writer.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

from mlpack_edge.collector.storage._sql import SqlStorage
from mlpack_edge.errors import StorageError

__all__ = ["SqliteStorage"]


class SqliteStorage(SqlStorage):
    dialect = "sqlite"
    _db_errors = (sqlite3.Error,)

    def __init__(self, url: str, readers: int = 4) -> None:
        path = url.removeprefix("sqlite:///")
        self.path = Path(path if path.startswith("/") else "/" + path)
        if not self.path.parent.is_dir():
            raise StorageError(f"{self.path}: folder {self.path.parent} does not exist")
        super().__init__(url, readers)

    def describe(self) -> str:
        return str(self.path)

    def _connect(self) -> Any:
        try:
            conn = sqlite3.connect(self.path, timeout=10.0, isolation_level=None, check_same_thread=False)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=FULL")
            conn.execute("PRAGMA busy_timeout=10000")
            return conn
        except sqlite3.Error as exc:
            raise StorageError(f"{self.path}: cannot open database ({exc})") from None

    def _begin_write(self, conn: Any) -> None:
        conn.execute("BEGIN IMMEDIATE")
