"""Crash-safe output (mlpack_edge._fs): all or nothing, and never a rename over what is not a file."""

from __future__ import annotations

import os
import stat
import threading
from pathlib import Path

import pytest

from mlpack_edge._fs import atomic_directory, atomic_open, atomic_write_bytes


def test_a_failed_write_leaves_the_old_content_and_no_temp_file(tmp_path: Path) -> None:
    target = tmp_path / "out.csv"
    target.write_text("old\n")
    with pytest.raises(RuntimeError), atomic_open(target, text=True) as fh:
        fh.write("half a new")
        raise RuntimeError("interrupted")
    assert target.read_text() == "old\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.csv"]


def test_new_files_and_folders_follow_the_umask(tmp_path: Path) -> None:
    old = os.umask(0o027)
    try:
        atomic_write_bytes(tmp_path / "f", b"x")
        with atomic_directory(tmp_path / "d") as d:
            (d / "inner").write_text("y")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "f").stat().st_mode) == 0o640
    assert stat.S_IMODE((tmp_path / "d").stat().st_mode) == 0o750


def test_a_symlink_is_written_through(tmp_path: Path) -> None:
    real = tmp_path / "real.csv"
    real.write_text("old\n")
    link = tmp_path / "link.csv"
    link.symlink_to(real)
    with atomic_open(link, text=True) as fh:
        fh.write("new\n")
    assert link.is_symlink() and real.read_text() == "new\n"


def test_a_fifo_is_written_in_place_not_replaced(tmp_path: Path) -> None:
    """`predict -o /dev/null` (or a FIFO) must not rename a regular file over the node."""
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    got: list[bytes] = []
    reader = threading.Thread(target=lambda: got.append(fifo.read_bytes()), daemon=True)
    reader.start()
    with atomic_open(fifo) as fh:
        fh.write(b"rows\n")
    reader.join(timeout=10)
    assert got == [b"rows\n"]
    assert stat.S_ISFIFO(os.stat(fifo).st_mode)
