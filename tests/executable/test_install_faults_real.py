"""install's faults with the real device executable: --bundle, a tampered installed copy, a full disk."""

from __future__ import annotations

import contextlib
import os
import subprocess
import tarfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from mlpack_edge.runtime.embedded import open_appended

from ._builds import Built

pytestmark = pytest.mark.slow
NAME = "breast-cancer"


def _run(*cmd: object) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLPACK_")}
    return subprocess.run([str(c) for c in cmd], capture_output=True, text=True, timeout=300, env=env)


def _bundle_archive(exe: Path, folder: Path) -> Path:
    """The bundle appended to ``exe``, unpacked and packed again as a .tar.gz (how a model update travels)."""
    unpacked = folder / "breast-cancer-1.1.0"
    unpacked.mkdir(parents=True)
    open_appended(exe).extract(unpacked)
    archive = folder / "breast-cancer-1.1.0.tar.gz"
    with tarfile.open(archive, "w:gz") as tf:
        tf.add(unpacked, arcname=unpacked.name)
    return archive


def test_bundle_option_installs_that_bundle_and_a_tampered_copy_is_repaired(built: Built, tmp_path: Path) -> None:
    prefix = tmp_path / "opt"
    assert _run(built.v1, "install", "--prefix", prefix, "--allow-unsigned").returncode == 0
    archive = _bundle_archive(built.v2, tmp_path / "update")
    proc = _run(built.v1, "--bundle", archive, "install", "--prefix", prefix)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0] == f"installing the bundle {archive} with this executable's runtime"
    assert lines[1] == f"installed {NAME} 1.1.0 at {prefix / NAME / '1.1.0'}; now current (previous: 1.0.0)"
    current = prefix / NAME / "current" / NAME
    assert _run(current, "verify").returncode == 0

    (prefix / NAME / "1.1.0" / "bundle" / "model_card.html").write_text("edited\n")
    assert _run(current, "verify").returncode == 1
    proc = _run(built.v2, "install", "--prefix", prefix)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines()[0] == f"repaired {NAME} 1.1.0 at {prefix / NAME / '1.1.0'}; still current"
    assert "  repaired 1 file that did not match this executable: bundle/model_card.html" in proc.stdout.splitlines()
    assert _run(current, "verify").returncode == 0
    again = _run(built.v2, "install", "--prefix", prefix)
    assert again.stdout.splitlines()[0] == f"{NAME} 1.1.0 already installed at {prefix / NAME / '1.1.0'}"

    proc = _run(built.v1, "--bundle", built.v2, "install", "--prefix", prefix)
    assert proc.returncode == 1
    assert proc.stderr.strip().endswith(
        "install takes a bundle folder or a .tar/.tar.gz/.tgz/.zip archive of one (to install another device executable,"
        " run its own install)"
    )


@contextlib.contextmanager
def _tmpfs(path: Path, size: str) -> Iterator[Path]:
    path.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root")
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True, text=True)
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {proc.stderr.strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def test_a_full_disk_is_one_short_line_naming_the_file(built: Built, tmp_path: Path) -> None:
    """The fault-injection run saw a 147,941-byte message here (the repr of every failed copy)."""
    with _tmpfs(tmp_path / "small", "24m") as mnt:
        prefix = mnt / "opt"
        proc = _run(built.v1, "install", "--prefix", prefix, "--allow-unsigned")
        assert proc.returncode == 1
        lines = proc.stderr.splitlines()
        assert len(lines) == 1 and len(lines[0]) < 400, proc.stderr[:2000]
        assert lines[0].startswith(f"Error: cannot install into {prefix / NAME / '1.0.0'}: writing _internal/")
        assert " failed: No space left on device (" in lines[0]
        assert lines[0].endswith(" MB)")
        assert sorted(p.name for p in (prefix / NAME).iterdir()) == [".lock"]
