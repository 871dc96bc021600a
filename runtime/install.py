"""Install, roll back and uninstall a model on a device, each switch atomic.

Layout under a prefix (default ``/opt/mlpack``)::

    <prefix>/<name>/
        <version>/            <name> (onedir launcher) · _internal/ · bundle/
        current -> <version>  what runs; replaced by one rename, so never half-switched
        previous -> <version> where ``rollback`` goes
        state/                the monitoring agent's config and outbox (kept by uninstall)
        trust/                trusted public keys + policy.json (see mlpack_edge.runtime._trust)
        mlpack-<name>.service systemd unit running ``current/<name> serve``

Trust: the first install needs a policy (``trust``: keys to trust, or unsigned allowed
explicitly); later installs keep the one in place unless given a new one. The payload's
signature is checked against it before anything is copied. A new policy is written
before the new version verifies itself (which enforces it) and put back as it was if
the install fails.

A new version is assembled in a hidden temporary folder, its own launcher runs
``verify`` there (signature, integrity, golden probes on this CPU), and only then is the
folder renamed into place and ``current`` switched. A failure anywhere before the switch
leaves the previous version serving and nothing new on disk; a failed write (a full disk)
stops at that file and says which, why, and the free vs needed space, in one line.
Versions other than ``current`` and ``previous`` are removed after a successful switch (a
device's disk is small). Installs, upgrades, rollbacks, uninstalls, trust changes, refused
bundles, failed verifications and repairs are audit events in ``state/``
(:mod:`mlpack_edge.runtime._audit`).

Installing a version that is there already first compares it with the payload, file by
file (launcher, every library, every bundle file; extra files count): a copy that was
altered is laid out again from the payload (which was just verified), verified in place,
swapped in, and recorded as a ``repaired`` event; an intact copy is left alone. The payload
is normally the running executable; ``with_bundle`` pairs its runtime with a bundle folder
or archive given as ``--bundle``.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Literal, Protocol

from mlpack_edge._fs import atomic_write_text, fsync_directory
from mlpack_edge.errors import InstallError, IntegrityError, MlpackError
from mlpack_edge.runtime import _audit
from mlpack_edge.runtime._archive import ARCHIVE_SUFFIXES, BundleArchive, open_archive
from mlpack_edge.runtime._damage import damage
from mlpack_edge.runtime._layout import lay_out
from mlpack_edge.runtime._runtime_record import record_runtime, recorded_runtime
from mlpack_edge.runtime._trust import (
    TRUST_DIR,
    SignatureCheck,
    TrustPolicy,
    applied_trust,
    check_signature,
    read_trust_dir,
)
from mlpack_edge.runtime.embedded import (
    BUNDLE_DIR,
    LAUNCHER_DATA_NAME,
    frozen_mode,
    open_appended,
)
from mlpack_edge.runtime.manifest import (
    MANIFEST_NAME,
    SIGNATURE_NAME,
    Manifest,
    read_manifest,
    verify_files,
)

if TYPE_CHECKING:
    from mlpack_edge.monitor_agent.config import AgentConfig

__all__ = [
    "DEFAULT_PREFIX",
    "Payload",
    "Systemd",
    "SystemctlSystemd",
    "InstallResult",
    "current_payload",
    "with_bundle",
    "install",
    "rollback",
    "uninstall",
    "installed_versions",
    "unit_name",
    "run_verify",
    "verify_failure",
]

DEFAULT_PREFIX = Path("/opt/mlpack")
CURRENT = "current"
PREVIOUS = "previous"
STATE = "state"
_RESERVED = {CURRENT, PREVIOUS, STATE, TRUST_DIR}
_PLAIN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]*$")
_VERIFY_TIMEOUT_S = 300

Verifier = Callable[[Path, str], None]
Status = Literal["installed", "switched", "unchanged", "repaired", "rolled back", "uninstalled"]


class Systemd(Protocol):
    """The slice of systemd install needs (a seam: tests pass a recorder)."""

    def running(self) -> bool: ...

    def run(self, *args: str) -> None: ...


class SystemctlSystemd:
    """The real one: ``systemctl`` when the machine was booted with systemd."""

    def running(self) -> bool:
        return Path("/run/systemd/system").is_dir() and shutil.which("systemctl") is not None

    def run(self, *args: str) -> None:
        proc = subprocess.run(["systemctl", *args], capture_output=True, text=True)
        if proc.returncode != 0:
            detail = (proc.stderr or proc.stdout).strip().splitlines()
            raise InstallError(f"systemctl {' '.join(args)} failed: {detail[-1] if detail else proc.returncode}")


@dataclass(frozen=True)
class Payload:
    """What an install copies: the onedir launcher, the libraries, the bundle.

    ``bundle`` is a bundle folder, a ``.zip``/``.tar``/``.tar.gz``/``.tgz`` archive of one,
    or a device executable with the bundle appended. ``skip`` names entries of
    ``internal`` that are not part of the runtime.
    """

    launcher: Path
    internal: Path
    bundle: Path
    skip: frozenset[str] = frozenset({LAUNCHER_DATA_NAME})
    #: sha256 of the onefile runtime this launcher and ``internal`` came from (``None``: unknown);
    #: recorded per installed version (:mod:`mlpack_edge.runtime._runtime_record`).
    runtime_sha256: str | None = None


@dataclass
class InstallResult:
    name: str
    version: str
    path: Path
    status: Status
    previous: str | None = None
    unit: Path | None = None
    notes: list[str] = field(default_factory=list)
    signature: SignatureCheck | None = None


def unit_name(name: str) -> str:
    """``mlpack-<name>.service``: prefixed so a model called ``ssh`` cannot shadow a system unit."""
    return f"mlpack-{name}.service"


def current_payload() -> Payload:
    """The payload of the executable running now (onefile download or installed onedir)."""
    meipass = getattr(sys, "_MEIPASS", None)
    exe = Path(sys.executable)
    mode = frozen_mode(exe, Path(meipass) if meipass else None) if getattr(sys, "frozen", False) else None
    if mode is None:
        raise InstallError(
            "install runs from a device executable (dist/<name>-<version>-<platform>), not from plain Python"
        )
    assert meipass is not None
    if mode == "onefile":
        try:
            runtime_sha256: str | None = open_appended(exe).runtime_sha256
        except MlpackError:  # _payload_manifest reports a damaged executable in one line
            runtime_sha256 = None
        return Payload(Path(meipass) / LAUNCHER_DATA_NAME, Path(meipass), exe,
                       frozenset({LAUNCHER_DATA_NAME, "_mlpack_bundle"}), runtime_sha256)
    version_dir = exe.resolve().parent
    return Payload(exe.resolve(), Path(meipass), version_dir / BUNDLE_DIR,
                   runtime_sha256=recorded_runtime(version_dir.parent / STATE, version_dir.name))


def with_bundle(payload: Payload, bundle: Path) -> Payload:
    """``payload``'s runtime with another bundle (``<model> --bundle PATH install``).

    ``bundle`` is a bundle folder or archive; it is verified like any payload (signature
    under the device's trust, every file against its manifest, then the laid-out version's
    own ``verify`` on this runtime and CPU) before anything is switched.
    """
    if not bundle.is_dir() and not bundle.name.lower().endswith(ARCHIVE_SUFFIXES):
        raise InstallError(
            f"--bundle {bundle}: install takes a bundle folder or a {'/'.join(ARCHIVE_SUFFIXES)} archive of one"
            " (to install another device executable, run its own install)"
        )
    return replace(payload, bundle=bundle)


def verify_failure(executable: Path, timeout: float = _VERIFY_TIMEOUT_S) -> str | None:
    """Run ``<executable> verify`` in its own folder, clean of ``MLPACK_*`` settings.

    Returns ``None`` when it passes, else its last error line (without ``Error:``): the
    one check shared by ``install`` (on the laid-out version) and the build (on the file).
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLPACK_")}
    env[_audit.NO_AUDIT_ENV] = "1"  # the caller reports the outcome; the child must not as well
    try:
        proc = subprocess.run(
            [str(executable), "verify"], cwd=executable.parent, env=env, capture_output=True, text=True,
            timeout=timeout,
        )
    except subprocess.TimeoutExpired:
        return f"verify did not finish within {timeout:g} s"
    except OSError as exc:
        return f"cannot run {executable} ({exc.strerror})"
    if proc.returncode == 0:
        return None
    lines = [ln.strip() for ln in (proc.stderr + "\n" + proc.stdout).splitlines() if ln.strip()]
    return lines[-1].removeprefix("Error: ") if lines else f"exit code {proc.returncode}"


