"""Every refusal path of a signed bundle, through the Python API, the device CLI and install."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import CliRunner

from mlpack_edge.cli import main
from mlpack_edge.errors import IntegrityError, MlpackError
from mlpack_edge.runtime._trust import TrustPolicy
from mlpack_edge.runtime.bundle import Bundle
from mlpack_edge.runtime.install import Payload, install
from mlpack_edge.runtime.model import open_model

from .conftest import NAME, Bundles, Keys, NoSystemd, resign, trusting

pytestmark = pytest.mark.usefixtures("clean_env")


def _tamper(bundle: Path, name: str) -> None:
    """Change one byte of ``name``, keeping JSON files parseable (a forger's edit, not noise)."""
    path = bundle / name
    data = bytearray(path.read_bytes())
    if name == "manifest.json":
        at = data.index(f'"{NAME}"'.encode()) + 3  # "gov" -> "gow": one bit
    elif name == "manifest.sig":
        doc = json.loads(data)
        sig = bytearray(base64.b64decode(doc["signature"]))
        sig[10] ^= 0x01
        doc["signature"] = base64.b64encode(sig).decode()
        path.write_text(json.dumps(doc, sort_keys=True, indent=2) + "\n")
        return
    else:
        at = len(data) // 2
    data[at] ^= 0x01
    path.write_bytes(bytes(data))


def _expected(where: str, name: str) -> str:
    if name in ("manifest.json", "manifest.sig"):
        return f"{where}: manifest.sig does not verify (tampered manifest or signature)"
    return f"{where}: file {name} does not match its sha256 in the manifest (tampered or corrupt)"


def _every_file(bundle: Path) -> list[str]:
    names = sorted(p.name for p in bundle.iterdir())
    assert {"model.onnx", "manifest.json", "manifest.sig", "profile.json", "golden.json"} <= set(names)
    assert any(n.endswith((".html", ".md")) for n in names)  # the report / model card
    return names


def test_a_tampered_byte_in_each_file_is_refused_by_the_python_api(
    bundles: Bundles, keys: Keys, copy_bundle: Callable[[Path], Path]
) -> None:
    for trust in (trusting(keys.signer), None):  # enforced, and integrity-only (no trust configured)
        for name in _every_file(bundles.v1):
            bad = copy_bundle(bundles.v1)
            _tamper(bad, name)
            with pytest.raises(IntegrityError) as err:
                Bundle.open(bad, trust=trust)
            assert str(err.value) == _expected(str(bad), name), name
    bad = copy_bundle(bundles.v1)
    _tamper(bad, "model.onnx")
    with pytest.raises(IntegrityError, match="file model.onnx does not match"):
        open_model(bad)


def test_a_tampered_byte_in_each_file_is_refused_by_the_device_cli(
    bundles: Bundles, keys: Keys, copy_bundle: Callable[[Path], Path]
) -> None:
    runner = CliRunner()
    for name in _every_file(bundles.v1):
        bad = copy_bundle(bundles.v1)
        _tamper(bad, name)
        for command in (["verify"], ["info"], ["predict", "-"]):
            r = runner.invoke(
                main,
                ["device", "--bundle", str(bad), "--trust-key", str(keys.signer.public), *command],
                input="a,b,c\n1,2,3\n",
            )
            assert (r.exit_code, r.output) == (1, f"Error: {_expected(str(bad), name)}\n"), (name, command)


def test_a_tampered_byte_in_each_file_is_refused_by_install(
    bundles: Bundles,
    keys: Keys,
    copy_bundle: Callable[[Path], Path],
    make_payload: Callable[[Path], Payload],
    tmp_path: Path,
) -> None:
    for name in _every_file(bundles.v1):
        bad = copy_bundle(bundles.v1)
        _tamper(bad, name)
        with pytest.raises(MlpackError) as err:
            install(make_payload(bad), tmp_path / "opt", trust=trusting(keys.signer), systemd=NoSystemd())
        assert str(err.value) == f"not installed: {_expected(str(bad), name)}", name
    assert not (tmp_path / "opt").exists()  # refused before anything was created


def test_a_malformed_signature_file_is_refused_even_when_unsigned_is_allowed(
    bundles: Bundles, keys: Keys, copy_bundle: Callable[[Path], Path]
) -> None:
    allow_all = trusting(keys.signer, allow_unsigned=True)
    bad = copy_bundle(bundles.v1)
    (bad / "manifest.sig").write_bytes((bad / "manifest.sig").read_bytes()[:-30])
    with pytest.raises(IntegrityError) as err:
        Bundle.open(bad, trust=allow_all)
    assert str(err.value) == f"{bad}: manifest.sig is malformed (not JSON; tampered or corrupt)"
    doc = json.loads((bundles.v1 / "manifest.sig").read_bytes())
    for field, value, reason in (
        ("algorithm", "rsa", "manifest.sig is malformed (algorithm 'rsa', expected 'ed25519')"),
        ("signature", "AAAA", "manifest.sig is malformed (expected a 32-byte key and a 64-byte signature)"),
        ("key_id", "0" * 16, f"manifest.sig names key {'0' * 16} but carries key {keys.signer.key_id} (tampered)"),
    ):
        (bad / "manifest.sig").write_text(json.dumps({**doc, field: value}))
        with pytest.raises(IntegrityError) as err:
            Bundle.open(bad, trust=allow_all)
        assert str(err.value) == f"{bad}: {reason}"
    (bad / "manifest.sig").write_bytes((bundles.v1 / "manifest.sig").read_bytes())
    _tamper(bad, "manifest.sig")
    for trust in (allow_all, TrustPolicy.ad_hoc()):
        with pytest.raises(IntegrityError, match="manifest.sig does not verify"):
            Bundle.open(bad, trust=trust)


def test_wrong_key_and_unknown_key_are_refused(
    bundles: Bundles, keys: Keys, copy_bundle: Callable[[Path], Path]
) -> None:
    with pytest.raises(IntegrityError) as err:
        Bundle.open(bundles.v1, trust=trusting(keys.stranger))
    assert str(err.value) == (
        f"{bundles.v1}: signed by key {keys.signer.key_id} which is not trusted here (trusted: {keys.stranger.key_id})"
    )
    # Re-signed by the stranger: a valid signature by a key nobody trusts, even with unsigned allowed.
    resigned = copy_bundle(bundles.v1)
    resign(resigned, keys.stranger)
    for trust in (trusting(keys.signer), trusting(keys.signer, allow_unsigned=True), TrustPolicy(allow_unsigned=True)):
        with pytest.raises(IntegrityError) as err:
            Bundle.open(resigned, trust=trust)
        trusted = ", ".join(k.key_id for k in trust.keys) or "none"
        assert str(err.value) == (
            f"{resigned}: signed by key {keys.stranger.key_id} which is not trusted here (trusted: {trusted})"
        )
    # The signer's id with the stranger's key inside: caught by the key-id check, never trusted by id alone.
    doc = json.loads((resigned / "manifest.sig").read_bytes())
    doc["key_id"] = keys.signer.key_id
    (resigned / "manifest.sig").write_text(json.dumps(doc))
    with pytest.raises(IntegrityError, match="names key .* but carries key"):
        Bundle.open(resigned, trust=trusting(keys.signer))
    both = Bundle.open(bundles.v1, trust=trusting(keys.stranger, keys.signer))
    assert both.signature is not None and both.signature.trusted


def test_unsigned_is_refused_unless_allowed(bundles: Bundles, keys: Keys) -> None:
    with pytest.raises(IntegrityError) as err:
        Bundle.open(bundles.unsigned, trust=trusting(keys.signer))
    assert str(err.value) == (
        f"{bundles.unsigned}: unsigned bundle refused"
        " (sign it with mlpack build --sign-key KEY, or pass --allow-unsigned)"
    )
    ok = Bundle.open(bundles.unsigned, trust=trusting(keys.signer, allow_unsigned=True))
    assert ok.signature is not None and not ok.signature.signed
    r = CliRunner().invoke(
        main, ["device", "--bundle", str(bundles.unsigned), "--trust-key", str(keys.signer.public), "verify"]
    )
    assert (r.exit_code, r.output) == (1, f"Error: {err.value}\n")


def test_trusted_keys_from_the_environment(bundles: Bundles, keys: Keys) -> None:
    runner = CliRunner()
    env = {"MLPACK_TRUSTED_KEYS": f"{keys.stranger.public}:{keys.signer.public}"}
    r = runner.invoke(main, ["device", "--bundle", str(bundles.v1), "verify"], env=env)
    assert r.exit_code == 0, r.output
    assert r.output.rstrip().endswith(f"; signed by trusted key {keys.signer.key_id}")
    r = runner.invoke(
        main, ["device", "--bundle", str(bundles.v1), "verify"], env={"MLPACK_TRUSTED_KEYS": str(keys.stranger.public)}
    )
    assert r.exit_code == 1 and "which is not trusted here" in r.output
    r = runner.invoke(
        main, ["device", "--bundle", str(bundles.v1), "verify"], env={"MLPACK_TRUSTED_KEYS": str(keys.signer.private)}
    )
    assert (r.exit_code, r.output) == (
        1,
        f"Error: {keys.signer.private}: this is a private key; trust the public one (the .pub file)\n",
    )


def test_ad_hoc_runs_check_integrity_and_warn_about_unsigned(bundles: Bundles, keys: Keys) -> None:
    runner = CliRunner()
    r = runner.invoke(main, ["device", "--bundle", str(bundles.v1), "verify"])
    assert r.exit_code == 0 and r.stderr == ""
    assert r.stdout.rstrip().endswith(
        f"; signed by key {keys.signer.key_id} (integrity checked; no trusted keys configured)"
    )
    r = runner.invoke(main, ["device", "--bundle", str(bundles.unsigned), "verify"])
    assert r.exit_code == 0, r.output
    assert r.stderr == (
        f"warning: {bundles.unsigned} is unsigned and no trust is configured; running it anyway (enforce with"
        " --trust-key KEY.pub or $MLPACK_TRUSTED_KEYS; installed models always enforce)\n"
    )
    r = runner.invoke(main, ["device", "--bundle", str(bundles.unsigned), "--allow-unsigned", "verify"])
    assert (r.exit_code, r.stderr) == (0, "")
