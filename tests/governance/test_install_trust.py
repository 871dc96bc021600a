"""Trust on an installed device: required at install, written to <prefix>/<name>/trust, enforced at start."""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import CliRunner

from mlpack_edge.cli import main
from mlpack_edge.errors import InstallError, IntegrityError, SigningKeyError
from mlpack_edge.runtime._trust import read_trust_dir
from mlpack_edge.runtime.install import Payload, install, installed_versions, rollback

from .conftest import NAME, Bundles, Keys, NoSystemd, resign, trusting

pytestmark = pytest.mark.usefixtures("clean_env")
MakePayload = Callable[[Path], Payload]


def _verify(prefix: Path, version: str = "current") -> subprocess.CompletedProcess[str]:
    """The installed launcher's own ``verify``, as the service account would run it."""
    exe = prefix / NAME / version / NAME
    return subprocess.run([str(exe), "verify"], capture_output=True, text=True, timeout=120)


def test_install_requires_trust_the_first_time(bundles: Bundles, make_payload: MakePayload, tmp_path: Path) -> None:
    prefix = tmp_path / "opt"
    with pytest.raises(InstallError) as err:
        install(make_payload(bundles.v1), prefix, systemd=NoSystemd())
    assert str(err.value) == (
        f"{NAME}: no trust configured under {prefix}: pass --trust-key KEY.pub (repeatable) or --allow-unsigned"
    )
    assert not prefix.exists()


def test_trust_is_written_and_enforced_by_the_installed_launcher(
    bundles: Bundles, keys: Keys, make_payload: MakePayload, tmp_path: Path
) -> None:
    prefix = tmp_path / "opt"
    result = install(make_payload(bundles.v1), prefix, trust=trusting(keys.signer), systemd=NoSystemd())
    assert result.signature is not None and result.signature.describe() == f"signed by trusted key {keys.signer.key_id}"
    trust = prefix / NAME / "trust"
    assert sorted(p.name for p in trust.iterdir()) == [f"{keys.signer.key_id}.pub", "policy.json"]
    assert json.loads((trust / "policy.json").read_text()) == {
        "format": "mlpack.trust/1",
        "allow_unsigned": False,
        "keys": [keys.signer.key_id],
    }
    assert (trust / f"{keys.signer.key_id}.pub").read_bytes() == keys.signer.public.read_bytes()
    assert [stat.S_IMODE(p.stat().st_mode) for p in (trust, *trust.iterdir())] == [0o755, 0o644, 0o644]
    assert f"trust: trusted keys: {keys.signer.key_id}; unsigned bundles refused ({trust})" in result.notes

    proc = _verify(prefix)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.rstrip().endswith(f"; signed by trusted key {keys.signer.key_id}")
    # An attacker who replaces the installed bundle's signature with their own is refused at start.
    installed = prefix / NAME / "1.0.0" / "bundle"
    resign(installed, keys.stranger)
    proc = _verify(prefix)
    assert proc.returncode == 1
    assert proc.stderr == (
        f"Error: {installed}: signed by key {keys.stranger.key_id} which is not trusted here"
        f" (trusted: {keys.signer.key_id})\n"
    )
    # ... and so is one who deletes it: the installed policy does not allow unsigned bundles.
    (installed / "manifest.sig").unlink()
    proc = _verify(prefix)
    assert proc.stderr == (
        f"Error: {installed}: unsigned bundle refused (install with --trust-key KEY.pub, or --allow-unsigned)\n"
    )


def test_installed_trust_applies_to_any_caller_and_cannot_be_overridden_at_run_time(
    keys: Keys, v1_installed: Path
) -> None:
    prefix = v1_installed
    installed = prefix / NAME / "current" / "bundle"
    runner = CliRunner()
    r = runner.invoke(main, ["device", "--bundle", str(installed), "verify"])
    assert r.exit_code == 0 and r.output.rstrip().endswith(f"signed by trusted key {keys.signer.key_id}")
    # re-signed by a stranger: an ad-hoc run would accept it (integrity only); the installed trust does not
    resign(installed, keys.stranger)
    r = runner.invoke(main, ["device", "--bundle", str(installed), "verify"])
    assert (r.exit_code, r.output) == (
        1,
        f"Error: {installed}: signed by key {keys.stranger.key_id} which is not trusted here"
        f" (trusted: {keys.signer.key_id})\n",
    )
    r = runner.invoke(main, ["device", "--bundle", str(installed), "--trust-key", str(keys.stranger.public), "verify"])
    assert r.exit_code == 2
    assert r.output.splitlines()[-1] == (
        f"Error: {installed} is installed: its trust is set by install ({prefix / NAME / 'trust'}); to change it,"
        " re-run install with --trust-key KEY.pub or --allow-unsigned"
    )
    # $MLPACK_TRUSTED_KEYS is for ad-hoc runs: it neither loosens nor replaces an installed policy
    r = runner.invoke(
        main, ["device", "--bundle", str(installed), "verify"], env={"MLPACK_TRUSTED_KEYS": str(keys.stranger.public)}
    )
    assert r.exit_code == 1 and "which is not trusted here" in r.output


