"""Rollout plans and their state machine: who gets a release when, and when a stage is done.

A rollout sends one published release of a model to that model's devices in stages
(percentages of the targeted devices, e.g. 1, 10, 50, 100). Targets are an explicit
device list, devices carrying every given label, or (by default) every active device
whose latest telemetry came from a build of that model. A device's place in the order is
the sha256 of ``<rollout id>:<device>``: stable for the rollout's life, independent of
registration order, and different from one rollout to the next (the same devices are not
always first). Stage ``i`` holds the first ``ceil(p_i/100 · N)`` devices (at least one).

A stage is done when each of its devices has uploaded a telemetry window from the new
build, the last of them has done so ``hold`` seconds ago, no device of the stage reported
a failed update, and each device was healthy over the hold (:mod:`._rollout_health`):
its windows of the new build received during the hold show an error rate no worse than
``error_factor`` times its previous build's (or, with no previous telemetry, not the
fleet page's "failing" ≥5% of ≥20 requests), and no ``drift`` verdict where the previous
build's was ``ok``/``warn``. A device with no new-build window during the hold keeps the
stage waiting; an unhealthy one fails the stage like a failed update (below), the reason
naming the device, the metric and both values. Then the next stage starts, and after the
last one the rollout is ``completed``. A device reporting a failed download, install or golden check
(an ``update_failed`` audit event naming the rollout) fails the stage: the rollout
becomes ``failed``, its reason names the device and what went wrong, and its devices are
told to roll back. ``pause`` stops offering the release to devices that have not
started; ``abort`` ends the rollout and rolls its devices back.

Everything takes ``now`` from the caller: tests drive the clock, the collector passes its
configured clock.
"""

from __future__ import annotations

import hashlib
import math
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from mlpack_edge._rollout_plan import parse_duration, parse_stages
from mlpack_edge.collector._rollout_health import device_health
from mlpack_edge.collector._rollout_shadow import device_shadow, figures, merged
from mlpack_edge.collector.storage import Release, Rollout
from mlpack_edge.errors import CollectorError

__all__ = [
    "RolloutPlan",
    "parse_stages",
    "parse_duration",
    "start_rollout",
    "targets",
    "order",
    "stage_members",
    "evaluate",
    "set_state",
    "status",
    "offers",
    "observe_audit",
    "DEVICE_EVENTS",
]

#: Device audit events that move a device's rollout state (event -> state).
DEVICE_EVENTS = {
    "update_offered": "offered",
    "update_downloaded": "downloaded",
    "update_shadow": "shadowing",
    "update_installed": "updated",
    "update_failed": "failed",
    "update_rolled_back": "rolled_back",
}


