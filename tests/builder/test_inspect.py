"""`mlpack inspect` on bundle folders and device executables: facts, files, signature, damage, bad paths."""

from __future__ import annotations

import base64
import hashlib
import json
import shutil
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from mlpack_edge.builder import build
from mlpack_edge.builder.inspect_cli import inspect_command
from mlpack_edge.runtime.embedded import append_bundle

from mlpack_edge._fs import canonical_json
from tests._data import binary_rows, spec_text

RUNTIME = b"\x7fELF not really a runtime, inspect never runs it\n" * 64


def inspect(*args: str | Path) -> Result:
    return CliRunner().invoke(inspect_command, [str(a) for a in args])


def as_json(*args: str | Path) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(inspect(*args, "--json").stdout)
    return doc


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("inspect")
    (root / "data.csv").write_text(binary_rows(n=200, seed=1))
    (root / "mlpack.toml").write_text(spec_text(extra='[evaluate]\ngates = ["accuracy >= 0.6"]\npositive = "yes"\n'))
    return build(root / "mlpack.toml", root / "dist", executable=False).bundle_dir


@pytest.fixture
def copy(bundle: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(bundle, tmp_path / "copy"))


def _executable(bundle: Path, path: Path, runtime: bytes = RUNTIME, facts: dict[str, str] | None = None) -> Path:
    files = {p.name: p.read_bytes() for p in sorted(bundle.iterdir())}
    path.write_bytes(append_bundle(runtime, files, facts))
    return path


