"""Where a frozen device executable finds its own bundle, and the appended-bundle format.

A downloaded executable ``<name>-<version>-<platform>`` is the cached, model-free frozen
runtime (a PyInstaller onefile) with the bundle appended as a zip. The zip is
deterministic (sorted names, 1980-01-01 timestamps, fixed permissions, deflate) and its
archive comment records the size and sha256 of the runtime part in front of it, so a
truncated or corrupted download is caught before it is installed. PyInstaller's
bootloader finds its own archive by scanning back from the end, and ``zipfile`` finds
the zip at the end, so both halves coexist in one file.

Installed, the layout is ``<version dir>/<name>`` (the onedir launcher), ``_internal/``
(its libraries) and ``bundle/`` (the bundle, unpacked): nothing is unpacked at start, and
``zipfile`` (with bz2, lzma, shutil: ~3 ms) is imported only by what reads the appended zip.

:func:`executable_identity` gives the hashes that identify a device executable (for
``mlpack inspect``): the whole file, its runtime part, and the model's content hash.
"""

from __future__ import annotations

import io
import json
import os
import re
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from mlpack_edge._record import Frozen
from mlpack_edge.errors import BundleError, IntegrityError
from mlpack_edge.runtime.manifest import MANIFEST_NAME, Manifest

if TYPE_CHECKING:
    from mlpack_edge.runtime._archive import BundleArchive

__all__ = [
    "APPENDED_FORMAT",
    "BUNDLE_DIR",
    "INTERNAL_DIR",
    "LAUNCHER_DATA_NAME",
    "AppendedBundle",
    "append_bundle",
    "write_executable",
    "open_appended",
    "executable_identity",
    "frozen_mode",
    "locate_bundle",
    "embedded_bundle",
]

APPENDED_FORMAT = "mlpack.appended/1"
#: Folder of an installed version holding the unpacked bundle.
BUNDLE_DIR = "bundle"
#: Folder of an installed version holding the frozen runtime's libraries.
INTERNAL_DIR = "_internal"
#: The onedir launcher travels inside the onefile payload under this data-file name.
LAUNCHER_DATA_NAME = "_onedir_launcher"
#: Where a running onefile unpacks its bundle (inside its own private temp folder).
_ONEFILE_BUNDLE = "_mlpack_bundle"
_FIXED_TIME = (1980, 1, 1, 0, 0, 0)
_FILE_MODE = 0o100644 << 16
_PLAIN_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
_HASH_CHUNK = 1 << 20
#: Optional trailer keys describing the runtime part (absent in executables built before them).
_FACTS = ("target", "glibc_floor")


def append_bundle(runtime: bytes, files: Mapping[str, bytes], facts: Mapping[str, str] | None = None) -> bytes:
    """``runtime`` followed by a deterministic zip of ``files`` (same input, same bytes).

    ``facts`` about the runtime (``target``, ``glibc_floor``) go into the trailer next to
    its size and sha256: facts of the runtime's bytes, not of the model, so they are not
    in the (signed) manifest, which is the same for every target.
    """
    for name in files:
        if not _PLAIN_NAME.match(name):
            raise BundleError(f"bundle file name {name!r} is not a plain file name")
    buf = io.BytesIO(runtime)
    buf.seek(0, io.SEEK_END)
    import hashlib  # here: the device start (embedded_bundle) does not load OpenSSL

    _append_zip(buf, files, facts, len(runtime), hashlib.sha256(runtime).hexdigest())
    return buf.getvalue()


def write_executable(runtime: Path, runtime_sha256: str, files: Mapping[str, bytes], out: Path,
                     facts: Mapping[str, str] | None = None) -> None:
    """:func:`append_bundle` from a runtime *file* into ``out``, streamed (a device assembling a
    downloaded runtime with a release's bundle holds one chunk of the 36 MB runtime in memory).

    ``runtime_sha256`` is recomputed while copying; a runtime that is not those bytes is refused.
    """
    for name in files:
        if not _PLAIN_NAME.match(name):
            raise BundleError(f"bundle file name {name!r} is not a plain file name")
    import hashlib

    digest, size = hashlib.sha256(), 0
    with open(runtime, "rb") as src, open(out, "w+b") as dst:
        while chunk := src.read(_HASH_CHUNK):
            digest.update(chunk)
            dst.write(chunk)
            size += len(chunk)
        if digest.hexdigest() != runtime_sha256:
            raise IntegrityError(f"{runtime}: the runtime's sha256 is not the {runtime_sha256[:16]}… announced")
        _append_zip(dst, files, facts, size, runtime_sha256)
        dst.flush()
        os.fsync(dst.fileno())


