"""Property: ``predict`` on any bytes ends in exit 0 or 1 with one-line messages, never a traceback,
and its output file is either complete or absent.

In process through ``CliRunner`` (the whole device command, opened bundle, real
onnxruntime), on near-valid CSV and JSON Lines, their damaged bytes, and raw bytes;
from a file (named ``.csv``, ``.jsonl`` or neither) or stdin, sniffed or told its format.
"""

from __future__ import annotations

import re
import tempfile
from pathlib import Path

from click.testing import CliRunner
from hypothesis import event, given
from hypothesis import strategies as st

from mlpack_edge.cli import main

from ._checks import check_predict_result, sniffed
from ._settings import fuzz
from .strategies import input_bytes

@fuzz(examples=100)
@given(data=st.data())
def test_predict_never_tracebacks_and_writes_all_or_nothing(fuzz_bundle: Path, features: list[str], valid: dict[str, list[object]], data: st.DataObject) -> None:
    payload = data.draw(input_bytes(features, valid), label="input")
    source = data.draw(st.sampled_from(["rows.csv", "rows.jsonl", "rows.txt", "-"]), label="source")
    fmt = data.draw(st.sampled_from([None, None, "csv", "jsonl"]), label="--format")
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        args = ["device", "--bundle", str(fuzz_bundle), "--allow-unsigned", "predict", "--no-monitor"]
        if source != "-":
            (folder / source).write_bytes(payload)
            args.append(str(folder / source))
        if fmt is not None:
            args += ["--format", fmt]
        (folder / "out").mkdir()
        out = folder / "out" / "predictions"
        args += ["-o", str(out)]
        r = CliRunner().invoke(main, args, input=payload if source == "-" else None)
        if fmt is None:  # as predict decides: the suffix, else the first line's shape
            fmt = {"rows.csv": "csv", "rows.jsonl": "jsonl"}.get(source) or sniffed(payload)
        last = (r.stderr.splitlines() or [""])[-1].replace(str(folder / source), "INPUT")
        event(f"exit {r.exit_code}: {re.sub(r'[0-9]+', 'N', last)[:60]}")
        check_predict_result(r, out, fmt)