def test_install_refuses_an_unknown_key_and_unsigned_without_allow(
    bundles: Bundles, keys: Keys, make_payload: MakePayload, tmp_path: Path
) -> None:
    prefix = tmp_path / "opt"
    with pytest.raises(IntegrityError) as err:
        install(make_payload(bundles.v1), prefix, trust=trusting(keys.stranger), systemd=NoSystemd())
    assert str(err.value) == (
        f"not installed: {bundles.v1}: signed by key {keys.signer.key_id} which is not trusted here"
        f" (trusted: {keys.stranger.key_id})"
    )
    install(make_payload(bundles.v1), prefix, trust=trusting(keys.signer), systemd=NoSystemd())
    with pytest.raises(IntegrityError) as err:
        install(make_payload(bundles.unsigned), prefix, systemd=NoSystemd())  # keeps the installed trust
    assert str(err.value) == (
        f"not installed: {bundles.unsigned}: unsigned bundle refused (install with --trust-key KEY.pub,"
        " or --allow-unsigned)"
    )
    assert installed_versions(prefix, NAME) == ("1.0.0", None, ["1.0.0"])
    # allowing unsigned bundles is an explicit, recorded decision
    result = install(
        make_payload(bundles.unsigned), prefix, trust=trusting(keys.signer, allow_unsigned=True), systemd=NoSystemd()
    )
    assert result.status == "installed" and result.signature is not None and not result.signature.signed
    assert read_trust_dir(prefix / NAME / "trust").allow_unsigned


def test_upgrades_keep_the_installed_trust(bundles: Bundles, make_payload: MakePayload, v1_installed: Path) -> None:
    prefix = v1_installed
    before = (prefix / NAME / "trust" / "policy.json").read_bytes()
    result = install(make_payload(bundles.v2), prefix, systemd=NoSystemd())
    assert (result.status, result.previous) == ("installed", "1.0.0")
    assert not any(n.startswith("trust:") for n in result.notes)
    assert (prefix / NAME / "trust" / "policy.json").read_bytes() == before


def test_a_failed_install_puts_the_old_trust_back(
    bundles: Bundles, keys: Keys, make_payload: MakePayload, v1_installed: Path
) -> None:
    prefix = v1_installed
    trust = prefix / NAME / "trust"
    before = {p.name: p.read_bytes() for p in trust.iterdir()}
    with pytest.raises(InstallError) as err:  # its golden set fails on this CPU: the verify in place refuses it
        install(
            make_payload(bundles.bad_golden), prefix, trust=trusting(keys.signer, keys.stranger), systemd=NoSystemd()
        )
    assert str(err.value).startswith(f"verify failed: {NAME} 1.3.0 at {prefix / NAME / '1.3.0' / 'bundle'}: ")
    assert "; golden set: 0 of 28 labels differ, max abs diff 1.00e-02 (tolerance 0.0001)" in str(err.value)
    assert str(err.value).endswith(f"; {NAME} 1.0.0 stays current")
    assert {p.name: p.read_bytes() for p in trust.iterdir()} == before


