"""A bundle inside an archive, read with bounded memory; anything its manifest does not name is refused.

A bundle travels as a folder, as a ``.zip``/``.tar``/``.tar.gz`` archive of one (``--bundle``),
or as the zip appended to a device executable (:mod:`mlpack_edge.runtime.embedded`). An
archive is untrusted until its files match the manifest, so :class:`BundleArchive`:

* lists members from the zip's central directory or the tar's headers before reading any
  data, and refuses links, devices, nested folders, encrypted members, names that are not
  plain, more than :data:`MAX_MEMBERS` entries, members that declare more than
  :data:`MAX_MEMBER_BYTES` (protobuf cannot load a bigger ONNX model anyway) and a zip
  whose central directory alone is bigger than :data:`MAX_DIRECTORY_BYTES`;
* reads ``manifest.json`` and ``manifest.sig`` with small caps, then refuses, by name,
  every member that is neither of them nor listed in the manifest's ``files`` (an extra
  400 MB member costs one directory entry, not 400 MB);
* reads a listed file as a stream hashed on the way, keeping its bytes only while they may
  still match: a member declaring more than :data:`KEEP_LIMIT` is hashed first and read a
  second time only once it matched, so unverified data held in memory never exceeds
  :data:`KEEP_LIMIT` plus one :data:`CHUNK`; :meth:`BundleArchive.extract` streams to disk.

Every refusal is a one-line :class:`~mlpack_edge.errors.BundleError` (the archive's shape)
or :class:`~mlpack_edge.errors.IntegrityError` (a member that does not belong or does not
match) naming the archive and the member.
"""

from __future__ import annotations

import contextlib
import hashlib
import re
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from mlpack_edge.errors import BundleError, IntegrityError
from mlpack_edge.runtime.manifest import MANIFEST_NAME, SIGNATURE_NAME, Manifest

__all__ = [
    "BundleArchive",
    "Member",
    "open_archive",
    "zip_archive",
    "tar_archive",
    "check_zip_directory",
    "read_at_most",
    "ARCHIVE_SUFFIXES",
    "MAX_MEMBERS",
    "MAX_MEMBER_BYTES",
    "MAX_MANIFEST_BYTES",
    "MAX_SIGNATURE_BYTES",
    "KEEP_LIMIT",
    "CHUNK",
]

MAX_MEMBERS = 256
MAX_MEMBER_BYTES = 2 << 30
MAX_MANIFEST_BYTES = 16 << 20
MAX_SIGNATURE_BYTES = 64 << 10
MAX_DIRECTORY_BYTES = 1 << 20
KEEP_LIMIT = 64 << 20
CHUNK = 1 << 20
_PLAIN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")

#: ``opened()`` yields a function that opens one member (by its format-specific ``ref``) as a stream.
Opener = Callable[[], contextlib.AbstractContextManager[Callable[[Any], IO[bytes]]]]


@dataclass(frozen=True)
class Member:
    """One regular file of the bundle: its name in the bundle, declared size, and the archive's handle."""

    name: str
    size: int
    ref: Any
    order: int  # position in the archive (tar: data offset), to read in one forward pass
    path: str = ""  # as the archive spells it (with its top folder)


