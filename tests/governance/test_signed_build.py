"""``mlpack build --sign-key``: manifest.sig as specified, deterministic, no private key in the bundle."""

from __future__ import annotations

import base64
import hashlib
import json
from pathlib import Path

from click.testing import CliRunner
from cryptography.hazmat.primitives import serialization

from mlpack_edge.cli import main
from mlpack_edge.runtime.bundle import Bundle
from mlpack_edge.runtime.manifest import read_manifest
from tests._data import binary_rows, spec_text

from .conftest import NAME, Bundles, Keys


def _spec(root: Path, version: str = "2.0.0") -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "data.csv").write_text(binary_rows(n=120, seed=4), encoding="utf-8")
    (root / "mlpack.toml").write_text(spec_text(name=NAME, version=version), encoding="utf-8")
    return root / "mlpack.toml"


def _private_secrets(keys: Keys) -> list[bytes]:
    """Every form the private key could leak in: PEM file, raw 32-byte seed, its base64 and hex."""
    pem = keys.signer.private.read_bytes()
    key = serialization.load_pem_private_key(pem, password=None)
    seed = key.private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption())
    der = key.private_bytes(serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    return [pem, seed, der, base64.b64encode(seed), seed.hex().encode(), pem.splitlines()[1]]


def test_signed_bundle_carries_the_specified_signature(bundles: Bundles, keys: Keys) -> None:
    sig_bytes = (bundles.v1 / "manifest.sig").read_bytes()
    doc = json.loads(sig_bytes)
    assert sorted(doc) == ["algorithm", "format", "key_id", "public_key", "signature"]
    assert (doc["format"], doc["algorithm"], doc["key_id"]) == ("mlpack.signature/1", "ed25519", keys.signer.key_id)
    assert sig_bytes == (json.dumps(doc, sort_keys=True, indent=2) + "\n").encode()  # canonical JSON
    raw_public = base64.b64decode(doc["public_key"])
    assert hashlib.sha256(raw_public).hexdigest()[:16] == keys.signer.key_id
    public = serialization.load_pem_public_key(keys.signer.public.read_bytes())
    public.verify(base64.b64decode(doc["signature"]), (bundles.v1 / "manifest.json").read_bytes())  # raises if bad
    manifest = read_manifest(bundles.v1)
    assert "manifest.sig" not in manifest.files  # it cannot hash itself; the content hash is unchanged by it
    bundle = Bundle.open(bundles.v1)
    assert bundle.signature is not None and bundle.signature.key_id == keys.signer.key_id


def test_build_cli_signs_deterministically_and_says_so(tmp_path: Path, keys: Keys, bundles: Bundles) -> None:
    runner = CliRunner()
    spec = _spec(tmp_path / "spec")
    outs = []
    for i, env in enumerate(({}, {"MLPACK_SIGN_KEY": str(keys.signer.private)})):
        args = ["build", str(spec), "-o", str(tmp_path / f"out{i}"), "--no-executable"]
        if not env:
            args += ["--sign-key", str(keys.signer.private)]
        r = runner.invoke(main, args, env=env)
        assert r.exit_code == 0, r.output
        assert f"signed with key {keys.signer.key_id} (manifest.sig)\n" in r.output
        outs.append(tmp_path / f"out{i}" / f"{NAME}-2.0.0")
    assert [(o / "manifest.sig").read_bytes() for o in outs][0] == (outs[1] / "manifest.sig").read_bytes()
    assert sorted(p.name for p in outs[0].iterdir()) == sorted(p.name for p in bundles.v1.iterdir())
    r = runner.invoke(main, ["build", str(spec), "-o", str(tmp_path / "plain"), "--no-executable", "--json"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["signed_by"] is None
    r = runner.invoke(main, ["build", str(spec), "-o", str(tmp_path / "plain2"), "--no-executable"])
    assert "unsigned: devices refuse it unless allowed (sign with --sign-key KEY)\n" in r.output
    assert not (tmp_path / "plain2" / f"{NAME}-2.0.0" / "manifest.sig").exists()


def test_the_private_key_never_enters_the_bundle(bundles: Bundles, keys: Keys) -> None:
    secrets = _private_secrets(keys)
    files = sorted(bundles.v1.iterdir())
    assert {"golden.json", "manifest.json", "manifest.sig", "model.onnx", "profile.json"} <= {p.name for p in files}
    for path in files:
        data = path.read_bytes()
        for secret in secrets:
            assert secret not in data, (path.name, secret[:8])


def test_a_bad_signing_key_fails_before_training_and_writes_nothing(tmp_path: Path, keys: Keys) -> None:
    spec = _spec(tmp_path / "spec")
    runner = CliRunner()
    args = ["build", str(spec), "-o", str(tmp_path / "out"), "--json", "--sign-key", str(keys.signer.public)]
    r = runner.invoke(main, args)
    assert (r.exit_code, r.stderr) == (
        1,
        f"Error: {keys.signer.public}: this is a public key; --sign-key takes the private key (.key file)\n",
    )
    assert [s["name"] for s in json.loads(r.stdout)["stages"]] == ["spec"]  # failed before loading data or training
    r = runner.invoke(main, ["build", str(spec), "-o", str(tmp_path / "out"), "--sign-key", str(tmp_path / "nope.key")])
    assert (r.exit_code, r.output.splitlines()[-1]) == (1, f"Error: {tmp_path / 'nope.key'}: no such key file")
    assert not (tmp_path / "out").exists()
