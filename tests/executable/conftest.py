"""Fixtures for the executable tests.

Fast tier: a fake "frozen" payload whose launcher is a real small Python script that
implements ``verify`` (opens the bundle next to it with :class:`mlpack_edge.runtime.bundle.Bundle`
and refuses a model whose bytes are ``b"broken"``, like a failed golden replay), so
install/rollback/uninstall run their real subprocess verify without a PyInstaller build.

Slow tier: ``built``, the real executables of two versions of the breast-cancer example,
built once per session through ``mlpack build`` with an empty runtime cache of its own
(so the session always freezes once: the reproducibility test compares that fresh
freeze with another one).
"""

from __future__ import annotations

import hashlib
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from mlpack_edge.runtime._trust import TrustPolicy
from mlpack_edge.runtime.embedded import LAUNCHER_DATA_NAME, append_bundle
from mlpack_edge.runtime.install import Payload
from mlpack_edge.runtime.manifest import write_bundle

#: The trust these tests install with: their toy bundles are unsigned (signing is tested in tests/governance).
UNSIGNED_OK = TrustPolicy(allow_unsigned=True)

_LAUNCHER = """#!{python}
import sys
from pathlib import Path

here = Path(sys.argv[0]).resolve().parent
if sys.argv[1:] != ["verify"]:
    sys.exit(2)
from mlpack_edge.errors import MlpackError
from mlpack_edge.runtime.bundle import Bundle

try:
    bundle = Bundle.open(here / "bundle")
except MlpackError as exc:
    print(f"Error: {{exc}}", file=sys.stderr)
    sys.exit(1)
if bundle.read("model.onnx") == b"broken":
    print("Error: golden set: 3 of 3 labels differ, max abs diff 9.10e-01 (tolerance 0.0001)", file=sys.stderr)
    sys.exit(1)
if not (here / "_internal" / "libfake.so").is_file():
    print("Error: _internal/libfake.so missing", file=sys.stderr)
    sys.exit(1)
print("verified")
"""


def manifest_for(name: str, version: str) -> dict[str, Any]:
    """The smallest valid ``mlpack.manifest/1`` body (``format``/``files`` are filled in by write_bundle)."""
    return {
        "name": name,
        "version": version,
        "task": "binary",
        "input": {"layout": "matrix", "features": [{"name": "f0", "kind": "numeric", "nullable": False}]},
        "output": {"classes": [0, 1], "label": "label", "probabilities": "probabilities"},
        "onnx": {"file": "model.onnx", "opset": {"": 18}, "inputs": [{"name": "X", "dtype": "float32", "width": 1}]},
    }


@pytest.fixture
def make_bundle(tmp_path: Path) -> Callable[..., Path]:
    """``make_bundle(version, model=b"...", name="toy")`` -> a bundle folder."""

    def make(version: str, model: bytes = b"model-bytes", name: str = "toy") -> Path:
        target = tmp_path / "bundles" / f"{name}-{version}-{hashlib.sha256(model).hexdigest()[:8]}"
        if target.is_dir():  # same content asked twice: the same folder
            return target
        return write_bundle(target, {"model.onnx": model}, manifest_for(name, version))

    return make


@pytest.fixture
def fake_runtime(tmp_path: Path) -> Path:
    """A stand-in for ``sys._MEIPASS`` of a onefile: libraries, a symlink, the onedir launcher."""
    meipass = tmp_path / "meipass"
    (meipass / "pkg").mkdir(parents=True)
    (meipass / "libfake.so").write_bytes(b"\x7fELF fake library")
    (meipass / "pkg" / "mod.pyc").write_bytes(b"pyc")
    (meipass / "libfake.so.1").symlink_to("libfake.so")
    launcher = meipass / LAUNCHER_DATA_NAME
    launcher.write_text(_LAUNCHER.format(python=sys.executable))
    launcher.chmod(0o755)
    return meipass


@pytest.fixture
def make_payload(fake_runtime: Path, make_bundle: Callable[..., Path], tmp_path: Path) -> Callable[..., Payload]:
    """``make_payload(version, model=..., appended=False)``: a payload as a onefile would see itself.

    With ``appended`` the bundle travels as a zip appended to a fake executable, as in a
    real download; otherwise it is a bundle folder.
    """

    def make(version: str, model: bytes = b"model-bytes", appended: bool = False) -> Payload:
        bundle = make_bundle(version, model)
        if appended:
            files = {p.name: p.read_bytes() for p in bundle.iterdir()}
            exe = tmp_path / f"toy-{version}-{hashlib.sha256(model).hexdigest()[:8]}"
            exe.write_bytes(append_bundle(b"#!fake runtime\n" * 100, files))
            bundle = exe
        return Payload(fake_runtime / LAUNCHER_DATA_NAME, fake_runtime, bundle)

    return make


class FakeSystemd:
    """Records systemctl calls; ``running`` says whether this machine booted with systemd."""

    def __init__(self, running: bool) -> None:
        self._running = running
        self.calls: list[tuple[str, ...]] = []

    def running(self) -> bool:
        return self._running

    def run(self, *args: str) -> None:
        self.calls.append(args)


@pytest.fixture
def no_systemd() -> FakeSystemd:
    return FakeSystemd(running=False)


@pytest.fixture(scope="session")
def built(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """:class:`tests.executable._builds.Built`: 1.0.0 frozen into an empty cache, 1.1.0 reusing it."""
    from ._builds import build_two_versions

    return build_two_versions(tmp_path_factory.mktemp("executable"))
