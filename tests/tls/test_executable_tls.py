"""The real device executable over TLS: install against an HTTPS collector, trust, mutual TLS,
and the frozen OpenSSL finding CA roots in a Debian and in a RHEL file-system layout (chroot)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from mlpack_edge.builder.executable import executable_contents
from mlpack_edge.collector import admin, open_storage
from tests.collector.process import Collector

from .conftest import REPO, Pki

pytestmark = pytest.mark.slow

NAME = "breast-cancer"
SPEC = REPO / "examples" / "breast_cancer" / "mlpack.toml"
DEBIAN = "etc/ssl/certs/ca-certificates.crt"
RHEL = "etc/pki/tls/certs/ca-bundle.crt"


@pytest.fixture(scope="module")
def exe(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The breast-cancer example's device executable (built with this checkout, session runtime cache)."""
    from mlpack_edge.builder import build

    result = build(SPEC, tmp_path_factory.mktemp("tls-exe") / "dist")
    assert result.executable is not None
    return Path(result.executable)


@pytest.fixture(scope="module")
def rows(tmp_path_factory: pytest.TempPathFactory) -> Path:
    lines = (REPO / "examples" / "breast_cancer" / "breast_cancer.csv").read_text().splitlines()[:6]
    path = tmp_path_factory.mktemp("rows") / "rows.csv"
    path.write_text("\n".join(",".join(line.split(",")[:30]) for line in lines) + "\n")
    return path


