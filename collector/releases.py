"""The release store: published bundles, kept as files next to the database, recorded in it.

A release is one bundle, uploaded as a deterministic ``.tar.gz``
(:func:`mlpack_edge.builder.remote.pack_bundle`)
and keyed by its manifest content hash (sha256 of ``manifest.json``), so publishing the
same build twice is a no-op and two builds can never share a key. Before anything is
kept the collector checks what a device would: ``manifest.sig`` must verify over the
manifest (a tampered manifest or signature is refused), every listed file must match its
digest, and nothing unlisted may be in the archive. Unsigned bundles are refused unless
the collector runs with ``--allow-unsigned-releases``; with ``--release-trust-key`` it
also refuses signers it does not trust. The device checks again against its own trust
policy before installing: the collector is a distribution point, not a trust anchor.

The archive is written to a temporary file in the release folder, checked there, then
renamed to ``<hash>.tar.gz`` and recorded (file first, row second: a crash in between
leaves a file the next publish of the same build reuses, never a row without a file).
"""

from __future__ import annotations

import hashlib
import os
import time
from dataclasses import dataclass
from pathlib import Path

from mlpack_edge.collector.storage import Release
from mlpack_edge.errors import BundleError, CollectorError, MlpackError
from mlpack_edge.runtime._trust import TrustPolicy, check_signature

__all__ = ["ReleaseStore", "PublishResult", "RELEASE_SUFFIX", "RUNTIME_DIR"]

RELEASE_SUFFIX = ".tar.gz"
#: Frozen runtimes (the onefile part of a device executable in front of its bundle), one file
#: per runtime sha256 however many releases were built on it, with a ``.json`` of its facts.
RUNTIME_DIR = "runtimes"
_SHA256 = frozenset("0123456789abcdef")
_RUNTIME_FACTS = ("target", "glibc_floor")


@dataclass(frozen=True)
class PublishResult:
    release: Release
    added: bool  # False: that content hash was published already (nothing changed)


