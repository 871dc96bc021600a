"""Batch predict over a stream: CSV or JSON Lines in, CSV or JSON Lines out, bounded memory.

Rows are read ``chunk_rows`` at a time, validated and predicted together (one
onnxruntime call per chunk), and written before the next chunk is read, so memory
stays flat whatever the input size. The output has exactly one row per input row, in
input order:

* CSV out: the ``--keep`` columns, then ``label`` and ``proba_<class>`` per class
  (classification) or ``value`` (regression), then ``error`` — empty for a good row,
  the reason for a bad one (its prediction columns are then empty).
* JSON Lines out: the kept fields plus ``label`` and ``probabilities`` (class ->
  probability) or ``value``; a bad row is ``{"error", "row", "field"}`` plus kept fields.

Rows are numbered from 1 in input order (the CSV header is not a row; blank JSON
Lines are skipped and not counted). A CSV header that lacks a feature or names a
column that is neither a feature nor kept fails the whole input before any output,
since every row would fail the same way.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import IO, Any

import numpy as np

from mlpack_edge._record import Record
from mlpack_edge.errors import InputError
from mlpack_edge.runtime._format import float_texts
from mlpack_edge.runtime.model import BatchResult, Model
from mlpack_edge.runtime.schema import Batch, Schema, row_error

__all__ = ["FORMATS", "StreamSummary", "detect_format", "predict_stream", "csv_batch", "utf8_lines", "atomic_text_output"]

FORMATS = ("csv", "jsonl")
DEFAULT_CHUNK_ROWS = 2048
_READ_BLOCK = 1 << 16
_BOM = b"\xef\xbb\xbf"
_UTF16_BOMS = (b"\xff\xfe", b"\xfe\xff")
_SUFFIXES = {".csv": "csv", ".jsonl": "jsonl", ".ndjson": "jsonl"}


class StreamSummary(Record):
    """What a streaming predict did: rows read, rows that failed, the first few errors."""

    __slots__ = ("rows", "failed", "first_errors")
    _fields = __slots__

    def __init__(self, rows: int = 0, failed: int = 0, first_errors: list[InputError] | None = None) -> None:
        self.rows = rows
        self.failed = failed
        self.first_errors: list[InputError] = [] if first_errors is None else first_errors

    @property
    def predicted(self) -> int:
        return self.rows - self.failed


def detect_format(name: str | None, first_line: str) -> str:
    """``csv`` or ``jsonl`` from a file name's suffix, else from the first line's shape."""
    if name:
        fmt = _SUFFIXES.get(Path(name).suffix.lower())
        if fmt:
            return fmt
    return "jsonl" if first_line.lstrip().startswith("{") else "csv"


def utf8_lines(raw: IO[bytes], where: str, block: int = _READ_BLOCK) -> Iterator[str]:
    """The text lines of a binary stream, decoded as strict UTF-8 with a byte offset on failure.

    Lines keep their endings and split as ``open(..., newline="")`` splits them
    (``\\n``, ``\\r\\n``, a lone ``\\r``), which is what :mod:`csv` expects. A leading UTF-8
    BOM is dropped. Text that is not UTF-8 anywhere in the stream raises a one-line
    :class:`InputError` naming ``where``, the byte offset (counted from the start,
    BOM included) and the line, instead of a ``UnicodeDecodeError`` from the depths of
    a text wrapper. The stream is read in blocks of at most ``block`` bytes (``read1``
    when the stream has it, so a slow pipe is processed as it arrives); memory is one
    block plus the longest line.
    """
    read = getattr(raw, "read1", None) or raw.read
    pending = bytearray()  # bytes after the last line end seen, not yet decoded
    base = 0  # stream offset of pending[0]
    lines_done = 0
    while True:
        chunk = read(block)
        if not chunk:
            if pending:
                yield from _decoded_lines(bytes(pending), base, lines_done, where)
            return
        cut = chunk.rfind(b"\n")
        if cut < 0:
            cut = chunk.rfind(b"\r", 0, len(chunk) - 1)  # a final \r may be half of \r\n
        if cut < 0:
            pending += chunk
            continue
        pending += chunk[: cut + 1]
        data = bytes(pending)
        pending = bytearray(chunk[cut + 1 :])
        lines = _decoded_lines(data, base, lines_done, where)
        lines_done += len(lines)
        base += len(data)
        yield from lines


def _decoded_lines(data: bytes, base: int, lines_done: int, where: str) -> list[str]:
    """``data`` (whole lines, from stream offset ``base``) as text lines; an ``InputError`` on bad bytes."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise _not_utf8(data, exc, base, lines_done, where) from None
    if base == 0 and text.startswith("\ufeff"):
        text = text[1:]
    return list(io.StringIO(text, newline=""))


