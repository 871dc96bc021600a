"""Crafted archives for the bounded-memory tests: members of hundreds of MB of zeros, built in milliseconds.

Compressing 400 MB of zeros takes a second or two per archive; instead the deflate stream
of one zero MiB is made once, ending in a full flush (which resets the compressor, so the
next MiB compresses to the very same bytes) and repeated. The zip and gzip framing
around it is written here by hand: ``zipfile``/``tarfile`` read the result as they read any
archive.
"""

from __future__ import annotations

import functools
import struct
import tarfile
import zlib
from collections.abc import Sequence
from pathlib import Path

__all__ = ["Zeros", "write_zip", "write_tar_gz"]

MIB = 1 << 20
_DOS_DATE = (0 << 9) | (1 << 5) | 1  # 1980-01-01


class Zeros(int):
    """A member of this many zero bytes (a whole number of MiB)."""


@functools.cache
def _zero_block() -> bytes:
    c = zlib.compressobj(6, zlib.DEFLATED, -15)
    return c.compress(bytes(MIB)) + c.flush(zlib.Z_FULL_FLUSH)


@functools.cache
def _zero_crc(mib: int, start: int = 0) -> int:
    crc, block = start, bytes(MIB)
    for _ in range(mib):
        crc = zlib.crc32(block, crc)
    return crc


def _deflate(parts: Sequence[bytes | Zeros]) -> tuple[bytes, int, int]:
    """Raw deflate of ``parts`` in order: (stream, crc32, size)."""
    c = zlib.compressobj(6, zlib.DEFLATED, -15)
    out: list[bytes] = []
    crc = size = 0
    for part in parts:
        if isinstance(part, Zeros):
            assert part % MIB == 0
            out.append(c.flush(zlib.Z_FULL_FLUSH))
            out.append(_zero_block() * (part // MIB))
            crc = _zero_crc(part // MIB, crc)
        else:
            out.append(c.compress(part))
            crc = zlib.crc32(part, crc)
        size += len(part) if not isinstance(part, Zeros) else int(part)
    out.append(c.flush(zlib.Z_FINISH))
    return b"".join(out), crc, size


def write_zip(path: Path, members: Sequence[tuple[str, bytes | Zeros]], prefix: bytes = b"", comment: bytes = b"") -> Path:
    """A deflated zip after ``prefix`` (offsets counted from the start of the file, as a
    device executable's appended bundle is), members in the order given."""
    out = bytearray(prefix)
    central: list[bytes] = []
    for name, data in members:
        comp, crc, size = _deflate([data])
        raw_name = name.encode()
        offset = len(out)
        out += struct.pack("<4s2B4HL2L2H", b"PK\x03\x04", 20, 0, 0, 8, 0, _DOS_DATE, crc, len(comp), size, len(raw_name), 0)
        out += raw_name + comp
        central.append(
            struct.pack("<4s4B4HL2L5H2L", b"PK\x01\x02", 20, 3, 20, 0, 0, 8, 0, _DOS_DATE, crc, len(comp), size,
                        len(raw_name), 0, 0, 0, 0, 0o100644 << 16, offset) + raw_name
        )
    directory = b"".join(central)
    start = len(out)
    out += directory
    out += struct.pack("<4s4H2LH", b"PK\x05\x06", 0, 0, len(central), len(central), len(directory), start, len(comment))
    out += comment
    path.write_bytes(bytes(out))
    return path


def write_tar_gz(path: Path, members: Sequence[tuple[str, bytes | Zeros]]) -> Path:
    """A .tar.gz of regular files, in the order given."""
    parts: list[bytes | Zeros] = []
    for name, data in members:
        info = tarfile.TarInfo(name)
        info.size = int(data) if isinstance(data, Zeros) else len(data)
        info.mode = 0o644
        parts.append(info.tobuf(format=tarfile.PAX_FORMAT))
        parts.append(data)
        pad = -info.size % 512
        if pad:
            parts.append(bytes(pad))
    parts.append(bytes(1024))  # end of archive
    stream, crc, size = _deflate(parts)
    header = b"\x1f\x8b\x08\x00" + bytes(4) + b"\x00\xff"
    path.write_bytes(header + stream + struct.pack("<2L", crc, size & 0xFFFFFFFF))
    return path
