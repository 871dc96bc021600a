"""Why a build root cannot be used, in one line naming the fix (checked before minutes of work)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from mlpack_edge.builder._buildroot import _download_command, root_problem
from mlpack_edge.builder._freeze import frozen_runtime, platform_tag
from mlpack_edge.errors import PackagingError

needs_root_tools = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("mmdebstrap") is None, reason="checks past the root/mmdebstrap test"
)
FOREIGN = "linux-aarch64" if platform_tag() != "linux-aarch64" else "linux-x86_64"
ENTRY = "qemu-aarch64" if FOREIGN == "linux-aarch64" else "qemu-x86_64"


@needs_root_tools
def test_foreign_target_needs_a_qemu_binfmt_entry_with_the_f_flag(tmp_path: Path) -> None:
    missing = root_problem(FOREIGN, binfmt=tmp_path)
    assert missing is not None and "apt-get install qemu-user-static binfmt-support" in missing
    (tmp_path / ENTRY).write_text("disabled\ninterpreter /usr/libexec/qemu-binfmt/x\nflags: PF\n")
    assert "disabled" in (root_problem(FOREIGN, binfmt=tmp_path) or "")
    (tmp_path / ENTRY).write_text("enabled\ninterpreter /usr/libexec/qemu-binfmt/x\nflags: P\n")
    assert "F flag" in (root_problem(FOREIGN, binfmt=tmp_path) or "")
    (tmp_path / ENTRY).write_text("enabled\ninterpreter /usr/libexec/qemu-binfmt/x\nflags: PF\n")
    assert root_problem(FOREIGN, binfmt=tmp_path) is None
    assert root_problem(platform_tag(), binfmt=tmp_path / "nowhere") is None  # the host needs no qemu


def test_unknown_target_and_floor_are_refused_before_any_work(tmp_path: Path) -> None:
    with pytest.raises(PackagingError, match=r"unknown target 'linux-riscv64' \(expected one of: linux-aarch64, linux-x86_64\)"):
        frozen_runtime(tmp_path, target="linux-riscv64")
    with pytest.raises(PackagingError, match=r"unknown floor 'glibc-2.17'"):
        frozen_runtime(tmp_path, floor="glibc-2.17")
    assert not (tmp_path / "runtime").exists()


def test_wheels_are_asked_for_glibc_2_31_or_older_only() -> None:
    cmd = _download_command(Path("/w"), ["numpy==2.0"], arch="arm64")
    platforms = [cmd[i + 1] for i, arg in enumerate(cmd) if arg == "--platform"]
    assert platforms[0] == "manylinux_2_31_aarch64" and "manylinux_2_32_aarch64" not in platforms
    assert "manylinux2014_aarch64" in platforms and all(p.endswith("_aarch64") for p in platforms)
    assert "--only-binary=:all:" in cmd and cmd[-1] == "numpy==2.0"