def _not_utf8(data: bytes, exc: UnicodeDecodeError, base: int, lines_done: int, where: str) -> InputError:
    offset = base + exc.start
    before = list(io.StringIO(data[: exc.start].decode("utf-8"), newline=""))
    complete = len(before) - (1 if before and not before[-1].endswith(("\n", "\r")) else 0)
    line = lines_done + complete + 1
    if offset == 0 and data.startswith(_UTF16_BOMS):
        why = "it starts with a UTF-16 byte-order mark"
    else:
        bad = data[exc.start : exc.end]
        why = f"{exc.reason} ({' '.join(f'0x{b:02x}' for b in bad[:4])})"
    return InputError(f"{where}: not UTF-8 text at byte {offset} (line {line}): {why}; convert it to UTF-8")


def predict_stream(
    model: Model,
    lines: Iterable[str],
    out: IO[str],
    *,
    in_format: str,
    out_format: str,
    keep: Sequence[str] = (),
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
    where: str = "input",
    on_error: Callable[[InputError], None] | None = None,
    feedback: Any = None,
    id_column: str | None = None,
) -> StreamSummary:
    """Predict every row of ``lines`` into ``out``; bad rows are reported, never fatal.

    ``feedback`` (the monitoring agent, :class:`mlpack_edge.runtime.server.FeedbackSink`):
    every predicted row gets an id, remembered for ``<model> feedback``; the ids are
    the input's ``id_column`` (copied to the output like ``keep``) or generated, in an
    ``id`` output column.

    File-level problems (no CSV header, a header that does not fit the model, text that
    is not UTF-8, a CSV syntax error) raise :class:`InputError` naming ``where``.
    """
    if in_format not in FORMATS or out_format not in FORMATS:
        raise ValueError(f"formats are {FORMATS}, got {in_format!r} -> {out_format!r}")
    if chunk_rows < 1:
        raise ValueError("chunk_rows must be positive")
    summary = StreamSummary()
    if id_column is not None and id_column not in keep:
        keep = (*keep, id_column)
    out_keep = tuple(keep) if feedback is None or id_column is not None else (*keep, "id")
    try:
        source = _CsvSource(lines, model.schema, keep, where) if in_format == "csv" else _JsonlSource(lines, model.schema, keep)
        sink = _CsvSink(out, model, out_keep) if out_format == "csv" else _JsonlSink(out, out_keep)
        for batch, kept in source.chunks(chunk_rows):
            result = model.predict_batch(batch)
            if feedback is not None:
                kept = _with_ids(model, result, kept, feedback, keep.index(id_column) if id_column is not None else None)
                if feedback.capture_rate:
                    _capture(model, batch, result, kept, feedback, keep.index(id_column) if id_column is not None else len(keep))
            sink.write(result, kept)
            summary.rows += batch.size
            summary.failed += len(batch.errors)
            for err in batch.errors:
                if len(summary.first_errors) < 10:
                    summary.first_errors.append(err)
                if on_error is not None:
                    on_error(err)
    except UnicodeDecodeError as exc:
        raise InputError(f"{where}: not UTF-8 text after row {summary.rows} ({exc.reason})") from None
    return summary


def csv_batch(text: IO[str], schema: Schema, where: str) -> Batch:
    """A whole CSV (header + rows, already in memory) as one batch, rows numbered from 1.

    For a request body (``serve``'s ``POST /invocations``): the same header checks and
    per-row validation as ``predict``, and a leading unnamed column (the index
    ``pandas.DataFrame.to_csv()`` writes by default) is ignored.
    """
    first = text.readline()
    text.seek(0)
    header = next(csv.reader([first]), [])
    source = _CsvSource(text, schema, ("",) if header[:1] == [""] else (), where)
    for batch, _ in source.chunks(1 << 62):
        return batch
    return schema.columns([() for _ in schema.names], 0, 1)


