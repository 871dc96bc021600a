"""install under faults: a full disk, a tampered installed copy, --bundle, a padded executable.

Real files and the real subprocess verify of the fake payload (see conftest). The full
disk is a real 1 MiB tmpfs when this process may mount one (root); the same one-line
contract is also checked everywhere through a per-process file-size limit, which makes
the kernel fail the write just as a full disk does (``EFBIG`` instead of ``ENOSPC``).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import sqlite3
import subprocess
import sys
import tarfile
import textwrap
import tracemalloc
import uuid
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from mlpack_edge.errors import InstallError, IntegrityError
from mlpack_edge.monitor_agent._store import DB_NAME
from mlpack_edge.runtime._trust import TrustPolicy
from mlpack_edge.runtime.embedded import APPENDED_FORMAT, locate_bundle, open_appended
from mlpack_edge.runtime.install import Payload, install, with_bundle

from tests._craft import Zeros, write_zip

from .conftest import UNSIGNED_OK, FakeSystemd

MakePayload = Callable[..., Payload]
MB = 1 << 20


def _events(prefix: Path) -> list[tuple[str, dict[str, Any]]]:
    conn = sqlite3.connect(f"file:{prefix / 'toy' / 'state' / DB_NAME}?mode=ro", uri=True)
    try:
        rows = conn.execute("SELECT event, detail FROM audit ORDER BY seq").fetchall()
    finally:
        conn.close()
    return [(event, json.loads(detail)) for event, detail in rows]


def _verify(version_dir: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(version_dir / "toy"), "verify"], capture_output=True, text=True, cwd=version_dir)


def _entries(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


# ---------------------------------------------------------------------------- a full disk


@contextlib.contextmanager
def _tmpfs(path: Path, size: str) -> Iterator[Path]:
    path.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root (the file-size-limit test covers the same contract)")
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True, text=True)
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {proc.stderr.strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


@pytest.fixture
def big_payload(make_payload: MakePayload, fake_runtime: Path) -> Payload:
    """The fake payload with 40 libraries of 64 KiB: 2.5 MiB of runtime, more than the tmpfs holds."""
    for i in range(40):
        (fake_runtime / f"libbig{i:02d}.so").write_bytes(os.urandom(64 * 1024))
    return make_payload("1.0.0", appended=True)


def test_a_full_disk_fails_at_the_first_file_with_one_line(big_payload: Payload, tmp_path: Path) -> None:
    with _tmpfs(tmp_path / "small", "1m") as mnt:
        prefix = mnt / "opt"
        with pytest.raises(InstallError) as err:
            install(big_payload, prefix, trust=UNSIGNED_OK, systemd=FakeSystemd(False))
        message = str(err.value)
        assert "\n" not in message and len(message) < 300, message
        head = f"cannot install into {prefix / 'toy' / '1.0.0'}: writing _internal/libbig"
        assert message.startswith(head), message
        assert ".so failed: No space left on device (" in message
        # measured once the temporary folder is gone again: what is really free there
        tail = rf" \(1\.0 MB free on {re.escape(str(prefix / 'toy'))}, this version needs about 2\.6 MB\)$"
        assert re.search(tail, message), message
        assert _entries(prefix / "toy") == [".lock"]  # no version, no temp folder, the new trust taken back
        assert not (prefix / "toy" / "current").exists()


def test_a_full_disk_at_any_point_of_an_upgrade_keeps_the_old_version(make_payload: MakePayload, tmp_path: Path) -> None:
    """Fill the tmpfs to every level from 'nothing fits' to 'everything fits': each upgrade either
    succeeds or fails with one line, and the installed version keeps serving."""
    with _tmpfs(tmp_path / "small", "512k") as mnt:
        prefix = mnt / "opt"
        install(make_payload("1.0.0"), prefix, trust=UNSIGNED_OK, systemd=FakeSystemd(False))
        free = os.statvfs(mnt).f_bavail * os.statvfs(mnt).f_frsize
        outcomes: dict[str, int] = {}
        for keep in range(0, 40 * 4096, 4096):  # leave `keep` bytes free
            filler = mnt / "filler"
            with open(filler, "wb") as fh:
                with contextlib.suppress(OSError):
                    fh.write(bytes(max(0, free - keep)))
            message = ""
            try:
                result = install(make_payload("2.0.0"), prefix, systemd=FakeSystemd(False))
            except InstallError as exc:
                message = str(exc)
                assert "\n" not in message and len(message) < 400, message
                if message.endswith("toy 1.0.0 stays current"):
                    kind = "failed before the switch"
                    assert os.readlink(prefix / "toy" / "current") == "1.0.0"
                else:
                    assert message.startswith("toy 2.0.0 is installed and current, but "), message
                    assert message.endswith("; free some space and run install again")
                    kind = "failed after the switch"
            else:
                assert result.status in ("installed", "unchanged")  # unchanged: switched by an earlier try
                kind = "installed"
            outcomes[kind] = outcomes.get(kind, 0) + 1
            current = os.readlink(prefix / "toy" / "current")
            assert _verify(prefix / "toy" / current).returncode == 0
            assert not [p for p in (prefix / "toy").iterdir() if p.name.endswith(".tmp")]
            filler.unlink()
            if kind == "installed":
                break
        assert outcomes.get("failed before the switch", 0) >= 3 and outcomes.get("installed") == 1, outcomes


_LIMITED_INSTALL = textwrap.dedent(
    """
    import resource, signal, sys
    from pathlib import Path
    from mlpack_edge.errors import MlpackError
    from mlpack_edge.runtime._trust import TrustPolicy
    from mlpack_edge.runtime.install import Payload, install

    class NoSystemd:
        def running(self): return False
        def run(self, *a): pass

    launcher, internal, bundle, prefix = map(Path, sys.argv[1:5])
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # the write fails with EFBIG instead of killing us
    resource.setrlimit(resource.RLIMIT_FSIZE, (32 * 1024, 32 * 1024))
    try:
        install(Payload(launcher, internal, bundle), prefix, trust=TrustPolicy(allow_unsigned=True), systemd=NoSystemd())
    except MlpackError as exc:
        print(f"Error: {exc}", file=sys.stderr)
        sys.exit(1)
    """
)


def test_a_write_the_kernel_refuses_is_one_line_naming_the_file(
    make_payload: MakePayload, fake_runtime: Path, tmp_path: Path
) -> None:
    prefix = tmp_path / "opt"
    (fake_runtime / "libhuge.so").write_bytes(os.urandom(100 * 1024))  # over the 32 KiB file-size limit
    payload = make_payload("1.0.0", appended=True)
    args = [str(payload.launcher), str(payload.internal), str(payload.bundle), str(prefix)]
    proc = subprocess.run([sys.executable, "-c", _LIMITED_INSTALL, *args], capture_output=True, text=True)
    assert proc.returncode == 1, proc.stderr
    assert proc.stderr == f"Error: cannot install into {prefix / 'toy' / '1.0.0'}: writing _internal/libhuge.so failed: File too large\n"
    assert _entries(prefix / "toy") == [".lock"]


# ---------------------------------------------------------------------------- a tampered installed copy


@pytest.mark.parametrize(
    ("tamper", "damaged"),
    [
        (lambda v: (v / "bundle" / "model.onnx").write_bytes(b"evil"), ["bundle/model.onnx"]),
        (lambda v: (v / "_internal" / "libfake.so").write_bytes(b"\x7fELF patched"), ["_internal/libfake.so"]),
        (lambda v: (v / "bundle" / "manifest.json").unlink(), ["bundle/manifest.json"]),
        (lambda v: (v / "_internal" / "pkg" / "evil.py").write_text("import os\n"), ["_internal/pkg/evil.py"]),
        (lambda v: (v / "toy").write_text("#!/bin/sh\necho verified\n"), ["toy"]),
    ],
    ids=["model", "library", "manifest-deleted", "extra-module", "launcher"],
)
def test_reinstalling_over_a_tampered_copy_repairs_it_and_records_it(
    make_payload: MakePayload, tmp_path: Path, tamper: Callable[[Path], Any], damaged: list[str]
) -> None:
    prefix = tmp_path / "opt"
    install(make_payload("1.0.0"), prefix, trust=UNSIGNED_OK, systemd=FakeSystemd(False))
    version = prefix / "toy" / "1.0.0"
    tamper(version)
    systemd = FakeSystemd(True)
    result = install(make_payload("1.0.0", appended=True), prefix, systemd=systemd)
    assert result.status == "repaired"
    assert f"repaired 1 file that did not match this executable: {damaged[0]}" in result.notes
    assert os.readlink(prefix / "toy" / "current") == "1.0.0"
    assert _verify(version).returncode == 0
    assert not (version / "_internal" / "pkg" / "evil.py").exists()
    assert ("try-restart", "mlpack-toy.service") in systemd.calls  # the service picks the repaired files up
    event, detail = _events(prefix)[-1]
    assert event == "repaired"
    assert detail["version"] == "1.0.0" and detail["files"] == damaged and detail["count"] == 1
    again = install(make_payload("1.0.0"), prefix, systemd=FakeSystemd(False))
    assert again.status == "unchanged"  # byte-for-byte the payload now


def test_a_tampered_previous_version_is_repaired_before_switching_back(make_payload: MakePayload, tmp_path: Path) -> None:
    prefix = tmp_path / "opt"
    install(make_payload("1.0.0"), prefix, trust=UNSIGNED_OK, systemd=FakeSystemd(False))
    install(make_payload("2.0.0"), prefix, systemd=FakeSystemd(False))
    (prefix / "toy" / "1.0.0" / "bundle" / "model.onnx").write_bytes(b"evil")
    result = install(make_payload("1.0.0"), prefix, systemd=FakeSystemd(False))
    assert result.status == "switched" and result.previous == "2.0.0"
    assert "repaired 1 file that did not match this executable: bundle/model.onnx" in result.notes
    assert [e for e, _ in _events(prefix)][-2:] == ["repaired", "upgrade"]
    assert _verify(prefix / "toy" / "1.0.0").returncode == 0


def test_a_repair_that_fails_its_verify_changes_nothing(make_payload: MakePayload, tmp_path: Path) -> None:
    prefix = tmp_path / "opt"
    install(make_payload("1.0.0"), prefix, trust=UNSIGNED_OK, systemd=FakeSystemd(False))
    (prefix / "toy" / "1.0.0" / "bundle" / "golden.json").write_text("{}")  # an extra file
    with pytest.raises(InstallError) as err:
        install(make_payload("1.0.0"), prefix, verifier=_refuse, systemd=FakeSystemd(False))
    assert str(err.value) == "verify failed: refused by the test; toy 1.0.0 stays current"
    assert (prefix / "toy" / "1.0.0" / "bundle" / "golden.json").exists()  # the damaged copy is still what is there
    assert [e for e, _ in _events(prefix)][-1] == "verify_failed"


def _refuse(folder: Path, name: str) -> None:
    raise InstallError("verify failed: refused by the test")


def test_an_intact_copy_signed_by_another_trusted_key_is_not_damage(make_payload: MakePayload, tmp_path: Path) -> None:
    """Only bytes that no longer verify count as damage; the same version re-signed is judged by verify."""
    prefix = tmp_path / "opt"
    payload = make_payload("1.0.0")
    install(payload, prefix, trust=UNSIGNED_OK, systemd=FakeSystemd(False))
    result = install(payload, prefix, trust=TrustPolicy(allow_unsigned=True), systemd=FakeSystemd(False))
    assert result.status == "unchanged"


# ---------------------------------------------------------------------------- --bundle


def _archive(bundle: Path, target: Path, extra: dict[str, bytes] | None = None) -> Path:
    if target.suffix == ".zip":
        with zipfile.ZipFile(target, "w") as zf:
            for p in sorted(bundle.iterdir()):
                zf.write(p, f"{bundle.name}/{p.name}")
            for name, data in (extra or {}).items():
                zf.writestr(f"{bundle.name}/{name}", data)
    else:
        with tarfile.open(target, "w:gz") as tf:
            tf.add(bundle, arcname=bundle.name)
    return target


@pytest.mark.parametrize("suffix", [".tar.gz", ".zip"])
def test_with_bundle_installs_that_bundle_with_this_runtime(
    make_payload: MakePayload, make_bundle: Callable[..., Path], tmp_path: Path, suffix: str
) -> None:
    prefix = tmp_path / "opt"
    install(make_payload("1.0.0", appended=True), prefix, trust=UNSIGNED_OK, systemd=FakeSystemd(False))
    archive = _archive(make_bundle("2.0.0", b"model-two"), tmp_path / f"toy-2.0.0{suffix}")
    result = install(with_bundle(make_payload("1.0.0", appended=True), archive), prefix, systemd=FakeSystemd(False))
    assert (result.status, result.version, result.previous) == ("installed", "2.0.0", "1.0.0")
    installed = prefix / "toy" / "2.0.0"
    assert (installed / "bundle" / "model.onnx").read_bytes() == b"model-two"
    assert _entries(installed / "bundle") == ["manifest.json", "model.onnx"]
    assert (installed / "toy").read_bytes() == (prefix / "toy" / "1.0.0" / "toy").read_bytes()  # this runtime
    assert _verify(installed).returncode == 0


def test_with_bundle_is_verified_like_any_install(
    make_payload: MakePayload, make_bundle: Callable[..., Path], tmp_path: Path
) -> None:
    prefix = tmp_path / "opt"
    folder = make_bundle("2.0.0", b"model-two")
    padded = _archive(folder, tmp_path / "padded.zip", {"extra.bin": b"\0" * 1000})
    with pytest.raises(InstallError) as err:
        install(with_bundle(make_payload("1.0.0"), padded), prefix, trust=UNSIGNED_OK, systemd=FakeSystemd(False))
    assert str(err.value) == (
        f"not installed: {padded}: member '{folder.name}/extra.bin' is not listed in the manifest"
        " (a bundle holds manifest.json, manifest.sig and the files its manifest lists; refused)"
    )
    broken = _archive(make_bundle("3.0.0", b"broken"), tmp_path / "broken.tar.gz")
    with pytest.raises(InstallError, match=r"^verify failed: golden set: 3 of 3 labels differ"):
        install(with_bundle(make_payload("1.0.0"), broken), prefix, trust=UNSIGNED_OK, systemd=FakeSystemd(False))
    with pytest.raises(InstallError) as err:
        with_bundle(make_payload("1.0.0"), make_payload("2.0.0", appended=True).bundle)
    assert str(err.value).endswith(
        ": install takes a bundle folder or a .tar/.tar.gz/.tgz/.zip archive of one (to install another device"
        " executable, run its own install)"
    )
    assert not (prefix / "toy" / "2.0.0").exists() and not (prefix / "toy" / "3.0.0").exists()


# ---------------------------------------------------------------------------- a padded executable


def _padded_executable(path: Path, runtime: bytes, files: dict[str, bytes], extra_size: int) -> Path:
    """A device executable whose appended zip carries an unlisted member of ``extra_size`` zero bytes."""
    trailer = {"format": APPENDED_FORMAT, "runtime_size": len(runtime), "runtime_sha256": hashlib.sha256(runtime).hexdigest()}
    members = [*sorted(files.items()), ("extra.bin", Zeros(extra_size))]
    return write_zip(path, members, prefix=runtime, comment=json.dumps(trailer, sort_keys=True).encode())


def test_an_executable_padded_with_an_unlisted_member_is_refused_in_bounded_memory(
    make_bundle: Callable[..., Path], fake_runtime: Path, tmp_path: Path
) -> None:
    files = {p.name: p.read_bytes() for p in make_bundle("1.0.0").iterdir()}
    exe = _padded_executable(tmp_path / "toy-1.0.0-linux-x86_64", b"#!fake runtime\n" * 100, files, 400 * MB)
    expected = (
        f"{exe}: member 'extra.bin' is not listed in the manifest"
        " (a bundle holds manifest.json, manifest.sig and the files its manifest lists; refused)"
    )
    tracemalloc.start()
    try:
        with pytest.raises(IntegrityError) as err:
            open_appended(exe).verify()
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert str(err.value) == expected
    assert peak < 8 * MB
    meipass = tmp_path / f"_MEI{uuid.uuid4().hex[:6]}"
    meipass.mkdir()
    with pytest.raises(IntegrityError) as err:
        locate_bundle(exe, meipass)  # a downloaded executable starting up
    assert str(err.value) == expected
    assert not (meipass / "_mlpack_bundle").exists()
    with pytest.raises(InstallError) as err:
        install(Payload(fake_runtime / "_onedir_launcher", fake_runtime, exe), tmp_path / "opt", trust=UNSIGNED_OK,
                systemd=FakeSystemd(False))
    assert str(err.value) == f"not installed: {expected}"
    assert not (tmp_path / "opt").exists()
