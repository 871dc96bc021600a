"""``predict`` on input that is not UTF-8: one line naming the file and the byte offset, never a traceback.

Whatever the encoding problem and wherever it is (the first byte, the first 8 KB a
text wrapper reads ahead, or megabytes in), the command ends with exit code 1 and one
``Error:`` line; a ``-o`` output file is not left behind. A UTF-8 byte-order mark is
accepted as the start of a UTF-8 file.
"""

from __future__ import annotations

import io
import random
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from mlpack_edge.cli import main
from mlpack_edge.errors import InputError
from mlpack_edge.runtime.io import utf8_lines

HEADER = "x1,x2,colour,shape\n"
ROW = "1.5,2,red,round\n"


def _predict(bundle: Path, *args: str, input: bytes | None = None) -> Result:
    return CliRunner().invoke(main, ["device", "--bundle", str(bundle), "--allow-unsigned", "predict", *args], input=input)


def _one_error_line(r: Result) -> str:
    assert r.exit_code == 1, r.output
    assert r.exception is None or isinstance(r.exception, SystemExit), r.exception
    assert "Traceback" not in r.output
    lines = r.output.splitlines()
    assert len(lines) == 1, r.output
    return lines[0]


def test_utf16_file_names_the_file_and_the_byte_order_mark(mixed_bundle: Path, tmp_path: Path) -> None:
    src = tmp_path / "rows.csv"
    src.write_bytes((HEADER + ROW).encode("utf-16"))
    line = _one_error_line(_predict(mixed_bundle, str(src)))
    assert line == (
        f"Error: {src}: not UTF-8 text at byte 0 (line 1): it starts with a UTF-16 byte-order mark; convert it to UTF-8"
    )


def test_a_latin1_byte_names_its_offset_and_line(mixed_bundle: Path, tmp_path: Path) -> None:
    src = tmp_path / "rows.csv"
    data = (HEADER + ROW).encode() + b"1,2,r\xe9d,round\n"
    src.write_bytes(data)
    out = tmp_path / "out.csv"
    line = _one_error_line(_predict(mixed_bundle, str(src), "-o", str(out)))
    offset = data.index(b"\xe9")
    assert line == f"Error: {src}: not UTF-8 text at byte {offset} (line 3): invalid continuation byte (0xe9); convert it to UTF-8"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["rows.csv"]  # no output, no temp file


def test_a_bad_byte_megabytes_in_is_found_with_its_exact_offset(mixed_bundle: Path, tmp_path: Path) -> None:
    rows = 80_000
    data = (HEADER + ROW * rows).encode() + b"2,1,\xff,square\n" + ROW.encode()
    src = tmp_path / "big.csv"
    src.write_bytes(data)
    line = _one_error_line(_predict(mixed_bundle, str(src), "-o", str(tmp_path / "out.csv")))
    offset = data.index(b"\xff")
    assert offset > 1 << 20
    assert line == (
        f"Error: {src}: not UTF-8 text at byte {offset} (line {rows + 2}): invalid start byte (0xff);"
        " convert it to UTF-8"
    )
    assert not (tmp_path / "out.csv").exists()


def test_binary_garbage_is_one_line(mixed_bundle: Path, tmp_path: Path) -> None:
    src = tmp_path / "garbage.bin"
    src.write_bytes(b"\x89PNG\r\n\x1a\n" + random.Random(7).randbytes(4000))
    line = _one_error_line(_predict(mixed_bundle, str(src), "--format", "csv"))
    assert line.startswith(f"Error: {src}: not UTF-8 text at byte 0 (line 1): invalid start byte (0x89)")


def test_jsonl_and_stdin_name_where_the_bytes_came_from(mixed_bundle: Path, tmp_path: Path) -> None:
    good = b'{"x1": 1, "x2": 2, "colour": "red", "shape": "round"}\n'
    bad = b'{"x1": 1, "x2": 2, "colour": "r\xe9d", "shape": "round"}\n'
    src = tmp_path / "rows.jsonl"
    src.write_bytes(good + bad)
    offset = len(good) + bad.index(b"\xe9")
    line = _one_error_line(_predict(mixed_bundle, str(src)))
    assert line.startswith(f"Error: {src}: not UTF-8 text at byte {offset} (line 2): ")
    line = _one_error_line(_predict(mixed_bundle, input=good + bad))
    assert line.startswith(f"Error: stdin: not UTF-8 text at byte {offset} (line 2): ")


def test_a_utf8_byte_order_mark_is_accepted(mixed_bundle: Path, tmp_path: Path) -> None:
    plain, marked = tmp_path / "plain.csv", tmp_path / "marked.csv"
    plain.write_text(HEADER + ROW + "1,2,blü,round\n", encoding="utf-8")
    marked.write_bytes(b"\xef\xbb\xbf" + plain.read_bytes())
    a, b = _predict(mixed_bundle, str(plain)), _predict(mixed_bundle, str(marked))
    assert a.output == b.output and a.exit_code == b.exit_code == 1  # 'blü' is an unseen colour, not an encoding error
    assert b.output.startswith("row 2: field 'colour': category 'blü' was not seen in training")
    r = _predict(mixed_bundle, input=b"\xef\xbb\xbf" + (HEADER + ROW).encode())
    assert r.exit_code == 0, r.output


@pytest.mark.parametrize("block", [1, 2, 3, 7, 64, 1 << 16])
def test_lines_split_and_decode_as_a_text_file_does(block: int) -> None:
    """Same lines as ``open(..., newline='')`` of the text after a BOM at every block size; errors where it fails.

    (``utf-8-sig`` itself is not the reference: it silently drops a truncated BOM at the end.)
    """
    rnd = random.Random(block)
    alphabet = b"ab,\r\n\xc3\xa9\xef\xbb\xbf"
    for _ in range(400):
        data = bytes(rnd.choice(alphabet) for _ in range(rnd.randint(0, 30)))
        try:
            text = data.removeprefix(b"\xef\xbb\xbf")
            expected: list[str] | None = list(io.TextIOWrapper(io.BytesIO(text), encoding="utf-8", newline=""))
        except UnicodeDecodeError:
            expected = None
        if expected is None:
            with pytest.raises(InputError, match=r"^in: not UTF-8 text at byte \d+ \(line \d+\): "):
                list(utf8_lines(io.BytesIO(data), "in", block))
        else:
            assert list(utf8_lines(io.BytesIO(data), "in", block)) == expected, data


def test_offset_and_line_do_not_depend_on_the_block_size() -> None:
    data = "é,a\r\n".encode() * 50 + b"x\rb\xc3(\n"
    messages = set()
    for block in (1, 5, 13, 64, 4096):
        with pytest.raises(InputError) as err:
            list(utf8_lines(io.BytesIO(data), "in", block))
        messages.add(str(err.value))
    assert messages == {"in: not UTF-8 text at byte 303 (line 52): invalid continuation byte (0xc3); convert it to UTF-8"}
