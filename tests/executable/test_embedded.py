"""The appended-bundle format and how a frozen app finds its bundle."""

from __future__ import annotations

import hashlib
import zipfile
from pathlib import Path

import pytest

from mlpack_edge.errors import BundleError, IntegrityError
from mlpack_edge.runtime.bundle import Bundle
from mlpack_edge.runtime.embedded import append_bundle, executable_identity, frozen_mode, locate_bundle, open_appended

RUNTIME = bytes(range(256)) * 400  # stands in for the frozen onefile
FILES = {"model.onnx": b"\x08\x07onnx" * 50, "manifest.json": b'{"x": 1}\n', "golden.json": b"[]"}


def _exe(tmp_path: Path, data: bytes, name: str = "toy-1.0.0-linux-x86_64") -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


def test_append_is_deterministic_and_starts_where_the_runtime_ends() -> None:
    once = append_bundle(RUNTIME, FILES)
    again = append_bundle(RUNTIME, dict(reversed(list(FILES.items()))))
    assert once == again
    assert once[: len(RUNTIME)] == RUNTIME
    assert once[len(RUNTIME) : len(RUNTIME) + 4] == b"PK\x03\x04"


def test_zip_members_are_normalised(tmp_path: Path) -> None:
    with zipfile.ZipFile(_exe(tmp_path, append_bundle(RUNTIME, FILES))) as zf:
        infos = zf.infolist()
        assert [i.filename for i in infos] == sorted(FILES)
        assert {i.date_time for i in infos} == {(1980, 1, 1, 0, 0, 0)}
        assert {i.external_attr >> 16 for i in infos} == {0o100644}
        assert {i.compress_type for i in infos} == {zipfile.ZIP_DEFLATED}
        assert infos[0].header_offset == len(RUNTIME)  # absolute offsets: plain unzip reads it too
        assert zf.read("model.onnx") == FILES["model.onnx"]


def test_open_appended_reads_members_and_proves_the_runtime(tmp_path: Path) -> None:
    appended = open_appended(_exe(tmp_path, append_bundle(RUNTIME, FILES)))
    assert appended.names == tuple(sorted(FILES))
    assert appended.runtime_size == len(RUNTIME)
    assert appended.read("golden.json") == b"[]"
    with pytest.raises(FileNotFoundError):
        appended.read("profile.json")
    assert appended.check_runtime() == hashlib.sha256(append_bundle(RUNTIME, FILES)).hexdigest()


def test_corrupted_runtime_part_is_caught(tmp_path: Path) -> None:
    data = bytearray(append_bundle(RUNTIME, FILES))
    data[1000] ^= 0xFF
    appended = open_appended(_exe(tmp_path, bytes(data)))
    with pytest.raises(IntegrityError) as err:
        appended.check_runtime()
    assert str(err.value) == (
        f"{tmp_path / 'toy-1.0.0-linux-x86_64'}: the frozen runtime does not match the sha256 recorded at"
        " build time (corrupted copy?); download the executable again"
    )