def run_verify(folder: Path, name: str) -> None:
    """The default verifier: the installed launcher's own ``verify``, run where it was laid out."""
    reason = verify_failure(folder / name)
    if reason is not None:
        raise InstallError(f"verify failed: {reason}")


def install(
    payload: Payload,
    prefix: Path = DEFAULT_PREFIX,
    *,
    trust: TrustPolicy | None = None,
    verifier: Verifier = run_verify,
    systemd: Systemd | None = None,
    enable: bool = False,
    agent_config: AgentConfig | None = None,
) -> InstallResult:
    """Install ``payload`` under ``prefix`` and make it current, or change nothing.

    ``trust`` becomes the model's trust policy; it is required the first time, and
    ``None`` later keeps the installed one. ``agent_config`` (an
    ``mlpack_edge.monitor_agent.config.AgentConfig``) is written to the model's state folder
    for the agent that ``serve`` runs.
    """
    prefix = Path(prefix).absolute()
    trust = trust._replace(installed=True) if trust is not None else None
    manifest, source, sig_raw = _payload_manifest(payload)
    name, version = _checked_name(manifest.name, "name"), _checked_name(manifest.version, "version")
    if trust is None and not (prefix / name / TRUST_DIR).is_dir():
        raise InstallError(
            f"{name}: no trust configured under {prefix}: pass --trust-key KEY.pub (repeatable) or --allow-unsigned"
        )
    state = prefix / name / STATE
    # Judged before anything is created; the new version's own verify enforces it again.
    signature = _accepted(manifest, sig_raw, trust or read_trust_dir(prefix / name / TRUST_DIR), payload.bundle, state)
    model_dir = _writable(prefix, name)
    systemd = systemd or SystemctlSystemd()
    with _one_line_os_errors(model_dir), _locked(model_dir):
        _remove_stale(model_dir)
        target = model_dir / version
        current = _link_target(model_dir / CURRENT)
        checked = _audited(verifier, state, version, "install")
        # what the installed copy was judged by (applied_trust may replace it just below)
        installed_policy = read_trust_dir(model_dir / TRUST_DIR) if (model_dir / TRUST_DIR).is_dir() else None
        with applied_trust(model_dir / TRUST_DIR, trust) as trust_changed:
            repaired: list[str] = []
            if target.is_dir():
                repaired = damage(target, payload, manifest, sig_raw, name, installed_policy)
                if repaired:  # tampered or damaged: lay it out again from this (verified) payload
                    _laid_out(payload, source, target, name, checked, current, replace_existing=True)
                elif current == version:
                    result = InstallResult(name, version, target, "unchanged", _link_target(model_dir / PREVIOUS))
                    if trust_changed:  # the installed copy must pass the new policy too
                        checked(target, name)
                    _reconfigure(model_dir, result, systemd, agent_config, enable, trust_changed, trust)
                    result.signature = signature
                    return result
                else:
                    checked(target, name)
                status: Status = "repaired" if repaired and current == version else "switched"
            else:
                _laid_out(payload, source, target, name, checked, current)
                status = "installed"
            result = InstallResult(name, version, target, status, current, signature=signature)
            _switch(model_dir, version, previous=current)
        with _after_switch(result, "recording the install"):
            state.mkdir(exist_ok=True)
            record_runtime(state, version, payload.runtime_sha256, {version, *([current] if current else [])})
        _trust_events(state, result, trust_changed, trust)
        if repaired:
            shown = ", ".join(repaired[:5]) + (f" (+{len(repaired) - 5} more)" if len(repaired) > 5 else "")
            result.notes.append(f"repaired {len(repaired)} file{'s' if len(repaired) != 1 else ''} that did not match this executable: {shown}")
            detail = {"version": version, "files": repaired[:20], "count": len(repaired), "content_hash": manifest.content_hash}
            _note(result, _audit.record(state, "repaired", detail))
        if current != version:
            detail = {
                "version": version,
                "previous": current,
                "content_hash": manifest.content_hash,
                "signed_by": signature.key_id,
            }
            _note(result, _audit.record(state, "install" if current is None else "upgrade", detail))
        with _after_switch(result, "configuring the monitoring agent"):
            _configure_agent(model_dir, agent_config, result)
        with _after_switch(result, f"writing {unit_name(name)}"):
            result.unit = _write_unit(model_dir, name)
        _prune(model_dir, result)
        _service_after_switch(systemd, result, enable)
    return result


