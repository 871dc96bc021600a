"""The oldest glibc a set of ELF files can run on, read from their version needs.

A Linux program or library names every glibc symbol version it was linked against
(``GLIBC_2.34`` for a symbol that changed in 2.34) in its ``.gnu.version_r`` section; the
dynamic loader refuses to start it on an older glibc ("version `GLIBC_2.35' not found").
The highest such version over every ELF file of a frozen runtime is therefore the floor of
the device executable: a fact of its bytes, computed here at build time without
``objdump`` (binutils is not always installed) and recorded in the executable's trailer.

Only the section headers, the version-needs section and its string table are read, so a
onefile executable (an ELF launcher followed by a large archive) costs a few reads.
"""

from __future__ import annotations

import io
import re
import struct
from collections.abc import Iterable
from pathlib import Path

__all__ = ["glibc_floor", "glibc_needs", "needs_of_bytes", "version_key"]

_SHT_GNU_VERNEED = 0x6FFFFFFE
_GLIBC = re.compile(rb"^GLIBC_(\d+(?:\.\d+)+)$")


def version_key(version: str) -> tuple[int, ...]:
    """``"2.31"`` -> ``(2, 31)``, so versions compare numerically (2.9 < 2.17)."""
    return tuple(int(part) for part in version.split("."))


def glibc_needs(path: Path) -> set[str]:
    """Every ``GLIBC_x.y`` version ``path`` needs (``{"2.17", "2.28"}``); empty if not an ELF file.

    A truncated or malformed ELF file counts as needing nothing rather than failing the
    build: the loader would refuse it anyway, and the executable's own ``verify`` runs after.
    """
    try:
        with open(path, "rb") as fh:
            return _needs(fh)
    except (OSError, struct.error, ValueError, IndexError):
        return set()


def needs_of_bytes(data: bytes) -> set[str]:
    """:func:`glibc_needs` of an ELF file held in memory (a member of a frozen archive)."""
    try:
        return _needs(io.BytesIO(data))
    except (struct.error, ValueError, IndexError):
        return set()


def glibc_floor(paths: Iterable[Path]) -> str | None:
    """The highest glibc version any of ``paths`` needs (``"2.31"``), or ``None`` if none needs one."""
    found: set[str] = set()
    for path in paths:
        found |= glibc_needs(path)
    return max(found, key=version_key) if found else None


def _needs(fh: object) -> set[str]:
    read, seek = fh.read, fh.seek  # type: ignore[attr-defined]
    ident = read(16)
    if len(ident) < 16 or ident[:4] != b"\x7fELF":
        return set()
    wide = ident[4] == 2
    end = "<" if ident[5] == 1 else ">"
    head = read(48 if wide else 36)
    if wide:
        shoff = struct.unpack_from(end + "Q", head, 0x28 - 16)[0]
        shentsize, shnum = struct.unpack_from(end + "HH", head, 0x3A - 16)
        section = end + "IIQQQQIIQQ"
    else:
        shoff = struct.unpack_from(end + "I", head, 0x20 - 16)[0]
        shentsize, shnum = struct.unpack_from(end + "HH", head, 0x2E - 16)
        section = end + "IIIIIIIIII"
    if not shoff or not shnum:
        return set()
    seek(shoff)
    table = read(shentsize * shnum)
    sections = [struct.unpack_from(section, table, i * shentsize) for i in range(shnum)]
    out: set[str] = set()
    for _name, kind, _flags, _addr, offset, size, link, info, _align, _entsize in sections:
        if kind != _SHT_GNU_VERNEED:
            continue
        strings_at, strings_size = sections[link][4], sections[link][5]
        seek(strings_at)
        strings = read(strings_size)
        seek(offset)
        data = read(size)
        out |= _walk_verneed(data, strings, end, count=info)
    return out


def _walk_verneed(data: bytes, strings: bytes, end: str, count: int) -> set[str]:
    """Names of every ``Vernaux`` entry under every ``Verneed`` entry (``GLIBC_*`` ones only)."""
    out: set[str] = set()
    at = 0
    for _ in range(count):
        _version, cnt, _file, aux, nxt = struct.unpack_from(end + "HHIII", data, at)
        sub = at + aux
        for _ in range(cnt):
            _hash, _flags, _other, name, sub_next = struct.unpack_from(end + "IHHII", data, sub)
            match = _GLIBC.match(strings[name : strings.index(b"\0", name)])
            if match:
                out.add(match.group(1).decode())
            if not sub_next:
                break
            sub += sub_next
        if not nxt:
            break
        at += nxt
    return out