def _with_ids(
    model: Model, result: BatchResult, kept: Sequence[Sequence[Any]], feedback: Any, column: int | None
) -> Sequence[Sequence[Any]]:
    """Remember the chunk's predictions under their ids; the kept columns, plus ``id`` when generated."""
    ok = result.ok.tolist()
    if column is None:
        fresh = feedback.new_ids(len(ok)) if ok else []
        ids: list[Any] = [""] * result.size
        for j, k in enumerate(ok):
            ids[k] = fresh[j]
        if ok:
            feedback.remember(fresh, model.codes(result))
        return [*kept, ids]
    given = kept[column]
    chosen = [str(given[k]) if given[k] not in (None, "") else None for k in ok]
    missing = [j for j, v in enumerate(chosen) if v is None]
    if missing:  # a row without an id still gets one (and it is shown in the id column)
        fresh = feedback.new_ids(len(missing))
        col = list(given)
        for j, f in zip(missing, fresh):
            chosen[j] = f
            col[ok[j]] = f
        kept = [*kept[:column], col, *kept[column + 1 :]]
    if ok:
        feedback.remember(chosen, model.codes(result))
    return kept


def _capture(model: Model, batch: Batch, result: BatchResult, kept: Sequence[Sequence[Any]], feedback: Any, id_col: int) -> None:
    """Offer a random ``capture_rate`` share of the chunk's predicted rows (features as parsed) to the capture."""
    import random

    rate = feedback.capture_rate
    ok = result.ok.tolist()
    picked = [j for j in range(len(ok)) if random.random() < rate]
    if not picked:
        return
    schema = model.schema
    names = schema.names
    num = [names[i] for i in schema.numeric]
    cat = [names[i] for i in schema.categorical]
    rows: list[dict[str, Any]] = []
    for j in picked:
        row: dict[str, Any] = {}
        if batch.numeric is not None:
            for c, name in enumerate(num):
                x = batch.numeric[j, c]
                # NaN: missing; a float32 by its shortest text (18.77, not 18.770000457763672)
                row[name] = None if x != x else float(str(x))
        for c, name in enumerate(cat):
            v = batch.categorical[c][j]
            row[name] = None if v in ("", None) else str(v)
        rows.append(row)
    if result.values is not None:
        values = np.asarray(result.values).ravel()
        outputs = [float(values[j]) for j in picked]
    else:
        assert result.labels is not None
        outputs = [result.labels[j].item() if hasattr(result.labels[j], "item") else result.labels[j] for j in picked]
    feedback.capture([str(kept[id_col][ok[j]]) for j in picked], rows, outputs)


# ---------------------------------------------------------------------------- sources


def _chunked(items: Iterator[Any], size: int) -> Iterator[list[Any]]:
    while True:
        chunk = [x for _, x in zip(range(size), items)]
        if not chunk:
            return
        yield chunk


class _CsvSource:
    def __init__(self, lines: Iterable[str], schema: Schema, keep: Sequence[str], where: str) -> None:
        self._reader = csv.reader(lines)
        self._schema = schema
        self._where = where
        try:
            header = next(self._reader)
        except StopIteration:
            raise InputError(f"{where}: empty input (expected a CSV header naming the features)") from None
        except csv.Error as exc:
            raise InputError(f"{where}: line 1: {exc}") from None
        self._width = len(header)
        index: dict[str, int] = {}
        for i, name in enumerate(header):
            if name in index:
                raise InputError(f"{where}: duplicate column {name!r} in the CSV header")
            index[name] = i
        missing = [n for n in schema.input_names if n not in index]
        if missing:
            raise InputError(f"{where}: the CSV header lacks feature{'s' if len(missing) > 1 else ''} {', '.join(map(repr, missing))}")
        unknown = [n for n in header if n not in schema.input_names and n not in keep]
        if unknown:
            raise InputError(
                f"{where}: unknown CSV column{'s' if len(unknown) > 1 else ''} {', '.join(map(repr, unknown))}"
                " (not a feature of the model; --keep copies a column to the output)"
            )
        absent = [k for k in keep if k not in index]
        if absent:
            raise InputError(f"{where}: --keep column {absent[0]!r} is not in the CSV header")
        self._features = [index[n] for n in schema.input_names]
        self._kept = [index[k] for k in keep]

    def chunks(self, size: int) -> Iterator[tuple[Batch, Sequence[Sequence[Any]]]]:
        start = 1
        rows = _rows_checked(self._reader, self._where)
        for chunk in _chunked(rows, size):
            errors: dict[int, InputError] = {}
            for pos, r in enumerate(chunk):
                if len(r) != self._width:
                    errors[pos] = row_error(start + pos, None, f"expected {self._width} fields as in the CSV header, got {len(r)}")
                    chunk[pos] = (r + [""] * self._width)[: self._width]  # kept columns still copied
            columns = list(zip(*chunk))
            batch = self._schema.columns([columns[i] for i in self._features], len(chunk), start, errors)
            yield batch, [columns[i] for i in self._kept]
            start += len(chunk)