def rollback(
    prefix: Path, name: str, *, verifier: Verifier = run_verify, systemd: Systemd | None = None
) -> InstallResult:
    """Make ``previous`` current again (and the current one previous)."""
    model_dir = _installed_dir(Path(prefix).absolute(), name)
    systemd = systemd or SystemctlSystemd()
    with _locked(model_dir):
        current = _link_target(model_dir / CURRENT)
        previous = _link_target(model_dir / PREVIOUS)
        if previous is None or previous == current or not (model_dir / previous).is_dir():
            raise InstallError(f"{name}: no previous version under {model_dir} to roll back to")
        _audited(verifier, model_dir / STATE, previous, "rollback")(model_dir / previous, name)
        _switch(model_dir, previous, previous=current)
        result = InstallResult(name, previous, model_dir / previous, "rolled back", current)
        _note(result, _audit.record(model_dir / STATE, "rollback", {"from_version": current, "to_version": previous}))
        _service_after_switch(systemd, result, enable=False)
    return result


def uninstall(
    prefix: Path, name: str, *, purge: bool = False, systemd: Systemd | None = None
) -> InstallResult:
    """Remove every version of ``name``; its state (agent config, unsent telemetry) stays unless ``purge``."""
    model_dir = Path(prefix).absolute() / name
    leftovers = [p for p in model_dir.iterdir() if p.name not in (STATE, ".lock")] if model_dir.is_dir() else []
    if not leftovers and not (purge and model_dir.is_dir()):
        raise InstallError(f"{name} is not installed under {prefix}")
    if not os.access(model_dir, os.W_OK):
        raise InstallError(f"cannot write to {model_dir}: permission denied (run as root)")
    systemd = systemd or SystemctlSystemd()
    result = InstallResult(name, _link_target(model_dir / CURRENT) or "", model_dir, "uninstalled")
    if not purge:  # with --purge the audit log goes too: nothing would deliver the event
        _note(result, _audit.record(model_dir / STATE, "uninstall", {"version": result.version or None}))
    if systemd.running():
        with contextlib.suppress(InstallError):
            systemd.run("disable", "--now", unit_name(name))
    with _locked(model_dir):
        # Removing ``current`` first is the commit point: from here the model is not installed,
        # and an interrupted uninstall leaves only leftovers that a second run removes.
        for link in (CURRENT, PREVIOUS):
            with contextlib.suppress(FileNotFoundError):
                (model_dir / link).unlink()
        fsync_directory(model_dir)
        for child in sorted(model_dir.iterdir()):
            if child.name not in (".lock", STATE) or (purge and child.name == STATE):
                _remove(child)
    (model_dir / ".lock").unlink(missing_ok=True)
    if (model_dir / STATE).exists():
        result.notes.append(f"kept {model_dir / STATE} (agent config, unsent telemetry); --purge removes it")
    else:
        with contextlib.suppress(OSError):
            model_dir.rmdir()
    return result


