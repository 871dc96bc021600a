"""``mlpack keys``: key files with safe permissions, never overwritten, loaded strictly."""

from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path

import pytest
from click.testing import CliRunner
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from mlpack_edge.builder.signing import describe_key, generate_key, load_signing_key
from mlpack_edge.cli import main
from mlpack_edge.errors import SigningKeyError
from mlpack_edge.runtime._trust import load_public_key, parse_public_key


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_generate_writes_a_private_key_only_its_owner_reads(tmp_path: Path) -> None:
    old = os.umask(0)  # even a permissive umask must not leak the private key
    try:
        pair = generate_key(tmp_path / "k", "release")
    finally:
        os.umask(old)
    assert (pair.private, pair.public) == (tmp_path / "k" / "release.key", tmp_path / "k" / "release.pub")
    assert (_mode(pair.private), _mode(pair.public)) == (0o600, 0o644)
    key = serialization.load_pem_private_key(pair.private.read_bytes(), password=None)
    assert isinstance(key, Ed25519PrivateKey)
    assert pair.private.read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----\n")  # PKCS8
    raw = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    assert pair.key_id == hashlib.sha256(raw).hexdigest()[:16]
    # the public file is what cryptography (OpenSSL) writes, and what the device parses
    assert pair.public.read_bytes() == key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    assert parse_public_key(pair.public.read_bytes(), "x") == raw
    assert sorted(p.name for p in (tmp_path / "k").iterdir()) == ["release.key", "release.pub"]  # no temp files


def test_generate_refuses_to_overwrite_either_file(tmp_path: Path) -> None:
    first = generate_key(tmp_path, "k")
    before = first.private.read_bytes()
    with pytest.raises(SigningKeyError) as err:
        generate_key(tmp_path, "k")
    assert (
        str(err.value)
        == f"{first.private} exists; refusing to overwrite a signing key (choose another --name or --out)"
    )
    first.private.unlink()  # a lone .pub is somebody's trusted key too
    with pytest.raises(SigningKeyError, match=r"k\.pub exists; refusing to overwrite"):
        generate_key(tmp_path, "k")
    assert not first.private.exists() and before


def test_keys_cli_generate_and_show(tmp_path: Path) -> None:
    runner = CliRunner()
    r = runner.invoke(main, ["keys", "generate", "--out", str(tmp_path), "--name", "ci"])
    assert r.exit_code == 0, r.output
    kid = describe_key(tmp_path / "ci.pub").key_id
    assert r.output.splitlines() == [
        f"key id {kid}",
        f"private key {tmp_path / 'ci.key'} (mode 0600; keep it secret: mlpack build --sign-key {tmp_path / 'ci.key'})",
        f"public key  {tmp_path / 'ci.pub'} (give it to devices: install --trust-key ci.pub)",
    ]
    raw = load_public_key(tmp_path / "ci.pub").raw
    for name, kind in (("ci.pub", "public"), ("ci.key", "private")):
        r = runner.invoke(main, ["keys", "show", str(tmp_path / name)])
        assert r.exit_code == 0, r.output
        assert r.output.splitlines() == [
            f"key id {kid}",
            f"{kind} key {tmp_path / name}",
            f"fingerprint sha256:{hashlib.sha256(raw).hexdigest()}",
        ]
    r = runner.invoke(main, ["keys", "generate", "--out", str(tmp_path), "--name", "ci"])
    assert (r.exit_code, r.output) == (
        1,
        f"Error: {tmp_path / 'ci.key'} exists; refusing to overwrite a signing key (choose another --name or --out)\n",
    )
    r = runner.invoke(main, ["keys", "generate", "--out", str(tmp_path), "--name", "../evil"])
    assert (r.exit_code, r.output) == (
        1,
        "Error: --name '../evil': use letters, digits, '.', '_' or '-' (a file name, no path)\n",
    )


def test_a_private_key_others_can_read_is_refused(tmp_path: Path) -> None:
    pair = generate_key(tmp_path, "k")
    for mode in (0o640, 0o604, 0o644):
        pair.private.chmod(mode)
        with pytest.raises(SigningKeyError) as err:
            load_signing_key(pair.private)
        assert str(err.value) == (
            f"{pair.private}: private key is accessible by group or others (mode {mode:04o});"
            f" run chmod 600 {pair.private}"
        )
    pair.private.chmod(0o400)
    assert load_signing_key(pair.private).key_id == pair.key_id


def test_bad_key_files_are_one_line_errors(tmp_path: Path) -> None:
    from cryptography.hazmat.primitives.asymmetric import ec

    pair = generate_key(tmp_path, "k")
    no = serialization.NoEncryption()
    files = {
        "garbage.key": b"not a key\n",
        "ecdsa.key": ec.generate_private_key(ec.SECP256R1()).private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, no
        ),
        "encrypted.key": Ed25519PrivateKey.generate().private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.BestAvailableEncryption(b"pw")
        ),
    }
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
        (tmp_path / name).chmod(0o600)
    expected = {
        "missing.key": "no such key file",
        "garbage.key": "not a PEM private key (mlpack keys generate makes one)",
        "ecdsa.key": "not an Ed25519 private key (mlpack keys generate makes one)",
        "encrypted.key": "the private key is encrypted; mlpack needs an unencrypted one (mode 0600)",
    }
    for name, message in expected.items():
        with pytest.raises(SigningKeyError) as err:
            load_signing_key(tmp_path / name)
        assert str(err.value) == f"{tmp_path / name}: {message}"
    with pytest.raises(SigningKeyError) as err:
        load_signing_key(pair.public)
    assert str(err.value) == f"{pair.public}: this is a public key; --sign-key takes the private key (.key file)"
    with pytest.raises(SigningKeyError) as err:
        load_public_key(pair.private)
    assert str(err.value) == f"{pair.private}: this is a private key; trust the public one (the .pub file)"
    (tmp_path / "cut.pub").write_bytes(pair.public.read_bytes()[:60])
    with pytest.raises(SigningKeyError, match="not a PEM public key"):
        load_public_key(tmp_path / "cut.pub")