def run(*cmd: object, root: Path | None = None) -> subprocess.CompletedProcess[str]:
    """Run a command as a device would: no MLPACK_*/SSL_CERT_* settings (in ``root`` via chroot if given)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLPACK_", "SSL_CERT_"))}
    args = [str(c) for c in cmd]
    if root is not None:
        args = [shutil.which("chroot") or "/usr/sbin/chroot", str(root), *args]
        env = {"PATH": "/usr/bin:/bin", "HOME": "/"}
    return subprocess.run(args, capture_output=True, text=True, timeout=300, env=env)


def stored(c: Collector, device: str) -> int:
    s = open_storage(c.db_url)
    try:
        return s.window_count(device)
    finally:
        s.close()


def pending_line(proc: subprocess.CompletedProcess[str]) -> str:
    return proc.stderr.strip().splitlines()[-1]


def test_the_freeze_carries_the_stdlib_ssl_and_not_cryptography(exe: Path) -> None:
    names = executable_contents(exe)
    assert "ssl.pyc" in names and "mlpack_edge/monitor_agent/tls.pyc" in names
    assert any(re.search(r"lib-dynload/_ssl\.", n) for n in names)
    assert any(n.startswith("libssl.so") for n in names) and any(n.startswith("libcrypto.so") for n in names)
    assert not [n for n in names if n.startswith("cryptography")]


def test_installed_executable_trusts_the_fleet_ca_once_given_and_delivers_everything(
    exe: Path, rows: Path, pki: Pki, https_collector: Callable[..., Collector], tmp_path: Path
) -> None:
    c = https_collector(pki.server)
    token = tmp_path / "press-07.token"
    token.write_text(admin.add_device(c.db_url, "press-07") + "\n")
    prefix = tmp_path / "opt"
    agent = ("--collector-url", c.url, "--device-id", "press-07", "--token-file", token)
    proc = run(exe, "install", "--prefix", prefix, "--allow-unsigned", *agent)
    assert proc.returncode == 0, proc.stderr
    m = prefix / NAME / "current" / NAME
    for _ in range(2):
        assert run(m, "predict", rows).returncode == 0
    proc = run(m, "agent", "sync")  # this machine's system roots only: they do not hold the fleet CA
    assert proc.returncode == 6, proc.stdout + proc.stderr
    host = c.url.removeprefix("https://")
    assert pending_line(proc).startswith(
        "TLS failure talking to the collector, 2 windows kept "
        f"({host}: server certificate is not signed by a trusted CA: give the fleet's CA with --ca-file ("
    )
    assert stored(c, "press-07") == 0

    proc = run(exe, "install", "--prefix", prefix, *agent, "--ca-file", pki.ca)  # same version: reconfigure only
    assert proc.returncode == 0, proc.stderr
    state = prefix / NAME / "state"
    assert (state / "tls" / "ca.pem").read_bytes() == pki.ca.read_bytes()
    proc = run(m, "agent", "sync")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert re.fullmatch(r"delivered 2 windows and \d+ audit events in 1 batches\n", proc.stdout), proc.stdout
    assert stored(c, "press-07") == 2
    assert run(m, "agent", "sync").returncode == 3  # nothing left: nothing delivered twice
    assert stored(c, "press-07") == 2


def test_installed_executable_with_a_client_certificate(
    exe: Path, rows: Path, pki: Pki, https_collector: Callable[..., Collector], tmp_path: Path
) -> None:
    c = https_collector(pki.server, "--tls-client-ca", str(pki.ca), "--device-auth", "cert")
    admin.add_device(c.db_url, "press-08", [pki.device_a.cert])
    prefix = tmp_path / "opt"
    proc = run(exe, "install", "--prefix", prefix, "--allow-unsigned", "--collector-url", c.url,
               "--device-id", "press-08", "--ca-file", pki.ca,
               "--client-cert", pki.device_a.cert, "--client-key", pki.device_a.key)  # no token: the certificate is it
    assert proc.returncode == 0, proc.stderr
    key = prefix / NAME / "state" / "tls" / "client.key"
    assert key.stat().st_mode & 0o777 == 0o600
    m = prefix / NAME / "current" / NAME
    assert run(m, "predict", rows).returncode == 0
    proc = run(m, "agent", "sync", "--client-cert", pki.stranger.cert, "--client-key", pki.stranger.key)
    assert proc.returncode == 6, proc.stdout + proc.stderr  # another CA's certificate: refused in the handshake
    assert "client certificate not accepted" in pending_line(proc)
    proc = run(m, "agent", "sync", "--client-cert", pki.device_b.cert, "--client-key", pki.device_b.key)
    assert proc.returncode == 5, proc.stdout + proc.stderr  # the fleet CA's, but no device has it
    assert "not registered to any device" in pending_line(proc)
    assert stored(c, "press-08") == 0
    proc = run(m, "agent", "sync")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert stored(c, "press-08") == 1


def _copy_system_libraries(version_dir: Path, root: Path) -> None:
    """What the installed executable loads from the system (glibc, zlib for the launcher), copied into ``root``."""
    internal = version_dir / "_internal"
    bundled = {p.name for p in internal.iterdir()}
    needed: set[str] = set()
    for path in [version_dir / NAME, *internal.rglob("*.so*")]:
        out = subprocess.run(["ldd", str(path)], capture_output=True, text=True).stdout
        for name, where in re.findall(r"^\s*(\S+) => (/\S+)", out, re.MULTILINE):
            if path == version_dir / NAME or name not in bundled:
                needed.add(where)
        needed.update(re.findall(r"^\s*(/\S*ld-linux\S*)", out, re.MULTILINE))
    for lib in needed:
        target = root / lib.lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(lib, target)  # with its mode: the loader must stay executable


@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("chroot", path="/usr/sbin:/usr/bin:/sbin:/bin") is None,
                    reason="chroot needs root")
def test_frozen_executable_finds_ca_roots_in_debian_and_rhel_layouts(
    exe: Path, rows: Path, pki: Pki, https_collector: Callable[..., Collector], tmp_path: Path
) -> None:
    """A root holding only the executable, glibc and one CA bundle where a distribution keeps it:
    no /usr/lib/ssl (where the frozen OpenSSL was told to look), no SSL_CERT_* settings."""
    c = https_collector(pki.server)
    root = tmp_path / "root"
    (root / "tmp").mkdir(parents=True)
    token = root / "device.token"
    token.write_text(admin.add_device(c.db_url, "rooted") + "\n")
    proc = run(exe, "install", "--prefix", root / "opt", "--allow-unsigned", "--collector-url", c.url,
               "--device-id", "rooted", "--token-file", token)
    assert proc.returncode == 0, proc.stderr
    _copy_system_libraries((root / "opt" / NAME / "current").resolve(), root)
    shutil.copyfile(rows, root / "rows.csv")
    inside = f"/opt/{NAME}/current/{NAME}"
    assert not (root / "usr" / "lib" / "ssl").exists() and not (root / "etc").exists()

    assert run(inside, "predict", "/rows.csv", root=root).returncode == 0
    proc = run(inside, "agent", "sync", root=root)
    assert (proc.returncode, proc.stderr) == (1, (
        "Error: no CA certificates to verify the collector with: tried /etc/ssl/certs/ca-certificates.crt (missing), "
        "/etc/pki/tls/certs/ca-bundle.crt (missing), /etc/pki/ca-trust/extracted/pem/tls-ca-bundle.pem (missing), "
        "/etc/ssl/ca-bundle.pem (missing), /etc/ssl/cert.pem (missing), /etc/pki/tls/cacert.pem (missing), "
        "/etc/ssl/certs/ (missing), /etc/pki/tls/certs/ (missing); install the system's CA certificates, "
        "set SSL_CERT_FILE, or give the fleet's CA with --ca-file\n"
    ))
    for delivered, layout in enumerate((DEBIAN, RHEL), start=1):
        shutil.rmtree(root / "etc", ignore_errors=True)
        (root / layout).parent.mkdir(parents=True)
        shutil.copyfile(pki.ca, root / layout)  # the fleet CA stands in for the distribution's bundle
        if delivered > 1:  # a new window, so the sync has something to send
            assert run(inside, "predict", "/rows.csv", root=root).returncode == 0
        proc = run(inside, "agent", "sync", root=root)
        assert proc.returncode == 0, (layout, proc.stdout + proc.stderr)
        assert stored(c, "rooted") == delivered, layout
