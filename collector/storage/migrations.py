"""Versioned schema migrations, applied by the service itself at start-up.

Each migration is ``(version, description, statements)``; statements use ``{blob}``,
``{bigint}`` and ``{real}`` for the few types the two dialects spell differently. The
``schema_version`` table records every version applied. Append new migrations at the
end; never edit one that has shipped.
"""

from __future__ import annotations

__all__ = ["MIGRATIONS", "LATEST", "TYPES"]

TYPES = {
    "sqlite": {"blob": "BLOB", "bigint": "INTEGER", "real": "REAL"},
    "postgres": {"blob": "BYTEA", "bigint": "BIGINT", "real": "DOUBLE PRECISION"},
}

MIGRATIONS: list[tuple[int, str, list[str]]] = [
    (
        1,
        "devices, models, windows, audit, roll-ups",
        [
            """CREATE TABLE devices (
                name TEXT PRIMARY KEY,
                token_hash TEXT NOT NULL UNIQUE,
                created_at {real} NOT NULL,
                revoked_at {real},
                last_seen {real},
                last_model TEXT,
                last_seq {bigint},
                outbox TEXT,
                outbox_at {real}
            )""",
            """CREATE TABLE models (
                hash TEXT PRIMARY KEY,
                name TEXT NOT NULL,
                version TEXT NOT NULL,
                profile TEXT NOT NULL,
                thresholds TEXT NOT NULL,
                source TEXT NOT NULL,
                added_at {real} NOT NULL
            )""",
            """CREATE TABLE windows (
                device TEXT NOT NULL,
                seq {bigint} NOT NULL,
                seq_last {bigint} NOT NULL,
                model TEXT NOT NULL,
                start_ts {real} NOT NULL,
                end_ts {real} NOT NULL,
                received_at {real} NOT NULL,
                body TEXT NOT NULL,
                PRIMARY KEY (device, seq)
            )""",
            """CREATE TABLE audit (
                device TEXT NOT NULL,
                seq {bigint} NOT NULL,
                time {real},
                event TEXT NOT NULL,
                body TEXT NOT NULL,
                received_at {real} NOT NULL,
                PRIMARY KEY (device, seq)
            )""",
            """CREATE TABLE rollups (
                level TEXT NOT NULL,
                device TEXT NOT NULL,
                model TEXT NOT NULL,
                bucket {bigint} NOT NULL,
                windows {bigint} NOT NULL,
                requests {bigint} NOT NULL,
                rows {bigint} NOT NULL,
                errors {bigint} NOT NULL,
                error_kinds TEXT NOT NULL,
                latency TEXT NOT NULL,
                counts {blob} NOT NULL,
                system TEXT NOT NULL,
                PRIMARY KEY (level, device, model, bucket)
            )""",
        ],
    ),
    (
        2,
        "time indexes for fleet-wide range queries",
        [
            "CREATE INDEX rollups_by_time ON rollups (level, bucket)",
            "CREATE INDEX windows_by_model_time ON windows (model, start_ts)",
        ],
    ),
    (
        3,
        "device client certificates (mutual TLS): SHA-256 fingerprint -> device",
        [
            """CREATE TABLE device_certs (
                fingerprint TEXT PRIMARY KEY,
                device TEXT NOT NULL,
                subject TEXT NOT NULL,
                not_after {real},
                added_at {real} NOT NULL
            )""",
            "CREATE INDEX device_certs_by_device ON device_certs (device)",
        ],
    ),
    (
        4,
        "replayed windows refused for other contents or bounds (ingest conflicts)",
        [
            # One row per refused (device, seq): when it was first and last tried, how often,
            # and why; the stored window it met is kept as it was.
            """CREATE TABLE ingest_conflicts (
                device TEXT NOT NULL,
                seq {bigint} NOT NULL,
                seq_last {bigint} NOT NULL,
                stored_seq {bigint} NOT NULL,
                stored_seq_last {bigint} NOT NULL,
                reason TEXT NOT NULL,
                first_at {real} NOT NULL,
                last_at {real} NOT NULL,
                attempts {bigint} NOT NULL,
                PRIMARY KEY (device, seq)
            )""",
            "CREATE INDEX ingest_conflicts_by_time ON ingest_conflicts (last_at)",
        ],
    ),
    (
        5,
        "production KPIs: ground-truth feedback per window, and what each model's KPIs are judged against",
        [
            # The feedback section of each stored window that has one (also in windows.body):
            # KPI queries then read only these rows.
            """CREATE TABLE feedback (
                device TEXT NOT NULL,
                seq {bigint} NOT NULL,
                model TEXT NOT NULL,
                start_ts {real} NOT NULL,
                body TEXT NOT NULL,
                PRIMARY KEY (device, seq)
            )""",
            "CREATE INDEX feedback_by_model_time ON feedback (model, start_ts)",
            # The manifest's task, classes, positive class, build metrics and gates (JSON).
            "CREATE TABLE model_kpi (hash TEXT PRIMARY KEY, body TEXT NOT NULL)",
        ],
    ),
    (
        6,
        "opt-in captured input rows for retraining: one per (device, model, UTC day, reservoir slot)",
        [
            """CREATE TABLE samples (
                device TEXT NOT NULL,
                model TEXT NOT NULL,
                day {bigint} NOT NULL,
                slot {bigint} NOT NULL,
                time_ts {real} NOT NULL,
                id TEXT NOT NULL,
                row_json TEXT NOT NULL,
                output TEXT NOT NULL,
                label TEXT,
                PRIMARY KEY (device, model, day, slot)
            )""",
            "CREATE INDEX samples_by_model ON samples (model, day)",
        ],
    ),
]

LATEST = MIGRATIONS[-1][0]
