"""The predict fuzz property (tests/fuzz) on what users install: the real device executable.

A small sample of the same generated inputs, run through the installed launcher (file
and stdin) and through the downloaded single file: exit 0 or 1, one-line messages, no
traceback, output complete or absent. It catches what in-process runs cannot: the
frozen runtime's own encodings, stdio and exit path (``os._exit`` without teardown).
"""

from __future__ import annotations

import os
import subprocess
import tempfile
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mlpack_edge.runtime.manifest import read_manifest
from tests.fuzz._settings import fuzz
from tests.fuzz.conftest import valid_values
from tests.fuzz.strategies import input_bytes
from tests.fuzz._checks import check_predict_result, sniffed

from ._builds import Built

pytestmark = pytest.mark.slow
NAME = "breast-cancer"


@pytest.fixture(scope="module")
def launcher(built: Built, tmp_path_factory: pytest.TempPathFactory) -> Path:
    prefix = tmp_path_factory.mktemp("fuzz-install")
    proc = subprocess.run([str(built.v1), "install", "--prefix", str(prefix), "--allow-unsigned"],
                          capture_output=True, text=True, timeout=300, env=_env())
    assert proc.returncode == 0, proc.stderr
    return prefix / NAME / "current" / NAME


@pytest.fixture(scope="module")
def feature_names(built: Built) -> list[str]:
    return [f.name for f in read_manifest(built.bundle1).features]


@pytest.fixture(scope="module")
def valid(built: Built) -> dict[str, list[object]]:
    return valid_values(built.bundle1)


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("MLPACK_")}


def _predict(exe: Path, payload: bytes, source: str, folder: Path) -> tuple[tuple[int, str, str], Path, str]:
    out = folder / "out" / "predictions"
    out.parent.mkdir()
    args = [str(exe), "predict", "--no-monitor", "-o", str(out)]
    if source != "-":
        (folder / source).write_bytes(payload)
        args.insert(2, str(folder / source))
    proc = subprocess.run(args, input=payload if source == "-" else None, capture_output=True, timeout=120, env=_env())
    fmt = "jsonl" if source.endswith(".jsonl") else "csv" if source.endswith(".csv") else sniffed(payload)
    return (proc.returncode, proc.stdout.decode("utf-8", "replace"), proc.stderr.decode("utf-8", "replace")), out, fmt


@fuzz(examples=25, deadline_ms=60_000)
@given(data=st.data())
def test_installed_executable_predicts_any_bytes_within_the_contract(
    launcher: Path, feature_names: list[str], valid: dict[str, list[object]], data: st.DataObject
) -> None:
    payload = data.draw(input_bytes(feature_names, valid), label="input")
    source = data.draw(st.sampled_from(["rows.csv", "rows.jsonl", "rows.txt", "-"]), label="source")
    with tempfile.TemporaryDirectory() as tmp:
        result, out, fmt = _predict(launcher, payload, source, Path(tmp))
        check_predict_result(result, out, fmt)


@fuzz(examples=4, deadline_ms=120_000)
@given(data=st.data())
def test_downloaded_executable_predicts_any_bytes_within_the_contract(
    built: Built, feature_names: list[str], valid: dict[str, list[object]], data: st.DataObject
) -> None:
    payload = data.draw(input_bytes(feature_names, valid), label="input")
    with tempfile.TemporaryDirectory() as tmp:
        result, out, fmt = _predict(built.v1, payload, "-", Path(tmp))
        code, stdout, stderr = result
        stderr = "\n".join(line for line in stderr.splitlines() if not line.startswith("warning: ")) + "\n"
        check_predict_result((code, stdout, stderr.lstrip("\n")), out, fmt)
