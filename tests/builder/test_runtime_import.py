"""``mlpack runtime import``: only a runtime a build here can use joins the cache, else one line why."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from mlpack_edge.builder._freeze import _imported, import_expectations, platform_tag, stage_sources
from mlpack_edge.builder._runtime_import import check_runtime_file
from mlpack_edge.cli import main
from mlpack_edge.errors import PackagingError
from mlpack_edge.runtime.embedded import append_bundle

HOST = platform_tag()
OTHER = "linux-aarch64" if HOST != "linux-aarch64" else "linux-x86_64"
ELF = Path("/bin/ls")  # a real ELF executable of this machine, not a PyInstaller archive


def _check(path: Path, target: str) -> str:
    with pytest.raises(PackagingError) as info:
        check_runtime_file(path, target, import_expectations())
    return str(info.value)


def test_refused_in_one_line_naming_why(tmp_path: Path) -> None:
    text = tmp_path / "notes.txt"
    text.write_text("hello")
    assert _check(text, HOST) == f"{text}: not an ELF executable, so not a frozen mlpack runtime"
    assert _check(ELF, OTHER) == f"{ELF}: built for {HOST}, not {OTHER}"
    assert _check(ELF, HOST).startswith(f"{ELF}: not a frozen mlpack runtime, or damaged")
    model = tmp_path / "model-exe"
    model.write_bytes(append_bundle(ELF.read_bytes(), {"manifest.json": b"{}"}))
    assert "a model executable (a bundle is appended)" in _check(model, HOST)


def test_cli_exit_1_and_nothing_cached(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["runtime", "import", str(ELF), "--target", OTHER, "--cache-dir", str(tmp_path)])
    assert result.exit_code == 1
    assert result.stderr.strip() == f"Error: {ELF}: built for {HOST}, not {OTHER}"
    assert not (tmp_path / "runtime").exists()


def test_a_build_for_a_target_with_no_runtime_names_both_commands(tmp_path: Path) -> None:
    with pytest.raises(PackagingError) as info:
        _imported(tmp_path, OTHER, stage_sources(), "no qemu-aarch64 binfmt_misc entry")
    message = str(info.value)
    assert f"mlpack runtime freeze --target {OTHER}" in message
    assert f"mlpack runtime import FILE --target {OTHER}" in message
    assert "no qemu-aarch64 binfmt_misc entry" in message and "\n" not in message


def test_the_spec_writes_the_facts_file_into_the_runtime(tmp_path: Path) -> None:
    """The rendered spec is valid Python whose facts writer records the versions an import checks."""
    import json

    from mlpack_edge.builder._freeze_spec import FACTS_NAME, render_spec

    text = render_spec(name="n", script="s", stage="st", scratch=str(tmp_path), inputs="i", hiddenimports=[], sources="abc")
    compile(text, "device.spec", "exec")
    head = text.split("\na = Analysis(", 1)[0]  # everything before PyInstaller's own classes are used
    exec(compile(head, "device.spec", "exec"), {})
    facts = json.loads((tmp_path / FACTS_NAME).read_text())
    assert facts["sources"] == "abc" and facts["python"].startswith("3.")
    assert set(facts) == {"python", "machine", "sources", "numpy", "onnxruntime"}
