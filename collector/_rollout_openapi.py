"""Typed replies (and the request body) of the rollout routes, for ``/openapi.json``.

Kept apart from :mod:`._openapi` so the telemetry API and the rollout API evolve
independently; same conventions: replies allow extra keys, errors are ``{"error": …}``.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from mlpack_edge.collector._openapi import ErrorReply

__all__ = ["RuntimeInfo", "RuntimeReply", "ReleaseInfo", "ReleasesReply", "PublishReply", "RolloutStatus", "RolloutsReply", "RolloutRequest", "UpdatesReply",
           "ADMIN_BEARER", "errors"]

#: Name of the admin credential in ``components.securitySchemes``.
ADMIN_BEARER = "adminToken"
_STATE = Literal["active", "paused", "completed", "failed", "aborted"]


class _Reply(BaseModel):
    model_config = ConfigDict(extra="allow")


class ReleaseInfo(_Reply):
    hash: str = Field(description="sha256 of the bundle's manifest.json (the release's key)")
    name: str
    version: str
    size: int = Field(description="Bytes of the stored .tar.gz")
    sha256: str = Field(description="sha256 of the stored .tar.gz (what a device checks its download against)")
    signed_by: str | None = Field(description="Key id of the signature, null when unsigned")
    runtime: str | None = Field(description="sha256 of the frozen runtime the build's executable carries, null when "
                                "published without it (devices then download the bundle only)")
    published_at: float
    published_by: str = Field(description="The admin whose token published it")


class ReleasesReply(_Reply):
    releases: list[ReleaseInfo]


class PublishReply(_Reply):
    release: ReleaseInfo
    added: bool = Field(description="False when this content hash was published already (nothing changed)")


class RuntimeInfo(_Reply):
    sha256: str = Field(description="sha256 of the frozen runtime (the onefile part of a device executable)")
    size: int
    target: str | None = None
    glibc_floor: str | None = None


class RuntimeReply(_Reply):
    runtime: RuntimeInfo
    added: bool = Field(description="False when this runtime was stored already")


class ShadowWindows(_Reply):
    """The shadow phase as the devices' telemetry windows carried it (their ``shadow`` sections, merged)."""

    inputs: int = Field(description="Rows offered to both models")
    rows: int = Field(description="Rows both models predicted (compared)")
    agreement: float | None = Field(description="Share of compared rows with the same label (regression: within 5%)")
    max_abs_diff: float
    mean_abs_diff: float
    candidate_p95_ms: float | None = Field(description="The candidate's p95 latency per call and row")
    current_p95_ms: float | None = Field(description="The serving model's, on the same calls")
    candidate_error_rate: float
    current_error_rate: float
    dropped: int = Field(description="Live samples skipped (CPU budget or full queue)")


class StageDevice(_Reply):
    device: str
    state: str = Field(description="waiting, offered, downloaded, shadowing, updated, failed or rolled_back")
    since: float | None
    detail: dict[str, Any]
    shadow_windows: ShadowWindows | None = Field(default=None, description=(
        "This device's shadow figures from its telemetry windows since the rollout started (null: none)"))


class Stage(_Reply):
    stage: int
    percent: float
    started: bool
    counts: dict[str, int]
    devices: list[StageDevice]
    agreement: float | None = Field(description="Lowest shadow agreement reported by the stage's devices")
    shadow_windows: ShadowWindows | None = Field(default=None, description=(
        "The stage's devices' shadow telemetry windows, merged (null: none yet)"))


class RolloutEvent(_Reply):
    time: float
    event: str
    detail: dict[str, Any]


class RolloutStatus(_Reply):
    id: str
    model: str
    release: dict[str, Any]
    state: _STATE
    stage: int = Field(description="The stage running now, 1-based")
    stage_started_at: float
    created_at: float
    updated_at: float
    reason: str | None = Field(description="Why the rollout halted (failed or aborted), else null")
    plan: dict[str, Any]
    targets: int = Field(description="Devices the rollout aims at")
    stages: list[Stage]
    events: list[RolloutEvent]


class RolloutsReply(_Reply):
    rollouts: list[RolloutStatus]


class OfferRuntime(RuntimeInfo):
    url: str = Field(description="Path of the runtime download on this collector (Range supported)")


class Offer(_Reply):
    rollout: str
    action: Literal["install", "rollback"]
    name: str
    version: str
    hash: str = Field(description="Content hash of the release (install it, or roll back from it)")
    sha256: str = Field(description="sha256 of the bundle download")
    size: int
    url: str = Field(description="Path of the bundle download on this collector (Range supported)")
    shadow: float = Field(description="Seconds to run the candidate beside the current model before switching")
    agreement_floor: float
    error_factor: float
    p95_factor: float
    runtime: OfferRuntime | None = Field(default=None, description=(
        "Present when the release was published with its frozen runtime: a device running another runtime "
        "downloads it too (the whole payload) and installs the assembled executable"))


class UpdatesReply(_Reply):
    updates: list[Offer]


class RolloutRequest(BaseModel):
    """Body of ``POST /api/v1/rollouts`` (``mlpack rollout start`` sends it)."""

    model: str
    version: str
    stages: list[float] = Field(default=[1, 10, 50, 100], description="Increasing percentages ending at 100")
    hold: float = Field(default=7200, ge=0, description="Seconds a stage's devices must report before the next")
    shadow: float = Field(default=3600, ge=0, description="Seconds a device shadows the candidate before switching")
    devices: list[str] = Field(default=[], description="Target these devices (else by labels, else the model's)")
    labels: dict[str, str] = Field(default={}, description="Target devices carrying all these labels")
    agreement_floor: float = Field(default=0.98, ge=0, le=1)
    error_factor: float = Field(default=2.0, ge=1)
    p95_factor: float = Field(default=1.5, ge=1)


def errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    """Documented error replies of an admin route (each an :class:`ErrorReply`)."""
    text = {
        401: "No, unknown or revoked admin token.",
        403: "A device token on an admin route.",
        404: "No such release, rollout or action.",
        409: "The model already has an active rollout.",
        413: "Bigger than the collector's limit.",
        422: "Malformed, unsigned or tampered input; `error` says which.",
    }
    return {c: {"model": ErrorReply, "description": text[c]} for c in codes}