@dataclass(frozen=True)
class RolloutPlan:
    """What ``rollout start`` asks for (validated by :meth:`check`)."""

    stages: tuple[float, ...] = (1.0, 10.0, 50.0, 100.0)
    hold: float = 7200.0
    shadow: float = 3600.0
    devices: tuple[str, ...] = ()
    labels: tuple[tuple[str, str], ...] = ()
    agreement_floor: float = 0.98
    error_factor: float = 2.0
    p95_factor: float = 1.5

    def to_dict(self) -> dict[str, Any]:
        return {
            "stages": list(self.stages), "hold": self.hold, "shadow": self.shadow, "devices": list(self.devices),
            "labels": dict(self.labels), "agreement_floor": self.agreement_floor, "error_factor": self.error_factor,
            "p95_factor": self.p95_factor,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> RolloutPlan:
        """From the JSON body of ``POST /api/v1/rollouts``; ``CollectorError`` names the field."""
        try:
            plan = cls(
                stages=tuple(parse_stages(d.get("stages", "1,10,50,100"))),
                hold=float(d.get("hold", 7200.0)),
                shadow=float(d.get("shadow", 3600.0)),
                devices=tuple(str(x) for x in d.get("devices") or ()),
                labels=tuple(sorted((str(k), str(v)) for k, v in (d.get("labels") or {}).items())),
                agreement_floor=float(d.get("agreement_floor", 0.98)),
                error_factor=float(d.get("error_factor", 2.0)),
                p95_factor=float(d.get("p95_factor", 1.5)),
            )
        except (TypeError, ValueError, AttributeError) as exc:
            raise CollectorError(f"rollout plan: {exc}") from None
        if plan.hold < 0 or plan.shadow < 0:
            raise CollectorError("rollout plan: hold and shadow must be >= 0 seconds")
        if not 0 <= plan.agreement_floor <= 1:
            raise CollectorError(f"rollout plan: agreement_floor must be in [0, 1], got {plan.agreement_floor}")
        if plan.error_factor < 1 or plan.p95_factor < 1:
            raise CollectorError("rollout plan: error_factor and p95_factor must be >= 1")
        if plan.devices and plan.labels:
            raise CollectorError("rollout plan: give devices or labels, not both")
        return plan


def start_rollout(storage: Any, model: str, version: str, plan: RolloutPlan, now: float) -> Rollout:
    """Create the rollout of ``model`` ``version`` (published before), stage 0 starting now."""
    release: Release | None = storage.release_by_version(model, version)
    if release is None:
        known = ", ".join(r.version for r in storage.releases(model)) or "none"
        raise CollectorError(f"{model} {version}: not published (published versions of {model}: {known}); "
                             "run mlpack publish first")
    if plan.devices:
        registered = storage.device_labels()
        unknown = [d for d in plan.devices if d not in registered]
        if unknown:
            raise CollectorError(f"--devices: {', '.join(unknown)} not registered (or revoked)")
    rollout = Rollout(
        id=f"ro-{uuid.uuid4().hex[:12]}", model=model, release=release.hash, plan=plan.to_dict(), state="active",
        stage=0, stage_started_at=now, created_at=now, updated_at=now,
    )
    storage.add_rollout(rollout)
    return rollout


def targets(rollout: Rollout, labels: Mapping[str, Mapping[str, str]], last_models: Mapping[str, str | None],
            model_names: Mapping[str, str]) -> list[str]:
    """The devices ``rollout`` aims at (see the module doc), registered and active only."""
    plan = rollout.plan
    if plan.get("devices"):
        return [d for d in plan["devices"] if d in labels]
    wanted = plan.get("labels") or {}
    if wanted:
        return [d for d, have in labels.items() if all(have.get(k) == v for k, v in wanted.items())]
    return [d for d, h in last_models.items()
            if d in labels and (h is not None and model_names.get(h) == rollout.model or d in rollout.devices)]


def order(rollout_id: str, devices: Sequence[str]) -> list[str]:
    """``devices`` in the rollout's stable pseudo-random order."""
    return sorted(devices, key=lambda d: (hashlib.sha256(f"{rollout_id}:{d}".encode()).hexdigest(), d))


def stage_members(stages: Sequence[float], ordered: Sequence[str], stage: int) -> list[str]:
    """The devices in stages ``0..stage`` (cumulative)."""
    if not ordered:
        return []
    count = max(1, math.ceil(stages[min(stage, len(stages) - 1)] / 100.0 * len(ordered) - 1e-9))
    return list(ordered[:count])


def _fleet(storage: Any) -> tuple[dict[str, dict[str, str]], dict[str, str | None], dict[str, str]]:
    return storage.device_labels(), storage.device_models(), {m.hash: m.name for m in storage.models()}


def members(storage: Any, rollout: Rollout, fleet: tuple[Any, Any, Any] | None = None) -> tuple[list[str], list[str]]:
    """``(ordered targets, devices in the stages started so far)``."""
    labels, last_models, names = fleet or _fleet(storage)
    ordered = order(rollout.id, targets(rollout, labels, last_models, names))
    return ordered, stage_members(rollout.plan["stages"], ordered, rollout.stage)


def device_state(storage: Any, rollout: Rollout, device: str, last_model: str | None) -> tuple[str, float | None]:
    """``(state, since)``: what a stage member is doing, from its reports and its telemetry."""
    reported = rollout.devices.get(device)
    if reported is not None and reported["state"] in ("failed", "rolled_back"):
        return reported["state"], reported["updated_at"]
    if last_model == rollout.release:  # one query only for devices already on the release
        seen = storage.first_window_at(device, rollout.release, rollout.created_at)
        if seen is not None:
            return "updated", seen
    if reported is not None:
        return reported["state"], reported["updated_at"]
    return "waiting", None


def evaluate(storage: Any, rollout: Rollout, now: float, fleet: tuple[Any, Any, Any] | None = None) -> Rollout:
    """Advance an active rollout as far as its devices allow (stage done, next stage, completed,
    or failed); every change is saved with an event."""
    if rollout.state != "active":
        return rollout
    fleet = fleet or _fleet(storage)
    stages = rollout.plan["stages"]
    while True:
        ordered, stage_devices = members(storage, rollout, fleet)
        if not ordered:
            return rollout
        states = {d: device_state(storage, rollout, d, fleet[1].get(d)) for d in stage_devices}
        failed = sorted(d for d, (s, _) in states.items() if s == "failed")
        if failed:
            detail = rollout.devices.get(failed[0], {}).get("detail", {})
            why = detail.get("reason") or detail.get("error") or "update failed"
            rollout.state, rollout.updated_at = "failed", now
            rollout.reason = f"stage {rollout.stage + 1} ({stages[rollout.stage]:g}%): device {failed[0]}: {why}"
            storage.save_rollout(rollout, "stage_failed", {"stage": rollout.stage, "devices": failed, "reason": rollout.reason})
            return rollout
        if any(s != "updated" for s, _ in states.values()):
            return rollout
        last = max(t for _, t in states.values() if t is not None)
        hold_start = max(last, rollout.stage_started_at)
        if now - hold_start < rollout.plan["hold"]:
            return rollout
        # Judging health reads and parses every window of the hold: first check, cheaply and stopping at
        # the first, that no stage device is still silent on the new build (it keeps the stage waiting).
        if not all(storage.has_window_since(d, rollout.release, hold_start) for d in stage_devices):
            return rollout
        health = {d: device_health(storage, rollout, d, states[d][1] or hold_start, hold_start, now)
                  for d in stage_devices}
        sick = sorted(d for d, h in health.items() if h.failure)
        if sick:
            rollout.state, rollout.updated_at = "failed", now
            rollout.reason = (f"stage {rollout.stage + 1} ({stages[rollout.stage]:g}%): device {sick[0]}: "
                              f"{health[sick[0]].failure}")
            storage.save_rollout(rollout, "stage_failed", {"stage": rollout.stage, "devices": sick,
                                                           "metric": health[sick[0]].metric, "reason": rollout.reason})
            return rollout
        if any(h.waiting for h in health.values()):
            return rollout
        done = {"stage": rollout.stage, "devices": len(stage_devices)}
        if rollout.stage >= len(stages) - 1:
            rollout.state, rollout.updated_at, rollout.reason = "completed", now, None
            storage.save_rollout(rollout, "completed", done)
            return rollout
        rollout.stage += 1
        rollout.stage_started_at = rollout.updated_at = now
        storage.save_rollout(rollout, "stage_started", {**done, "next": rollout.stage})


def set_state(storage: Any, model: str, action: str, now: float, reason: str | None = None) -> Rollout:
    """``pause``, ``resume`` or ``abort`` the active rollout of ``model``."""
    held = storage.rollouts(model, active_only=True)
    if not held:
        raise CollectorError(f"model {model!r} has no active or paused rollout")
    r = held[0]
    if action == "pause":
        if r.state == "paused":
            return r
        r.state = "paused"
    elif action == "resume":
        if r.state == "active":
            return r
        r.state, r.stage_started_at = "active", now
    elif action == "abort":
        r.state = "aborted"
        r.reason = reason or "aborted by an administrator"
    else:
        raise CollectorError(f"rollout action {action!r}: expected pause, resume or abort")
    r.updated_at = now
    storage.save_rollout(r, action, {"reason": reason} if reason else {})
    return r


_FOREVER = 1e18  # "until" of the shadow windows read by status(): everything received


def status(storage: Any, rollout: Rollout, fleet: tuple[Any, Any, Any] | None = None,
           now: float | None = None) -> dict[str, Any]:
    """The JSON face of a rollout: plan, state, and per stage its devices by state, with the
    shadow figures their telemetry windows carried (:mod:`._rollout_shadow`)."""
    fleet = fleet or _fleet(storage)
    now = _FOREVER if now is None else now
    ordered, _ = members(storage, rollout, fleet)
    release = storage.release(rollout.release)
    stages_out = []
    previous = 0
    for i, pct in enumerate(rollout.plan["stages"]):
        upto = stage_members(rollout.plan["stages"], ordered, i)
        devices = []
        sections = []
        for d in upto[previous:]:
            state, since = device_state(storage, rollout, d, fleet[1].get(d)) if i <= rollout.stage else ("waiting", None)
            detail = rollout.devices.get(d, {}).get("detail", {})
            section = (device_shadow(storage, rollout.release, d, rollout.created_at, now)
                       if i <= rollout.stage and d in rollout.devices else None)
            sections.append(section)
            devices.append({"device": d, "state": state, "since": since, "detail": detail,
                            "shadow_windows": figures(section)})
        previous = len(upto)
        counts: dict[str, int] = {}
        for d in devices:
            counts[d["state"]] = counts.get(d["state"], 0) + 1
        agreements = [d["detail"]["shadow"]["agreement"] for d in devices
                      if isinstance(d["detail"].get("shadow"), dict) and d["detail"]["shadow"].get("agreement") is not None]
        stages_out.append({"stage": i + 1, "percent": pct, "started": i <= rollout.stage and rollout.state != "aborted",
                           "counts": counts, "devices": devices,
                           "agreement": min(agreements) if agreements else None,
                           "shadow_windows": figures(merged(sections))})
    return {
        "id": rollout.id, "model": rollout.model, "release": release.to_dict() if release else {"hash": rollout.release},
        "state": rollout.state, "stage": rollout.stage + 1, "stage_started_at": rollout.stage_started_at,
        "created_at": rollout.created_at, "updated_at": rollout.updated_at, "reason": rollout.reason,
        "plan": rollout.plan, "targets": len(ordered), "stages": stages_out,
        "events": storage.rollout_events(rollout.id),
    }


def offers(storage: Any, now: float,
           runtimes: Callable[[str], dict[str, Any] | None] | None = None) -> dict[str, list[dict[str, Any]]]:
    """device -> what it should do now (install a release, or roll back a failed one).

    Computed for every rollout that is the newest of its model; the ingest reply carries a
    device's entry, so a device that is not part of a rollout costs one dict lookup.
    """
    fleet = _fleet(storage)
    out: dict[str, list[dict[str, Any]]] = {}
    newest: dict[str, Rollout] = {}
    for r in storage.rollouts():
        newest.setdefault(r.model, r)  # rollouts() is newest first
    for r in newest.values():
        if r.state == "active":
            r = evaluate(storage, r, now, fleet)
        if r.state in ("paused", "completed"):
            if r.state == "completed":
                _, stage_devices = members(storage, r, fleet)
                action = "install"
            else:
                continue
        elif r.state == "active":
            _, stage_devices = members(storage, r, fleet)
            action = "install"
        else:  # failed or aborted: its devices go back
            _, stage_devices = members(storage, r, fleet)
            action = "rollback"
        release = storage.release(r.release)
        if release is None:
            continue
        offer = {"rollout": r.id, "action": action, "name": release.name, "version": release.version,
                 "hash": release.hash, "sha256": release.sha256, "size": release.size,
                 "url": f"/api/v1/releases/{release.hash}/bundle", "shadow": r.plan.get("shadow", 0.0),
                 "agreement_floor": r.plan.get("agreement_floor", 0.0),
                 "error_factor": r.plan.get("error_factor", 2.0), "p95_factor": r.plan.get("p95_factor", 1.5)}
        runtime = runtimes(release.runtime) if runtimes is not None and release.runtime else None
        if runtime is not None:  # a device on another runtime downloads it too (runtime.update decides)
            offer["runtime"] = {**runtime, "url": f"/api/v1/runtimes/{release.runtime}"}
        for d in stage_devices:
            out.setdefault(d, []).append(offer)
    return out


def observe_audit(storage: Any, device: str, audit: Sequence[Mapping[str, Any]], now: float) -> int:
    """Record a device's update events (``update_*`` naming a rollout) as its rollout state."""
    seen = 0
    for row in audit:
        state = DEVICE_EVENTS.get(str(row.get("event")))
        detail = row.get("detail")
        if state is None or not isinstance(detail, Mapping) or not isinstance(detail.get("rollout"), str):
            continue
        rollout = str(detail["rollout"])
        known = storage.rollout_device(rollout, device)
        shadow = (known or {}).get("detail", {}).get("shadow")
        body = dict(detail)
        if row.get("event") == "update_shadow" and detail.get("phase") == "done":
            shadow = {k: v for k, v in detail.items() if k not in ("rollout", "version", "hash", "phase")}
        if shadow is not None:  # the shadow figures stay with the device through its later steps
            body["shadow"] = shadow
        storage.set_rollout_device(rollout, device, state, body, now)
        seen += 1
    return seen
