"""Opening and verifying bundles: folders, archives, tampering, wrong-model bundles."""

from __future__ import annotations

import json
import shutil
import tarfile
import zipfile
from pathlib import Path

import pytest

from mlpack_edge.errors import BundleError, IntegrityError
from mlpack_edge.runtime import Bundle, Model
from mlpack_edge.runtime.manifest import write_bundle


def _copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def test_open_verifies_and_reads_files(binary_bundle: Path) -> None:
    bundle = Bundle.open(binary_bundle)
    assert bundle.verified
    assert bundle.manifest.name == "binary"
    on_disk = (binary_bundle / "model.onnx").read_bytes()
    assert bundle.read("model.onnx") == on_disk  # the bytes hashed during verification
    assert bundle.read("model.onnx") == on_disk  # read again, checked again
    assert bundle.profile() is not None and bundle.golden() is not None
    with pytest.raises(BundleError, match=r": extra\.txt is not part of the bundle \(not in the manifest\)$"):
        bundle.read("extra.txt")


def test_tampered_file_is_refused_naming_it(binary_bundle: Path, tmp_path: Path) -> None:
    b = _copy(binary_bundle, tmp_path / "b")
    data = bytearray((b / "model.onnx").read_bytes())
    data[-1] ^= 0xFF
    (b / "model.onnx").write_bytes(bytes(data))
    with pytest.raises(IntegrityError) as err:
        Bundle.open(b)
    assert str(err.value) == f"{b}: file model.onnx does not match its sha256 in the manifest (tampered or corrupt)"


def test_missing_file_is_refused_naming_it(binary_bundle: Path, tmp_path: Path) -> None:
    b = _copy(binary_bundle, tmp_path / "b")
    (b / "profile.json").unlink()
    with pytest.raises(IntegrityError, match=r"file profile\.json listed in the manifest is missing$"):
        Bundle.open(b)


def test_truncated_manifest_is_a_bundle_error(binary_bundle: Path, tmp_path: Path) -> None:
    b = _copy(binary_bundle, tmp_path / "b")
    raw = (b / "manifest.json").read_bytes()
    (b / "manifest.json").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(BundleError, match=r"manifest\.json: not valid JSON"):
        Bundle.open(b)


def test_not_a_bundle(tmp_path: Path) -> None:
    with pytest.raises(BundleError, match=r"no manifest\.json here"):
        Bundle.open(tmp_path)
    with pytest.raises(BundleError, match="no such bundle"):
        Bundle.open(tmp_path / "nope")
    (tmp_path / "x.txt").write_text("hi")
    with pytest.raises(BundleError, match="not a bundle folder or archive"):
        Bundle.open(tmp_path / "x.txt")


def test_file_read_after_verification_is_checked_again(binary_bundle: Path, tmp_path: Path) -> None:
    b = _copy(binary_bundle, tmp_path / "b")
    bundle = Bundle.open(b)
    bundle.read("golden.json")  # consumes the bytes kept from verification
    (b / "golden.json").write_text("{}")
    with pytest.raises(IntegrityError, match=r"file golden\.json does not match its sha256"):
        bundle.read("golden.json")


@pytest.mark.parametrize("suffix", [".tar.gz", ".zip"])
def test_archive_with_top_folder(binary_bundle: Path, tmp_path: Path, suffix: str) -> None:
    archive = tmp_path / f"binary-1.0.0{suffix}"
    if suffix == ".zip":
        with zipfile.ZipFile(archive, "w") as zf:
            for f in sorted(binary_bundle.iterdir()):
                zf.write(f, f"binary-1.0.0/{f.name}")
    else:
        with tarfile.open(archive, "w:gz") as tf:
            tf.add(binary_bundle, arcname="binary-1.0.0")
    model = Model(Bundle.open(archive))
    assert model.predict({"a": 1.0, "b": 0.5, "c": None}) in ("no", "yes")


def test_tampered_archive_member_names_the_file(binary_bundle: Path, tmp_path: Path) -> None:
    archive = tmp_path / "b.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for f in sorted(binary_bundle.iterdir()):
            zf.writestr(f.name, b"{}" if f.name == "golden.json" else f.read_bytes())
    with pytest.raises(IntegrityError, match=rf"^{archive}: file golden\.json does not match"):
        Bundle.open(archive)


def test_corrupt_archive_is_one_line(binary_bundle: Path, tmp_path: Path) -> None:
    archive = tmp_path / "b.tar.gz"
    with tarfile.open(archive, "w:gz") as tf:
        tf.add(binary_bundle, arcname=".")
    archive.write_bytes(archive.read_bytes()[:300])
    with pytest.raises(BundleError, match=rf"^{archive}: unreadable or corrupt archive \("):
        Bundle.open(archive)


def _rebundle(manifest_from: Path, files_from: Path, target: Path) -> Path:
    """A bundle whose digests are right but whose manifest describes another model."""
    data = json.loads((manifest_from / "manifest.json").read_bytes())
    data.pop("format")
    data.pop("files")
    files = {p.name: p.read_bytes() for p in files_from.iterdir() if p.name != "manifest.json"}
    return write_bundle(target, files, data)


def test_wrong_model_bundle_is_refused_at_load(binary_bundle: Path, mixed_bundle: Path, tmp_path: Path) -> None:
    b = _rebundle(binary_bundle, mixed_bundle, tmp_path / "wrong")
    with pytest.raises(BundleError) as err:
        Model(Bundle.open(b))
    assert str(err.value) == (
        f"{b}/model.onnx does not match manifest.json (binary 1.0.0): expected one input 'X',"
        " the model has ['colour', 'shape', 'x1', 'x2']"
    )


def test_wrong_model_same_layout_is_refused(binary_bundle: Path, regression_bundle: Path, tmp_path: Path) -> None:
    b = _rebundle(binary_bundle, regression_bundle, tmp_path / "wrong")
    with pytest.raises(BundleError, match=r"does not match manifest\.json \(binary 1\.0\.0\): no output 'label'"):
        Model(Bundle.open(b))


def test_unloadable_model_is_a_bundle_error(binary_bundle: Path, tmp_path: Path) -> None:
    data = json.loads((binary_bundle / "manifest.json").read_bytes())
    data.pop("format")
    data.pop("files")
    b = write_bundle(tmp_path / "junk", {"model.onnx": b"not onnx at all"}, data)
    with pytest.raises(BundleError, match=rf"^{b}/model\.onnx: onnxruntime cannot load the model \("):
        Model(Bundle.open(b))
