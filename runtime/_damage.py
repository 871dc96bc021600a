"""Is the installed copy of a version the payload, byte for byte? (``install`` over an installed version)

An installed version folder can be altered after install: a library patched, a bundle
file edited, a module dropped into ``_internal``. Before ``install`` calls such a version
"already installed", :func:`damage` lists every file that is not what the payload holds;
``install`` then lays the version out again from the payload (which it has just
verified) instead of leaving a copy that fails ``verify``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from mlpack_edge._fs import file_sha256
from mlpack_edge.errors import InstallError, MlpackError
from mlpack_edge.runtime._trust import TrustPolicy, check_signature
from mlpack_edge.runtime.embedded import BUNDLE_DIR, INTERNAL_DIR
from mlpack_edge.runtime.manifest import (
    MANIFEST_NAME,
    SIGNATURE_NAME,
    Manifest,
    read_manifest,
    sha256_bytes,
    verify_files,
)

if TYPE_CHECKING:
    from mlpack_edge.runtime.install import Payload

__all__ = ["damage"]


def damage(
    target: Path, payload: Payload, manifest: Manifest, sig_raw: bytes | None, name: str, policy: TrustPolicy | None
) -> list[str]:
    """Files of the installed ``target`` that differ from ``payload`` (missing, altered or extra), in order.

    An empty list: the installed version is this payload, byte for byte. A version folder
    holding a *different*, intact model under the same version number is refused (that is
    a build mistake, not damage); one whose manifest no longer verifies is damage.
    ``policy`` is the trust the installed copy was installed under: a signature by another
    key that it accepted is not damage (the new trust judges that copy in ``verify``).
    """
    there_dir = target / BUNDLE_DIR
    try:
        there = read_manifest(there_dir)
    except MlpackError:
        there = None
    if there is not None and there.content_hash != manifest.content_hash and _intact(there, there_dir, policy):
        raise InstallError(
            f"version {manifest.version} is already installed at {target} with different content;"
            " give the new model a new version"
        )
    damaged: list[str] = []
    if not _same_file(payload.launcher, target / name):
        damaged.append(name)
    damaged += [f"{INTERNAL_DIR}/{rel}" for rel in _tree_differences(payload.internal, target / INTERNAL_DIR, payload.skip)]
    expected = {MANIFEST_NAME: sha256_bytes(manifest.raw), **manifest.files}
    if sig_raw is not None:
        expected[SIGNATURE_NAME] = sha256_bytes(sig_raw)
    present = {p.name: p for p in there_dir.iterdir()} if there_dir.is_dir() else {}
    if SIGNATURE_NAME in present and there is not None and there.content_hash == manifest.content_hash:
        if policy is not None and _intact(there, there_dir, policy):  # signed otherwise, and accepted then
            expected[SIGNATURE_NAME] = file_sha256(present[SIGNATURE_NAME])
    for file in sorted(set(expected) | set(present)):
        path = present.get(file)
        if file not in expected or path is None or not path.is_file() or path.is_symlink() or file_sha256(path) != expected[file]:
            damaged.append(f"{BUNDLE_DIR}/{file}")
    top = {p.name for p in target.iterdir()} - {name, INTERNAL_DIR, BUNDLE_DIR}
    damaged += sorted(top)
    return damaged


def _intact(manifest: Manifest, folder: Path, policy: TrustPolicy | None) -> bool:
    """Whether an installed bundle still verifies on its own (files, and signature under ``policy``)."""
    if policy is None:
        return False
    try:
        verify_files(manifest, lambda n: (folder / n).read_bytes(), str(folder))
        sig = folder / SIGNATURE_NAME
        check_signature(manifest.raw, sig.read_bytes() if sig.is_file() else None, policy, str(folder))
    except (MlpackError, OSError):
        return False
    return True


def _same_file(a: Path, b: Path) -> bool:
    """Same kind and bytes (a symlink: same target); a missing ``b`` differs."""
    if a.is_symlink() or b.is_symlink():
        return a.is_symlink() and b.is_symlink() and os.readlink(a) == os.readlink(b)
    try:
        if not b.is_file() or a.stat().st_size != b.stat().st_size:
            return False
        with open(a, "rb") as fa, open(b, "rb") as fb:
            while True:
                x, y = fa.read(1 << 20), fb.read(1 << 20)
                if x != y:
                    return False
                if not x:
                    return True
    except OSError:
        return False


def _tree_differences(src: Path, dst: Path, skip: frozenset[str]) -> list[str]:
    """Relative paths under ``dst`` that are not what ``src`` holds (``skip``: top-level names of ``src`` left out)."""
    out: list[str] = []

    def walk(a: Path, b: Path, rel: str, top: bool) -> None:
        names_a = {n for n in os.listdir(a) if not (top and n in skip)} if a.is_dir() else set()
        names_b = set(os.listdir(b)) if b.is_dir() and not b.is_symlink() else set()
        for n in sorted(names_a | names_b):
            pa, pb, r = a / n, b / n, f"{rel}{n}"
            if n not in names_a or n not in names_b:
                out.append(r)
            elif pa.is_dir() and not pa.is_symlink():
                if not pb.is_dir() or pb.is_symlink():
                    out.append(r)
                else:
                    walk(pa, pb, r + "/", False)
            elif not _same_file(pa, pb):
                out.append(r)

    walk(src, dst, "", True)
    return out
