"""Why a build root cannot be used, in one line naming the fix (checked before minutes of work)."""

from __future__ import annotations

import functools
import os
import shutil
from pathlib import Path

import pytest

from mlpack_edge.builder._buildroot import _download_command, _relative_links
from mlpack_edge.builder._buildroot import root_problem as _root_problem
from mlpack_edge.builder._freeze import frozen_runtime, platform_tag
from mlpack_edge.errors import PackagingError

needs_root_tools = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("mmdebstrap") is None, reason="checks past the root/mmdebstrap test"
)
FOREIGN = "linux-aarch64" if platform_tag() != "linux-aarch64" else "linux-x86_64"
ENTRY = "qemu-aarch64" if FOREIGN == "linux-aarch64" else "qemu-x86_64"


def _all_tools(tool: str) -> str:
    return f"/usr/bin/{tool}"


@needs_root_tools
def test_foreign_target_needs_a_qemu_binfmt_entry_with_the_f_flag(tmp_path: Path) -> None:
    root_problem = functools.partial(_root_problem, which=_all_tools)
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


@needs_root_tools
def test_foreign_target_needs_the_cross_compiler_and_make(tmp_path: Path) -> None:
    triplet = "aarch64-linux-gnu" if FOREIGN == "linux-aarch64" else "x86_64-linux-gnu"

    def without(missing: str):  # type: ignore[no-untyped-def]
        return lambda tool: None if tool == missing else f"/usr/bin/{tool}"

    assert _root_problem(FOREIGN, binfmt=tmp_path, which=without(f"{triplet}-gcc")) == (
        f"{triplet}-gcc is not installed (CPython for {FOREIGN} is cross-compiled here): apt-get install gcc-{triplet}"
    )
    assert _root_problem(FOREIGN, binfmt=tmp_path, which=without("make")) == (
        f"make is not installed (CPython for {FOREIGN} is cross-compiled here): apt-get install make"
    )
    assert _root_problem(platform_tag(), which=without(f"{triplet}-gcc")) is None  # the host's root compiles inside


def test_absolute_library_links_become_relative_inside_the_root(tmp_path: Path) -> None:
    lib = tmp_path / "lib" / "aarch64-linux-gnu"
    usrlib = tmp_path / "usr" / "lib" / "aarch64-linux-gnu"
    lib.mkdir(parents=True)
    usrlib.mkdir(parents=True)
    (lib / "libz.so.1").write_bytes(b"real")
    (usrlib / "libz.so").symlink_to("/lib/aarch64-linux-gnu/libz.so.1")  # as Debian's zlib1g-dev ships it
    (usrlib / "libm.so.6").symlink_to("libm-2.31.so")  # already relative: left as it is
    _relative_links(tmp_path)
    assert os.readlink(usrlib / "libz.so") == "../../../lib/aarch64-linux-gnu/libz.so.1"
    assert (usrlib / "libz.so").read_bytes() == b"real"  # the host now reaches the root's file
    assert os.readlink(usrlib / "libm.so.6") == "libm-2.31.so"


def test_the_bootloaders_cross_compiler_flags_are_the_cross_built_cpythons(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The bootloader of a foreign root is compiled with exactly the cc line of CPython's cross build.

    Both ask the cross gcc where its own headers are: a stand-in on PATH answers for both,
    the shell evaluates the script's own ``gccinc``/``cc`` lines, and the words must match.
    """
    import shlex
    import subprocess

    from mlpack_edge.builder._buildroot import _cross_script, cross_cc

    fake = tmp_path / "bin"
    fake.mkdir()
    gcc = fake / "aarch64-linux-gnu-gcc"
    gcc.write_text('#!/bin/sh\n[ "$1" = -print-file-name=include ] && echo /opt/fake-gcc/include\n')
    gcc.chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake}:/usr/bin:/bin")
    script = _cross_script("arm64", "/mnt/opt/mlpack/src/bin/python-for-build").splitlines()
    lines = [ln for ln in script if ln.startswith(("gccinc=", "cc="))]
    assert len(lines) == 3, lines
    proc = subprocess.run(["/bin/sh", "-c", "\n".join([*lines, 'printf %s "$cc"'])], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert cross_cc("arm64") == shlex.split(proc.stdout)
    assert cross_cc("arm64")[:5] == ["aarch64-linux-gnu-gcc", "--sysroot=/mnt", "-nostdinc", "-isystem", "/opt/fake-gcc/include"]
