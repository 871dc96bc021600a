"""The whole payload travels only when the runtime changed: two real executables on one runtime,
a third on a runtime frozen with one more staged source, one installed device, a real collector.

1.0.1 is built on the runtime 1.0.0 was installed from: publishing it uploads that runtime
once (the collector lacks it), and the device downloads the bundle alone. 1.0.2 is
assembled on a second runtime: publishing uploads that one, and the device downloads the
runtime too, installs the assembled executable through its own ``install`` (trust,
trailer, golden set, atomic switch) and records the new runtime.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from mlpack_edge.builder import _freeze, build
from mlpack_edge.builder.executable import executable_name
from mlpack_edge.builder.signing import generate_key
from mlpack_edge.collector import admin
from mlpack_edge.runtime.embedded import append_bundle, open_appended
from mlpack_edge.runtime.manifest import MANIFEST_NAME, SIGNATURE_NAME, read_manifest
from tests._data import binary_rows, spec_text
from tests.collector.process import start_collector, stop_collector

pytestmark = pytest.mark.slow


def _build(root: Path, version: str, key: Path, executable: bool) -> tuple[Path, Path | None]:
    root.mkdir(parents=True)
    (root / "data.csv").write_text(binary_rows(n=160, seed=4) + "\n")
    (root / "mlpack.toml").write_text(spec_text(name="gov", version=version))
    result = build(root / "mlpack.toml", root / "dist", executable=executable, sign_key=key)
    return result.bundle_dir, result.executable


def _on_other_runtime(bundle_dir: Path, work: Path) -> Path:
    """The device executable of ``bundle_dir`` on a runtime frozen with one more staged module."""
    sources = {**_freeze.stage_sources(), "mlpack_edge/runtime/_variant.py": b'"""A second runtime."""\nVARIANT = 2\n'}
    out = work / "runtime-b"
    out.mkdir(parents=True)
    floor = _freeze._freeze(sources, out, work / "freeze-b.log")
    manifest = read_manifest(bundle_dir)
    files = {MANIFEST_NAME: manifest.raw, SIGNATURE_NAME: (bundle_dir / SIGNATURE_NAME).read_bytes(),
             **{n: (bundle_dir / n).read_bytes() for n in manifest.files}}
    facts = {"target": _freeze.platform_tag(), **({"glibc_floor": floor} if floor else {})}
    exe = bundle_dir.parent / executable_name(manifest.name, manifest.version)
    exe.write_bytes(append_bundle((out / _freeze.FROZEN_NAME).read_bytes(), files, facts))
    exe.chmod(0o755)
    return exe


def mlpack(*args: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "mlpack_edge.cli", *map(str, args)], capture_output=True, text=True,
                          timeout=600)


def run(exe: Path, *args: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(exe), *map(str, args)], capture_output=True, text=True, timeout=600,
                          env={**os.environ, "MLPACK_WINDOW_SECONDS": "1"})


def _downloaded(collector_url: str, version: str) -> dict:
    """The device's ``update_downloaded`` event for ``version``, as the collector received it."""
    audit = httpx.get(f"{collector_url}/api/v1/devices/press-01", timeout=30).json()["audit"]
    return next(e["detail"] for e in audit if e["event"] == "update_downloaded" and e["detail"]["version"] == version)


