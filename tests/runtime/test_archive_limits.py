"""Crafted bundle archives: unlisted members refused before their data is read, memory bounded.

The crafted members are hundreds of megabytes of zeros, which deflate to a couple of
megabytes (tests/_craft.py): the archives stay small on disk, while reading one whole
would show in the Python heap (``tracemalloc`` sees every ``bytes`` that
``zipfile``/``tarfile`` return).
"""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
import tracemalloc
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import pytest

from mlpack_edge.errors import BundleError, IntegrityError
from mlpack_edge.runtime._archive import MAX_MEMBERS, open_archive
from mlpack_edge.runtime.bundle import Bundle
from mlpack_edge.runtime.manifest import write_bundle
from tests._craft import Zeros, write_tar_gz, write_zip

MB = 1 << 20
BIG = 400 * MB
#: A gzip stream must be inflated to be skipped (bounded memory, not time): a smaller member there.
BIG_GZ = 100 * MB
T = TypeVar("T")


def _zip(path: Path, files: dict[str, bytes], zeros: dict[str, int] | None = None, extra_first: bool = False) -> Path:
    big = [(name, Zeros(size)) for name, size in (zeros or {}).items()]
    small = list(files.items())
    return write_zip(path, big + small if extra_first else small + big)


def _tar(path: Path, files: dict[str, bytes], zeros: dict[str, int], zeros_first: bool) -> Path:
    big = [(name, Zeros(size)) for name, size in zeros.items()]
    small = list(files.items())
    return write_tar_gz(path, big + small if zeros_first else small + big)


def _peak(fn: Callable[[], T]) -> tuple[T | BaseException, int]:
    """``fn()``'s result (or what it raised) and the peak Python heap growth while it ran."""
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        try:
            out: T | BaseException = fn()
        except BaseException as exc:  # noqa: BLE001 - returned to the test to assert on
            out = exc
        return out, tracemalloc.get_traced_memory()[1] - base
    finally:
        tracemalloc.stop()


@pytest.fixture(scope="module")
def files(binary_bundle: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(binary_bundle.iterdir())}


@pytest.fixture(scope="module")
def crafted(tmp_path_factory: pytest.TempPathFactory, files: dict[str, bytes]) -> Iterator[dict[str, Path]]:
    root = tmp_path_factory.mktemp("crafted")
    yield {
        "zip_extra": _zip(root / "extra.zip", files, {"extra.bin": BIG}),
        "zip_extra_first": _zip(root / "extra-first.zip", files, {"extra.bin": BIG}, extra_first=True),
        "tgz_extra_after": _tar(root / "after.tar.gz", files, {"extra.bin": BIG}, zeros_first=False),
        "tgz_extra_before": _tar(root / "before.tar.gz", files, {"extra.bin": BIG_GZ}, zeros_first=True),
        "zip_big_model": _zip(root / "big-model.zip", {k: v for k, v in files.items() if k != "model.onnx"},
                              {"model.onnx": 200 * MB}),
        "tgz_big_model": _tar(root / "big-model.tar.gz", {k: v for k, v in files.items() if k != "model.onnx"},
                              {"model.onnx": BIG_GZ}, zeros_first=False),
    }


@pytest.mark.parametrize("kind", ["zip_extra", "zip_extra_first", "tgz_extra_after", "tgz_extra_before"])
def test_an_unlisted_400mb_member_is_refused_without_reading_it(crafted: dict[str, Path], kind: str) -> None:
    archive = crafted[kind]
    err, peak = _peak(lambda: Bundle.open(archive))
    assert isinstance(err, IntegrityError)
    assert str(err) == (
        f"{archive}: member 'extra.bin' is not listed in the manifest"
        " (a bundle holds manifest.json, manifest.sig and the files its manifest lists; refused)"
    )
    assert peak < 8 * MB, f"{peak / MB:.1f} MB of heap to refuse a member of 100+ MB"


@pytest.mark.parametrize("kind", ["zip_big_model", "tgz_big_model"])
def test_a_listed_member_that_does_not_match_is_refused_in_bounded_memory(crafted: dict[str, Path], kind: str) -> None:
    archive = crafted[kind]
    err, peak = _peak(lambda: Bundle.open(archive))
    assert isinstance(err, IntegrityError)
    assert str(err) == f"{archive}: file model.onnx does not match its sha256 in the manifest (tampered or corrupt)"
    assert peak < 8 * MB, f"{peak / MB:.1f} MB of heap for a member of 100+ MB that was never going to match"


def test_a_big_member_is_proven_before_it_is_kept(tmp_path: Path, files: dict[str, bytes]) -> None:
    """Above the keep limit a member is hashed first, then read again: the bytes returned are the proven ones."""
    blob = bytes(range(256)) * 4096  # 1 MiB
    manifest = json.loads(files["manifest.json"])
    for key in ("format", "files"):
        manifest.pop(key)
    folder = write_bundle(tmp_path / "b", {**{k: v for k, v in files.items() if k != "manifest.json"}, "blob.bin": blob}, manifest)
    archive = _zip(tmp_path / "b.zip", {p.name: p.read_bytes() for p in sorted(folder.iterdir())})
    opened = open_archive(archive)
    opened.keep_limit = 64 * 1024
    assert opened.read_verified("blob.bin") == blob
    lying = _zip(tmp_path / "lying.zip", {**{p.name: p.read_bytes() for p in folder.iterdir()}, "blob.bin": blob[::-1]})
    opened = open_archive(lying)
    opened.keep_limit = 64 * 1024
    with pytest.raises(IntegrityError, match=r"file blob\.bin does not match its sha256"):
        opened.read_verified("blob.bin")


