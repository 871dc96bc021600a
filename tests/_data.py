"""Small synthetic datasets and specs shared by the test suites (seeded: same text every run)."""

from __future__ import annotations

import csv
import io
import textwrap
from collections.abc import Sequence
from typing import Any

import numpy as np

__all__ = ["csv_text", "binary_rows", "mixed_rows", "regression_rows", "spec_text"]


def csv_text(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(header)
    w.writerows(rows)
    return buf.getvalue()


def _num(x: float) -> str:
    return "" if np.isnan(x) else f"{x:.4f}"


def binary_rows(n: int = 160, seed: int = 1, missing: float = 0.1) -> str:
    """Numeric features a, b, c (c has gaps); target y in {no, yes}."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 3))
    y = np.where(x[:, 0] + 0.5 * x[:, 1] - 0.3 * x[:, 2] + rng.normal(0, 0.5, n) > 0, "yes", "no")
    x[rng.uniform(size=n) < missing, 2] = np.nan
    return csv_text(["a", "b", "c", "y"], [[_num(v) for v in row] + [t] for row, t in zip(x, y)])


def mixed_rows(n: int = 240, seed: int = 2) -> str:
    """Numeric x1, x2 (gaps), categorical colour (gaps) and shape; target in {A, B, C}."""
    rng = np.random.default_rng(seed)
    x1 = rng.normal(size=n)
    x2 = rng.normal(size=n)
    colour = rng.choice(["red", "green", "blue"], n)
    shape = rng.choice(["round", "square"], n)
    score = x1 + np.where(colour == "red", 1.5, 0) - np.where(shape == "square", 1.0, 0) + rng.normal(0, 0.4, n)
    y = np.where(score > 0.8, "A", np.where(score > -0.5, "B", "C"))
    x2[rng.uniform(size=n) < 0.1] = np.nan
    colour = np.where(rng.uniform(size=n) < 0.08, "", colour)
    rows = [[_num(a), _num(b), c, s, t] for a, b, c, s, t in zip(x1, x2, colour, shape, y)]
    return csv_text(["x1", "x2", "colour", "shape", "label"], rows)


def regression_rows(n: int = 150, seed: int = 3) -> str:
    """Numeric x1..x3 (x3 has gaps); target y = linear + noise."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 3))
    y = 3 * x[:, 0] - 2 * x[:, 1] + 0.5 * x[:, 2] + rng.normal(0, 0.3, n) + 10
    x[rng.uniform(size=n) < 0.1, 2] = np.nan
    return csv_text(["x1", "x2", "x3", "y"], [[_num(v) for v in row] + [_num(t)] for row, t in zip(x, y)])


def spec_text(
    task: str = "binary",
    target: str = "y",
    estimator: str = 'class = "LogisticRegression"',
    extra: str = "",
    data: str = "data.csv",
    name: str = "demo",
    version: str = "1.0.0",
) -> str:
    head = [
        "[model]",
        f'name = "{name}"',
        f'version = "{version}"',
        f'task = "{task}"',
        "seed = 0",
        "",
        "[data]",
        f'path = "{data}"',
        f'target = "{target}"',
        "",
        "[estimator]",
        estimator,
        "",
    ]
    return "\n".join(head) + textwrap.dedent(extra)