class BundleArchive:
    """The bundle in an archive, its shape checked; :meth:`manifest` refuses members it does not list."""

    #: Unverified bytes of one member kept in memory at most (an instance may lower it).
    keep_limit = KEEP_LIMIT

    def __init__(
        self, where: str, members: dict[str, Member], opened: Opener, errors: Callable[[], tuple[type[BaseException], ...]]
    ) -> None:
        self.where = where
        self.members = members
        self._opened = opened
        self._errors = errors
        self._manifest: Manifest | None = None
        if MANIFEST_NAME not in members:
            raise BundleError(f"{where}: archive holds no single bundle (no manifest.json at its top)")

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(sorted(self.members))

    def manifest(self) -> Manifest:
        """The parsed manifest; ``IntegrityError`` for the first member it does not list."""
        if self._manifest is None:
            raw = self.read_capped(MANIFEST_NAME, MAX_MANIFEST_BYTES)
            manifest = Manifest.parse(raw, f"{self.where}:{MANIFEST_NAME}")
            allowed = set(manifest.files) | {MANIFEST_NAME, SIGNATURE_NAME}
            extra = sorted(m.path or m.name for n, m in self.members.items() if n not in allowed)
            if extra:
                raise IntegrityError(
                    f"{self.where}: member {extra[0]!r} is not listed in the manifest"
                    " (a bundle holds manifest.json, manifest.sig and the files its manifest lists; refused)"
                )
            self._manifest = manifest
        return self._manifest

    def signature(self) -> bytes | None:
        return self.read_capped(SIGNATURE_NAME, MAX_SIGNATURE_BYTES) if SIGNATURE_NAME in self.members else None

    def read_capped(self, name: str, cap: int) -> bytes:
        """A small member (manifest, signature) whole; ``BundleError`` past ``cap`` bytes."""
        member = self._member(name)
        if member.size > cap:
            raise BundleError(f"{self.where}: {name} is {member.size} bytes, more than the {cap} allowed")
        with self._reading() as open_member, self._member_errors(name), open_member(member.ref) as fh:
            data = read_at_most(fh, cap + 1)
        if len(data) > cap:
            raise BundleError(f"{self.where}: {name} is more than the {cap} bytes allowed")
        return data

    def read_verified(self, name: str) -> bytes:
        """A listed file's bytes, returned only once they match the manifest's sha256."""
        digest = self._digest(name)
        member = self._member(name)
        keep = member.size <= self.keep_limit
        with self._reading() as open_member, self._member_errors(name):
            with open_member(member.ref) as fh:
                data = self._hashed(fh, name, digest, keep)
            if data is None:  # big: proven by a hashing pass, now read (and proven) again
                with open_member(member.ref) as fh:
                    data = self._hashed(fh, name, digest, keep=True)
        assert data is not None
        return data

    def verify(self) -> None:
        """Prove every listed file, one forward pass, holding one chunk at a time."""
        manifest = self.manifest()
        order = sorted((self._member(n) for n in manifest.files if n in self.members), key=lambda m: m.order)
        self._missing(manifest)
        with self._reading() as open_member:
            for m in order:
                with self._member_errors(m.name), open_member(m.ref) as fh:
                    self._hashed(fh, m.name, manifest.files[m.name], keep=False)

    def extract(self, target: Path) -> None:
        """Write the manifest, signature and every listed file into the folder ``target``, proven on the way.

        Names are plain (checked when listed), so nothing lands outside ``target``. A file
        that does not match raises ``IntegrityError`` once written: the caller's temporary
        folder goes with it. A failed write (a full disk) is an ``OSError`` whose
        ``filename`` is the file being written, never taken for a corrupt archive.
        """
        manifest = self.manifest()
        self._missing(manifest)
        (target / MANIFEST_NAME).write_bytes(manifest.raw)
        sig = self.signature()
        if sig is not None:
            (target / SIGNATURE_NAME).write_bytes(sig)
        order = sorted((self._member(n) for n in manifest.files), key=lambda m: m.order)
        try:
            with self._reading() as open_member:
                for m in order:
                    with self._member_errors(m.name), open_member(m.ref) as fh, _writing(target / m.name) as write:
                        self._hashed(fh, m.name, manifest.files[m.name], keep=False, sink=write)
        except _WriteFailed as failed:
            raise failed.error from None

    # ------------------------------------------------------------------ helpers

    def _member(self, name: str) -> Member:
        try:
            return self.members[name]
        except KeyError:
            raise FileNotFoundError(name) from None

    def _digest(self, name: str) -> str:
        digest = self.manifest().files.get(name)
        if digest is None:
            raise FileNotFoundError(name)  # the signature and manifest have no digest: read_capped
        return digest

    def _missing(self, manifest: Manifest) -> None:
        absent = sorted(n for n in manifest.files if n not in self.members)
        if absent:
            raise IntegrityError(f"{self.where}: file {absent[0]} listed in the manifest is missing")

    def _hashed(
        self, fh: IO[bytes], name: str, digest: str, keep: bool, sink: Callable[[bytes], Any] | None = None
    ) -> bytes | None:
        h = hashlib.sha256()
        parts: list[bytes] = []
        total = 0
        while chunk := fh.read(CHUNK):
            total += len(chunk)
            if total > MAX_MEMBER_BYTES:
                raise BundleError(f"{self.where}: {name} is more than {MAX_MEMBER_BYTES} bytes")
            h.update(chunk)
            if keep:
                parts.append(chunk)
            if sink is not None:
                sink(chunk)
        if h.hexdigest() != digest:
            raise IntegrityError(
                f"{self.where}: file {name} does not match its sha256 in the manifest (tampered or corrupt)"
            )
        return b"".join(parts) if keep else None

    @contextlib.contextmanager
    def _reading(self) -> Iterator[Callable[[Any], IO[bytes]]]:
        """The archive opened for reading members; a failure to open it is one line."""
        try:
            with self._opened() as open_member:
                yield open_member
        except self._errors() as exc:  # evaluated when something was raised
            raise BundleError(f"{self.where}: unreadable or corrupt archive ({exc.__class__.__name__}: {exc})") from None

    @contextlib.contextmanager
    def _member_errors(self, name: str) -> Iterator[None]:
        """A member whose compressed data or checksum is damaged: an ``IntegrityError`` naming it."""
        try:
            yield
        except self._errors() as exc:
            raise IntegrityError(f"{self.where}: bundle file {name} is corrupt ({exc.__class__.__name__}: {exc})") from None


