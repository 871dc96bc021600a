"""Property: ``predict`` on any bytes ends in exit 0 or 1 with one-line messages, never a traceback,
and its output file is either complete or absent.

In process through ``CliRunner`` (the whole device command, opened bundle, real
onnxruntime), on near-valid CSV and JSON Lines, their damaged bytes, and raw bytes;
from a file (named ``.csv``, ``.jsonl`` or neither) or stdin, sniffed or told its format.
"""

from __future__ import annotations

import csv
import io
import json
import re
import tempfile
from pathlib import Path

from click.testing import CliRunner, Result
from hypothesis import event, given
from hypothesis import strategies as st

from mlpack_edge.cli import main

from ._settings import fuzz
from .strategies import input_bytes

ROW_ERROR = re.compile(r"^row \d+: \S")
SUMMARY = re.compile(r"^Error: (\d+) of (\d+) rows failed validation \(listed above and in the output's 'error'\)$")


def check_predict_result(r: Result | tuple[int, str, str], out: Path, out_format: str) -> None:
    """The contract, for an in-process result or ``(exit code, stdout, stderr)`` of a real process."""
    if isinstance(r, Result):
        assert r.exception is None or isinstance(r.exception, SystemExit), repr(r.exception)
        code, stdout, stderr = r.exit_code, r.stdout, r.stderr
    else:
        code, stdout, stderr = r
    assert "Traceback" not in stderr, stderr
    assert code in (0, 1), (code, stderr)
    assert stdout == ""  # the output went to the file
    lines = stderr.splitlines()
    for line in lines[:-1]:  # row errors listed before the final line, one line each
        assert ROW_ERROR.match(line) or re.match(r"^\.\.\. and \d+ more$", line), (line, stderr)
    leftovers = [p.name for p in out.parent.iterdir() if p.name.startswith(".") and p.name.endswith(".tmp")]
    assert leftovers == []
    if code == 0:
        assert lines == [], stderr  # a failed row would have made it exit 1
        assert out.is_file()
        _check_output(out, out_format, None)
        return
    assert lines and lines[-1].startswith("Error: "), stderr
    summary = SUMMARY.match(lines[-1])
    if summary:  # rows failed validation: the output is complete all the same
        assert out.is_file()
        _check_output(out, out_format, int(summary.group(2)))
    else:  # the input as a whole was refused: nothing written
        assert len(lines) == 1, stderr
        assert not out.exists(), lines[-1]


def _check_output(out: Path, fmt: str, rows: int | None) -> None:
    text = out.read_text(encoding="utf-8")
    if fmt == "csv":
        table = list(csv.reader(io.StringIO(text, newline="")))
        assert table and table[0][-1] == "error"
        assert {len(r) for r in table} == {len(table[0])}
        body = table[1:]
        if rows is not None:
            assert len(body) == rows
        assert all("\n" not in r[-1] for r in body)  # an error is one line, in the output too
    else:
        records = [json.loads(line) for line in text.splitlines()]
        if rows is not None:
            assert len(records) == rows
        assert all("\n" not in str(rec.get("error", "")) for rec in records)


@fuzz(examples=120)
@given(data=st.data())
def test_predict_never_tracebacks_and_writes_all_or_nothing(fuzz_bundle: Path, features: list[str], data: st.DataObject) -> None:
    payload = data.draw(input_bytes(features), label="input")
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
            fmt = {"rows.csv": "csv", "rows.jsonl": "jsonl"}.get(source) or _sniffed(payload)
        event(f"exit {r.exit_code}: {(r.stderr.splitlines() or [''])[-1][:40]}")
        check_predict_result(r, out, fmt)


def _sniffed(payload: bytes) -> str:
    text = payload.removeprefix(b"\xef\xbb\xbf").decode("utf-8", "replace")
    first = next(iter(io.StringIO(text, newline="")), "")
    return "jsonl" if first.lstrip().startswith("{") else "csv"
