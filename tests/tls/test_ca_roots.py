"""Finding CA roots on any distribution, and the device's TLS files: one-line errors naming the file."""

from __future__ import annotations

import shutil
import ssl
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from mlpack_edge.errors import AgentError
from mlpack_edge.monitor_agent.config import AgentConfig, load_config, write_config
from mlpack_edge.monitor_agent.tls import SYSTEM_CA_DIRS, SYSTEM_CA_FILES, client_context, find_ca_roots

from .conftest import Pki

DEBIAN = "/etc/ssl/certs/ca-certificates.crt"
RHEL = "/etc/pki/tls/certs/ca-bundle.crt"
RHEL_EXTRACTED = "/etc/pki/ca-trust/extracted/pem/tls-ca-bundle.pem"
ALPINE = "/etc/ssl/cert.pem"
SUSE = "/etc/ssl/ca-bundle.pem"


def rooted(root: Path, paths: tuple[str, ...]) -> list[str]:
    return [str(root) + p for p in paths]


def fake_root(tmp_path: Path, ca: Path, *layout: str) -> Path:
    root = tmp_path / "root"
    for path in layout:
        target = root / path.lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(ca, target)
    return root


def test_every_distribution_layout_is_on_the_list() -> None:
    assert {DEBIAN, RHEL, RHEL_EXTRACTED, ALPINE, SUSE} <= set(SYSTEM_CA_FILES)
    assert SYSTEM_CA_FILES[0] == DEBIAN
    assert "/etc/ssl/certs" in SYSTEM_CA_DIRS


@pytest.mark.parametrize("layout", [DEBIAN, RHEL, RHEL_EXTRACTED, ALPINE, SUSE])
def test_each_layout_is_found_and_trusts_its_bundle(tmp_path: Path, pki: Pki, layout: str) -> None:
    root = fake_root(tmp_path, pki.ca, layout)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    found = find_ca_roots({}, rooted(root, SYSTEM_CA_FILES), rooted(root, SYSTEM_CA_DIRS), ctx)
    assert found == str(root) + layout
    assert [c["subject"] for c in ctx.get_ca_certs()] == [((("organizationName", "mlpack fleet"),),
                                                          (("commonName", "mlpack fleet CA"),))]


def test_a_hashed_certificate_folder_is_the_last_resort(tmp_path: Path, pki: Pki) -> None:
    certs = tmp_path / "root" / "etc" / "ssl" / "certs"
    certs.mkdir(parents=True)
    (certs / "README").write_text("not a certificate")
    root = tmp_path / "root"
    with pytest.raises(AgentError):
        find_ca_roots({}, rooted(root, SYSTEM_CA_FILES), rooted(root, SYSTEM_CA_DIRS))
    shutil.copyfile(pki.ca, certs / "0a1b2c3d.0")
    assert find_ca_roots({}, rooted(root, SYSTEM_CA_FILES), rooted(root, SYSTEM_CA_DIRS)) == str(certs)


def test_none_found_names_every_path_tried(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "etc" / "ssl").mkdir(parents=True)
    (root / "etc" / "ssl" / "cert.pem").write_text("")  # present but empty
    with pytest.raises(AgentError) as err:
        find_ca_roots({}, rooted(root, SYSTEM_CA_FILES), rooted(root, SYSTEM_CA_DIRS))
    r = str(root)
    assert str(err.value) == (
        f"no CA certificates to verify the collector with: tried {r}/etc/ssl/certs/ca-certificates.crt (missing), "
        f"{r}/etc/pki/tls/certs/ca-bundle.crt (missing), {r}/etc/pki/ca-trust/extracted/pem/tls-ca-bundle.pem (missing), "
        f"{r}/etc/ssl/ca-bundle.pem (missing), {r}/etc/ssl/cert.pem (no certificates in it), "
        f"{r}/etc/pki/tls/cacert.pem (missing), {r}/etc/ssl/certs/ (missing), {r}/etc/pki/tls/certs/ (missing); "
        "install the system's CA certificates, set SSL_CERT_FILE, or give the fleet's CA with --ca-file"
    )


