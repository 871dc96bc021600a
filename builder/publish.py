"""``mlpack publish``: a build's bundle, and its frozen runtime when the collector lacks it.

A device updates by downloading only the bundle when the release was built on the frozen
runtime it already runs; otherwise it needs the runtime too (the whole payload,
:mod:`mlpack_edge.runtime._whole_update`). So a release records the sha256 of the
runtime its executable carries (from the executable's trailer), and the runtime itself is
uploaded once per sha256: the first build on a new runtime sends its 36 MB, every later
build on the same runtime sends its bundle alone.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mlpack_edge.builder.remote import AdminClient, pack_bundle
from mlpack_edge.errors import PackagingError
from mlpack_edge.runtime.embedded import open_appended
from mlpack_edge.runtime.manifest import read_manifest

__all__ = ["Published", "publish_build", "sibling_executable"]


@dataclass(frozen=True)
class Published:
    added: bool
    release: dict[str, Any]
    runtime: str | None  # sha256 of the runtime recorded with the release (None: bundle only)
    runtime_uploaded: int  # bytes of runtime sent now (0: none, or the collector had it)


def sibling_executable(bundle_dir: Path) -> Path | None:
    """``dist/<name>-<version>-<platform>`` beside the bundle folder, when the build wrote one."""
    from mlpack_edge.builder.executable import executable_name

    manifest = read_manifest(bundle_dir)
    candidate = bundle_dir.parent / executable_name(manifest.name, manifest.version)
    return candidate if candidate.is_file() else None


def _runtime_part(executable: Path, content_hash: str) -> tuple[str, bytes, dict[str, str]]:
    """The runtime bytes in front of the executable's bundle, checked against its trailer and the bundle."""
    appended = open_appended(executable)
    manifest = appended.verify()
    if manifest.content_hash != content_hash:
        raise PackagingError(f"--executable {executable}: it carries another build ({manifest.name} "
                             f"{manifest.version}, {manifest.content_hash[:12]}), not this bundle ({content_hash[:12]})")
    with open(executable, "rb") as fh:
        data = fh.read(appended.runtime_size)
    if hashlib.sha256(data).hexdigest() != appended.runtime_sha256:
        raise PackagingError(f"--executable {executable}: the frozen runtime does not match the sha256 in its trailer "
                             "(corrupted copy?); build it again")
    facts = {k: v for k, v in (("target", appended.target), ("glibc_floor", appended.glibc_floor)) if v}
    return appended.runtime_sha256, data, facts


def publish_build(client: AdminClient, bundle_dir: Path, executable: Path | None = None) -> Published:
    """Upload the bundle (and, with ``executable``, its runtime unless the collector has it)."""
    archive = pack_bundle(bundle_dir)
    runtime: str | None = None
    sent = 0
    if executable is not None:
        runtime, data, facts = _runtime_part(executable, read_manifest(bundle_dir).content_hash)
        if not client.has_runtime(runtime):
            if client.put_runtime(runtime, data, facts):
                sent = len(data)
    added, release = client.publish(archive, runtime)
    return Published(added, release, runtime, sent)