def read_at_most(fh: IO[bytes], limit: int) -> bytes:
    """Up to ``limit`` bytes, read a chunk at a time (``BufferedReader.read(n)`` allocates ``n`` up front)."""
    parts: list[bytes] = []
    left = limit
    while left > 0 and (chunk := fh.read(min(CHUNK, left))):
        parts.append(chunk)
        left -= len(chunk)
    return b"".join(parts)


class _WriteFailed(Exception):
    """Carries a write's ``OSError`` past the archive's read-error handling."""

    def __init__(self, error: OSError) -> None:
        super().__init__(str(error))
        self.error = error


@contextlib.contextmanager
def _writing(path: Path) -> Iterator[Callable[[bytes], Any]]:
    """``write(chunk)`` into a new file at ``path``; any ``OSError`` of it becomes :class:`_WriteFailed`."""
    try:
        out = open(path, "wb")  # noqa: SIM115 - closed below
    except OSError as exc:
        exc.filename = exc.filename or str(path)
        raise _WriteFailed(exc) from None

    def write(chunk: bytes) -> None:
        try:
            out.write(chunk)
        except OSError as exc:
            exc.filename = str(path)
            raise _WriteFailed(exc) from None

    try:
        yield write
    finally:
        try:
            out.close()
        except OSError as exc:  # buffered bytes that did not fit
            exc.filename = str(path)
            raise _WriteFailed(exc) from None


# ---------------------------------------------------------------------------- formats


def _bundle_names(where: str, entries: list[tuple[str, str, int, Any, int]]) -> dict[str, Member]:
    """``(name, kind, size, ref, order)`` entries -> the bundle's members, shape checked.

    ``manifest.json`` is at the archive's root or inside exactly one top-level folder; every
    other entry must be a regular file beside it (or that folder itself).
    """
    if len(entries) > MAX_MEMBERS:
        raise BundleError(f"{where}: more than {MAX_MEMBERS} members (a bundle holds a handful of files); refused")
    names = [e[0].removeprefix("./") for e in entries]
    if MANIFEST_NAME in names:
        prefix = ""
    else:
        tops = sorted({n[: -len(MANIFEST_NAME)] for n in names if n.endswith("/" + MANIFEST_NAME) and n.count("/") == 1})
        if len(tops) != 1:
            raise BundleError(f"{where}: archive holds no single bundle (no manifest.json at its top)")
        prefix = tops[0]
    members: dict[str, Member] = {}
    for (raw, kind, size, ref, order), name in zip(entries, names):
        if kind == "dir":
            if name.rstrip("/") in ("", ".", prefix.rstrip("/")):
                continue
            raise IntegrityError(f"{where}: folder {raw!r} is not part of a bundle (a bundle has no sub-folders); refused")
        if kind != "file":
            raise IntegrityError(f"{where}: {raw!r} is a {kind}; a bundle archive holds regular files only; refused")
        short = name[len(prefix) :] if name.startswith(prefix) else None
        if short is None or not _PLAIN.match(short):
            raise IntegrityError(
                f"{where}: member {raw!r} is not listed in the manifest"
                " (a bundle holds manifest.json, manifest.sig and the files its manifest lists; refused)"
            )
        if short in members:
            raise IntegrityError(f"{where}: member {raw!r} appears twice in the archive; refused")
        if size > MAX_MEMBER_BYTES:
            raise BundleError(f"{where}: {raw} declares {size} bytes, more than the {MAX_MEMBER_BYTES} a bundle file may have")
        members[short] = Member(short, size, ref, order, raw)
    return members


ARCHIVE_SUFFIXES = (".tar", ".tar.gz", ".tgz", ".zip")


def open_archive(path: Path, where: str | None = None) -> BundleArchive:
    """A bundle archive by its suffix (:data:`ARCHIVE_SUFFIXES`); ``BundleError`` for anything else."""
    name = path.name.lower()
    if name.endswith(".zip"):
        return zip_archive(path, where)
    if name.endswith((".tar", ".tar.gz", ".tgz")):
        return tar_archive(path, where)
    raise BundleError(f"{path}: not a bundle folder or archive ({', '.join(ARCHIVE_SUFFIXES)})")


