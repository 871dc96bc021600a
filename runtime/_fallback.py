"""Local fallback: an installed version that fails its check at start hands over to ``previous``.

A device has no operator online. If ``serve`` of the installed ``current`` version finds
its bundle tampered, its signature refused or its golden replay wrong, it records the
failure, then *replaces itself* (``exec``, same process id, so systemd keeps tracking
it) with the ``previous`` version's own launcher and the same arguments. That version
was verified when it was installed and is checked again by its own runtime at start;
it learns why it runs from ``$MLPACK_FALLBACK_FROM`` and reports it on stderr and in
``/health`` (``/info`` is then its own manifest, naming the version actually served).
A fallback never falls back again: if ``previous`` fails too, the service fails, and
systemd's restart policy takes over.

Only a process started as an installed launcher (``<prefix>/<name>/<version>/<name>``
with its ``bundle/`` next to it) falls back; ``mlpack device --bundle ...`` never does.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import NamedTuple

from mlpack_edge.runtime._trust import BUNDLE_DIR

__all__ = [
    "FALLBACK_ENV",
    "Installed",
    "Fallback",
    "installed_launcher",
    "running_launcher",
    "previous_launcher",
    "exec_previous",
]

FALLBACK_ENV = "MLPACK_FALLBACK_FROM"
_PREVIOUS = "previous"
_STATE = "state"


class Installed(NamedTuple):
    """This process as an installed version: ``<model_dir>/<version>/<launcher name>``."""

    model_dir: Path
    version: str
    launcher_name: str

    @property
    def state_dir(self) -> Path:
        return self.model_dir / _STATE


class Fallback(NamedTuple):
    """Why the previous version is serving: the version that failed and its one-line reason."""

    from_version: str
    reason: str

    def to_dict(self) -> dict[str, str]:
        return {"from_version": self.from_version, "reason": self.reason}

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Fallback | None:
        raw = (os.environ if environ is None else environ).get(FALLBACK_ENV)
        if not raw:
            return None
        try:
            doc = json.loads(raw)
            return cls(str(doc["from_version"]), str(doc["reason"]))
        except (ValueError, KeyError, TypeError):
            return cls("unknown", raw[:200])


def running_launcher() -> Path:
    """The file this process was started from: the frozen executable, or the script."""
    return Path(sys.executable if getattr(sys, "frozen", False) else sys.argv[0])


def installed_launcher(bundle_dir: str | os.PathLike[str], launcher: str | os.PathLike[str]) -> Installed | None:
    """``Installed`` when ``launcher`` is an installed version's launcher next to ``bundle_dir``.

    A version folder being laid out by ``install`` (hidden, ``.<version>...tmp``) is not
    installed yet: its failures are the installer's to report.
    """
    bundle, exe = Path(bundle_dir).resolve(), Path(launcher).resolve()
    if bundle.name != BUNDLE_DIR or exe.parent != bundle.parent or bundle.parent.name.startswith("."):
        return None
    return Installed(bundle.parent.parent, bundle.parent.name, exe.name)


def previous_launcher(installed: Installed) -> Path | None:
    """The launcher of the ``previous`` version, when there is one other than this version."""
    try:
        previous = os.readlink(installed.model_dir / _PREVIOUS)
    except OSError:
        return None
    if previous == installed.version:
        return None
    launcher = installed.model_dir / previous / installed.launcher_name
    return launcher if launcher.is_file() and os.access(launcher, os.X_OK) else None


def exec_previous(
    launcher: Path, fallback: Fallback, argv: Sequence[str], environ: Mapping[str, str] | None = None
) -> None:
    """Replace this process with ``launcher argv...``, telling it why; returns only if exec fails (``OSError``)."""
    env = dict(os.environ if environ is None else environ)
    env[FALLBACK_ENV] = json.dumps(fallback.to_dict(), sort_keys=True)
    # A PyInstaller app starting another must not look like its child (stale _PYI_* state).
    env["PYINSTALLER_RESET_ENVIRONMENT"] = "1"
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(str(launcher), [str(launcher), *argv], env)
