"""An update whose release was built on another frozen runtime: the whole payload travels.

When a release's runtime (the sha256 of the onefile runtime part, recorded by the build in
the executable's trailer) is not the one the current version runs
(:mod:`mlpack_edge.runtime._runtime_record`), the bundle alone may not run here: the device
also downloads the runtime (Range-resumable, sha256-checked, cached once per runtime
hash), assembles the device executable it would have been given (runtime + the
deterministic appended bundle, :func:`~mlpack_edge.runtime.embedded.write_executable`),
and runs *that executable's own* ``install``: the same path as a manual install (the
signature under this device's trust policy, the runtime against its trailer, every
bundle file, the new version's ``verify`` with the golden set on this CPU, an atomic
switch of ``current``). Any refusal leaves the old version serving.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from mlpack_edge.errors import InstallError, MlpackError
from mlpack_edge.runtime._runtime_record import installed_runtime

__all__ = ["RUNTIME_SUFFIX", "runtime_needed", "runtime_file", "install_whole"]

RUNTIME_SUFFIX = ".runtime"
_INSTALL_TIMEOUT_S = 900


def runtime_needed(offer: Mapping[str, Any], prefix: Path, name: str) -> dict[str, Any] | None:
    """The offer's runtime when this device must download it (another runtime, or its own unknown)."""
    runtime = offer.get("runtime")
    if not isinstance(runtime, Mapping) or not runtime.get("sha256"):
        return None  # a release published without its runtime: the bundle runs on this one (as before)
    if installed_runtime(prefix, name) == runtime["sha256"]:
        return None
    return dict(runtime)


def runtime_file(downloads: Path, runtime: Mapping[str, Any]) -> Path:
    return downloads / f"{runtime['sha256']}{RUNTIME_SUFFIX}"


def install_whole(archive: Path, runtime: Mapping[str, Any], runtime_path: Path, prefix: Path, name: str) -> str:
    """Assemble the executable from ``runtime_path`` + the bundle ``archive`` and run its ``install``.

    Returns the installed version; ``InstallError`` (one line) when anything refuses.
    """
    from mlpack_edge.runtime._archive import open_archive
    from mlpack_edge.runtime._fallback import FALLBACK_ENV
    from mlpack_edge.runtime.embedded import write_executable
    from mlpack_edge.runtime.manifest import MANIFEST_NAME, SIGNATURE_NAME

    try:
        bundle = open_archive(archive)
        manifest = bundle.manifest()
        files = {MANIFEST_NAME: manifest.raw, **{n: bundle.read_verified(n) for n in manifest.files}}
        sig = bundle.signature()
        if sig is not None:
            files[SIGNATURE_NAME] = sig
        exe = archive.parent / f"{manifest.name}-{manifest.version}"
        tmp = exe.with_name(f".{exe.name}.tmp")
        facts = {k: str(runtime[k]) for k in ("target", "glibc_floor") if runtime.get(k)}
        write_executable(runtime_path, str(runtime["sha256"]), files, tmp, facts)
        os.chmod(tmp, 0o755)
        os.replace(tmp, exe)
    except MlpackError as exc:
        raise InstallError(f"not installed: {exc}") from None
    except OSError as exc:
        raise InstallError(f"not installed: cannot assemble the executable in {archive.parent} "
                           f"({exc.strerror or exc}); the installed version keeps running") from None
    env = {k: v for k, v in os.environ.items() if k != FALLBACK_ENV}
    env["PYINSTALLER_RESET_ENVIRONMENT"] = "1"  # a PyInstaller app starting another must not look like its child
    try:
        proc = subprocess.run([str(exe), "install", "--prefix", str(prefix)], cwd=archive.parent, env=env,
                              capture_output=True, text=True, timeout=_INSTALL_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        raise InstallError(f"{exe.name} install did not finish within {_INSTALL_TIMEOUT_S} s") from None
    except OSError as exc:
        raise InstallError(f"cannot run {exe} ({exc.strerror})") from None
    finally:
        exe.unlink(missing_ok=True)
    if proc.returncode != 0:
        lines = [ln.strip() for ln in (proc.stderr + "\n" + proc.stdout).splitlines() if ln.strip()]
        raise InstallError(lines[-1].removeprefix("Error: ") if lines else f"install exited {proc.returncode}")
    return manifest.version
