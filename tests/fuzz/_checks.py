"""What the fuzz tests assert about ``predict``, shared by the in-process and the real-executable runs."""

from __future__ import annotations

import csv
import io
import json
import re
from pathlib import Path

from click.testing import Result

__all__ = ["check_predict_result", "sniffed"]

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


def sniffed(payload: bytes) -> str:
    """The format ``predict`` picks for input without a telling suffix (its first line's shape)."""
    text = payload.removeprefix(b"\xef\xbb\xbf").decode("utf-8", "replace")
    first = next(iter(io.StringIO(text, newline="")), "")
    return "jsonl" if first.lstrip().startswith("{") else "csv"
