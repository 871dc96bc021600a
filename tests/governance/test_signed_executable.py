"""Signing through the real device executable (slow: builds two signed executables through ``mlpack build``).

The frozen runtime has no ``cryptography``: it verifies with its pure-Python Ed25519 (no OpenSSL loaded).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization

from mlpack_edge.builder.executable import executable_contents
from mlpack_edge.runtime.embedded import open_appended
from tests._proc import start_and_wait

from .conftest import Keys

pytestmark = pytest.mark.slow

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "breast_cancer"
NAME = "breast-cancer"


@dataclass(frozen=True)
class Built:
    v1: Path
    v2: Path


def _spec(work: Path, version: str) -> Path:
    folder = Path(shutil.copytree(EXAMPLE, work / f"spec-{version}"))
    spec = folder / "mlpack.toml"
    spec.write_text(spec.read_text().replace('version = "1.0.0"', f'version = "{version}"'))
    return spec


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory, keys: Keys) -> Built:
    from mlpack_edge.builder import build

    work = tmp_path_factory.mktemp("signed-exe")
    exes = [build(_spec(work, v), work / "dist", sign_key=keys.signer.private).executable for v in ("1.0.0", "1.1.0")]
    assert exes[0] is not None and exes[1] is not None
    return Built(exes[0], exes[1])


def _run(*cmd: object) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLPACK_")}
    return subprocess.run([str(c) for c in cmd], capture_output=True, text=True, timeout=300, env=env)


def test_the_executable_carries_the_signature_but_not_the_private_key(built: Built, keys: Keys) -> None:
    assert "manifest.sig" in open_appended(built.v1).names
    names = executable_contents(built.v1)
    assert "bundle/manifest.sig" in names and not any("cryptography" in n for n in names)
    key = serialization.load_pem_private_key(keys.signer.private.read_bytes(), password=None)
    seed = key.private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption())
    data = built.v1.read_bytes()
    for secret in (keys.signer.private.read_bytes(), seed, keys.signer.private.read_bytes().splitlines()[1]):
        assert secret not in data


def test_verify_checks_the_signature_in_the_frozen_runtime(built: Built, keys: Keys) -> None:
    proc = _run(built.v1, "--trust-key", keys.signer.public, "verify")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.rstrip().endswith(f"; signed by trusted key {keys.signer.key_id}")
    proc = _run(built.v1, "--trust-key", keys.stranger.public, "verify")
    assert proc.returncode == 1
    assert proc.stderr.endswith(
        f": signed by key {keys.signer.key_id} which is not trusted here (trusted: {keys.stranger.key_id})\n"
    )


def test_install_needs_trust_then_falls_back_when_current_is_tampered(built: Built, keys: Keys, tmp_path: Path) -> None:
    prefix = tmp_path / "opt"
    proc = _run(built.v1, "install", "--prefix", prefix)
    assert (proc.returncode, proc.stderr) == (
        1,
        f"Error: {NAME}: no trust configured under {prefix}:"
        " pass --trust-key KEY.pub (repeatable) or --allow-unsigned\n",
    )
    assert not prefix.exists()
    proc = _run(built.v1, "install", "--prefix", prefix, "--trust-key", keys.signer.public)
    assert proc.returncode == 0, proc.stderr
    assert f"  signed by trusted key {keys.signer.key_id}\n" in proc.stdout
    proc = _run(built.v2, "install", "--prefix", prefix)  # keeps the trust in place
    assert proc.returncode == 0, proc.stderr

    model = prefix / NAME / "1.1.0" / "bundle" / "model.onnx"
    data = model.read_bytes()
    model.write_bytes(data[:-1] + bytes([data[-1] ^ 0xFF]))  # always a change, whatever the last byte
    current = prefix / NAME / "current" / NAME
    serve = start_and_wait(
        [str(current), "serve", "--port", "0"],
        "serving ",
        env={k: v for k, v in os.environ.items() if not k.startswith("MLPACK_")},
    )
    try:
        lines = list(serve.lines)
        assert serve.line is not None, serve.output()
        assert lines[0].startswith("fallback: 1.1.0 failed its check at start (") and "model.onnx" in lines[0]
        url = serve.line.split(" on ")[1].split()[0]
        with urllib.request.urlopen(f"{url}/health", timeout=30) as r:
            health = json.loads(r.read())
        assert health["version"] == "1.0.0" and health["fallback"]["from_version"] == "1.1.0"
    finally:
        serve.proc.terminate()
        serve.finish(timeout=30)
