"""Headless Chromium renders a built example's model card: the charts are really drawn.

The screenshot is decoded here (zlib + PNG filters, no imaging library) and checked for
what a broken card would lack: many colours rather than a blank page, and the chart
colours (bars, the red median/held-out series) spread down the whole page, not only at the top.
Set ``MLPACK_KEEP_SCREENSHOTS=DIR`` to keep the PNG and look at it.
"""

from __future__ import annotations

import os
import shutil
import struct
import subprocess
import zlib
from collections import Counter
from pathlib import Path

import pytest
from mlpack_edge.builder import build
from mlpack_edge.builder.report import CARD_FILE

from mlpack_edge._svg import PALETTE
from tests._services import require_chromium

from .conftest import EXAMPLES

pytestmark = pytest.mark.browser

_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--hide-scrollbars",
]
WIDTH, HEIGHT = 1200, 3600


def decode_png(data: bytes) -> tuple[int, int, list[bytes]]:
    """``(width, height, rows)`` of an 8-bit RGB/RGBA PNG, each row as RGB bytes."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    pos, idat, header = 8, b"", b""
    while pos < len(data):
        (length,), kind = struct.unpack(">I", data[pos : pos + 4]), data[pos + 4 : pos + 8]
        body = data[pos + 8 : pos + 8 + length]
        if kind == b"IHDR":
            header = body
        elif kind == b"IDAT":
            idat += body
        pos += 12 + length
    width, height, depth, colour, _, _, interlace = struct.unpack(">IIBBBBB", header)
    assert depth == 8 and colour in (2, 6) and interlace == 0, (depth, colour, interlace)
    bpp = 3 if colour == 2 else 4
    raw = zlib.decompress(idat)
    stride = width * bpp
    rows: list[bytes] = []
    prev = bytearray(stride)
    for y in range(height):
        ftype, line = raw[y * (stride + 1)], bytearray(raw[y * (stride + 1) + 1 : (y + 1) * (stride + 1)])
        for i in range(stride):
            a = line[i - bpp] if i >= bpp else 0
            b, c = prev[i], prev[i - bpp] if i >= bpp else 0
            if ftype == 1:
                line[i] = (line[i] + a) & 0xFF
            elif ftype == 2:
                line[i] = (line[i] + b) & 0xFF
            elif ftype == 3:
                line[i] = (line[i] + (a + b) // 2) & 0xFF
            elif ftype == 4:
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                line[i] = (line[i] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 0xFF
        prev = line
        rows.append(bytes(line) if bpp == 3 else bytes(v for i, v in enumerate(line) if i % 4 != 3))
    return width, height, rows


def _rgb(hex_colour: str) -> bytes:
    return bytes.fromhex(hex_colour.lstrip("#"))


@pytest.mark.slow
def test_chromium_renders_the_card_with_its_charts(tmp_path: Path) -> None:
    binary = require_chromium()
    result = build(EXAMPLES / "fleet_faults" / "mlpack.toml", tmp_path / "dist", executable=False)
    card = result.bundle_dir / CARD_FILE
    shot = tmp_path / "card.png"
    proc = subprocess.run(
        [
            binary,
            *_FLAGS,
            f"--user-data-dir={tmp_path / 'chrome'}",
            f"--screenshot={shot}",
            f"--window-size={WIDTH},{HEIGHT}",
            card.as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    keep = os.environ.get("MLPACK_KEEP_SCREENSHOTS")
    if keep:
        Path(keep).mkdir(parents=True, exist_ok=True)
        shutil.copy(shot, Path(keep) / "model_card.png")

    width, height, rows = decode_png(shot.read_bytes())
    assert (width, height) == (WIDTH, HEIGHT)
    pixels = Counter(row[i : i + 3] for row in rows[::4] for i in range(0, len(row), 12))  # a 1-in-16 sample
    assert len(pixels) > 200, "the page is nearly uniform: nothing rendered"
    blue, red = _rgb(PALETTE[0]), _rgb(PALETTE[1])
    assert pixels[blue] > 2000, "no chart bars in the chart colour"
    assert pixels[red] > 50, "no second-series bars"
    # bars of the chart colour appear all the way down (class balance near the top, then the
    # reference distributions, then the prediction chart), not only in the first chart
    bands = {y // 300 for y, row in enumerate(rows) if blue in {row[i : i + 3] for i in range(0, len(row), 3)}}
    assert len(bands) >= 4 and max(bands) - min(bands) >= 5, sorted(bands)