def _append_zip(fh: Any, files: Mapping[str, bytes], facts: Mapping[str, str] | None, runtime_size: int,
                runtime_sha256: str) -> None:
    # Mode "a" on bytes that are not a zip appends a new archive with offsets counted
    # from the start of the file, as self-extracting archives do (unzip reads it cleanly).
    import zipfile

    with zipfile.ZipFile(fh, "a", compression=zipfile.ZIP_DEFLATED) as zf:
        for name in sorted(files):
            info = zipfile.ZipInfo(name, date_time=_FIXED_TIME)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = _FILE_MODE
            info.create_system = 3  # unix, whatever the build machine is
            zf.writestr(info, files[name], compresslevel=6)
        zf.comment = json.dumps(
            {
                **{k: v for k, v in (facts or {}).items() if k in _FACTS},
                "format": APPENDED_FORMAT,
                "runtime_size": runtime_size,
                "runtime_sha256": runtime_sha256,
            },
            sort_keys=True,
        ).encode()


class AppendedBundle(Frozen):
    """The zip at the end of a device executable, checked for shape (not yet contents)."""

    __slots__ = ("path", "runtime_size", "runtime_sha256", "names", "target", "glibc_floor")
    _fields = __slots__
    path: Path
    runtime_size: int
    runtime_sha256: str
    names: tuple[str, ...]
    #: ``linux-x86_64`` style, and the highest glibc version the runtime needs (``None``: not recorded).
    target: str | None
    glibc_floor: str | None

    def __init__(
        self,
        path: Path,
        runtime_size: int,
        runtime_sha256: str,
        names: tuple[str, ...],
        target: str | None = None,
        glibc_floor: str | None = None,
    ) -> None:
        s = object.__setattr__
        s(self, "path", path)
        s(self, "runtime_size", runtime_size)
        s(self, "runtime_sha256", runtime_sha256)
        s(self, "names", names)
        s(self, "target", target)
        s(self, "glibc_floor", glibc_floor)

    def read(self, name: str) -> bytes:
        """One member's bytes, unverified (``mlpack inspect`` shows damage); ``FileNotFoundError`` when absent.

        Capped at the largest file a bundle may hold; the device itself reads through
        :meth:`verify` and :meth:`extract`, which prove each file as it streams in.
        """
        import zipfile
        import zlib

        from mlpack_edge.runtime._archive import MAX_MEMBER_BYTES, read_at_most

        if name not in self.names:
            raise FileNotFoundError(name)
        try:
            with zipfile.ZipFile(self.path) as zf, zf.open(name) as fh:
                data = read_at_most(fh, MAX_MEMBER_BYTES + 1)
        except (zipfile.BadZipFile, zlib.error, OSError, EOFError) as exc:
            raise IntegrityError(f"{self.path}: bundle file {name} is corrupt ({exc})") from None
        if len(data) > MAX_MEMBER_BYTES:
            raise BundleError(f"{self.path}: bundle file {name} is more than {MAX_MEMBER_BYTES} bytes")
        return data

    def archive(self) -> BundleArchive:
        """The appended zip as a :class:`~mlpack_edge.runtime._archive.BundleArchive` (bounded, manifest-checked reads)."""
        from mlpack_edge.runtime._archive import zip_archive

        return zip_archive(self.path)

    def verify(self) -> Manifest:
        """The manifest, once every member is one it lists and every listed file matches it.

        Streams each member through sha256 (one chunk in memory at a time), so a tampered
        or padded executable is refused without being read into memory.
        """
        archive = self.archive()
        archive.verify()
        return archive.manifest()

    def extract(self, target: Path) -> None:
        """Write the bundle into the existing folder ``target``, each file proven as it is written.

        Members the manifest does not list are refused before anything is written; names are
        plain (no traversal).
        """
        self.archive().extract(target)

    def check_runtime(self) -> str:
        """Prove the frozen runtime in front of the zip is byte-for-byte what was built.

        Returns the sha256 of the whole file, hashed in the same pass.
        """
        import hashlib

        runtime, whole = hashlib.sha256(), hashlib.sha256()
        done = 0
        with open(self.path, "rb") as fh:
            while chunk := fh.read(_HASH_CHUNK):
                runtime.update(chunk[: max(0, self.runtime_size - done)])
                whole.update(chunk)
                done += len(chunk)
        if done < self.runtime_size or runtime.hexdigest() != self.runtime_sha256:
            raise IntegrityError(
                f"{self.path}: the frozen runtime does not match the sha256 recorded at build time"
                " (corrupted copy?); download the executable again"
            )
        return whole.hexdigest()