@pytest.mark.parametrize("cut", [1, 200, len(RUNTIME) // 2])
def test_truncated_executable_is_a_one_line_error(tmp_path: Path, cut: int) -> None:
    data = append_bundle(RUNTIME, FILES)
    path = _exe(tmp_path, data[:-cut])
    with pytest.raises(BundleError) as err:
        open_appended(path)
    assert str(err.value) in (
        f"{path}: no bundle appended (the file is truncated, corrupted, or not an mlpack device executable)",
        f"{path}: the appended bundle is truncated or is not an mlpack bundle (no mlpack.appended/1 trailer)",
    )


def test_plain_file_has_no_bundle(tmp_path: Path) -> None:
    path = _exe(tmp_path, RUNTIME)
    with pytest.raises(BundleError) as err:
        open_appended(path)
    assert str(err.value) == (
        f"{path}: no bundle appended (the file is truncated, corrupted, or not an mlpack device executable)"
    )


def test_foreign_zip_is_not_taken_for_a_bundle(tmp_path: Path) -> None:
    path = tmp_path / "other.zip"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("model.onnx", b"x")
    with pytest.raises(BundleError) as err:
        open_appended(path)
    assert str(err.value) == (
        f"{path}: the appended bundle is truncated or is not an mlpack bundle (no mlpack.appended/1 trailer)"
    )


def test_corrupted_member_is_named(tmp_path: Path) -> None:
    data = bytearray(append_bundle(RUNTIME, {"model.onnx": bytes(range(256)) * 64}))
    data[len(RUNTIME) + 60] ^= 0xFF  # inside model.onnx's compressed bytes
    appended = open_appended(_exe(tmp_path, bytes(data)))
    with pytest.raises(IntegrityError) as err:
        appended.read("model.onnx")
    assert str(err.value).startswith(f"{appended.path}: bundle file model.onnx is corrupt (")


def test_unsafe_member_names_are_refused() -> None:
    with pytest.raises(BundleError) as err:
        append_bundle(RUNTIME, {"../etc/passwd": b"x"})
    assert str(err.value) == "bundle file name '../etc/passwd' is not a plain file name"


def test_frozen_mode_tells_installed_from_onefile(tmp_path: Path) -> None:
    installed = tmp_path / "opt" / "toy" / "1.0.0"
    (installed / "_internal").mkdir(parents=True)
    assert frozen_mode(installed / "toy", installed / "_internal") == "installed"
    assert frozen_mode(tmp_path / "toy-1.0.0", tmp_path / "_MEI123") == "onefile"
    assert frozen_mode(tmp_path / "python3", None) is None


def test_locate_bundle_installed_is_the_bundle_folder(tmp_path: Path) -> None:
    version = tmp_path / "1.0.0"
    (version / "_internal").mkdir(parents=True)
    assert locate_bundle(version / "toy", version / "_internal") == version / "bundle"
    assert locate_bundle(version / "toy", None) is None


def test_locate_bundle_onefile_unpacks_into_its_private_folder(tmp_path: Path, make_bundle) -> None:  # type: ignore[no-untyped-def]
    bundle = make_bundle("1.0.0")
    files = {p.name: p.read_bytes() for p in bundle.iterdir()}
    exe = _exe(tmp_path, append_bundle(RUNTIME, files))
    meipass = tmp_path / "_MEI42"
    meipass.mkdir()
    found = locate_bundle(exe, meipass)
    assert found == meipass / "_mlpack_bundle"
    opened = Bundle.open(found)  # the runtime's own verified open
    assert opened.manifest.version == "1.0.0"
    assert locate_bundle(exe, meipass) == found  # unpacked once per process


def _bundle_files(make_bundle) -> dict[str, bytes]:  # type: ignore[no-untyped-def]
    return {p.name: p.read_bytes() for p in make_bundle("1.0.0").iterdir()}


def test_identity_names_the_file_the_runtime_and_the_model(tmp_path: Path, make_bundle) -> None:  # type: ignore[no-untyped-def]
    files = _bundle_files(make_bundle)
    data = append_bundle(RUNTIME, files)
    identity = executable_identity(_exe(tmp_path, data))
    assert identity == {
        "sha256": hashlib.sha256(data).hexdigest(),
        "size": len(data),
        "runtime_sha256": hashlib.sha256(RUNTIME).hexdigest(),
        "runtime_size": len(RUNTIME),
        "content_hash": hashlib.sha256(files["manifest.json"]).hexdigest(),
        "name": "toy",
        "version": "1.0.0",
        "files": sorted(files),
    }
    # Another runtime in front of the same bundle: the model's identity does not move.
    other = executable_identity(_exe(tmp_path, append_bundle(RUNTIME[::-1], files), "other"))
    assert other["content_hash"] == identity["content_hash"]
    assert other["runtime_sha256"] != identity["runtime_sha256"] and other["sha256"] != identity["sha256"]


def test_identity_is_refused_for_a_tampered_part(tmp_path: Path, make_bundle) -> None:  # type: ignore[no-untyped-def]
    files = _bundle_files(make_bundle)
    runtime_flipped = bytearray(append_bundle(RUNTIME, files))
    runtime_flipped[10] ^= 0xFF
    exe = _exe(tmp_path, bytes(runtime_flipped), "runtime-flipped")
    with pytest.raises(IntegrityError) as err:
        executable_identity(exe)
    assert str(err.value).startswith(f"{exe}: the frozen runtime does not match the sha256 recorded at build time")

    exe = _exe(tmp_path, append_bundle(RUNTIME, {**files, "model.onnx": b"retrained"}), "model-swapped")
    with pytest.raises(IntegrityError) as err:
        executable_identity(exe)
    assert str(err.value) == f"{exe}: file model.onnx does not match its sha256 in the manifest (tampered or corrupt)"

    exe = _exe(tmp_path, append_bundle(RUNTIME, {"model.onnx": files["model.onnx"]}), "no-manifest")
    with pytest.raises(BundleError) as err:
        executable_identity(exe)
    assert str(err.value) == f"{exe}: the appended bundle has no manifest.json"


def test_runtime_facts_travel_in_the_trailer(tmp_path: Path) -> None:
    """Target and glibc floor are read back; unknown keys are not written; old trailers have neither."""
    exe = _exe(tmp_path, append_bundle(RUNTIME, FILES, {"target": "linux-x86_64", "glibc_floor": "2.31", "x": "y"}))
    appended = open_appended(exe)
    assert (appended.target, appended.glibc_floor) == ("linux-x86_64", "2.31")
    with zipfile.ZipFile(exe) as zf:
        assert b'"x"' not in zf.comment
    old = open_appended(_exe(tmp_path, append_bundle(RUNTIME, FILES), name="old"))
    assert (old.target, old.glibc_floor) == (None, None)
    assert append_bundle(RUNTIME, FILES, {"target": "linux-x86_64"}) != append_bundle(RUNTIME, FILES)