def installed_versions(prefix: Path, name: str) -> tuple[str | None, str | None, list[str]]:
    """``(current, previous, every version folder)`` of ``name`` under ``prefix``."""
    model_dir = Path(prefix) / name
    if not model_dir.is_dir():
        return None, None, []
    versions = sorted(
        p.name for p in model_dir.iterdir()
        if p.is_dir() and not p.is_symlink() and not p.name.startswith(".") and p.name not in _RESERVED
    )
    return _link_target(model_dir / CURRENT), _link_target(model_dir / PREVIOUS), versions


# -- steps ---------------------------------------------------------------------------


def _payload_manifest(payload: Payload) -> tuple[Manifest, Path | BundleArchive, bytes | None]:
    """Read and verify the payload's files; ``source`` is what ``lay_out`` copies, then ``manifest.sig``.

    Archives and the appended bundle are proven as they stream (bounded memory) and refuse
    any member their manifest does not list (:mod:`mlpack_edge.runtime._archive`).
    """
    try:
        if payload.bundle.is_dir():
            manifest = read_manifest(payload.bundle)
            verify_files(manifest, lambda n: (payload.bundle / n).read_bytes(), str(payload.bundle))
            sig_path = payload.bundle / SIGNATURE_NAME
            return manifest, payload.bundle, sig_path.read_bytes() if sig_path.is_file() else None
        if payload.bundle.name.lower().endswith(ARCHIVE_SUFFIXES):
            archive = open_archive(payload.bundle)
        else:
            appended = open_appended(payload.bundle)
            appended.check_runtime()
            if MANIFEST_NAME not in appended.names:
                raise InstallError(f"{payload.bundle}: the appended bundle has no manifest.json")
            archive = appended.archive()
        archive.verify()
        return archive.manifest(), archive, archive.signature()
    except InstallError:
        raise
    except MlpackError as exc:
        raise InstallError(f"not installed: {exc}") from None