class ReleaseStore:
    """Release files in ``folder`` plus their rows in ``storage``."""

    def __init__(self, storage: object, folder: str | os.PathLike[str], allow_unsigned: bool = False,
                 trust: TrustPolicy | None = None) -> None:
        self.storage = storage
        self.folder = Path(folder)
        self.allow_unsigned = allow_unsigned
        self.trust = trust

    def path(self, content_hash: str) -> Path:
        return self.folder / f"{content_hash}{RELEASE_SUFFIX}"

    def runtime_path(self, runtime_sha256: str) -> Path:
        return self.folder / RUNTIME_DIR / f"{runtime_sha256}.bin"

    def runtime_info(self, runtime_sha256: str) -> dict[str, object] | None:
        """``{"sha256", "size", "target", "glibc_floor"}`` of a stored runtime, ``None`` when absent."""
        import json

        path = self.runtime_path(runtime_sha256)
        try:
            facts = json.loads(path.with_suffix(".json").read_text(encoding="utf-8"))
            size = path.stat().st_size
        except (OSError, ValueError):
            return None
        return {"sha256": runtime_sha256, "size": size, **{k: facts.get(k) for k in _RUNTIME_FACTS}}

    def add_runtime(self, runtime_sha256: str, data: bytes, facts: dict[str, str]) -> bool:
        """Keep a frozen runtime under its sha256 (checked); ``False`` when it was kept already."""
        import json

        if len(runtime_sha256) != 64 or not set(runtime_sha256) <= _SHA256:
            raise CollectorError(f"runtime {runtime_sha256!r}: expected the runtime's sha256 (64 hex digits)")
        got = hashlib.sha256(data).hexdigest()
        if got != runtime_sha256:
            raise CollectorError(f"runtime {runtime_sha256[:12]}: the {len(data)} bytes uploaded have sha256 "
                                 f"{got[:12]} (cut or changed in transit); nothing kept")
        if self.runtime_info(runtime_sha256) is not None:
            return False
        target = self.runtime_path(runtime_sha256)
        tmp = target.with_name(f".upload-{runtime_sha256[:16]}-{os.getpid()}.bin")
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            tmp.write_bytes(data)
            os.replace(tmp, target)  # the runtime first, its facts second: facts mean "complete"
            doc = {k: facts[k] for k in _RUNTIME_FACTS if facts.get(k)}
            meta = target.with_suffix(".json")
            meta_tmp = meta.with_name(f".{meta.name}.{os.getpid()}")
            meta_tmp.write_text(json.dumps(doc, sort_keys=True), encoding="utf-8")
            os.replace(meta_tmp, meta)
        except OSError as exc:
            raise CollectorError(f"release folder {self.folder}: cannot store the runtime ({exc.strerror or exc})") from None
        finally:
            tmp.unlink(missing_ok=True)
        return True

    def publish(self, archive: bytes, publisher: str, now: float | None = None,
                runtime: str | None = None) -> PublishResult:
        """Check ``archive`` like a device would, keep it, record it; idempotent per content hash.

        ``runtime``: the sha256 of the frozen runtime the build's executable carries, stored
        before (:meth:`add_runtime`); devices running another runtime then download it too.
        """
        from mlpack_edge.runtime._archive import open_archive

        now = time.time() if now is None else now
        if runtime is not None and self.runtime_info(runtime) is None:
            raise CollectorError(f"runtime {runtime[:12]} is not stored here; upload it first "
                                 f"(PUT /api/v1/runtimes/{runtime})")
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise CollectorError(f"release folder {self.folder}: cannot create ({exc.strerror})") from None
        digest = hashlib.sha256(archive).hexdigest()
        tmp = self.folder / f".upload-{digest[:16]}-{os.getpid()}{RELEASE_SUFFIX}"
        try:
            tmp.write_bytes(archive)
            bundle = open_archive(tmp, "uploaded bundle")
            manifest = bundle.manifest()
            sig = bundle.signature()
            if sig is None and not self.allow_unsigned:
                raise BundleError(
                    "uploaded bundle: unsigned; this collector publishes signed bundles only "
                    "(mlpack build --sign-key KEY, or start the collector with --allow-unsigned-releases)"
                )
            # Without a signer list the signature is still checked: it proves the manifest intact.
            policy = self.trust._replace(allow_unsigned=self.allow_unsigned) if self.trust else TrustPolicy.ad_hoc()
            check = check_signature(manifest.raw, sig, policy, "uploaded bundle")
            bundle.verify()
            content_hash = manifest.content_hash
            known = self.storage.release(content_hash)  # type: ignore[attr-defined]
            if known is not None and self.path(content_hash).is_file():
                if runtime is not None and known.runtime != runtime:  # the same build, now with its runtime
                    self.storage.set_release_runtime(content_hash, runtime)  # type: ignore[attr-defined]
                    return PublishResult(self.storage.release(content_hash), True)  # type: ignore[attr-defined]
                return PublishResult(known, False)
            target = self.path(content_hash)
            os.replace(tmp, target)
            release = Release(content_hash, manifest.name, manifest.version, len(archive), digest, check.key_id,
                              runtime, now, publisher)
            added = self.storage.add_release(release)  # type: ignore[attr-defined]
            if not added:
                release = self.storage.release(content_hash)  # type: ignore[attr-defined]
            self._teach_model(target, content_hash)
            return PublishResult(release, added)
        except OSError as exc:
            raise CollectorError(f"release folder {self.folder}: cannot store the bundle ({exc.strerror or exc})") from None
        finally:
            tmp.unlink(missing_ok=True)

    def _teach_model(self, archive: Path, content_hash: str) -> None:
        """Record the bundle's model (reference profile, drift thresholds) so the fleet page knows it
        before any device runs it; best effort: a bundle without a profile is still a release."""
        import json

        from mlpack_edge.collector.models import model_from_upload
        from mlpack_edge.monitor_agent.wire import WireError
        from mlpack_edge.runtime._archive import open_archive

        bundle = open_archive(archive)
        manifest = bundle.manifest()
        if "profile.json" not in manifest.files or self.storage.get_model(content_hash) is not None:  # type: ignore[attr-defined]
            return
        try:
            profile = json.loads(bundle.read_verified("profile.json"))
            entry = {"name": manifest.name, "version": manifest.version, "profile": profile,
                     "drift": manifest.data.get("drift")}
            self.storage.add_model(model_from_upload(content_hash, entry, "profile.json", source="bundle"), time.time())  # type: ignore[attr-defined]
        except (MlpackError, WireError, ValueError):
            return
