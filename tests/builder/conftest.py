"""Small projects (spec + CSV in a tmp folder) that build in well under a second."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from mlpack_edge.builder import BuildResult, build
from mlpack_edge.cli import main
from tests._data import binary_rows, csv_text, mixed_rows, regression_rows, spec_text

__all__ = ["EXAMPLES", "Project", "binary_rows", "csv_text", "mixed_rows", "regression_rows", "spec_text"]

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "examples"


class Project:
    """A project folder: ``data.csv`` + ``mlpack.toml``; builds into ``dist/`` beside them."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.dist = root / "dist"
        self.spec_path = root / "mlpack.toml"

    def write(self, spec: str, data: str | None = None, data_name: str = "data.csv") -> Path:
        if data is not None:
            (self.root / data_name).write_text(data, encoding="utf-8")
        self.spec_path.write_text(spec, encoding="utf-8")
        return self.spec_path

    def build(self, **kwargs: Any) -> BuildResult:
        return build(self.spec_path, self.dist, executable=False, **kwargs)

    def cli(self, *args: str) -> Result:
        return CliRunner().invoke(main, ["build", str(self.spec_path), "--no-executable", "-o", str(self.dist), *args])


@pytest.fixture
def project(tmp_path: Path) -> Project:
    return Project(tmp_path)