def _accepted(
    manifest: Manifest, sig_raw: bytes | None, policy: TrustPolicy, where: Path, state: Path
) -> SignatureCheck:
    """The payload's signature judged by the policy it will run under; a refusal is an audit event."""
    try:
        return check_signature(manifest.raw, sig_raw, policy, str(where))
    except IntegrityError as exc:
        detail = {"version": manifest.version, "content_hash": manifest.content_hash, "reason": str(exc)}
        _audit.record(state, "refused", detail)
        raise IntegrityError(f"not installed: {exc}") from None


def _audited(verifier: Verifier, state: Path, version: str, during: str) -> Verifier:
    """``verifier`` whose failure is also an audit event (the child's own reporting is off)."""

    def check(folder: Path, name: str) -> None:
        try:
            verifier(folder, name)
        except InstallError as exc:
            _audit.record(state, "verify_failed", {"version": version, "during": during, "reason": str(exc)})
            raise

    return check


def _trust_events(state: Path, result: InstallResult, changed: bool, trust: TrustPolicy | None) -> None:
    if changed and trust is not None:
        result.notes.append(f"trust: {trust.describe()} ({state.parent / TRUST_DIR})")
        detail = {"keys": [k.key_id for k in trust.keys], "allow_unsigned": trust.allow_unsigned}
        _note(result, _audit.record(state, "trust_changed", detail))


def _note(result: InstallResult, warning: str | None) -> None:
    if warning is not None:
        result.notes.append(warning)


def _reconfigure(
    model_dir: Path,
    result: InstallResult,
    systemd: Systemd,
    agent_config: AgentConfig | None,
    enable: bool,
    trust_changed: bool,
    trust: TrustPolicy | None,
) -> None:
    """Re-running install on the current version: new agent settings, trust or service state."""
    if agent_config is None and not enable and not trust_changed:
        return
    _trust_events(model_dir / STATE, result, trust_changed, trust)
    _configure_agent(model_dir, agent_config, result)
    result.unit = _write_unit(model_dir, name=result.name)
    _service_after_switch(systemd, result, enable)  # the service picks the changes up


def _checked_name(value: str, what: str) -> str:
    if not _PLAIN.match(value) or value in _RESERVED:
        raise InstallError(f"manifest {what} {value!r} cannot name a folder (letters, digits, '.', '_', '+', '-')")
    return value


def _writable(prefix: Path, name: str) -> Path:
    model_dir = Path(prefix) / name
    try:
        model_dir.mkdir(parents=True, exist_ok=True)
        probe = model_dir / f".write-test-{os.getpid()}"
        probe.touch()
        probe.unlink()
    except PermissionError:
        raise InstallError(f"cannot write to {prefix}: permission denied (run as root or pass --prefix DIR)") from None
    except OSError as exc:
        raise InstallError(f"cannot write to {prefix}: {exc.strerror}") from None
    return model_dir


def _installed_dir(prefix: Path, name: str) -> Path:
    model_dir = Path(prefix) / name
    if _link_target(model_dir / CURRENT) is None:
        raise InstallError(f"{name} is not installed under {prefix}")
    if not os.access(model_dir, os.W_OK):
        raise InstallError(f"cannot write to {model_dir}: permission denied (run as root)")
    return model_dir


def _laid_out(
    payload: Payload,
    source: Path | BundleArchive,
    target: Path,
    name: str,
    verifier: Verifier,
    current: str | None,
    replace_existing: bool = False,
) -> None:
    """:func:`~mlpack_edge.runtime._layout.lay_out`, saying which version keeps serving when it fails."""
    try:
        lay_out(payload, source, target, name, verifier, replace_existing)
    except InstallError as exc:
        if current is None:
            raise
        raise InstallError(f"{exc}; {name} {current} stays current") from None