def _keypair(folder: Path, name: str) -> tuple[Ed25519PrivateKey, Path, str]:
    key = Ed25519PrivateKey.generate()
    raw = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    pub = folder / f"{name}.pub"
    pub.write_bytes(
        key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    return key, pub, hashlib.sha256(raw).hexdigest()[:16]


def _sign(bundle: Path, key: Ed25519PrivateKey) -> None:
    """``manifest.sig`` in the mlpack.signature/1 format, made with `cryptography` (not mlpack's signer)."""
    raw = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    doc = {
        "format": "mlpack.signature/1",
        "algorithm": "ed25519",
        "key_id": hashlib.sha256(raw).hexdigest()[:16],
        "public_key": base64.b64encode(raw).decode(),
        "signature": base64.b64encode(key.sign((bundle / "manifest.json").read_bytes())).decode(),
    }
    (bundle / "manifest.sig").write_text(canonical_json(doc))


# ---------------------------------------------------------------------------- a bundle folder


def test_bundle_text_shows_the_facts(bundle: Path) -> None:
    result = inspect(bundle)
    assert result.exit_code == 0, result.output
    manifest = json.loads((bundle / "manifest.json").read_bytes())
    digest = hashlib.sha256((bundle / "manifest.json").read_bytes()).hexdigest()
    lines = result.stdout.splitlines()
    assert lines[0] == "demo 1.0.0 · binary classification · bundle"
    assert lines[1] == f"  path          {bundle}"
    assert lines[2] == f"  content hash  {digest}  (sha256 of manifest.json: the model's stable identity)"
    lin = manifest["lineage"]
    assert (
        f"  split           {lin['train_rows']} train, {lin['test_rows']} held out (stratified by class), seed 0"
        in lines
    )
    assert "  positive class  yes" in lines
    assert "Input: 3 features (matrix layout)" in lines
    assert lines[lines.index("Input: 3 features (matrix layout)") + 1].split() == [
        "feature",
        "kind",
        "nullable",
        "missing",
        "categories",
        "/",
        "training",
        "range",
    ]
    c_line = next(line for line in lines if line.startswith("  c "))
    assert c_line.split()[:3] == ["c", "numeric", "yes"] and c_line.split()[3].endswith("%")
    accuracy = manifest["metrics"]["accuracy"]
    assert any(line.split() == ["accuracy", f"{accuracy:.4f}", "accuracy", ">=", "0.6", "pass"] for line in lines)
    counts = manifest["evaluation"]["class_counts"]
    assert ["no", str(counts["train"][0]), str(counts["held_out"][0])] in [line.split() for line in lines]
    confusion = manifest["evaluation"]["confusion"]
    assert ["yes", *map(str, confusion[1])] in [line.split() for line in lines]
    assert f"  max abs diff     {manifest['parity']['max_abs_diff']:.3e}" in lines
    assert f"  data sha256  {lin['data_sha256']}" in lines
    card = (bundle / "model_card.html").stat().st_size
    onnx = (bundle / "model.onnx").stat().st_size
    assert card > 1000 and onnx < 1000
    assert any(line.split() == ["model_card.html", f"{card / 1000:.1f}", "kB", "ok"] for line in lines)
    assert any(line.split() == ["model.onnx", str(onnx), "B", "ok"] for line in lines)
    assert "  manifest.sig  absent" in lines
    assert "Executable" not in lines and "Problems" not in lines


def test_bundle_json_matches_the_files(bundle: Path) -> None:
    doc = as_json(bundle)
    manifest = json.loads((bundle / "manifest.json").read_bytes())
    profile = json.loads((bundle / "profile.json").read_bytes())
    assert doc["ok"] is True and doc["problems"] == [] and doc["kind"] == "bundle" and doc["path"] == str(bundle)
    assert doc["content_hash"] == hashlib.sha256((bundle / "manifest.json").read_bytes()).hexdigest()
    assert doc["stable_hash"] == "content_hash"
    for key in ("name", "version", "task", "metrics", "gates", "parity", "lineage", "evaluation"):
        assert doc[key] == manifest[key], key
    assert doc["classes"] == ["no", "yes"]
    assert [f["missing_rate"] for f in doc["input"]["features"]] == [f["missing_rate"] for f in profile["features"]]
    assert doc["input"]["features"][2]["nullable"] is True and doc["input"]["features"][2]["missing_rate"] > 0
    assert doc["files"] == [
        {"name": p.name, "size": p.stat().st_size, "status": "manifest" if p.name == "manifest.json" else "ok"}
        for p in sorted(bundle.iterdir())
    ]
    assert doc["signature"] == {
        "present": False,
        "key_id": None,
        "valid": None,
        "detail": "unsigned (no manifest.sig): devices refuse it unless allowed",
    }
    assert doc["executable"] is None


# ---------------------------------------------------------------------------- an executable


def test_executable_shows_runtime_and_appended_bundle(bundle: Path, tmp_path: Path) -> None:
    exe = _executable(bundle, tmp_path / "demo-1.0.0-linux-x86_64")
    data = exe.read_bytes()
    doc = as_json(exe)
    assert doc["ok"] is True and doc["kind"] == "executable"
    assert doc["content_hash"] == as_json(bundle)["content_hash"]
    assert doc["executable"] == {
        "size": len(data),
        "sha256": hashlib.sha256(data).hexdigest(),
        "runtime_size": len(RUNTIME),
        "runtime_sha256": hashlib.sha256(RUNTIME).hexdigest(),
        "runtime_intact": True,
        "bundle_size": len(data) - len(RUNTIME),
        "target": None,  # built before the trailer recorded it
        "glibc_floor": None,
    }
    # sizes are the bundle's own (uncompressed), whatever the zip did to them
    assert doc["files"] == as_json(bundle)["files"]
    text = inspect(exe)
    assert text.exit_code == 0, text.output
    lines = text.stdout.splitlines()
    assert lines[0] == "demo 1.0.0 · binary classification · executable"
    assert f"  runtime      {len(RUNTIME) / 1000:.1f} kB, sha256 {hashlib.sha256(RUNTIME).hexdigest()}" in lines
    stable = lines.index(
        "  stable hash  the content hash names the model wherever it is packaged; the file and runtime"
    )
    assert lines[stable + 1].strip().startswith("sha256s repeat only for builds on the same machine")
    assert "  target       not recorded" in lines and "  glibc        not recorded" in lines


def test_executable_shows_target_and_glibc_floor_from_the_trailer(bundle: Path, tmp_path: Path) -> None:
    exe = _executable(bundle, tmp_path / "exe", facts={"target": "linux-x86_64", "glibc_floor": "2.30"})
    assert {k: as_json(exe)["executable"][k] for k in ("target", "glibc_floor")} == {
        "target": "linux-x86_64",
        "glibc_floor": "2.30",
    }
    lines = inspect(exe).stdout.splitlines()
    assert "  target       linux-x86_64" in lines
    assert "  glibc        2.30 or newer" in lines


def test_a_corrupted_runtime_is_reported(bundle: Path, tmp_path: Path) -> None:
    exe = _executable(bundle, tmp_path / "exe")
    data = bytearray(exe.read_bytes())
    data[10] ^= 0xFF
    exe.write_bytes(bytes(data))
    result = inspect(exe)
    assert result.exit_code == 1
    assert result.stderr == (
        f"Error: {exe}: the frozen runtime does not match the sha256 recorded at build time (corrupted copy?);"
        " download the executable again\n"
    )
    assert "the bytes DO NOT match it" in result.stdout
    assert as_json(exe)["executable"]["runtime_intact"] is False


# ---------------------------------------------------------------------------- damage is shown, then exit 1


def test_a_modified_file_is_named(copy: Path) -> None:
    (copy / "model_card.html").write_text("<p>edited</p>")
    result = inspect(copy)
    assert result.exit_code == 1
    assert result.stderr == (
        f"Error: {copy}: file model_card.html does not match its sha256 in the manifest (tampered or corrupt)\n"
    )
    assert any(
        line.split()[:1] == ["model_card.html"] and line.endswith("MODIFIED (does not match the manifest)")
        for line in result.stdout.splitlines()
    )
    doc = as_json(copy)
    assert doc["ok"] is False and [f["status"] for f in doc["files"] if f["name"] == "model_card.html"] == ["modified"]


def test_a_modified_profile_is_not_used(copy: Path) -> None:
    profile = json.loads((copy / "profile.json").read_bytes())
    profile["features"][2]["missing_rate"] = 0.99
    (copy / "profile.json").write_text(json.dumps(profile))
    doc = as_json(copy)
    assert doc["problems"] == [
        f"{copy}: file profile.json does not match its sha256 in the manifest (tampered or corrupt)"
    ]
    assert [f["missing_rate"] for f in doc["input"]["features"]] == [None, None, None]


def test_missing_and_unlisted_files(copy: Path) -> None:
    (copy / "golden.json").unlink()
    (copy / "notes.txt").write_text("mine")
    result = inspect(copy)
    assert result.exit_code == 1
    assert result.stderr == f"Error: {copy}: file golden.json listed in the manifest is missing\n"
    statuses = {f["name"]: f["status"] for f in as_json(copy)["files"]}
    assert statuses["golden.json"] == "missing" and statuses["notes.txt"] == "unlisted"


def test_an_unlisted_file_alone_is_not_a_problem(copy: Path) -> None:
    (copy / "notes.txt").write_text("mine")
    result = inspect(copy)
    assert result.exit_code == 0, result.output
    assert any(
        line.split() == ["notes.txt", "4", "B", "not", "in", "the", "manifest"] for line in result.stdout.splitlines()
    )


# ---------------------------------------------------------------------------- signatures


def test_a_signed_bundle_and_executable_show_the_key(copy: Path, tmp_path: Path) -> None:
    key, pub, kid = _keypair(tmp_path, "release")
    _sign(copy, key)
    doc = as_json(copy)
    assert doc["ok"] is True
    assert doc["signature"] == {
        "present": True,
        "key_id": kid,
        "valid": True,
        "detail": f"verifies over manifest.json (key {kid}; trust is decided on the device)",
    }
    assert {f["name"]: f["status"] for f in doc["files"]}["manifest.sig"] == "signature"
    trusted = as_json(copy, "--trust-key", pub)
    assert trusted["ok"] and trusted["signature"]["detail"] == f"verifies; key {kid} is one of the given trusted keys"
    exe = as_json(_executable(copy, tmp_path / "exe"))
    assert exe["signature"]["key_id"] == kid and exe["signature"]["valid"] is True
    text = inspect(copy).stdout.splitlines()
    assert "  manifest.sig  present" in text and f"  key id        {kid}" in text


def test_a_bad_or_untrusted_signature_is_a_problem(copy: Path, tmp_path: Path) -> None:
    key, _, kid = _keypair(tmp_path, "release")
    _, other_pub, other_kid = _keypair(tmp_path, "other")
    _sign(copy, key)
    result = inspect(copy, "--trust-key", other_pub)
    assert result.exit_code == 1
    assert result.stderr == f"Error: {copy}: signed by key {kid} which is not trusted here (trusted: {other_kid})\n"
    sig = json.loads((copy / "manifest.sig").read_bytes())
    raw = bytearray(base64.b64decode(sig["signature"]))
    raw[0] ^= 1
    sig["signature"] = base64.b64encode(bytes(raw)).decode()
    (copy / "manifest.sig").write_text(json.dumps(sig))
    result = inspect(copy)
    assert result.exit_code == 1
    assert result.stderr == f"Error: {copy}: manifest.sig does not verify (tampered manifest or signature)\n"
    doc = as_json(copy)
    assert doc["signature"]["valid"] is False and doc["signature"]["key_id"] == kid


def test_unsigned_with_trusted_keys_and_bad_key_files(bundle: Path, tmp_path: Path) -> None:
    _, pub, _ = _keypair(tmp_path, "release")
    result = inspect(bundle, "--trust-key", pub)
    assert result.exit_code == 1
    assert result.stderr == (
        f"Error: {bundle}: unsigned, so a device trusting only the given keys refuses it (mlpack build --sign-key)\n"
    )
    missing = inspect(bundle, "--trust-key", tmp_path / "nope.pub")
    assert (missing.exit_code, missing.stderr) == (1, f"Error: {tmp_path / 'nope.pub'}: no such public key file\n")


def test_a_bundle_signed_by_mlpack_build(tmp_path: Path) -> None:
    from mlpack_edge.builder.signing import generate_key

    keys = generate_key(tmp_path / "keys", "release")
    (tmp_path / "data.csv").write_text(binary_rows(n=120, seed=6))
    (tmp_path / "mlpack.toml").write_text(spec_text())
    result = build(tmp_path / "mlpack.toml", tmp_path / "dist", executable=False, sign_key=keys.private)
    doc = as_json(result.bundle_dir, "--trust-key", keys.public)
    assert doc["ok"] is True and doc["signature"]["key_id"] == result.signed_by
    assert doc["signature"]["detail"] == f"verifies; key {result.signed_by} is one of the given trusted keys"


# ---------------------------------------------------------------------------- not a bundle


def test_paths_that_are_not_bundles_fail_in_one_line(tmp_path: Path, bundle: Path) -> None:
    import zipfile

    empty = tmp_path / "empty"
    empty.mkdir()
    text = tmp_path / "notes.txt"
    text.write_text("hello")
    plain_zip = tmp_path / "plain.zip"
    with zipfile.ZipFile(plain_zip, "w") as zf:
        zf.writestr("manifest.json", "{}")
    truncated = _executable(bundle, tmp_path / "truncated")
    truncated.write_bytes(truncated.read_bytes()[:-200])
    cases = {
        empty: f"{empty}: not a bundle folder (no manifest.json)",
        tmp_path / "nothing": f"{tmp_path / 'nothing'}: no such file or folder",
        text: f"{text}: not a bundle folder or device executable (no appended bundle: not from mlpack build, "
        "or a truncated copy)",
        truncated: f"{truncated}: not a bundle folder or device executable (no appended bundle: not from mlpack "
        "build, or a truncated copy)",
        plain_zip: f"{plain_zip}: the appended bundle is truncated or is not an mlpack bundle (no mlpack.appended/1 "
        "trailer)",
    }
    for path, message in cases.items():
        result = inspect(path)
        assert (result.exit_code, result.stderr, result.stdout) == (1, f"Error: {message}\n", ""), path
        json_result = inspect(path, "--json")
        assert (json_result.exit_code, json_result.stderr) == (1, f"Error: {message}\n")
        # --json: the error as JSON on stdout too, like build --json.
        assert json.loads(json_result.stdout) == {"ok": False, "error": {"type": "BundleError", "message": message}}


def test_usage_errors_exit_2() -> None:
    result = inspect()
    assert result.exit_code == 2 and "Missing argument 'BUNDLE|EXECUTABLE'" in result.stderr
    assert inspect("--no-such-option", ".").exit_code == 2


# ---------------------------------------------------------------------------- a real executable


@pytest.mark.slow
def test_a_real_device_executable(tmp_path: Path) -> None:
    """Through `mlpack build`: a frozen PyInstaller runtime, not a stand-in, in front of the zip."""
    from mlpack_edge.builder.executable import frozen_runtime

    (tmp_path / "data.csv").write_text(binary_rows(n=120, seed=4))
    (tmp_path / "mlpack.toml").write_text(spec_text())
    result = build(tmp_path / "mlpack.toml", tmp_path / "dist", executable=True)
    assert result.executable is not None
    doc = as_json(result.executable)
    assert doc["ok"] is True and doc["kind"] == "executable" and doc["content_hash"] == result.content_hash
    runtime = frozen_runtime().executable.read_bytes()  # the cached runtime the build appended to
    x = doc["executable"]
    assert x["runtime_sha256"] == hashlib.sha256(runtime).hexdigest() and x["runtime_size"] == len(runtime)
    assert x["runtime_intact"] is True and x["size"] == result.executable.stat().st_size > 10_000_000
    assert [f["name"] for f in doc["files"]] == sorted(p.name for p in result.bundle_dir.iterdir())


def test_inspect_does_not_load_the_training_stack(bundle: Path) -> None:
    """Inspecting is cheap: no scikit-learn, skl2onnx or pandas behind `mlpack inspect`."""
    import subprocess
    import sys

    probe = (
        "import sys\n"
        "from mlpack_edge.builder.inspect_cli import inspect_command\n"
        f"try:\n    inspect_command([{str(bundle)!r}, '--json'])\nexcept SystemExit as e:\n    assert e.code == 0, e.code\n"
        "print(sorted(m for m in ('sklearn', 'skl2onnx', 'pandas', 'onnx', 'scipy') if m in sys.modules))\n"
    )
    proc = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines()[-1] == "[]"
