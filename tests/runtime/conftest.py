"""Real bundles for the runtime tests, built once per session by ``mlpack_edge.builder.build``.

* ``binary_bundle``: LogisticRegression, numeric a, b, c (c has gaps -> nullable),
  matrix layout, classes "no"/"yes".
* ``mixed_bundle``: a multiclass pipeline over x1, x2 (gaps) and categoricals colour
  (gaps, unseen -> error) and shape (unseen -> missing), columns layout.
* ``regression_bundle``: Ridge on x1..x3 (x3 has gaps), matrix layout.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from mlpack_edge.builder import build
from tests._data import binary_rows, mixed_rows, regression_rows


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
    data = binary_rows(n=200, seed=1)
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
    data = mixed_rows(n=300, seed=2)
    return build_bundle(
        bundles_root / "mixed", "mixed", "multiclass", "label", data, 'class = "LogisticRegression"\nparams = { max_iter = 500 }', extra
    )


@pytest.fixture(scope="session")
def regression_bundle(bundles_root: Path) -> Path:
    data = regression_rows(n=150, seed=3)
    return build_bundle(bundles_root / "regression", "reg", "regression", "y", data, 'class = "Ridge"')
