"""Where the collector keeps its data and the limits it enforces, in one place.

The CLI builds a :class:`CollectorConfig`; the app, the ingest path and the queries
read it, so a test can shrink a limit or move the clock without patching internals.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from mlpack_edge.errors import CollectorError

__all__ = ["DEFAULT_DATA_DIR", "CollectorConfig", "resolve_db_url"]

DEFAULT_DATA_DIR = Path(os.environ.get("XDG_DATA_HOME", Path.home() / ".local" / "share")) / "mlpack-collector"


def resolve_db_url(db: str | None, data_dir: str | os.PathLike[str] | None) -> str:
    """``--db`` wins; otherwise a SQLite file ``collector.db`` in ``data_dir`` (created on demand).

    Accepted: ``postgresql://…`` / ``postgres://…``, ``sqlite:///abs/path.db`` or a plain file path.
    """
    if db:
        if db.startswith(("postgresql://", "postgres://", "sqlite:///")):
            return db
        if "://" in db:
            raise CollectorError(f"--db: unsupported URL scheme in {db.split('://')[0]!r}, expected postgresql:// or sqlite:///")
        return "sqlite:///" + str(Path(db).expanduser().resolve())
    folder = Path(data_dir).expanduser() if data_dir else DEFAULT_DATA_DIR
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise CollectorError(f"--data-dir {folder}: cannot create ({exc.strerror})") from None
    return "sqlite:///" + str((folder / "collector.db").resolve())


@dataclass
class CollectorConfig:
    """Everything the running service needs besides its storage."""

    db_url: str
    # Request size bounds: what crosses the wire, and what it may inflate to (gzip bombs).
    max_body_bytes: int = 4 * 1024 * 1024
    max_decompressed_bytes: int = 32 * 1024 * 1024
    # Back-pressure: batches waiting for the writer before new uploads get 503 + Retry-After.
    max_pending_batches: int = 2000
    # Batches committed together in one transaction (group commit).
    max_group: int = 128
    # A device that has not uploaded for this long is shown as silent.
    silent_after: float = 3600.0
    # How devices authenticate: "token", "cert" (TLS client certificate) or "both".
    device_auth: str = "token"
    # Error-rate jump alert: the last hour's rate against the rest of the range.
    error_jump_factor: float = 2.0
    error_jump_min_rate: float = 0.05
    error_jump_min_requests: int = 20
    # Alert state: evaluated at least every ``alert_interval`` seconds, and after ingest but
    # at most once per ``alert_min_interval``; conditions look back ``alert_range_hours``.
    alert_interval: float = 30.0
    alert_min_interval: float = 5.0
    alert_range_hours: float = 24.0
    # Resolved alerts (and their deliveries) are kept this long, then pruned.
    alert_retention_days: float = 90.0
    # Webhook delivery: seconds per attempt, first retry delay (doubling), cap, attempts.
    webhook_timeout: float = 5.0
    webhook_backoff: float = 5.0
    webhook_max_backoff: float = 900.0
    webhook_max_attempts: int = 20
    # The collector's address as receivers should link to it (alert links, Alertmanager's
    # externalURL); by default where it listens.
    external_url: str = ""
    # Production gate alert: labelled predictions a gate needs (over the range) before it can fail.
    kpi_min_labels: int = 100
    clock: Callable[[], float] = field(default=time.time)
    # Fleet rollout: where published bundles are kept (None: a "releases" folder next to a
    # SQLite database, else in the default data folder), whether unsigned ones are accepted,
    # the largest bundle accepted, and how often rollouts are re-evaluated (seconds).
    release_dir: Path | None = None
    allow_unsigned_releases: bool = False
    max_release_bytes: int = 256 * 1024 * 1024
    rollout_tick: float = 2.0
    # sha256 of the viewer token the page and read API require (None: open, see collector.viewer).
    viewer_token_hash: str | None = None

    def releases_folder(self) -> Path:
        """Where release archives live: ``--release-dir``, else next to a SQLite database, else
        ``<default data dir>/releases``."""
        if self.release_dir is not None:
            return Path(self.release_dir)
        if self.db_url.startswith("sqlite:///"):
            path = self.db_url.removeprefix("sqlite:///")
            return Path(path if path.startswith("/") else "/" + path).parent / "releases"
        return DEFAULT_DATA_DIR / "releases"
