"""The glibc floor read from ELF version needs, checked against binutils on real files."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from mlpack_edge.builder._glibc import glibc_floor, glibc_needs, version_key

_OBJDUMP = shutil.which("objdump")


def _objdump_needs(path: Path) -> set[str]:
    """What binutils says ``path`` needs: the ``GLIBC_*`` names of its version-needs section."""
    assert _OBJDUMP is not None
    out = subprocess.run([_OBJDUMP, "-p", str(path)], capture_output=True, text=True, check=True).stdout
    section = out.split("Version References:", 1)[-1] if "Version References:" in out else ""
    return set(re.findall(r"\bGLIBC_(\d+(?:\.\d+)+)\b", section))


def _real_elves() -> list[Path]:
    """A few ELF files every Linux test machine has: this Python, its libpython, an extension, libc tools."""
    candidates = [Path(sys.executable).resolve(), Path("/bin/ls"), Path("/usr/bin/env")]
    import _ctypes  # an extension module of the standard library

    candidates.append(Path(_ctypes.__file__))
    import onnxruntime.capi as capi

    candidates += sorted(Path(capi.__path__[0]).glob("onnxruntime_pybind11_state*.so"))
    return [p for p in candidates if p.is_file()]


@pytest.mark.skipif(_OBJDUMP is None, reason="objdump (binutils) is not installed")
@pytest.mark.parametrize("path", _real_elves(), ids=lambda p: p.name)
def test_needs_match_objdump(path: Path) -> None:
    assert glibc_needs(path) == _objdump_needs(path)


@pytest.mark.skipif(shutil.which("gcc") is None, reason="gcc is not installed")
def test_a_program_using_a_new_symbol_needs_its_version(tmp_path: Path) -> None:
    """``reallocarray`` is GLIBC_2.26: a program calling it needs 2.26, one that does not, less."""
    src = tmp_path / "p.c"
    src.write_text('#include <stdlib.h>\nint main(void){void *p = reallocarray(0, 2, 8); free(p); return 0;}\n')
    plain = tmp_path / "q.c"
    plain.write_text("#include <stdio.h>\nint main(void){puts(\"x\"); return 0;}\n")
    subprocess.run(["gcc", "-o", str(tmp_path / "p"), str(src)], check=True)
    subprocess.run(["gcc", "-o", str(tmp_path / "q"), str(plain)], check=True)
    assert "2.26" in glibc_needs(tmp_path / "p")
    assert "2.26" not in glibc_needs(tmp_path / "q")
    assert version_key(glibc_floor([tmp_path / "p", tmp_path / "q"]) or "0") >= (2, 26)


def test_not_elf_or_truncated_needs_nothing(tmp_path: Path) -> None:
    text = tmp_path / "t.txt"
    text.write_text("hello")
    cut = tmp_path / "cut"
    cut.write_bytes(Path("/bin/ls").read_bytes()[:200])
    assert glibc_needs(text) == set() == glibc_needs(cut) == glibc_needs(tmp_path / "absent")
    assert glibc_floor([text]) is None


def test_floor_compares_versions_numerically() -> None:
    assert version_key("2.9") < version_key("2.17") < version_key("2.31") < version_key("2.36")
    assert max(["2.9", "2.17", "2.2.5"], key=version_key) == "2.17"