def test_ssl_cert_file_and_dir_replace_the_list(tmp_path: Path, pki: Pki) -> None:
    root = fake_root(tmp_path, pki.ca, DEBIAN)
    files, dirs = rooted(root, SYSTEM_CA_FILES), rooted(root, SYSTEM_CA_DIRS)
    assert find_ca_roots({"SSL_CERT_FILE": str(pki.ca)}, files, dirs) == str(pki.ca)
    with pytest.raises(AgentError, match=r"^no CA certificates to verify the collector with: tried /nowhere.pem \(missing\); "):
        find_ca_roots({"SSL_CERT_FILE": "/nowhere.pem"}, files, dirs)
    hashed = tmp_path / "hashed"
    hashed.mkdir()
    shutil.copyfile(pki.ca, hashed / "12345678.0")
    assert find_ca_roots({"SSL_CERT_DIR": str(hashed)}, files, dirs) == str(hashed)


def test_this_machine_has_roots_where_the_list_says() -> None:
    """The real search on this machine (a Debian layout), with no SSL_CERT_* help."""
    assert find_ca_roots({}) in SYSTEM_CA_FILES + SYSTEM_CA_DIRS


def test_the_compiled_in_default_paths_are_never_used(tmp_path: Path, pki: Pki) -> None:
    """An empty search finds nothing even though this machine's OpenSSL has default paths that work."""
    assert ssl.get_default_verify_paths().cafile or ssl.get_default_verify_paths().capath
    with pytest.raises(AgentError):
        client_context(environ={}, files=[str(tmp_path / "none.pem")], dirs=[])


# ------------------------------------------------------------------ the device's TLS files


def test_client_files_errors_are_one_line(tmp_path: Path, pki: Pki) -> None:
    key = tmp_path / "device.key"
    shutil.copyfile(pki.device_a.key, key)
    key.chmod(0o600)
    cert = str(pki.device_a.cert)
    ctx = client_context(str(pki.ca), cert, str(key))
    assert ctx.verify_mode == ssl.CERT_REQUIRED and ctx.check_hostname
    cases = [
        ((str(tmp_path / "nope.pem"), None, None), f"ca_file {tmp_path / 'nope.pem'}: cannot read (No such file or directory)"),
        ((str(key), None, None), f"ca_file {key}: no PEM certificate in it"),
        ((str(pki.ca), cert, None), "client_cert and client_key go together: give both (PEM certificate, unencrypted PEM key)"),
        ((str(pki.ca), cert, str(tmp_path / "gone.key")), f"client_key {tmp_path / 'gone.key'}: cannot read (No such file or directory)"),
    ]
    for args, message in cases:
        with pytest.raises(AgentError) as err:
            client_context(*args)
        assert str(err.value) == message
    key.chmod(0o644)
    with pytest.raises(AgentError) as err:
        client_context(str(pki.ca), cert, str(key))
    assert str(err.value) == f"client_key {key}: other users can access this private key (mode 0644); chmod 600 it"
    other = tmp_path / "other.key"
    shutil.copyfile(pki.device_b.key, other)
    other.chmod(0o600)
    with pytest.raises(AgentError) as err:
        client_context(str(pki.ca), cert, str(other))
    assert str(err.value) == f"client_key {other}: does not belong to the certificate in {cert}"


def test_an_unreadable_key_is_named(tmp_path: Path, pki: Pki) -> None:
    key = tmp_path / "device.key"
    key.mkdir(mode=0o700)  # unreadable as a file even for root (a mode-000 file is not: root reads anything)
    with pytest.raises(AgentError) as err:
        client_context(str(pki.ca), str(pki.device_a.cert), str(key))
    assert str(err.value) == f"client_key {key}: cannot read (Is a directory)"


def test_an_encrypted_key_is_refused_without_prompting(tmp_path: Path, pki: Pki) -> None:
    from cryptography.hazmat.primitives import serialization

    plain = serialization.load_pem_private_key(pki.device_a.key.read_bytes(), password=None)
    key = tmp_path / "enc.key"
    key.write_bytes(plain.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                        serialization.BestAvailableEncryption(b"pass phrase")))
    key.chmod(0o600)
    # OpenSSL's default would prompt on the terminal for the pass phrase (a service would hang)
    with pytest.raises(AgentError) as err:
        client_context(str(pki.ca), str(pki.device_a.cert), str(key))
    assert str(err.value) == (
        f"client_key {key}: the key is encrypted; the agent needs an unencrypted key (protected by mode 0600)"
    )