def zip_archive(path: Path, where: str | None = None) -> BundleArchive:
    """A zip (or a file ending in one: the device executable) as a :class:`BundleArchive`."""
    import zipfile
    import zlib

    where = where or str(path)
    def errors() -> tuple[type[BaseException], ...]:
        return (OSError, EOFError, ValueError, RuntimeError, NotImplementedError, zipfile.BadZipFile, zlib.error)

    try:
        check_zip_directory(path, where)
        with zipfile.ZipFile(path) as zf:
            infos = zf.infolist()
    except BundleError:
        raise
    except errors() as exc:
        raise BundleError(f"{where}: unreadable or corrupt archive ({exc.__class__.__name__}: {exc})") from None
    entries = []
    for i in infos:
        if i.flag_bits & 0x1:
            raise BundleError(f"{where}: member {i.filename!r} is encrypted; refused")
        mode = (i.external_attr >> 16) & 0o170000
        kind = "dir" if i.is_dir() else "symlink" if mode == 0o120000 else "file"
        entries.append((i.filename, kind, i.file_size, i, i.header_offset))

    @contextlib.contextmanager
    def opened() -> Iterator[Callable[[Any], IO[bytes]]]:
        with zipfile.ZipFile(path) as zf:
            yield zf.open

    return BundleArchive(where, _bundle_names(where, entries), opened, errors)


def check_zip_directory(path: Path, where: str) -> None:
    """Refuse a central directory too big to be a bundle's before ``zipfile`` reads it whole."""
    import zipfile

    end_record = getattr(zipfile, "_EndRecData", None)  # private, but in every CPython since 2.6
    if end_record is None:
        return
    with open(path, "rb") as fh:
        rec = end_record(fh)
    if not rec:
        return  # not a zip: zipfile says so in its own words
    entries, size = rec[zipfile._ECD_ENTRIES_TOTAL], rec[zipfile._ECD_SIZE]
    if entries > MAX_MEMBERS or size > MAX_DIRECTORY_BYTES:
        raise BundleError(
            f"{where}: {entries} members in a {size}-byte directory (a bundle holds a handful of files); refused"
        )


def tar_archive(path: Path, where: str | None = None) -> BundleArchive:
    """A ``.tar``/``.tar.gz``/``.tgz`` as a :class:`BundleArchive` (headers read, data skipped)."""
    import tarfile
    import zlib

    where = where or str(path)
    def errors() -> tuple[type[BaseException], ...]:
        # An .xz tar fails with lzma's own error, from a module tarfile imports on demand and
        # the device executable leaves out (tarfile then raises CompressionError, a TarError).
        lzma = sys.modules.get("lzma")
        extra = (lzma.LZMAError,) if lzma is not None else ()
        return (OSError, EOFError, ValueError, tarfile.TarError, zlib.error, *extra)
    entries = []
    allowed: set[str] | None = None  # full member names the manifest allows, once it has been seen
    try:
        with tarfile.open(path, "r:*") as tf:
            for info in tf:
                kind = (
                    "file" if info.isfile() else "dir" if info.isdir() else "symlink" if info.issym()
                    else "hard link" if info.islnk() else "device or FIFO"
                )
                entries.append((info.name, kind, info.size, info, info.offset_data))
                if len(entries) > MAX_MEMBERS or info.size > MAX_MEMBER_BYTES:
                    break  # refused below, without reading the rest
                name = info.name.removeprefix("./")
                if kind == "file" and allowed is not None and name not in allowed:
                    break  # refused below before its data is read (a tar is read front to back)
                if kind == "file" and allowed is None and name.split("/")[-1] == MANIFEST_NAME and name.count("/") <= 1:
                    allowed = _early_allowed(tf, info, name)
                    if allowed is not None and any(e[1] == "file" and e[0].removeprefix("./") not in allowed for e in entries):
                        break
    except errors() as exc:
        raise BundleError(f"{where}: unreadable or corrupt archive ({exc.__class__.__name__}: {exc})") from None
    if allowed is not None:
        for raw, kind, *_ in entries:
            if kind == "file" and raw.removeprefix("./") not in allowed:
                raise IntegrityError(
                    f"{where}: member {raw!r} is not listed in the manifest"
                    " (a bundle holds manifest.json, manifest.sig and the files its manifest lists; refused)"
                )

    @contextlib.contextmanager
    def opened() -> Iterator[Callable[[Any], IO[bytes]]]:
        with tarfile.open(path, "r:*") as tf:

            def open_member(ref: Any) -> IO[bytes]:
                fh = tf.extractfile(ref)
                if fh is None:  # pragma: no cover - only regular files are members
                    raise tarfile.TarError(f"{ref.name} is not a regular file")
                return fh

            yield open_member

    return BundleArchive(where, _bundle_names(where, entries), opened, errors)


def _early_allowed(tf: Any, info: Any, name: str) -> set[str] | None:
    """The member names a manifest met while listing a tar allows (``None``: decide later, in full)."""
    if info.size > MAX_MANIFEST_BYTES:
        return None
    fh = tf.extractfile(info)
    if fh is None:  # pragma: no cover
        return None
    try:
        manifest = Manifest.parse(fh.read(), name)
    except BundleError:
        return None  # reported with its proper message once the listing is complete
    prefix = name[: -len(MANIFEST_NAME)]
    return {prefix + n for n in (*manifest.files, MANIFEST_NAME, SIGNATURE_NAME)}