def test_only_the_bundle_travels_on_the_same_runtime_and_the_whole_payload_on_another(tmp_path: Path) -> None:
    keys = generate_key(tmp_path / "keys", "release")
    _, exe_a = _build(tmp_path / "v100", "1.0.0", keys.private, executable=True)
    same, exe_same = _build(tmp_path / "v101", "1.0.1", keys.private, executable=True)
    other, _ = _build(tmp_path / "v102", "1.0.2", keys.private, executable=False)
    exe_b = _on_other_runtime(other, tmp_path)
    assert exe_a is not None and exe_same is not None
    runtime_a, runtime_b = open_appended(exe_same).runtime_sha256, open_appended(exe_b).runtime_sha256
    assert open_appended(exe_a).runtime_sha256 == runtime_a != runtime_b

    data = tmp_path / "fleet"
    data.mkdir()
    db_url = "sqlite:///" + str(data / "collector.db")
    admin_file = tmp_path / "admin.token"
    admin_file.write_text(admin.add_admin(db_url, "ops"))
    token = tmp_path / "press-01.token"
    token.write_text(admin.add_device(db_url, "press-01"))
    releases = tmp_path / "releases"
    collector = start_collector(db_url, "--release-dir", str(releases))
    common = ("--collector", collector.url, "--admin-token-file", admin_file)
    rows = tmp_path / "rows.csv"
    rows.write_text("\n".join(ln.rsplit(",", 1)[0] for ln in binary_rows(n=20, seed=9).splitlines()) + "\n")
    prefix = tmp_path / "device"
    try:
        r = run(exe_a, "install", "--prefix", prefix, "--trust-key", keys.public, "--collector-url", collector.url,
                "--device-id", "press-01", "--token-file", token)
        assert r.returncode == 0, r.stderr
        state = prefix / "gov" / "state"
        assert json.loads((state / "runtimes.json").read_text()) == {"1.0.0": runtime_a}
        launcher = prefix / "gov" / "current" / "gov"
        assert run(launcher, "predict", rows).returncode == 0
        assert run(launcher, "agent", "sync").returncode == 0  # the collector learns what it runs

        def roll(version: str) -> None:
            started = mlpack("rollout", "start", "gov", version, *common, "--stages", "100", "--hold", "0s",
                             "--shadow", "0s")
            assert started.returncode == 0, started.stderr
            up = run(launcher, "update")
            print(f"$ gov update  # {version}\n{up.stdout.strip()}")
            assert up.returncode == 0, (up.stdout, up.stderr)
            assert f"gov {version} is current" in up.stdout + up.stderr
            deadline = time.time() + 120
            while time.time() < deadline:  # the stage completes once the new build reported over the hold
                assert run(launcher, "predict", rows).returncode == 0
                run(launcher, "agent", "sync")
                doc = json.loads(mlpack("rollout", "status", "gov", *common, "--json").stdout)
                if doc["state"] == "completed":
                    return
                time.sleep(1)
            raise AssertionError(doc)

        # 1.0.1 on the same runtime: its runtime is uploaded once (the collector had none) ...
        published = mlpack("publish", same, *common)
        print(f"$ mlpack publish v101\n{published.stdout.strip()}")
        assert published.returncode == 0, published.stderr
        size_a = open_appended(exe_same).runtime_size
        assert f"runtime {runtime_a[:12]}, {size_a} bytes uploaded" in published.stdout
        again = mlpack("publish", same, *common)
        print(f"$ mlpack publish v101\n{again.stdout.strip()}")
        assert again.stdout.startswith("already published gov 1.0.1") and "stored already" in again.stdout
        # ... and the device, on that runtime, downloads the bundle alone.
        roll("1.0.1")
        bundle_only = _downloaded(collector.url, "1.0.1")
        assert "runtime" not in bundle_only and bundle_only["bytes"] < 100_000
        assert json.loads((state / "runtimes.json").read_text()) == {"1.0.0": runtime_a, "1.0.1": runtime_a}

        # 1.0.2 on another runtime: that runtime is uploaded, and the device downloads it too.
        published = mlpack("publish", other, *common, "--executable", exe_b)
        print(f"$ mlpack publish v102 --executable ...\n{published.stdout.strip()}")
        assert published.returncode == 0, published.stderr
        assert f"runtime {runtime_b[:12]}, {open_appended(exe_b).runtime_size} bytes uploaded" in published.stdout
        assert sorted(p.name for p in (releases / "runtimes").iterdir()) == sorted(
            [f"{runtime_a}.bin", f"{runtime_a}.json", f"{runtime_b}.bin", f"{runtime_b}.json"])
        roll("1.0.2")
        whole = _downloaded(collector.url, "1.0.2")
        assert whole["runtime"] == runtime_b
        assert whole["bytes"] > open_appended(exe_b).runtime_size
        assert (prefix / "gov" / "current").readlink().name == "1.0.2"
        assert json.loads((state / "runtimes.json").read_text()) == {"1.0.1": runtime_a, "1.0.2": runtime_b}
        variant = Path("_internal/mlpack_edge/runtime/_variant.pyc")  # the module only runtime B holds
        assert (prefix / "gov" / "1.0.2" / variant).is_file() and not (prefix / "gov" / "1.0.1" / variant).exists()
        assert not list((state / "downloads").glob("*")), "the runtime, bundle and assembled executable are removed"
        assert run(launcher, "verify").returncode == 0
        print(f"\nbundle only: {bundle_only['bytes']} B; whole payload: {whole['bytes']} B "
              f"(runtime {open_appended(exe_b).runtime_size} B)")
    finally:
        stop_collector(collector)
