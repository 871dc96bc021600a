"""What the collector knows about a model, and the count-vector layout of its windows.

Every window of a model has the same shape (one count per bin of its reference
profile), so the collector flattens a window's feature and prediction counts into one
int64 vector in profile order. Roll-ups then merge by adding vectors, and fleet-wide
drift for a thousand devices is one numpy reduction instead of a thousand dict merges.

Vector layout: for each profile feature, then the prediction (if profiled)::

    [bin_0 .. bin_k-1, missing, below, above, unseen]
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import numpy as np

from mlpack_edge.errors import BundleError
from mlpack_edge.monitor_agent.drift import Thresholds, present_count
from mlpack_edge.monitor_agent.profile import Profile
from mlpack_edge.monitor_agent.wire import Window, WireError

__all__ = ["PREDICTION", "EXTRAS", "Section", "ModelInfo", "model_from_upload"]

PREDICTION = "prediction"
EXTRAS = ("missing", "below", "above", "unseen")


@dataclass(frozen=True)
class Section:
    """One feature's (or the prediction's) slice of the count vector."""

    name: str
    start: int
    n_bins: int
    shares: tuple[float, ...]
    labels: tuple[str, ...]
    reference_count: int = 0  # values behind the shares (the drift test's reference sample size)
    ordered: bool = True  # numeric bins (pooled with neighbours); False: categories

    @property
    def stop(self) -> int:
        return self.start + self.n_bins + len(EXTRAS)


@dataclass(frozen=True)
class ModelInfo:
    """A model as the collector stores it: identity, reference profile, drift thresholds."""

    hash: str
    name: str
    version: str
    profile: dict[str, Any]
    thresholds: Thresholds
    source: str = "upload"

    @cached_property
    def profile_json(self) -> str:
        return json.dumps(self.profile, sort_keys=True, separators=(",", ":"))

    @cached_property
    def sections(self) -> tuple[Section, ...]:
        return _sections(self.profile)

    @cached_property
    def features(self) -> dict[str, Section]:
        """Feature sections by name (the prediction excluded)."""
        n = len(self.profile.get("features") or [])
        return {s.name: s for s in self.sections[:n]}

    @cached_property
    def prediction(self) -> Section | None:
        n = len(self.profile.get("features") or [])
        return self.sections[n] if len(self.sections) > n else None

    @property
    def size(self) -> int:
        return self.sections[-1].stop if self.sections else 0

    def same_as(self, other: ModelInfo) -> bool:
        return (self.name, self.version, self.profile_json) == (other.name, other.version, other.profile_json)

    def matches_entry(self, entry: Mapping[str, Any]) -> bool:
        """Cheap check that a batch's ``models`` entry is this model as stored (the agent
        resends it with every batch); a ``False`` only means "normalise and compare"."""
        return entry.get("name") == self.name and entry.get("version") == self.version and entry.get("profile") == self.profile

    def check_window(self, w: Window, where: str) -> None:
        """Bins must match the profile: known feature names, one count per reference bin."""
        for name, counts in w.features.items():
            sec = self.features.get(name)
            if sec is None:
                raise WireError(f"{where}.features.{name}: not a feature of model {self.name} {self.version}")
            if len(counts.bins) != sec.n_bins:
                raise WireError(
                    f"{where}.features.{name}.bins: expected {sec.n_bins} bins (the model's profile), got {len(counts.bins)}"
                )
        if w.predictions is not None:
            if self.prediction is None:
                raise WireError(f"{where}.predictions: model {self.name} {self.version} has no prediction profile")
            if len(w.predictions.bins) != self.prediction.n_bins:
                raise WireError(
                    f"{where}.predictions.bins: expected {self.prediction.n_bins} bins (the model's profile), "
                    f"got {len(w.predictions.bins)}"
                )

        for j, x in enumerate(w.samples or ()):
            unknown = [k for k in x["row"] if k not in self.features]
            if unknown:
                raise WireError(f"{where}.samples[{j}].row.{unknown[0]}: not a feature of model {self.name} {self.version}")
        fb = w.feedback
        if fb is not None and fb.confusion is not None:
            n = self.prediction.n_bins if self.prediction is not None else None
            if n != len(fb.confusion):
                raise WireError(
                    f"{where}.feedback.confusion: expected {n} classes (the model's prediction profile), got {len(fb.confusion)}"
                )

    def vector(self, w: Window) -> np.ndarray:
        """The window's counts flattened in this model's layout (checked windows only).

        Built as one Python list and converted once: a numpy slice assignment per
        feature cost more than the rest of storing the window.
        """
        flat: list[int] = []
        prediction = self.prediction
        for sec in self.sections:
            counts = w.predictions if sec is prediction else w.features.get(sec.name)
            if counts is None:  # a feature the window did not see: zeros
                flat += [0] * (sec.n_bins + len(EXTRAS))
            else:
                flat += counts.bins
                flat += (counts.missing, counts.below, counts.above, counts.unseen)
        if len(flat) != self.size:
            raise ValueError(f"window of model {self.hash[:12]} does not match its profile's bins (check it first)")
        return np.array(flat, dtype=np.int64)


def _sections(profile: Mapping[str, Any]) -> tuple[Section, ...]:
    feats = list(profile.get("features") or [])
    if profile.get("prediction") is not None:
        feats.append({**profile["prediction"], "name": PREDICTION})
    out: list[Section] = []
    start = 0
    for f in feats:
        if f["kind"] == "numeric":
            labels = _numeric_labels([float(e) for e in f["edges"]])
        else:
            labels = [str(c) for c in f["categories"]]
        sec = Section(
            str(f["name"]),
            start,
            len(labels),
            tuple(float(s) for s in f["shares"]),
            tuple(labels),
            present_count(f.get("count", 0), f.get("missing_rate", 0.0)),
            f["kind"] == "numeric",
        )
        out.append(sec)
        start = sec.stop
    return tuple(out)


def _numeric_labels(edges: list[float]) -> list[str]:
    if not edges:
        return ["all"]
    labels = [f"< {edges[0]:.4g}"]
    labels += [f"{a:.4g} – {b:.4g}" for a, b in zip(edges, edges[1:])]
    labels.append(f">= {edges[-1]:.4g}")
    return labels


def model_from_upload(content_hash: str, entry: Mapping[str, Any], where: str, source: str = "upload") -> ModelInfo:
    """Check a batch's ``models[hash]`` entry (or a bundle's) and normalise its profile.

    The profile goes through :class:`Profile` so two uploads of the same model compare
    equal however their JSON was spelled.
    """
    raw = entry.get("profile")
    if raw is None:
        raise WireError(f"{where}.profile: missing; the collector needs the reference profile to judge drift")
    try:
        profile = Profile.from_dict(raw, source=f"{where}.profile").to_dict()
    except BundleError as exc:
        raise WireError(str(exc)) from None
    drift = entry.get("drift")
    if drift is not None and not isinstance(drift, Mapping):
        raise WireError(f"{where}.drift: expected an object with psi_warn and psi_drift")
    try:
        thresholds = Thresholds.from_dict(dict(drift) if drift else None)
    except (TypeError, ValueError):
        raise WireError(f"{where}.drift: psi_warn and psi_drift must be numbers") from None
    name, version = str(entry["name"]), str(entry["version"])
    if not name or len(name) > 200 or len(version) > 100:
        raise WireError(f"{where}: name must be 1-200 characters and version at most 100")
    return ModelInfo(content_hash, name, version, profile, thresholds, source)
