"""The SQL of fleet rollout (admin tokens, releases, rollouts), mixed into :class:`SqlStorage`.

Kept apart from :mod:`._sql` so telemetry storage and release management change
independently; both run on the same connections and transactions. "One active rollout
per model" is a partial unique index (migration 5), so two collector processes starting
one at the same time cannot both succeed.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from mlpack_edge.errors import CollectorError

__all__ = ["Release", "Rollout", "RolloutSql", "ACTIVE_STATES"]

#: A rollout in one of these states holds its model (no second one may start).
ACTIVE_STATES = ("active", "paused")


@dataclass(frozen=True)
class Release:
    """A published bundle: its manifest content hash, name, version and the stored archive."""

    hash: str
    name: str
    version: str
    size: int  # bytes of the stored archive
    sha256: str  # of the stored archive (what a device checks its download against)
    signed_by: str | None
    runtime: str | None
    published_at: float
    published_by: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "hash": self.hash, "name": self.name, "version": self.version, "size": self.size, "sha256": self.sha256,
            "signed_by": self.signed_by, "runtime": self.runtime, "published_at": self.published_at,
            "published_by": self.published_by,
        }


@dataclass
class Rollout:
    """One rollout of a release to a model's devices; ``plan`` holds stages, hold, shadow, targets, limits."""

    id: str
    model: str
    release: str
    plan: dict[str, Any]
    state: str  # active | paused | completed | failed | aborted
    stage: int  # index into plan["stages"] of the stage now running
    stage_started_at: float
    created_at: float
    updated_at: float
    reason: str | None = None
    devices: dict[str, dict[str, Any]] = field(default_factory=dict)  # device -> {"state", "detail", "updated_at"}

    @property
    def active(self) -> bool:
        return self.state in ACTIVE_STATES


_ROLLOUT_COLS = "id, model, release, plan, state, stage, stage_started_at, created_at, updated_at, reason"
_RELEASE_COLS = "hash, name, version, size, sha256, signed_by, runtime, published_at, published_by"


