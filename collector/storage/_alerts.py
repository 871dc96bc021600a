"""Alert state, webhooks and the delivery queue in the collector database.

Kept apart from :mod:`._sql` (devices, windows, roll-ups) because it has one job: turn
"these alerts hold now" into opened/resolved transitions exactly once, and keep every
webhook delivery those transitions cause in a durable queue until it is sent.

Exactly once across processes: at most one *open* row per alert key (a partial unique
index), an alert is opened by an ``INSERT … ON CONFLICT DO NOTHING`` and resolved by an
``UPDATE … WHERE resolved_at IS NULL``; only the statement that changed a row enqueues
deliveries, in the same transaction. A delivery is claimed by moving its ``next_at``
past the attempt's deadline (a lease), so a collector that dies mid-send leaves it to be
retried, never lost.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mlpack_edge.collector.storage._sql import WriteTx

__all__ = ["Firing", "AlertRow", "WebhookRow", "DueDelivery", "Transition", "PayloadBuilder", "AlertStore",
           "DELIVERY_STATES", "SEVERITIES"]

_ALERT_LOCK = 0x6D6C7062  # PostgreSQL advisory lock: one alert evaluation at a time across processes
_ALERT_COLS = "id, key, kind, severity, model, device, feature, message, opened_at, resolved_at, checked_at"
DELIVERY_STATES = ("pending", "delivered", "failed", "cancelled")
SEVERITIES = ("critical", "warning")


@dataclass(frozen=True)
class Firing:
    """An alert condition that holds now; ``key`` names its subject (what opens/resolves)."""

    kind: str
    severity: str
    message: str
    model: str | None = None
    device: str | None = None
    feature: str | None = None

    def __post_init__(self) -> None:
        if self.severity not in SEVERITIES:
            raise ValueError(f"alert {self.kind!r}: severity {self.severity!r}, expected one of {', '.join(SEVERITIES)}")
        if not self.kind or "|" in self.kind:
            raise ValueError(f"alert kind {self.kind!r}: expected a non-empty name without '|'")

    @property
    def key(self) -> str:
        return "|".join((self.kind, self.model or "", self.device or "", self.feature or ""))


@dataclass(frozen=True)
class AlertRow:
    id: int
    key: str
    kind: str
    severity: str
    model: str | None
    device: str | None
    feature: str | None
    message: str
    opened_at: float
    resolved_at: float | None
    checked_at: float

    @property
    def state(self) -> str:
        return "open" if self.resolved_at is None else "resolved"

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id, "kind": self.kind, "severity": self.severity, "state": self.state, "model": self.model,
            "device": self.device, "feature": self.feature, "message": self.message, "opened_at": self.opened_at,
            "resolved_at": self.resolved_at,
        }


@dataclass(frozen=True)
class WebhookRow:
    id: int
    url: str
    format: str
    secret: str | None
    created_at: float
    removed_at: float | None


@dataclass(frozen=True)
class DueDelivery:
    """A pending delivery with what is needed to send it."""

    id: int
    webhook: int
    url: str
    format: str
    secret: str | None
    alert: int
    event: str
    payload: str
    attempts: int


@dataclass(frozen=True)
class Transition:
    """What one evaluation changed: ``event`` is ``firing`` (opened) or ``resolved``."""

    event: str
    alert: AlertRow


#: Builds the stored body of one delivery: (webhook, alert, event) -> JSON text.
PayloadBuilder = Callable[[WebhookRow, AlertRow, str], str]


def _alert(r: Sequence[Any]) -> AlertRow:
    return AlertRow(int(r[0]), r[1], r[2], r[3], r[4], r[5], r[6], r[7], float(r[8]),
                    None if r[9] is None else float(r[9]), float(r[10]))


class AlertStore:
    """Mixed into :class:`~mlpack_edge.collector.storage._sql.SqlStorage` (uses its ``write``/``_query``)."""

    dialect: str

    # the SqlStorage surface this mixin relies on
    def _query(self, statement: str, params: Sequence[Any] = ()) -> list[Any]: ...  # pragma: no cover
    def write(self) -> Any: ...  # pragma: no cover

    # ---------------------------------------------------------------- alert state

    def record_alerts(self, firing: Sequence[Firing], now: float, payload: PayloadBuilder) -> list[Transition]:
        """Open alerts that hold and are not open, resolve open ones that no longer hold,
        refresh the message of the rest; enqueue one delivery per active webhook and
        transition, all in one transaction. Returns the transitions made.

        ``now`` is when the evaluation *started*; if a later-started evaluation was recorded
        already (another collector process on the same database), this one's view of the
        fleet is older than the state and it is dropped: no flapping from a slow evaluator.
        """
        current = {f.key: f for f in firing}
        out: list[Transition] = []
        with self.write() as tx:
            if self.dialect == "postgres":
                tx._exec("SELECT pg_advisory_xact_lock(?)", (_ALERT_LOCK,))
            last = tx._exec("SELECT started_at FROM alert_checks WHERE id = 1").fetchone()
            if last is not None and float(last[0]) > now:
                return []  # another process recorded a newer evaluation meanwhile: this one is stale
            tx._exec("INSERT INTO alert_checks (id, started_at) VALUES (1, ?) ON CONFLICT (id) DO UPDATE SET "
                     "started_at = excluded.started_at", (now,))
            open_rows = {a.key: a for a in map(_alert, tx._exec(
                f"SELECT {_ALERT_COLS} FROM alerts WHERE resolved_at IS NULL").fetchall())}
            hooks = self._webhook_rows(tx)
            for key in sorted(current.keys() - open_rows.keys()):
                f = current[key]
                row = tx._exec(
                    "INSERT INTO alerts (key, kind, severity, model, device, feature, message, opened_at, checked_at) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (key) WHERE resolved_at IS NULL DO NOTHING "
                    "RETURNING id",
                    (key, f.kind, f.severity, f.model, f.device, f.feature, f.message, now, now),
                ).fetchone()
                if row is not None:
                    a = AlertRow(int(row[0]), key, f.kind, f.severity, f.model, f.device, f.feature, f.message, now,
                                 None, now)
                    out.append(Transition("firing", a))
            for key in sorted(open_rows.keys() - current.keys()):
                a = open_rows[key]
                done = tx._exec("UPDATE alerts SET resolved_at = ?, checked_at = ? WHERE id = ? AND resolved_at IS NULL",
                                (now, now, a.id))
                if done.rowcount == 1:
                    out.append(Transition("resolved", replace(a, resolved_at=now, checked_at=now)))
            still = sorted(current.keys() & open_rows.keys())
            if still:
                tx._s.executemany(tx._c, "UPDATE alerts SET message = ?, severity = ?, checked_at = ? WHERE id = ?",
                                  [(current[k].message, current[k].severity, now, open_rows[k].id) for k in still])
            rows = [
                (h.id, t.alert.id, t.event, payload(h, t.alert, t.event), "pending", 0, now, now)
                for t in out for h in hooks
            ]
            tx._s.executemany(
                tx._c,
                "INSERT INTO deliveries (webhook, alert, event, payload, state, attempts, next_at, created_at) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (webhook, alert, event) DO NOTHING",
                rows,
            )
        return out

    def alert_history(self, state: str = "all", kind: str | None = None, device: str | None = None,
                      since: float | None = None, limit: int = 200) -> list[AlertRow]:
        """Alert episodes, newest first; ``since`` keeps those open at or after that time."""
        where: list[str] = []
        params: list[Any] = []
        if state == "open":
            where.append("resolved_at IS NULL")
        elif state == "resolved":
            where.append("resolved_at IS NOT NULL")
        if kind is not None:
            where.append("kind = ?")
            params.append(kind)
        if device is not None:
            where.append("device = ?")
            params.append(device)
        if since is not None:
            where.append("(resolved_at IS NULL OR resolved_at >= ?)")
            params.append(since)
        sql = f"SELECT {_ALERT_COLS} FROM alerts" + (f" WHERE {' AND '.join(where)}" if where else "")
        return [_alert(r) for r in self._query(sql + " ORDER BY opened_at DESC, id DESC LIMIT ?", [*params, limit])]

    def prune_alerts(self, before: float) -> int:
        """Forget alerts resolved before ``before`` and their deliveries; returns how many alerts."""
        with self.write() as tx:
            tx._exec("DELETE FROM deliveries WHERE alert IN (SELECT id FROM alerts WHERE resolved_at < ?)", (before,))
            return int(tx._exec("DELETE FROM alerts WHERE resolved_at < ?", (before,)).rowcount)

    # ---------------------------------------------------------------- webhooks

    def add_webhook(self, url: str, fmt: str, secret: str | None, now: float) -> int:
        with self.write() as tx:
            row = tx._exec("INSERT INTO webhooks (url, format, secret, created_at) VALUES (?, ?, ?, ?) RETURNING id",
                           (url, fmt, secret, now)).fetchone()
            return int(row[0])

    def remove_webhook(self, webhook_id: int, now: float) -> bool:
        """Stop sending to a webhook (its pending deliveries are cancelled); ``False`` if unknown or removed."""
        with self.write() as tx:
            done = tx._exec("UPDATE webhooks SET removed_at = ? WHERE id = ? AND removed_at IS NULL", (now, webhook_id))
            if done.rowcount != 1:
                return False
            tx._exec("UPDATE deliveries SET state = 'cancelled', last_error = 'webhook removed' "
                     "WHERE webhook = ? AND state = 'pending'", (webhook_id,))
            return True

    def webhooks(self, include_removed: bool = False) -> list[WebhookRow]:
        where = "" if include_removed else " WHERE removed_at IS NULL"
        rows = self._query(f"SELECT id, url, format, secret, created_at, removed_at FROM webhooks{where} ORDER BY id")
        return [WebhookRow(int(r[0]), r[1], r[2], r[3], float(r[4]), r[5]) for r in rows]

    @staticmethod
    def _webhook_rows(tx: WriteTx) -> list[WebhookRow]:
        rows = tx._exec("SELECT id, url, format, secret, created_at, removed_at FROM webhooks "
                        "WHERE removed_at IS NULL ORDER BY id").fetchall()
        return [WebhookRow(int(r[0]), r[1], r[2], r[3], float(r[4]), r[5]) for r in rows]

    # ---------------------------------------------------------------- the delivery queue

    def due_deliveries(self, now: float, limit: int = 32) -> list[DueDelivery]:
        """Pending deliveries whose time has come, oldest first; a delivery waits while an
        earlier one for the same webhook and alert is pending (firing before resolved)."""
        rows = self._query(
            "SELECT d.id, d.webhook, w.url, w.format, w.secret, d.alert, d.event, d.payload, d.attempts "
            "FROM deliveries d JOIN webhooks w ON w.id = d.webhook "
            "WHERE d.state = 'pending' AND d.next_at <= ? AND w.removed_at IS NULL AND NOT EXISTS ("
            "SELECT 1 FROM deliveries e WHERE e.webhook = d.webhook AND e.alert = d.alert AND e.id < d.id "
            "AND e.state = 'pending') ORDER BY d.next_at, d.id LIMIT ?",
            (now, limit),
        )
        return [DueDelivery(int(r[0]), int(r[1]), r[2], r[3], r[4], int(r[5]), r[6], r[7], int(r[8])) for r in rows]

    def claim_delivery(self, delivery_id: int, now: float, lease_until: float) -> bool:
        """Take a due delivery for one attempt (counted now); ``False`` if another process took it."""
        with self.write() as tx:
            done = tx._exec(
                "UPDATE deliveries SET next_at = ?, attempts = attempts + 1, last_at = ? "
                "WHERE id = ? AND state = 'pending' AND next_at <= ?",
                (lease_until, now, delivery_id, now),
            )
            return bool(done.rowcount == 1)

    def finish_delivery(self, delivery_id: int, now: float, status: int | None, error: str | None,
                        retry_at: float | None) -> None:
        """Record an attempt: delivered (``error`` None), retried at ``retry_at``, or failed for good."""
        with self.write() as tx:
            if error is None:
                tx._exec("UPDATE deliveries SET state = 'delivered', delivered_at = ?, last_status = ?, last_error = NULL "
                         "WHERE id = ? AND state = 'pending'", (now, status, delivery_id))
            elif retry_at is not None:
                tx._exec("UPDATE deliveries SET next_at = ?, last_status = ?, last_error = ? "
                         "WHERE id = ? AND state = 'pending'", (retry_at, status, error, delivery_id))
            else:
                tx._exec("UPDATE deliveries SET state = 'failed', last_status = ?, last_error = ? "
                         "WHERE id = ? AND state = 'pending'", (status, error, delivery_id))

    def deliveries(self, alerts: Sequence[int] | None = None, webhook: int | None = None,
                   limit: int = 5000) -> list[dict[str, Any]]:
        """Delivery rows without their payloads (of ``alerts`` when given), newest first."""
        keys = ("id", "webhook", "alert", "event", "state", "attempts", "next_at", "created_at", "last_at",
                "last_status", "last_error", "delivered_at")
        if alerts is not None and not alerts:
            return []
        out: list[dict[str, Any]] = []
        ids = list(alerts) if alerts is not None else [None]
        for i in range(0, len(ids), 500):
            where, params = [], []
            if alerts is not None:
                part = ids[i : i + 500]
                where.append(f"alert IN ({', '.join('?' * len(part))})")
                params += part
            if webhook is not None:
                where.append("webhook = ?")
                params.append(webhook)
            rows = self._query(
                f"SELECT {', '.join(keys)} FROM deliveries" + (f" WHERE {' AND '.join(where)}" if where else "")
                + " ORDER BY id DESC LIMIT ?",
                [*params, limit],
            )
            out += [dict(zip(keys, r)) for r in rows]
        return sorted(out, key=lambda d: -d["id"])[:limit]

    def delivery_counts(self) -> dict[int, dict[str, int]]:
        """webhook id -> {state: deliveries}."""
        out: dict[int, dict[str, int]] = {}
        for webhook, state, n in self._query("SELECT webhook, state, COUNT(*) FROM deliveries GROUP BY webhook, state"):
            out.setdefault(int(webhook), {})[state] = int(n)
        return out

    def delivery_payload(self, delivery_id: int) -> dict[str, Any] | None:
        rows = self._query("SELECT payload FROM deliveries WHERE id = ?", (delivery_id,))
        return json.loads(rows[0][0]) if rows else None
