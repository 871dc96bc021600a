"""Governance fixtures: signing keys, signed bundles built once per session, installed layouts.

* ``keys``: two key pairs from ``generate_key`` — ``signer`` signs the bundles, ``stranger``
  is a key no device was told to trust.
* ``bundles``: real bundles of one small model "gov" (LogisticRegression), built by
  ``mlpack_edge.builder.build``: 1.0.0 and 1.1.0 signed by ``signer``, 1.2.0 unsigned, and
  1.3.0 signed but with a golden set this CPU cannot reproduce (installable only by
  skipping the install-time verify: it stands for a device whose arithmetic changed).
* ``make_payload(bundle)``: a payload as a onefile executable would see itself, whose
  launcher is a real script running the real device CLI (``verify``, ``serve``) on the
  ``bundle/`` folder next to it, so install, start-time checks and the fallback run
  exactly as on a device, without a PyInstaller build.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from mlpack_edge.builder import build
from mlpack_edge.builder.signing import KeyPair, generate_key, load_signing_key
from mlpack_edge.runtime._trust import TrustPolicy
from mlpack_edge.runtime.embedded import LAUNCHER_DATA_NAME
from mlpack_edge.runtime.install import Payload
from mlpack_edge.runtime.manifest import MANIFEST_NAME, SIGNATURE_NAME, write_bundle
from tests._data import binary_rows, spec_text

NAME = "gov"

_LAUNCHER = """#!{python}
import sys
from pathlib import Path

from mlpack_edge.runtime.cli import main

main(["--bundle", str(Path(sys.argv[0]).resolve().parent / "bundle"), *sys.argv[1:]])
"""


@dataclass(frozen=True)
class Keys:
    signer: KeyPair
    stranger: KeyPair


@dataclass(frozen=True)
class Bundles:
    v1: Path  # 1.0.0, signed by signer
    v2: Path  # 1.1.0, signed by signer
    unsigned: Path  # 1.2.0
    bad_golden: Path  # 1.3.0, signed by signer, golden set off by 0.01


@pytest.fixture(scope="session")
def keys(tmp_path_factory: pytest.TempPathFactory) -> Keys:
    folder = tmp_path_factory.mktemp("keys")
    return Keys(generate_key(folder, "signer"), generate_key(folder, "stranger"))


def _build(root: Path, version: str, sign_key: Path | None) -> Path:
    root.mkdir(parents=True)
    (root / "data.csv").write_text(binary_rows(n=120, seed=4), encoding="utf-8")
    (root / "mlpack.toml").write_text(spec_text(name=NAME, version=version), encoding="utf-8")
    return build(root / "mlpack.toml", root / "dist", executable=False, sign_key=sign_key).bundle_dir


def _off_golden(good: Path, target: Path, version: str, keys: Keys) -> Path:
    """``good`` as version ``version`` with golden probabilities moved by 0.01, signed again."""
    manifest = json.loads((good / MANIFEST_NAME).read_bytes())
    for key in ("format", "files"):
        manifest.pop(key)
    manifest["version"] = version
    files = {p.name: p.read_bytes() for p in good.iterdir() if p.name not in (MANIFEST_NAME, SIGNATURE_NAME)}
    golden = json.loads(files["golden.json"])
    golden["expected"]["probabilities"][0] = [p + 0.01 for p in golden["expected"]["probabilities"][0]]
    files["golden.json"] = json.dumps(golden).encode()
    return write_bundle(target, files, manifest, sign=load_signing_key(keys.signer.private).sign_manifest)


@pytest.fixture(scope="session")
def bundles(tmp_path_factory: pytest.TempPathFactory, keys: Keys) -> Bundles:
    root = tmp_path_factory.mktemp("gov-bundles")
    v1 = _build(root / "v1", "1.0.0", keys.signer.private)
    return Bundles(
        v1=v1,
        v2=_build(root / "v2", "1.1.0", keys.signer.private),
        unsigned=_build(root / "unsigned", "1.2.0", None),
        bad_golden=_off_golden(v1, root / "bad" / f"{NAME}-1.3.0", "1.3.0", keys),
    )


@pytest.fixture
def copy_bundle(tmp_path: Path) -> Callable[[Path], Path]:
    """A private copy of a session bundle, free to tamper with."""
    count = iter(range(1000))

    def copy(bundle: Path) -> Path:
        return Path(shutil.copytree(bundle, tmp_path / "copies" / f"{next(count)}-{bundle.name}"))

    return copy


@pytest.fixture
def make_payload(tmp_path: Path) -> Callable[[Path], Payload]:
    meipass = tmp_path / "meipass"
    meipass.mkdir()
    (meipass / "libfake.so").write_bytes(b"\x7fELF fake library")
    launcher = meipass / LAUNCHER_DATA_NAME
    launcher.write_text(_LAUNCHER.format(python=sys.executable))
    launcher.chmod(0o755)

    def make(bundle: Path) -> Payload:
        return Payload(launcher, meipass, bundle)

    return make


@pytest.fixture
def v1_installed(bundles: Bundles, keys: Keys, make_payload: Callable[[Path], Payload], tmp_path: Path) -> Path:
    """gov 1.0.0 installed under ``tmp_path/opt``, trusting the signer; returns the prefix."""
    from mlpack_edge.runtime.install import install

    prefix = tmp_path / "opt"
    install(make_payload(bundles.v1), prefix, trust=trusting(keys.signer), systemd=NoSystemd())
    return prefix


def resign(bundle: Path, pair: KeyPair) -> None:
    """Replace ``bundle``'s manifest.sig by ``pair``'s signature over the same manifest (a valid re-signing)."""
    sign = load_signing_key(pair.private).sign_manifest
    (bundle / SIGNATURE_NAME).write_bytes(sign((bundle / MANIFEST_NAME).read_bytes()))


def trusting(*pairs: KeyPair, allow_unsigned: bool = False) -> TrustPolicy:
    return TrustPolicy.from_key_files([p.public for p in pairs], allow_unsigned)


class NoSystemd:
    def running(self) -> bool:
        return False

    def run(self, *args: str) -> None:  # pragma: no cover - never called when not running
        raise AssertionError(args)


@pytest.fixture
def clean_env() -> Iterator[None]:
    """No MLPACK_* settings of the caller's shell leak into a test."""
    saved = {k: v for k, v in os.environ.items() if k.startswith("MLPACK_")}
    for k in saved:
        del os.environ[k]
    yield
    os.environ.update(saved)
