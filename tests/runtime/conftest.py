"""Real bundles for the runtime tests, built once per session by ``mlpack.builder.build``.

* ``binary_bundle``: LogisticRegression, numeric a, b, c (c has gaps -> nullable),
  matrix layout, classes "no"/"yes".
* ``mixed_bundle``: a multiclass pipeline over x1, x2 (gaps) and categoricals colour
  (gaps, unseen -> error) and shape (unseen -> missing), columns layout.
* ``regression_bundle``: Ridge on x1..x3 (x3 has gaps), matrix layout.
"""

from __future__ import annotations

import csv
import io
import textwrap
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from mlpack.builder import build


def _csv(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerows([header, *rows])
    return buf.getvalue()


def _num(x: float) -> str:
    return "" if np.isnan(x) else f"{x:.4f}"


def _binary_data(rng: np.random.Generator, n: int = 200) -> str:
    x = rng.normal(size=(n, 3))
    y = np.where(x[:, 0] + 0.5 * x[:, 1] - 0.3 * x[:, 2] + rng.normal(0, 0.5, n) > 0, "yes", "no")
    x[rng.uniform(size=n) < 0.1, 2] = np.nan
    return _csv(["a", "b", "c", "y"], [[*map(_num, row), t] for row, t in zip(x, y)])


def _mixed_data(rng: np.random.Generator, n: int = 300) -> str:
    x1, x2 = rng.normal(size=n), rng.normal(size=n)
    colour = rng.choice(["red", "green", "blue"], n)
    shape = rng.choice(["round", "square"], n)
    score = x1 + np.where(colour == "red", 1.5, 0) - np.where(shape == "square", 1.0, 0) + rng.normal(0, 0.4, n)
    y = np.where(score > 0.8, "A", np.where(score > -0.5, "B", "C"))
    x2[rng.uniform(size=n) < 0.1] = np.nan
    colour = np.where(rng.uniform(size=n) < 0.08, "", colour)
    return _csv(["x1", "x2", "colour", "shape", "label"], [[_num(a), _num(b), c, s, t] for a, b, c, s, t in zip(x1, x2, colour, shape, y)])


def _regression_data(rng: np.random.Generator, n: int = 150) -> str:
    x = rng.normal(size=(n, 3))
    y = 3 * x[:, 0] - 2 * x[:, 1] + 0.5 * x[:, 2] + rng.normal(0, 0.3, n) + 10
    x[rng.uniform(size=n) < 0.1, 2] = np.nan
    return _csv(["x1", "x2", "x3", "y"], [[*map(_num, row), _num(t)] for row, t in zip(x, y)])


def build_bundle(root: Path, name: str, task: str, target: str, data: str, estimator: str, extra: str = "") -> Path:
    """Write a spec + CSV under ``root`` and build the bundle (no executable)."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "data.csv").write_text(data, encoding="utf-8")
    spec = textwrap.dedent(
        f"""\
        [model]
        name = "{name}"
        version = "1.0.0"
        task = "{task}"
        seed = 0

        [data]
        path = "data.csv"
        target = "{target}"

        [estimator]
        {estimator}
        """
    ) + textwrap.dedent(extra)
    (root / "mlpack.toml").write_text(spec, encoding="utf-8")
    return build(root / "mlpack.toml", root / "dist", executable=False).bundle_dir


@pytest.fixture(scope="session")
def bundles_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("runtime-bundles")


@pytest.fixture(scope="session")
def binary_bundle(bundles_root: Path) -> Path:
    data = _binary_data(np.random.default_rng(1))
    return build_bundle(bundles_root / "binary", "binary", "binary", "y", data, 'class = "LogisticRegression"')


@pytest.fixture(scope="session")
def mixed_bundle(bundles_root: Path) -> Path:
    extra = """
    [data.features]
    x1 = "numeric"
    x2 = "numeric"
    colour = { kind = "categorical", nullable = true, unseen = "error" }
    shape = { kind = "categorical", unseen = "missing" }
    """
    data = _mixed_data(np.random.default_rng(2))
    return build_bundle(
        bundles_root / "mixed", "mixed", "multiclass", "label", data, 'class = "LogisticRegression"\nparams = { max_iter = 500 }', extra
    )


@pytest.fixture(scope="session")
def regression_bundle(bundles_root: Path) -> Path:
    data = _regression_data(np.random.default_rng(3))
    return build_bundle(bundles_root / "regression", "reg", "regression", "y", data, 'class = "Ridge"')