class RolloutSql:
    """Methods :class:`~mlpack_edge.collector.storage._sql.SqlStorage` gains (``self`` is one)."""

    if TYPE_CHECKING:  # provided by SqlStorage, which mixes this class in
        def _query(self, statement: str, params: Sequence[Any] = ()) -> list[Any]: ...
        def write(self) -> Any: ...

    # ---------------------------------------------------------------- admin tokens

    def add_admin(self, name: str, token_hash: str, now: float) -> None:
        with self.write() as tx:
            if tx._exec("SELECT 1 FROM admin_tokens WHERE name = ?", (name,)).fetchone():
                raise CollectorError(f"admin {name!r} already exists (revoke-admin and add it under a new name)")
            tx._exec("INSERT INTO admin_tokens (name, token_hash, created_at) VALUES (?, ?, ?)", (name, token_hash, now))

    def revoke_admin(self, name: str, now: float) -> None:
        with self.write() as tx:
            row = tx._exec("SELECT revoked_at FROM admin_tokens WHERE name = ?", (name,)).fetchone()
            if row is None:
                raise CollectorError(f"admin {name!r} is not registered")
            if row[0] is None:
                tx._exec("UPDATE admin_tokens SET revoked_at = ? WHERE name = ?", (now, name))

    def admin_for_token(self, token_hash: str) -> str | None:
        """The active admin holding this token, or ``None`` (a device token is never found here)."""
        rows = self._query("SELECT name FROM admin_tokens WHERE token_hash = ? AND revoked_at IS NULL", (token_hash,))
        return str(rows[0][0]) if rows else None

    # ---------------------------------------------------------------- device labels

    def set_device_labels(self, name: str, labels: dict[str, str]) -> None:
        with self.write() as tx:
            row = tx._exec("SELECT 1 FROM devices WHERE name = ?", (name,)).fetchone()
            if row is None:
                raise CollectorError(f"device {name!r} is not registered (see list-devices)")
            tx._exec("UPDATE devices SET labels = ? WHERE name = ?", (json.dumps(labels, sort_keys=True), name))

    def device_labels(self) -> dict[str, dict[str, str]]:
        """Every active device -> its labels (``{}`` when it has none)."""
        rows = self._query("SELECT name, labels FROM devices WHERE revoked_at IS NULL ORDER BY name")
        return {str(r[0]): (json.loads(r[1]) if r[1] else {}) for r in rows}

    def device_models(self) -> dict[str, str | None]:
        """Every active device -> the content hash of the model its latest window came from."""
        rows = self._query("SELECT name, last_model FROM devices WHERE revoked_at IS NULL ORDER BY name")
        return {str(r[0]): r[1] for r in rows}

    # ---------------------------------------------------------------- releases

    def add_release(self, r: Release) -> bool:
        """Record ``r``; ``False`` when that hash is published already. Another build under the
        same name and version is refused."""
        with self.write() as tx:
            if tx._exec("SELECT 1 FROM releases WHERE hash = ?", (r.hash,)).fetchone():
                return False
            other = tx._exec("SELECT hash FROM releases WHERE name = ? AND version = ?", (r.name, r.version)).fetchone()
            if other is not None:
                raise CollectorError(
                    f"{r.name} {r.version} is already published as another build ({str(other[0])[:12]}); "
                    "give the new build a new version"
                )
            tx._exec(
                f"INSERT INTO releases ({_RELEASE_COLS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (r.hash, r.name, r.version, r.size, r.sha256, r.signed_by, r.runtime, r.published_at, r.published_by),
            )
        return True

    def set_release_runtime(self, content_hash: str, runtime: str) -> None:
        """Attach the frozen runtime a published build was made on (published before without it)."""
        with self.write() as tx:
            tx._exec("UPDATE releases SET runtime = ? WHERE hash = ?", (runtime, content_hash))

    def release(self, content_hash: str) -> Release | None:
        rows = self._query(f"SELECT {_RELEASE_COLS} FROM releases WHERE hash = ?", (content_hash,))
        return Release(*rows[0]) if rows else None

    def release_by_version(self, name: str, version: str) -> Release | None:
        rows = self._query(f"SELECT {_RELEASE_COLS} FROM releases WHERE name = ? AND version = ?", (name, version))
        return Release(*rows[0]) if rows else None

    def releases(self, name: str | None = None) -> list[Release]:
        where, params = ("WHERE name = ?", (name,)) if name else ("", ())
        rows = self._query(f"SELECT {_RELEASE_COLS} FROM releases {where} ORDER BY name, published_at, version", params)
        return [Release(*r) for r in rows]

    # ---------------------------------------------------------------- rollouts

    def add_rollout(self, r: Rollout) -> None:
        """Store a new rollout; a second active one for the same model is refused (by the index)."""
        with self.write() as tx:
            held = tx._exec(
                "SELECT id, state FROM rollouts WHERE model = ? AND state IN ('active', 'paused')", (r.model,)
            ).fetchone()
            if held is not None:
                raise CollectorError(
                    f"model {r.model!r} already has an active rollout ({held[0]}, {held[1]}); abort it or wait until it ends"
                )
            tx._exec(
                f"INSERT INTO rollouts ({_ROLLOUT_COLS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (r.id, r.model, r.release, json.dumps(r.plan, sort_keys=True), r.state, r.stage, r.stage_started_at,
                 r.created_at, r.updated_at, r.reason),
            )
            _event(tx, r.id, r.created_at, "started", {"release": r.release, "plan": r.plan})

    def save_rollout(self, r: Rollout, event: str | None = None, detail: dict[str, Any] | None = None) -> None:
        """Write ``r``'s state, stage and reason (and an event, in the same transaction)."""
        with self.write() as tx:
            tx._exec(
                "UPDATE rollouts SET state = ?, stage = ?, stage_started_at = ?, updated_at = ?, reason = ? WHERE id = ?",
                (r.state, r.stage, r.stage_started_at, r.updated_at, r.reason, r.id),
            )
            if event is not None:
                _event(tx, r.id, r.updated_at, event, detail or {})

    def set_rollout_device(self, rollout: str, device: str, state: str, detail: dict[str, Any], now: float) -> None:
        with self.write() as tx:
            tx._exec(
                "INSERT INTO rollout_devices (rollout, device, state, detail, updated_at) VALUES (?, ?, ?, ?, ?) "
                "ON CONFLICT (rollout, device) DO UPDATE SET state = excluded.state, detail = excluded.detail, "
                "updated_at = excluded.updated_at",
                (rollout, device, state, json.dumps(detail, sort_keys=True), now),
            )

    def rollout_device(self, rollout: str, device: str) -> dict[str, Any] | None:
        rows = self._query("SELECT state, detail, updated_at FROM rollout_devices WHERE rollout = ? AND device = ?",
                           (rollout, device))
        return {"state": rows[0][0], "detail": json.loads(rows[0][1]), "updated_at": rows[0][2]} if rows else None

    def rollouts(self, model: str | None = None, active_only: bool = False) -> list[Rollout]:
        where, params = [], []
        if model is not None:
            where.append("model = ?")
            params.append(model)
        if active_only:
            where.append("state IN ('active', 'paused')")
        sql = f"SELECT {_ROLLOUT_COLS} FROM rollouts" + (f" WHERE {' AND '.join(where)}" if where else "")
        rows = self._query(sql + " ORDER BY created_at DESC, id", params)
        out = [_rollout(r) for r in rows]
        if out:
            marks = ", ".join("?" * len(out))
            for d in self._query(
                f"SELECT rollout, device, state, detail, updated_at FROM rollout_devices WHERE rollout IN ({marks})",
                [r.id for r in out],
            ):
                by_id = next(r for r in out if r.id == d[0])
                by_id.devices[str(d[1])] = {"state": d[2], "detail": json.loads(d[3]), "updated_at": d[4]}
        return out

    def rollout_events(self, rollout: str) -> list[dict[str, Any]]:
        rows = self._query(
            "SELECT time, event, detail FROM rollout_events WHERE rollout = ? ORDER BY time, event", (rollout,)
        )
        return [{"time": r[0], "event": r[1], "detail": json.loads(r[2])} for r in rows]

    def first_window_at(self, device: str, model: str, since: float) -> float | None:
        """When ``device`` first uploaded a window of ``model`` received at or after ``since``."""
        # By device only, the model compared here: with "AND model = ?" SQLite scans the (model, start_ts)
        # index over every device's windows of the release, at every tick for every stage device
        # (benchmarks/rollout.py part 4: 630 ms a tick for 100 stage devices of 1,000; 2 ms this way).
        rows = self._query("SELECT model, received_at FROM windows WHERE device = ? AND received_at >= ?",
                           (device, since))
        seen = [float(r[1]) for r in rows if r[0] == model]
        return min(seen) if seen else None

    def has_window_since(self, device: str, model: str, since: float) -> bool:
        """Whether ``device`` sent a window of ``model`` received at ``since`` or later (bodies unread)."""
        # By device only, like first_window_at (the primary key's prefix: one device's rows).
        rows = self._query("SELECT DISTINCT model FROM windows WHERE device = ? AND received_at >= ?", (device, since))
        return any(r[0] == model for r in rows)

    def windows_received(self, device: str, since: float, until: float) -> list[tuple[str, str]]:
        """``(model, body)`` of ``device``'s windows received in ``[since, until)``, oldest first
        (the collector's clock: a rollout's hold is judged on it, not on the device's)."""
        rows = self._query(
            "SELECT model, body FROM windows WHERE device = ? AND received_at >= ? AND received_at < ? "
            "ORDER BY received_at, start_ts",
            (device, since, until),
        )
        return [(str(r[0]), str(r[1])) for r in rows]


def _event(tx: Any, rollout: str, now: float, event: str, detail: dict[str, Any]) -> None:
    tx._exec(
        "INSERT INTO rollout_events (rollout, time, event, detail) VALUES (?, ?, ?, ?)",
        (rollout, now, event, json.dumps(detail, sort_keys=True)),
    )


def _rollout(r: Sequence[Any]) -> Rollout:
    return Rollout(
        id=r[0], model=r[1], release=r[2], plan=json.loads(r[3]), state=r[4], stage=int(r[5]),
        stage_started_at=float(r[6]), created_at=float(r[7]), updated_at=float(r[8]), reason=r[9],
    )
