"""The glibc floor is a fact of the bundle: signed manifest, model card, inspect; the marker it is enforced by.

Fast tier: the runtime is a stand-in placed in the cache slot of this machine's real key
(as in test_build_executable), with the floor its ``key.json`` records; the build is the
real ``mlpack build``. The real bootloader's refusal is proven in test_glibc_floor.py (slow).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from mlpack_edge.builder import RecordingReporter, _bootloader, _freeze, build
from mlpack_edge.builder.inspect import inspect_path
from mlpack_edge.builder.inspect_cli import inspect_command
from mlpack_edge.errors import PackagingError
from mlpack_edge.runtime.embedded import append_bundle
from tests._data import binary_rows, spec_text

FLOOR = "2.30"


def _standin_runtime(cache: Path, floor: str = FLOOR) -> Path:
    """A runtime whose ``verify`` passes, cached under this machine's key, recording ``floor``."""
    from mlpack_edge.builder._freeze_inputs import INPUTS_NAME, record_inputs

    key = _freeze.runtime_key(_freeze.stage_sources())
    exe = cache / "runtime" / key / _freeze.FROZEN_NAME
    exe.parent.mkdir(parents=True)
    exe.write_text("#!/bin/sh\nexit 0\n")
    exe.chmod(0o755)
    (exe.parent / INPUTS_NAME).write_text(json.dumps(record_inputs([], "")))
    info = {"key": key, "platform": _freeze.platform_tag(), "floor": "host", "glibc_floor": floor}
    (exe.parent / "key.json").write_text(json.dumps(info))
    return exe


def _build(root: Path, monkeypatch: pytest.MonkeyPatch, out: str) -> tuple[Path, Path, list[str]]:
    project = root / out
    project.mkdir()
    (project / "data.csv").write_text(binary_rows(n=200, seed=1))
    (project / "mlpack.toml").write_text(spec_text())
    monkeypatch.setenv("MLPACK_CACHE_DIR", str(root / "cache"))
    reporter = RecordingReporter()
    result = build(project / "mlpack.toml", project / "dist", reporter=reporter)
    assert result.executable is not None
    return result.bundle_dir, result.executable, [e[1] for e in reporter.events if e[0] == "info"]


def test_the_floor_is_in_the_signed_manifest_the_card_and_inspect(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _standin_runtime(tmp_path / "cache")
    bundle, exe, infos = _build(tmp_path, monkeypatch, "a")
    target = _freeze.platform_tag()
    manifest = json.loads((bundle / "manifest.json").read_bytes())
    assert manifest["targets"] == {target: {"glibc_floor": FLOOR}}
    ins = inspect_path(exe)
    assert ins.manifest.data["targets"] == manifest["targets"]  # the appended copy is the same manifest
    assert ins.executable is not None and ins.executable.glibc_floor == FLOOR
    assert ins.problems == ()
    text = CliRunner().invoke(inspect_command, [str(bundle)]).stdout
    assert f"Devices (from the manifest)\n  {target}  glibc {FLOOR} or newer" in text
    doc = json.loads(CliRunner().invoke(inspect_command, [str(exe), "--json"]).stdout)
    assert doc["targets"] == {target: {"glibc_floor": FLOOR}}
    card = (bundle / "model_card.html").read_text()
    assert f'<tr data-fact="{target}"><th>{target}</th><td>glibc {FLOOR} or newer</td></tr>' in card
    assert (
        f"the device executable needs glibc {FLOOR} or newer (this machine's); for older devices"
        " build with --floor glibc-2.31 (frozen in a Debian 11 root: needs root and mmdebstrap)"
    ) in infos


def test_same_spec_and_data_give_the_same_manifest_bytes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _standin_runtime(tmp_path / "cache")
    first, _, _ = _build(tmp_path, monkeypatch, "a")
    second, _, _ = _build(tmp_path, monkeypatch, "b")
    assert (first / "manifest.json").read_bytes() == (second / "manifest.json").read_bytes()
    assert (first / "model_card.html").read_bytes() == (second / "model_card.html").read_bytes()


def test_a_bundle_without_an_executable_records_no_targets(tmp_path: Path) -> None:
    (tmp_path / "data.csv").write_text(binary_rows(n=200, seed=1))
    (tmp_path / "mlpack.toml").write_text(spec_text())
    result = build(tmp_path / "mlpack.toml", tmp_path / "dist", executable=False)
    assert "targets" not in result.manifest
    assert 'id="devices"' not in (result.bundle_dir / "model_card.html").read_text()


def test_a_trailer_floor_other_than_the_manifest_is_a_problem(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _standin_runtime(tmp_path / "cache")
    bundle, exe, _ = _build(tmp_path, monkeypatch, "a")
    files = {p.name: p.read_bytes() for p in sorted(bundle.iterdir())}
    swapped = tmp_path / "swapped"
    target = _freeze.platform_tag()
    swapped.write_bytes(append_bundle(b"#!/bin/sh\nexit 0\n", files, {"target": target, "glibc_floor": "2.36"}))
    assert inspect_path(swapped).problems == (
        f"{swapped}: the manifest says {target} needs glibc {FLOOR}, the executable's trailer says 2.36"
        " (runtime swapped after signing?)",
    )
    result = CliRunner().invoke(inspect_command, [str(swapped)])
    assert result.exit_code == 1


def _bootloader_bytes(floor: str = "0.0") -> bytes:
    """Bytes laid out like the compiled bootloader: code, the NUL-padded marker slot, more code."""
    slot = (_bootloader.MARKER + floor.encode()).ljust(_bootloader._SLOT, b"\0")
    return b"\x7fELF code before" + slot + b"code after the slot"


def test_the_marker_is_set_in_place_and_read_back() -> None:
    data = _bootloader_bytes()
    assert _bootloader.marker_floor(data) == "0.0"
    marked = _bootloader.with_floor(data, "2.31")
    assert len(marked) == len(data) and _bootloader.marker_floor(marked) == "2.31"
    assert _bootloader.with_floor(marked, "2.4") == _bootloader.with_floor(data, "2.4")  # no trace of the old value
    assert _bootloader.with_floor(marked, "0.0") == data  # only the slot changed
    assert _bootloader.marker_floor(b"no marker here") is None


@pytest.mark.parametrize(
    ("data", "floor", "message"),
    [
        (_bootloader_bytes(), "2.x", "glibc floor '2.x' is not a version like 2.31"),
        (_bootloader_bytes(), "2." + "1" * 40, f"glibc floor '2.{'1' * 40}' is not a version like 2.31"),
        (b"stock bootloader", "2.31", "this bootloader has no glibc marker (not built by mlpack)"),
    ],
)
def test_a_bad_floor_or_a_stock_bootloader_is_refused(data: bytes, floor: str, message: str) -> None:
    with pytest.raises(PackagingError) as err:
        _bootloader.with_floor(data, floor)
    assert str(err.value) == message


def test_the_patch_goes_before_posix_main_and_runs_first() -> None:
    main_c = "int\nwmain(void)\n{\n}\n\n/* Entry point for POSIX */\nint\nmain(int argc, char **argv)\n{\n    return 0;\n}\n"
    patched = _bootloader.patched_main(main_c)
    assert patched.index("mlpack_check_glibc(void)") < patched.index("main(int argc")
    assert "main(int argc, char **argv)\n{\n    mlpack_check_glibc();\n    return 0;" in patched
    with pytest.raises(PackagingError) as err:
        _bootloader.patched_main("int main(void) { return 0; }")
    assert str(err.value) == "this PyInstaller's bootloader main.c has no single POSIX main to patch; update _bootloader.py"