def test_new_trust_must_accept_the_installed_copy_too(
    bundles: Bundles, keys: Keys, make_payload: MakePayload, copy_bundle: Callable[[Path], Path], v1_installed: Path
) -> None:
    """Re-running install to trust only another key fails while the installed copy is signed by the old one."""
    prefix = v1_installed
    trust = prefix / NAME / "trust"
    before = {p.name: p.read_bytes() for p in trust.iterdir()}
    resigned = copy_bundle(bundles.v1)  # same manifest, signed by the other key
    resign(resigned, keys.stranger)
    with pytest.raises(InstallError) as err:
        install(make_payload(resigned), prefix, trust=trusting(keys.stranger), systemd=NoSystemd())
    assert str(err.value) == (
        f"verify failed: {prefix / NAME / '1.0.0' / 'bundle'}: signed by key {keys.signer.key_id} which is not"
        f" trusted here (trusted: {keys.stranger.key_id})"
    )
    assert {p.name: p.read_bytes() for p in trust.iterdir()} == before
    with pytest.raises(IntegrityError, match="which is not trusted here"):  # the payload itself, checked first
        install(make_payload(bundles.v1), prefix, trust=trusting(keys.stranger), systemd=NoSystemd())
    assert {p.name: p.read_bytes() for p in trust.iterdir()} == before


def test_reinstalling_with_new_trust_replaces_it(
    bundles: Bundles, keys: Keys, make_payload: MakePayload, v1_installed: Path
) -> None:
    prefix = v1_installed
    result = install(make_payload(bundles.v1), prefix, trust=trusting(keys.signer, keys.stranger), systemd=NoSystemd())
    assert result.status == "unchanged"
    ids = sorted([keys.signer.key_id, keys.stranger.key_id])
    assert (
        f"trust: trusted keys: {', '.join(ids)}; unsigned bundles refused ({prefix / NAME / 'trust'})" in result.notes
    )
    assert [k.key_id for k in read_trust_dir(prefix / NAME / "trust").keys] == ids


def test_a_missing_or_damaged_trust_folder_stops_the_installed_model(keys: Keys, v1_installed: Path) -> None:
    prefix = v1_installed
    trust = prefix / NAME / "trust"
    (trust / f"{keys.signer.key_id}.pub").write_bytes(keys.stranger.public.read_bytes())
    proc = _verify(prefix)
    assert proc.stderr == (
        f"Error: {trust / (keys.signer.key_id + '.pub')}: holds key {keys.stranger.key_id}, not {keys.signer.key_id}"
        " (tampered)\n"
    )
    shutil.rmtree(trust)
    proc = _verify(prefix)
    assert proc.returncode == 1
    assert proc.stderr == (
        f"Error: {trust / 'policy.json'}: no trust policy for this installed model (re-run install with"
        " --trust-key KEY.pub, or --allow-unsigned)\n"
    )
    with pytest.raises(SigningKeyError):
        read_trust_dir(trust)


def test_rollback_checks_the_previous_version_against_the_current_trust(
    bundles: Bundles, keys: Keys, make_payload: MakePayload, tmp_path: Path
) -> None:
    prefix = tmp_path / "opt"
    install(
        make_payload(bundles.unsigned), prefix, trust=trusting(keys.signer, allow_unsigned=True), systemd=NoSystemd()
    )
    install(make_payload(bundles.v1), prefix, trust=trusting(keys.signer), systemd=NoSystemd())  # unsigned now refused
    with pytest.raises(InstallError) as err:
        rollback(prefix, NAME, systemd=NoSystemd())
    assert str(err.value) == (
        f"verify failed: {prefix / NAME / '1.2.0' / 'bundle'}: unsigned bundle refused (install with --trust-key"
        " KEY.pub, or --allow-unsigned)"
    )
    assert os.readlink(prefix / NAME / "current") == "1.0.0"


def test_the_installed_layout_names_agree() -> None:
    from mlpack_edge.runtime import _trust, embedded, install

    assert _trust.BUNDLE_DIR == embedded.BUNDLE_DIR
    assert _trust.TRUST_DIR in install._RESERVED  # a version called "trust" cannot shadow the trust folder


def test_install_cli_checks_the_trust_options_before_anything_else(
    bundles: Bundles, keys: Keys, tmp_path: Path
) -> None:
    runner = CliRunner()
    base = ["device", "--bundle", str(bundles.v1), "install", "--prefix", str(tmp_path / "opt")]
    r = runner.invoke(main, [*base, "--trust-key", str(tmp_path / "nope.pub")])
    assert (r.exit_code, r.output) == (1, f"Error: {tmp_path / 'nope.pub'}: no such public key file\n")
    r = runner.invoke(main, [*base, "--trust-key", str(keys.signer.private)])
    assert (r.exit_code, r.output) == (
        1,
        f"Error: {keys.signer.private}: this is a private key; trust the public one (the .pub file)\n",
    )
    assert not (tmp_path / "opt").exists()