def _rows_checked(reader: Any, where: str) -> Iterator[list[str]]:
    """csv rows, skipping blank lines; a CSV syntax error is a file-level error naming the line."""
    while True:
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            raise InputError(f"{where}: line {reader.line_num}: {exc}") from None
        if row:
            yield row


class _JsonlSource:
    def __init__(self, lines: Iterable[str], schema: Schema, keep: Sequence[str]) -> None:
        self._lines = lines
        self._schema = schema
        self._keep = tuple(keep)
        self._strip = tuple(k for k in keep if k not in schema.input_names)  # kept fields that are not features

    def chunks(self, size: int) -> Iterator[tuple[Batch, Sequence[Sequence[Any]]]]:
        start = 1
        lines = (line for line in self._lines if line.strip())
        for chunk in _chunked(lines, size):
            rows: list[Any] = []
            errors: dict[int, InputError] = {}
            kept: list[list[Any]] = [[] for _ in self._keep]
            for pos, line in enumerate(chunk):
                try:
                    row = json.loads(line)
                except (ValueError, RecursionError) as exc:
                    errors[pos] = row_error(start + pos, None, f"not valid JSON ({exc or 'nested too deeply'})")
                    row = None
                is_obj = isinstance(row, dict)
                for values, k in zip(kept, self._keep):
                    values.append(row.get(k) if is_obj else None)
                if is_obj and self._strip:
                    for k in self._strip:
                        row.pop(k, None)
                rows.append(row)
            yield self._schema.rows(rows, start, errors), kept
            start += len(chunk)


# ---------------------------------------------------------------------------- sinks


class _CsvSink:
    def __init__(self, out: IO[str], model: Model, keep: Sequence[str]) -> None:
        self._writer = csv.writer(out, lineterminator="\n")
        self._regression = model.task == "regression"
        outputs = ["value"] if self._regression else ["label"] + [f"proba_{c}" for c in model.classes]
        self._blank = [""] * len(outputs)
        self._writer.writerow([*keep, *outputs, "error"])

    def write(self, result: BatchResult, kept: Sequence[Sequence[Any]]) -> None:
        if self._regression:
            assert result.values is not None
            outs: Iterator[list[Any]] = ([v] for v in float_texts(result.values))
        else:
            assert result.labels is not None and result.probabilities is not None
            outs = ([label, *p] for label, p in zip(result.labels.tolist(), float_texts(result.probabilities)))
        kept_rows = list(zip(*kept)) if kept else None
        for pos, out in enumerate(result.in_order(outs)):
            prefix = list(kept_rows[pos]) if kept_rows is not None else []
            if isinstance(out, InputError):
                self._writer.writerow([*prefix, *self._blank, str(out)])
            else:
                self._writer.writerow([*prefix, *out, ""])


class _JsonlSink:
    def __init__(self, out: IO[str], keep: Sequence[str]) -> None:
        self._out = out
        self._keep = tuple(keep)

    def write(self, result: BatchResult, kept: Sequence[Sequence[Any]]) -> None:
        records = result.records()
        if self._keep:
            for pos, rec in enumerate(records):
                records[pos] = {**{k: v[pos] for k, v in zip(self._keep, kept)}, **rec}
        text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records)
        if "\x85" in text or "\u2028" in text or "\u2029" in text:
            text = text.translate(_LINE_BREAKS)
        self._out.write(text)


#: Characters JSON leaves raw (ensure_ascii=False) that many line readers split on
#: (Python's ``str.splitlines``, editors): escaped, so one record stays one line.
_LINE_BREAKS = str.maketrans({"\x85": "\\u0085", "\u2028": "\\u2028", "\u2029": "\\u2029"})


# ---------------------------------------------------------------------------- output file


def atomic_text_output(path: str | os.PathLike[str]) -> contextlib.AbstractContextManager[IO[str]]:
    """A UTF-8 text file that appears at ``path`` only complete (see ``mlpack_edge._fs.atomic_open``):
    a failed predict leaves no partial output behind."""
    from mlpack_edge._fs import atomic_open

    return atomic_open(path, text=True, mode=0o644)