def test_extract_streams_and_proves_each_file(tmp_path: Path, files: dict[str, bytes]) -> None:
    archive = _zip(tmp_path / "ok.zip", files)
    target = tmp_path / "out"
    target.mkdir()
    open_archive(archive).extract(target)
    assert {p.name: p.read_bytes() for p in target.iterdir()} == files
    bad = _zip(tmp_path / "bad.zip", {**files, "golden.json": b"{}"})
    (tmp_path / "out2").mkdir()
    with pytest.raises(IntegrityError, match=r"file golden\.json does not match its sha256"):
        open_archive(bad).extract(tmp_path / "out2")


def _tar_with(path: Path, files: dict[str, bytes], extra: tarfile.TarInfo) -> Path:
    with tarfile.open(path, "w") as tf:
        for name, data in files.items():
            info = tarfile.TarInfo(f"b/{name}")
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
        tf.addfile(extra)
    return path


@pytest.mark.parametrize(
    ("member", "message"),
    [
        (tarfile.TarInfo("b/model.link"), "'b/model.link' is a symlink; a bundle archive holds regular files only; refused"),
        (tarfile.TarInfo("b/sub"), "folder 'b/sub' is not part of a bundle (a bundle has no sub-folders); refused"),
        (tarfile.TarInfo("b/fifo"), "'b/fifo' is a device or FIFO; a bundle archive holds regular files only; refused"),
    ],
)
def test_tar_members_that_are_not_regular_files_are_refused(
    tmp_path: Path, files: dict[str, bytes], member: tarfile.TarInfo, message: str
) -> None:
    member.type = {"model.link": tarfile.SYMTYPE, "sub": tarfile.DIRTYPE, "fifo": tarfile.FIFOTYPE}[member.name[2:]]
    member.linkname = "model.onnx"
    archive = _tar_with(tmp_path / "b.tar", files, member)
    with pytest.raises(IntegrityError) as err:
        Bundle.open(archive)
    assert str(err.value) == f"{archive}: {message}"


def test_zip_with_a_duplicate_or_nested_member_is_refused(tmp_path: Path, files: dict[str, bytes]) -> None:
    archive = tmp_path / "dup.zip"
    with zipfile.ZipFile(archive, "w") as zf, pytest.warns(UserWarning, match="Duplicate name"):
        for name, data in files.items():
            zf.writestr(name, data)
        zf.writestr("golden.json", b"[]")
    with pytest.raises(IntegrityError) as err:
        Bundle.open(archive)
    assert str(err.value) == f"{archive}: member 'golden.json' appears twice in the archive; refused"
    nested = _zip(tmp_path / "nested.zip", {**files, "sub/x.txt": b"x"})
    with pytest.raises(IntegrityError, match=r"member 'sub/x\.txt' is not listed in the manifest"):
        Bundle.open(nested)


def test_a_zip_with_thousands_of_members_is_refused_from_its_end_record(tmp_path: Path, files: dict[str, bytes]) -> None:
    archive = _zip(tmp_path / "many.zip", {**files, **{f"f{i}": b"" for i in range(MAX_MEMBERS + 10)}})
    with pytest.raises(BundleError) as err:
        Bundle.open(archive)
    assert str(err.value).startswith(f"{archive}: {MAX_MEMBERS + 10 + len(files)} members in a ")
    assert str(err.value).endswith("-byte directory (a bundle holds a handful of files); refused")


def test_a_signature_or_manifest_too_big_to_be_one_is_refused(tmp_path: Path, files: dict[str, bytes]) -> None:
    archive = _zip(tmp_path / "sig.zip", {**files, "manifest.sig": b"x" * (65 * 1024)})
    with pytest.raises(BundleError, match=r"manifest\.sig is 66560 bytes, more than the 65536 allowed"):
        Bundle.open(archive)


def test_archive_digest_matches_the_folder(binary_bundle: Path, tmp_path: Path, files: dict[str, bytes]) -> None:
    """A well-formed archive (top folder, tar or zip) still opens and gives the folder's bytes."""
    for suffix in (".zip", ".tar.gz"):
        archive = tmp_path / f"binary-1.0.0{suffix}"
        if suffix == ".zip":
            _zip(archive, {f"binary-1.0.0/{k}": v for k, v in files.items()})
        else:
            with tarfile.open(archive, "w:gz") as tf:
                tf.add(binary_bundle, arcname="binary-1.0.0")
        bundle = Bundle.open(archive)
        for name in bundle.manifest.files:
            assert hashlib.sha256(bundle.read(name)).hexdigest() == bundle.manifest.files[name]


def test_a_damaged_member_is_named(tmp_path: Path, files: dict[str, bytes]) -> None:
    archive = _zip(tmp_path / "ok.zip", files)
    data = bytearray(archive.read_bytes())
    with zipfile.ZipFile(archive) as zf:
        info = zf.getinfo("model.onnx")
    data[info.header_offset + 30 + len("model.onnx") + 5] ^= 0xFF  # inside model.onnx's deflated data
    archive.write_bytes(bytes(data))
    with pytest.raises(IntegrityError) as err:
        Bundle.open(archive)
    assert str(err.value).startswith(f"{archive}: bundle file model.onnx is corrupt (")