def open_appended(path: str | Path) -> AppendedBundle:
    """Read the appended zip's directory; one-line ``BundleError`` when it is not there."""
    import zipfile

    from mlpack_edge.runtime._archive import check_zip_directory

    exe = Path(path)
    try:
        check_zip_directory(exe, str(exe))
        with zipfile.ZipFile(exe) as zf:
            infos = zf.infolist()
            comment = zf.comment
    except FileNotFoundError:
        raise BundleError(f"{exe}: no such file") from None
    except (zipfile.BadZipFile, OSError, EOFError):
        raise BundleError(
            f"{exe}: no bundle appended (the file is truncated, corrupted, or not an mlpack device executable)"
        ) from None
    try:
        meta = json.loads(comment)
        if meta.get("format") != APPENDED_FORMAT:
            raise ValueError(meta.get("format"))
        size = int(meta["runtime_size"])
        digest = str(meta["runtime_sha256"])
        facts = {k: str(meta[k]) for k in _FACTS if isinstance(meta.get(k), str)}
    except (ValueError, TypeError, KeyError, AttributeError):
        raise BundleError(
            f"{exe}: the appended bundle is truncated or is not an mlpack bundle (no {APPENDED_FORMAT} trailer)"
        ) from None
    names = tuple(i.filename for i in infos)
    bad = [n for n in names if not _PLAIN_NAME.match(n)]
    if bad:
        raise BundleError(f"{exe}: appended bundle holds a non-plain file name {bad[0]!r}")
    if infos and min(i.header_offset for i in infos) != size:
        raise BundleError(f"{exe}: appended bundle does not start where the runtime ends (corrupted file)")
    return AppendedBundle(exe, size, digest, names, facts.get("target"), facts.get("glibc_floor"))


def executable_identity(path: str | Path) -> dict[str, Any]:
    """The hashes that identify a device executable, each checked before it is returned.

    * ``sha256``/``size``: the whole file. Two clean builds of one spec and data on one
      machine give the same value (see :mod:`mlpack_edge.builder._freeze`).
    * ``runtime_sha256``/``runtime_size``: the frozen runtime in front of the bundle,
      proven against the trailer; the same for every model built with one cached runtime.
    * ``content_hash``: sha256 of the embedded ``manifest.json``, which lists the sha256 of
      every bundle file (all proven here): the model's identity, equal to the bundle
      folder's :attr:`~mlpack_edge.runtime.manifest.Manifest.content_hash` wherever it was packaged.
    * ``name``/``version``/``files``: from that manifest and the appended zip.

    ``BundleError`` when the file is no device executable, ``IntegrityError`` when a part
    does not match its recorded hash. Signatures are checked elsewhere (install/verify).
    """
    appended = open_appended(path)
    whole = appended.check_runtime()
    if MANIFEST_NAME not in appended.names:
        raise BundleError(f"{appended.path}: the appended bundle has no {MANIFEST_NAME}")
    manifest = appended.verify()
    return {
        "sha256": whole,
        "size": appended.path.stat().st_size,
        "runtime_sha256": appended.runtime_sha256,
        "runtime_size": appended.runtime_size,
        "content_hash": manifest.content_hash,
        "name": manifest.name,
        "version": manifest.version,
        "files": list(appended.names),
    }


def frozen_mode(executable: Path, meipass: Path | None) -> Literal["onefile", "installed"] | None:
    """How this process runs: unpacked onedir install, onefile download, or plain Python."""
    if meipass is None:
        return None
    if Path(meipass).resolve() == Path(executable).resolve().parent / INTERNAL_DIR:
        return "installed"
    return "onefile"


def locate_bundle(executable: Path, meipass: Path | None) -> Path | None:
    """The bundle folder of a frozen app (unpacking a onefile's zip once); ``None`` if not frozen."""
    mode = frozen_mode(executable, meipass)
    if mode is None:
        return None
    if mode == "installed":
        return Path(executable).resolve().parent / BUNDLE_DIR
    assert meipass is not None
    target = Path(meipass) / _ONEFILE_BUNDLE
    if not target.is_dir():
        appended = open_appended(executable)
        tmp = Path(meipass) / f".{_ONEFILE_BUNDLE}.tmp"
        tmp.mkdir(exist_ok=True)
        appended.extract(tmp)
        tmp.rename(target)
    return target


def embedded_bundle() -> Path | None:
    """Where this executable's bundle is, or ``None`` when running as plain Python."""
    meipass = getattr(sys, "_MEIPASS", None)
    if not getattr(sys, "frozen", False) or meipass is None:
        return None
    return locate_bundle(Path(sys.executable), Path(meipass))