def test_write_config_copies_tls_files_into_the_state_folder(tmp_path: Path, pki: Pki) -> None:
    state = tmp_path / "state"
    cfg = AgentConfig("https://collector.example", "press-07", "tok", ca_file=str(pki.ca),
                      client_cert=str(pki.device_a.cert), client_key=str(pki.device_a.key))
    write_config(state, cfg)
    loaded = load_config(state, environ={})
    assert (loaded.ca_file, loaded.client_cert, loaded.client_key) == (
        str(state / "tls" / "ca.pem"), str(state / "tls" / "client.pem"), str(state / "tls" / "client.key"),
    )
    assert stat.S_IMODE((state / "tls" / "client.key").stat().st_mode) == 0o600
    assert (state / "tls" / "client.key").read_bytes() == pki.device_a.key.read_bytes()
    client_context(loaded.ca_file, loaded.client_cert, loaded.client_key)  # the copies work as they are
    write_config(state, loaded)  # writing the copies again leaves them in place
    assert load_config(state, environ={}) == loaded


def test_install_checks_tls_settings_before_installing_anything(tmp_path: Path, pki: Pki) -> None:
    import click

    from mlpack_edge._cli import MlpackGroup

    @click.group(cls=MlpackGroup, lazy={"install": ("mlpack_edge.runtime.install_cli:install", "install")})
    def device() -> None:
        pass

    prefix = tmp_path / "opt"
    cases = [
        (["--collector-url", "http://collector.example"],
         "Error: agent settings: collector_url http://collector.example: plain HTTP to another machine sends the device"
         " token and telemetry unencrypted; use https:// or allow it explicitly with --allow-insecure-http"),
        (["--collector-url", "https://c.example", "--ca-file", str(tmp_path / "ca.pem")],
         f"Error: agent settings: --ca-file {tmp_path / 'ca.pem'}: cannot read (No such file or directory)"),
        (["--collector-url", "https://c.example", "--client-cert", str(pki.device_a.cert)],
         "Error: agent settings: --client-cert and --client-key go together: give both (PEM certificate, unencrypted PEM key)"),
        (["--collector-url", "https://c.example", "--client-cert", str(pki.device_a.cert), "--client-key", str(pki.device_b.key)],
         f"Error: agent settings: --client-key {pki.device_b.key}: does not belong to the certificate in {pki.device_a.cert}"),
        (["--collector-url", "http://c.example", "--allow-insecure-http", "--client-cert", str(pki.device_a.cert),
          "--client-key", str(pki.device_a.key)],
         f"Error: agent settings: client_cert {pki.device_a.cert}: a client certificate needs an https:// collector_url"),
    ]
    for args, message in cases:
        res = CliRunner().invoke(device, ["install", "--prefix", str(prefix), *args])
        assert (res.exit_code, res.output) == (1, message + "\n"), args
    assert not prefix.exists()
    # Valid settings pass the check and reach the next one (this is plain Python, not an executable).
    res = CliRunner().invoke(device, ["install", "--prefix", str(prefix), "--collector-url", "http://c.example",
                                      "--allow-insecure-http", "--ca-file", str(pki.ca)])
    assert res.output.startswith("Error: install runs from a device executable"), res.output


def test_the_device_side_never_imports_cryptography(pki: Pki) -> None:
    """The TLS code the device runs is the stdlib's ssl: cryptography stays out of the executable."""
    code = (
        "import sys\n"
        "sys.modules['cryptography'] = None\n"
        "from mlpack_edge.monitor_agent import cli, tls, transport, uploader\n"
        "from mlpack_edge.runtime import install_cli\n"
        "tls.client_context(sys.argv[1], sys.argv[2], sys.argv[3])\n"
    )
    proc = subprocess.run([sys.executable, "-c", code, str(pki.ca), str(pki.device_a.cert), str(pki.device_a.key)],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
