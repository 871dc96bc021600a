"""The collector as a systemd service: the unit file ``mlpack collector install-service`` writes.

The unit runs this very installation (``<python> -m mlpack_edge.cli collector serve``
with the interpreter of the environment mlpack is installed in, so no PATH or
activation is needed), restarts it on failure, stops it with SIGTERM (queued batches are
written before it exits) and keeps the database URL out of the command line (it may hold
a password: it goes into an ``Environment=`` line of a unit readable by root only).
Several collectors on one PostgreSQL database are several such units, one per port or
host (README, "Running the collector").
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path

from mlpack_edge._fs import atomic_write_text
from mlpack_edge.errors import CollectorError

__all__ = ["ServiceSpec", "unit_text", "write_unit", "DEFAULT_UNIT_DIR"]

DEFAULT_UNIT_DIR = Path("/etc/systemd/system")


@dataclass(frozen=True)
class ServiceSpec:
    """What the unit runs: the database, where it listens, as whom."""

    db_url: str
    host: str = "127.0.0.1"
    port: int = 8470
    user: str | None = None
    silent_after: float = 3600.0
    python: str = sys.executable


def _arg(value: str) -> str:
    """One ``ExecStart=`` word: ``%`` and ``$`` escaped (systemd specifiers and variables),
    quoted when it holds blanks or quotes."""
    text = value.replace("%", "%%").replace("$", "$$")
    if not text or any(c in text for c in ' \t"\'\\;'):
        text = '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return text


def unit_text(spec: ServiceSpec, name: str = "mlpack-collector") -> str:
    """The unit file for ``spec`` (``name`` only labels it)."""
    command = [spec.python, "-m", "mlpack_edge.cli", "collector", "serve", "--host", spec.host,
               "--port", str(spec.port), "--silent-after", f"{spec.silent_after:g}"]
    env = f"MLPACK_COLLECTOR_DB={spec.db_url}".replace("%", "%%").replace("\\", "\\\\").replace('"', '\\"')
    lines = [
        f"# Written by mlpack collector install-service ({name}); rewrite it with the same command.",
        "[Unit]",
        "Description=mlpack fleet collector (telemetry ingest, fleet page, /metrics)",
        "Wants=network-online.target",
        "After=network-online.target postgresql.service",
        "",
        "[Service]",
        "Type=simple",
        *([f"User={spec.user}"] if spec.user else []),
        f'Environment="{env}"',
        "ExecStart=" + " ".join(_arg(a) for a in command),
        "KillSignal=SIGTERM",
        "TimeoutStopSec=30",
        "Restart=on-failure",
        "RestartSec=2",
        "NoNewPrivileges=yes",
        "PrivateTmp=yes",
        "ProtectSystem=full",
        "",
        "[Install]",
        "WantedBy=multi-user.target",
        "",
    ]
    return "\n".join(lines)


def write_unit(spec: ServiceSpec, unit_dir: Path = DEFAULT_UNIT_DIR, name: str = "mlpack-collector") -> Path:
    """Write ``<unit_dir>/<name>.service`` atomically, readable by its owner only (the
    database URL may hold a password); returns its path."""
    if not name or "/" in name or name.startswith("."):
        raise CollectorError(f"--name {name!r}: expected a plain unit name such as mlpack-collector")
    try:
        unit_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise CollectorError(f"{unit_dir}: cannot create ({exc.strerror})") from None
    path = unit_dir / f"{name}.service"
    try:
        return atomic_write_text(path, unit_text(spec, name), mode=0o600)
    except OSError as exc:
        raise CollectorError(f"{path}: cannot write ({exc.strerror}){'; run as root' if os.geteuid() else ''}") from None
