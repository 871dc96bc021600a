"""The golden set: probe inputs with the outputs scikit-learn gave for them at build time.

The builder stores it in the bundle (``golden.json``) after the parity proof; the
device replays it through onnxruntime on its own CPU (``verify``), so a device whose
arithmetic, onnxruntime build or files differ from the build machine finds out
before it serves a wrong answer.

Format ``mlpack.golden/1``::

    {
      "format": "mlpack.golden/1",
      "tolerance": 0.0001,                 # absolute, on probabilities / regression values
      "rows": [{"age": 31.0, "colour": "red"}, {"age": null, "colour": null}, ...],
      "expected": {"labels": [1, 0, ...],                    # classification
                   "probabilities": [[0.1, 0.9], ...]}       # one column per manifest class
               |  {"values": [12.5, ...]}                    # regression
    }

Rows use the same form the runtime accepts (feature name -> value, ``null`` for
missing), so replaying them also exercises input validation.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from mlpack_edge.errors import BundleError

__all__ = ["GOLDEN_FORMAT", "Golden", "GoldenCheck", "compare"]

GOLDEN_FORMAT = "mlpack.golden/1"


@dataclass(frozen=True)
class Golden:
    rows: list[dict[str, Any]]
    tolerance: float
    labels: list[Any] | None = None
    probabilities: list[list[float]] | None = None
    values: list[float] | None = None

    def to_dict(self) -> dict[str, Any]:
        expected: dict[str, Any]
        if self.values is not None:
            expected = {"values": list(self.values)}
        else:
            expected = {"labels": list(self.labels or []), "probabilities": self.probabilities}
        return {
            "format": GOLDEN_FORMAT,
            "tolerance": self.tolerance,
            "rows": self.rows,
            "expected": expected,
        }

    @classmethod
    def parse(cls, raw: bytes, source: str = "golden.json") -> Golden:
        try:
            d = json.loads(raw)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise BundleError(f"{source}: not valid JSON ({exc})") from None
        if not isinstance(d, dict) or d.get("format") != GOLDEN_FORMAT:
            raise BundleError(f"{source}: expected format {GOLDEN_FORMAT!r}")
        rows = d.get("rows")
        exp = d.get("expected")
        if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
            raise BundleError(f"{source}: 'rows' must be a list of objects")
        if not isinstance(exp, dict):
            raise BundleError(f"{source}: 'expected' must be an object")
        n = len(rows)
        golden = cls(
            rows=rows,
            tolerance=float(d.get("tolerance", 1e-4)),
            labels=exp.get("labels"),
            probabilities=exp.get("probabilities"),
            values=exp.get("values"),
        )
        for key in ("labels", "probabilities", "values"):
            got = getattr(golden, key)
            if got is not None and len(got) != n:
                raise BundleError(f"{source}: expected.{key} has {len(got)} entries for {n} rows")
        if golden.values is None and golden.labels is None:
            raise BundleError(f"{source}: expected needs 'labels' or 'values'")
        return golden


@dataclass(frozen=True)
class GoldenCheck:
    """Outcome of replaying a golden set: ``passed`` plus where and by how much it failed."""

    rows: int
    label_mismatches: int
    max_abs_diff: float
    tolerance: float

    @property
    def passed(self) -> bool:
        return self.label_mismatches == 0 and self.max_abs_diff <= self.tolerance

    def describe(self) -> str:
        if self.passed:
            return (
                f"golden set: {self.rows} rows agree (max abs diff {self.max_abs_diff:.2e}"
                f" <= {self.tolerance:g})"
            )
        return (
            f"golden set: {self.label_mismatches} of {self.rows} labels differ, max abs diff"
            f" {self.max_abs_diff:.2e} (tolerance {self.tolerance:g})"
        )


def compare(
    golden: Golden,
    labels: Sequence[Any] | None = None,
    probabilities: np.ndarray | None = None,
    values: np.ndarray | None = None,
) -> GoldenCheck:
    """Compare outputs produced now with the ones recorded at build time."""
    mismatches = 0
    diff = 0.0
    if golden.values is not None:
        if values is None:
            raise BundleError("golden set holds regression values but the model gave none")
        a = np.asarray(values, dtype=np.float64).ravel()
        b = np.asarray(golden.values, dtype=np.float64)
        diff = float(np.max(np.abs(a - b))) if a.size else 0.0
    else:
        got = list(labels if labels is not None else [])
        want = list(golden.labels or [])
        mismatches = sum(1 for x, y in zip(got, want) if _norm(x) != _norm(y)) + abs(len(got) - len(want))
        if golden.probabilities is not None and probabilities is not None:
            a = np.asarray(probabilities, dtype=np.float64)
            b = np.asarray(golden.probabilities, dtype=np.float64)
            if a.shape != b.shape:
                raise BundleError(f"golden set: probabilities shaped {b.shape}, model gave {a.shape}")
            diff = float(np.max(np.abs(a - b))) if a.size else 0.0
    return GoldenCheck(len(golden.rows), mismatches, diff, golden.tolerance)


def _norm(v: Any) -> Any:
    if isinstance(v, (np.generic,)):
        v = v.item()
    return v

