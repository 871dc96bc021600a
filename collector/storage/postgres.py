"""PostgreSQL back-end: for fleets that outgrow one machine.

Several collector processes may share one database. Each holds one writer
connection (group commit, like SQLite) and a few readers. Rows a batch touches are
locked with ``FOR UPDATE`` in one global order (device rows, then roll-ups sorted by
key), so concurrent writers queue instead of deadlocking; migrations take an advisory
lock so two processes starting together do not both migrate.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from typing import Any

import psycopg

from mlpack_edge.collector.storage._sql import _ROLLUP_COLS, SqlStorage
from mlpack_edge.errors import StorageError

__all__ = ["PostgresStorage"]

_MIGRATION_LOCK = 0x6D6C7061  # "mlpa": any constant shared by every collector process


class PostgresStorage(SqlStorage):
    dialect = "postgres"
    lock_clause = " FOR UPDATE"
    # Byte order (= code point order for UTF-8, Python's order), whatever the database's collation.
    key_order = 'r.level COLLATE "C", r.model COLLATE "C", r.device COLLATE "C", r.bucket'
    _db_errors = (psycopg.Error,)

    def describe(self) -> str:
        # Never echo a password that may be in the URL.
        info = psycopg.conninfo.conninfo_to_dict(self.url)
        return f"postgresql://{info.get('host', 'localhost')}:{info.get('port', 5432)}/{info.get('dbname', '')}"

    def _connect(self) -> Any:
        try:
            conn = psycopg.connect(self.url, autocommit=True, connect_timeout=10)
        except psycopg.Error as exc:
            raise StorageError(f"{self.describe()}: cannot connect ({' '.join(str(exc).split())})") from None
        # Roll-up rows and window bodies (2-3 KB) are compressed on every write: lz4 costs the
        # server a fraction of pglz's CPU (reads decompress either). A server built without it
        # keeps its default.
        with contextlib.suppress(psycopg.Error):
            conn.execute("SET default_toast_compression = 'lz4'")
        return conn

    def _begin_write(self, conn: Any) -> None:
        conn.execute("BEGIN")

    def _lock_schema(self, conn: Any) -> None:
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (_MIGRATION_LOCK,))

    def sql(self, statement: str) -> str:
        return statement.replace("?", "%s")

    def _pipeline(self, conn: Any) -> contextlib.AbstractContextManager[Any]:
        # The ingest transaction's statements whose results are not needed (BEGIN, the
        # window INSERT, the UPDATEs, COMMIT) travel with the next ones that are: a group of
        # uploads costs 3 round trips (4 when it creates roll-up rows) instead of ~9 (each
        # ~0.5 ms or more on a loaded machine).
        # Leaving the block waits for every result, COMMIT's included.
        return conn.pipeline()  # type: ignore[no-any-return]

    # The ingest statements below take each column as one array and ``unnest`` them: one
    # statement per group of uploads whatever its size (not one per row, nor a VALUES list
    # whose text changes with its length and is parsed anew each time). Their text is fixed,
    # so psycopg prepares them (-25% server CPU per upload in groups of 13); their plans
    # cannot go wrong without statistics (LATERAL lookups, ctid). The two on ``devices`` run
    # unprepared: a generic plan, not knowing the array is short, scans the whole table.

    def select_devices(self, conn: Any, names: Sequence[str]) -> Any:
        return conn.execute(
            "SELECT name, token_hash, revoked_at FROM devices WHERE name = ANY(%b::text[]) ORDER BY name COLLATE \"C\" "
            "FOR UPDATE",
            (list(names),),
            prepare=False,
        )

    def select_last_windows(self, conn: Any, pairs: Sequence[tuple[str, int]]) -> list[Any]:
        # LATERAL … LIMIT 1: one backward step on the (device, seq) key per pair.
        return [conn.execute(
            "SELECT v.d, v.hi, w.seq, w.seq_last FROM unnest(%b::text[], %b::bigint[]) AS v(d, hi) "
            "JOIN LATERAL (SELECT x.seq, x.seq_last FROM windows x WHERE x.device = v.d AND x.seq <= v.hi "
            "ORDER BY x.seq DESC LIMIT 1) w ON true",
            ([d for d, _ in pairs], [hi for _, hi in pairs]),
        )]

    def lock_rollups(self, conn: Any, keys: Sequence[tuple[str, str, str, int]]) -> list[Any]:
        # Each key is looked up and locked in the array's order (the LATERAL subquery runs once
        # per key, in order). Through the primary key: a row comparison on (device, model,
        # bucket) after level only it can serve, with or without statistics; on equalities the
        # planner may take the time index (level, bucket) and visit every device's row of that
        # hour (measured 12x the buffers at 100 devices). The row's ctid, stable while it is
        # locked, lets update_rollups reach it without a second lookup.
        cols = ", ".join("r." + c for c in _ROLLUP_COLS.split(", "))
        return [conn.execute(
            f"SELECT x.* FROM unnest(%b::text[], %b::text[], %b::text[], %b::bigint[]) WITH ORDINALITY "
            f"AS k(level, device, model, bucket, i) JOIN LATERAL (SELECT r.level, r.device, r.model, r.bucket, {cols}, "
            "r.ctid::text FROM rollups r WHERE r.level = k.level AND (r.device, r.model, r.bucket) >= (k.device, k.model, "
            "k.bucket) AND (r.device, r.model, r.bucket) <= (k.device, k.model, k.bucket) FOR UPDATE) x ON true "
            "ORDER BY k.i",
            _columns(keys, 4),
            binary=True,  # the 2-3 KB count vectors as bytes, not hex text both sides decode
        )]

    def insert_rollups(self, conn: Any, rows: list[tuple[Any, ...]]) -> set[tuple[str, str, str, int]]:
        # Another process may insert the same key at once: ON CONFLICT waits for it, in the
        # rows' (sorted) order, and RETURNING says which rows were ours.
        if not rows:
            return set()
        cur = conn.execute(
            f"INSERT INTO rollups (level, device, model, bucket, {_ROLLUP_COLS}) SELECT level, device, model, bucket, "
            f"{_ROLLUP_COLS} FROM unnest(%b::text[], "
            "%b::text[], %b::text[], %b::bigint[], %b::bigint[], %b::bigint[], %b::bigint[], %b::bigint[], %b::text[], "
            "%b::text[], %b::bytea[], %b::text[]) WITH ORDINALITY AS v(level, device, model, bucket, windows, requests, "
            "rows, errors, error_kinds, latency, counts, system, i) ORDER BY i "
            "ON CONFLICT DO NOTHING RETURNING level, device, model, bucket",
            _columns(rows, 12),
        )
        return {(str(r[0]), str(r[1]), str(r[2]), int(r[3])) for r in cur.fetchall()}

    def update_rollups(self, conn: Any, rows: list[tuple[Any, ...]]) -> None:
        # The rows are locked by lock_rollups: their ctids cannot change before commit.
        if rows:
            cols = _columns(rows, 13)
            conn.execute(
                "UPDATE rollups r SET windows = v.windows, requests = v.requests, rows = v.rows, errors = v.errors, "
                "error_kinds = v.error_kinds, latency = v.latency, counts = v.counts, system = v.system "
                "FROM unnest(%b::bigint[], %b::bigint[], %b::bigint[], %b::bigint[], %b::text[], %b::text[], "
                "%b::bytea[], %b::text[], %b::tid[]) AS v(windows, requests, rows, errors, error_kinds, latency, "
                "counts, system, id) WHERE r.ctid = v.id",
                [*cols[:8], cols[12]],
            )

    def insert_windows(self, conn: Any, rows: list[tuple[Any, ...]]) -> None:
        if rows:
            conn.execute(
                "INSERT INTO windows (device, seq, seq_last, model, start_ts, end_ts, received_at, body) "
                "SELECT * FROM unnest(%b::text[], %b::bigint[], %b::bigint[], %b::text[], %b::float8[], %b::float8[], "
                "%b::float8[], %b::text[]) ON CONFLICT (device, seq) DO NOTHING",
                _columns(rows, 8),
            )

    def update_devices(self, conn: Any, rows: list[tuple[Any, ...]]) -> None:
        # As the generic one, in one statement: SET reads the row as it was before the update.
        if rows:
            conn.execute(
                "UPDATE devices d SET last_seen = v.seen, "
                "last_model = CASE WHEN v.seq IS NOT NULL AND (d.last_seq IS NULL OR d.last_seq <= v.seq) "
                "THEN v.model ELSE d.last_model END, "
                "last_seq = CASE WHEN v.seq IS NOT NULL AND (d.last_seq IS NULL OR d.last_seq <= v.seq) "
                "THEN v.seq ELSE d.last_seq END, "
                "outbox = CASE WHEN v.outbox IS NULL THEN d.outbox ELSE v.outbox END, "
                "outbox_at = CASE WHEN v.outbox IS NULL THEN d.outbox_at ELSE v.outbox_at END "
                "FROM unnest(%b::text[], %b::float8[], %b::text[], %b::bigint[], %b::text[], %b::float8[]) "
                "AS v(name, seen, model, seq, outbox, outbox_at) WHERE d.name = v.name",
                _columns(rows, 6),
                prepare=False,
            )

    def executemany(self, conn: Any, statement: str, rows: list[tuple[Any, ...]]) -> None:
        if rows:
            with conn.cursor() as cur:
                cur.executemany(self.sql(statement), rows)


def _columns(rows: Sequence[Sequence[Any]], width: int) -> list[list[Any]]:
    """Rows as ``width`` column lists (one array parameter each)."""
    return [list(c) for c in zip(*rows)] if rows else [[] for _ in range(width)]
