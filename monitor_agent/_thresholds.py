"""The drift levels a manifest carries (:class:`Thresholds`), apart from :mod:`.drift`'s maths.

The agent needs only these numbers at start-up (to hand them to the outbox with its
windows); the tests themselves run where windows are judged (``status``, the collector).
Importing them from here spares a one-shot ``predict`` the drift module. Re-exported by
:mod:`.drift`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from mlpack_edge._record import Frozen

__all__ = ["Thresholds"]


class Thresholds(Frozen):
    """Levels carried in the manifest (``drift`` section); defaults per industry habit.

    ``psi_warn``/``psi_drift`` grade PSI (the effect size). ``alpha`` is the family-wise
    false-alarm rate of the significance test over all features of a model (Bonferroni);
    ``min_count`` is the fewest observed values a feature needs for any verdict.
    ``missing_jump`` is how far (absolute share) the live missing rate may rise above the
    profile's before it is flagged; ``out_of_range`` is the share of values outside the
    training range (numeric) or of unseen categories that is flagged (the reference
    expects none).
    """

    __slots__ = ("psi_warn", "psi_drift", "missing_jump", "out_of_range", "alpha", "min_count")
    _fields = __slots__
    psi_warn: float
    psi_drift: float
    missing_jump: float
    out_of_range: float
    alpha: float
    min_count: int

    def __init__(
        self,
        psi_warn: float = 0.1,
        psi_drift: float = 0.2,
        missing_jump: float = 0.05,
        out_of_range: float = 0.01,
        alpha: float = 0.005,
        min_count: int = 20,
    ) -> None:
        s = object.__setattr__
        s(self, "psi_warn", psi_warn)
        s(self, "psi_drift", psi_drift)
        s(self, "missing_jump", missing_jump)
        s(self, "out_of_range", out_of_range)
        s(self, "alpha", alpha)
        s(self, "min_count", min_count)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any] | None) -> Thresholds:
        d = d or {}
        return cls(
            float(d.get("psi_warn", 0.1)),
            float(d.get("psi_drift", 0.2)),
            float(d.get("missing_jump", 0.05)),
            float(d.get("out_of_range", 0.01)),
            float(d.get("alpha", 0.005)),
            int(d.get("min_count", 20)),
        )

    def to_dict(self) -> dict[str, float]:
        return {
            "psi_warn": self.psi_warn,
            "psi_drift": self.psi_drift,
            "missing_jump": self.missing_jump,
            "out_of_range": self.out_of_range,
            "alpha": self.alpha,
            "min_count": self.min_count,
        }