@contextlib.contextmanager
def _one_line_os_errors(model_dir: Path) -> Iterator[None]:
    """The last net: an ``OSError`` not handled closer to its cause (writing the trust folder
    on a full disk, say) is still one line naming the file."""
    try:
        yield
    except OSError as exc:
        where = exc.filename or model_dir
        raise InstallError(f"cannot install under {model_dir}: {where}: {exc.strerror or exc}") from None


@contextlib.contextmanager
def _after_switch(result: InstallResult, what: str) -> Iterator[None]:
    """A failure after the switch (a full disk) is one line saying the new version is in place already."""
    try:
        yield
    except OSError as exc:
        raise InstallError(
            f"{result.name} {result.version} is installed and current, but {what} failed:"
            f" {exc.strerror or exc}; free some space and run install again"
        ) from None


def _switch(model_dir: Path, version: str, previous: str | None) -> None:
    """Point ``previous`` at the old version, then ``current`` at the new one (each one rename)."""
    if previous is not None and previous != version:
        _replace_link(model_dir / PREVIOUS, previous)
    _replace_link(model_dir / CURRENT, version)
    fsync_directory(model_dir)


def _replace_link(link: Path, target: str) -> None:
    tmp = link.with_name(f".{link.name}.{os.getpid()}.tmp")
    with contextlib.suppress(FileNotFoundError):
        tmp.unlink()
    os.symlink(target, tmp)  # relative: the prefix can move
    os.replace(tmp, link)


def _link_target(link: Path) -> str | None:
    try:
        return os.readlink(link)
    except OSError:
        return None


def _configure_agent(model_dir: Path, config: AgentConfig | None, result: InstallResult) -> None:
    if config is None:
        return
    from mlpack_edge.monitor_agent.config import write_config

    (model_dir / STATE).mkdir(exist_ok=True)
    written = write_config(model_dir / STATE, config)
    result.notes.append(f"monitoring agent configured: {written}")


def _write_unit(model_dir: Path, name: str) -> Path:
    unit = model_dir / unit_name(name)
    exe = model_dir / CURRENT / name
    text = (
        "# Written by mlpack install; rewritten on every install.\n"
        "[Unit]\n"
        f"Description=mlpack model {name} (local prediction server)\n"
        "After=network.target\n\n"
        "[Service]\n"
        "Type=simple\n"
        f'ExecStart="{exe}" serve\n'
        f'Environment="MLPACK_STATE_DIR={model_dir / STATE}"\n'
        "Restart=on-failure\n"
        "RestartSec=2\n\n"
        "[Install]\n"
        "WantedBy=multi-user.target\n"
    )
    return atomic_write_text(unit, text, mode=0o644)


def _service_after_switch(systemd: Systemd, result: InstallResult, enable: bool) -> None:
    """Enable when asked (and possible), else restart a running service; never undo a switch."""
    unit = unit_name(result.name)
    unit_path = result.path.parent / unit
    if not systemd.running():
        result.notes.append(
            f"systemd is not running here: service {unit} left disabled"
            f" (on a systemd machine: systemctl enable --now {unit_path})"
        )
        return
    try:
        if enable:
            systemd.run("enable", "--now", str(unit_path))
            result.notes.append(f"enabled and started {unit}")
        else:
            systemd.run("try-restart", unit)
            result.notes.append(f"{unit} restarted if it was running (enable: systemctl enable --now {unit_path})")
    except InstallError as exc:
        result.notes.append(f"warning: {exc}")


def _prune(model_dir: Path, result: InstallResult) -> None:
    current, previous, versions = installed_versions(model_dir.parent, model_dir.name)
    for version in versions:
        if version not in (current, previous):
            _remove(model_dir / version)
            result.notes.append(f"removed old version {version}")


def _remove_stale(model_dir: Path) -> None:
    """Hidden ``.tmp``/``.old-*`` leftovers of an install killed outright (we hold the lock: none is live)."""
    for child in model_dir.iterdir():
        if child.name.startswith(".") and (child.name.endswith(".tmp") or ".old-" in child.name):
            _remove(child)


def _remove(path: Path) -> None:
    if path.is_symlink() or path.is_file():
        path.unlink(missing_ok=True)
    else:
        shutil.rmtree(path, ignore_errors=True)


@contextlib.contextmanager
def _locked(model_dir: Path) -> Iterator[None]:
    """One install/rollback/uninstall at a time per model."""
    with open(model_dir / ".lock", "a+b") as fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)
