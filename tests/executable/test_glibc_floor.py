"""The device executable frozen in the Debian 11 build root runs on Debian 11 (glibc 2.31).

Slow tier, root only (``chroot``), needs ``mmdebstrap``. The build root, its CPython and
the frozen runtime are cached across runs under ``$MLPACK_TEST_BUILDROOT_CACHE`` (default
``~/.cache/mlpack-test-buildroot``): cold, this test makes the build root, compiles CPython
and freezes (minutes); warm, it builds the example and runs it in the chroot. The device
side is a *separate* plain minbase bullseye root (no compiler, no Python), so nothing the
build root installed can help the executable start.
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
import shutil
import subprocess
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from mlpack_edge.builder._buildroot import GLIBC, MIRROR, SUITE, root_problem
from mlpack_edge.builder._glibc import version_key
from mlpack_edge.builder.inspect import inspect_path

from ._builds import EXAMPLE, build_with_cache, spec_copy

pytestmark = [
    pytest.mark.slow,
    # CI sets MLPACK_REQUIRE_BUILDROOT=1 (.ci/run installs mmdebstrap): there a missing tool fails.
    pytest.mark.skipif(
        root_problem() is not None and not os.environ.get("MLPACK_REQUIRE_BUILDROOT"), reason=str(root_problem())
    ),
]

NAME = "breast-cancer"


@dataclass(frozen=True)
class OldRoot:
    path: Path
    exe_inside: str  # the executable, as a path inside the root
    rows_inside: str
    host_exe: Path
    rows_csv: Path


def _cache() -> Path:
    return Path(os.environ.get("MLPACK_TEST_BUILDROOT_CACHE") or Path.home() / ".cache" / "mlpack-test-buildroot")


def _device_root(cache: Path) -> Path:
    """A plain minbase bullseye root: what a Debian 11 device has, made once and reused."""
    root = cache / "device-root" / f"{SUITE}-amd64"
    if not (root / "etc" / "debian_version").is_file():
        tmp = root.with_name(root.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            ["mmdebstrap", "--variant=minbase", SUITE, str(tmp), MIRROR], check=True, capture_output=True, timeout=1800
        )
        os.replace(tmp, root)
    return root


def _in_root(root: Path, *argv: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    from mlpack_edge.builder._buildroot import _chroot_command

    return subprocess.run(_chroot_command(root, list(argv)), capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def old_root(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OldRoot]:
    work = tmp_path_factory.mktemp("glibc")
    cache = _cache()
    spec = spec_copy(work, "1.0.0", 0.5)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLPACK_CACHE_DIR", str(cache))
        from mlpack_edge.builder import RecordingReporter, build

        result = build(spec, work / "dist", reporter=RecordingReporter(), floor=f"glibc-{GLIBC}")
    assert result.executable is not None
    root = _device_root(cache)
    assert (root / "etc" / "debian_version").read_text().startswith("11.")
    scratch = root / "tmp" / f"mlpack-test-{os.getpid()}"
    shutil.rmtree(scratch, ignore_errors=True)
    scratch.mkdir(parents=True)
    shutil.copy2(result.executable, scratch / result.executable.name)
    with open(EXAMPLE / "breast_cancer.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))[:25]
    rows_csv = scratch / "rows.csv"
    with open(rows_csv, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=[k for k in rows[0] if k != "diagnosis"], extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    inside = "/" + scratch.relative_to(root).as_posix()
    try:
        yield OldRoot(root, f"{inside}/{result.executable.name}", f"{inside}/rows.csv", result.executable, rows_csv)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _proba(text: str) -> np.ndarray:
    rows = list(csv.DictReader(io.StringIO(text)))
    assert rows and all(r["error"] == "" for r in rows)
    return np.array([[float(r["proba_benign"]), float(r["proba_malignant"])] for r in rows])


def test_inspect_records_target_and_a_floor_at_most_2_31(old_root: OldRoot) -> None:
    info = inspect_path(old_root.host_exe).executable
    assert info is not None and info.target == "linux-x86_64"
    assert info.glibc_floor is not None and version_key(info.glibc_floor) <= version_key(GLIBC), info.glibc_floor


def test_debian_11_root_has_the_old_glibc(old_root: OldRoot) -> None:
    proc = _in_root(old_root.path, "/usr/bin/ldd", "--version")
    assert proc.returncode == 0 and re.search(r"GLIBC 2\.31|2\.31", proc.stdout.splitlines()[0]), proc.stdout


def test_info_verify_predict_in_debian_11(old_root: OldRoot) -> None:
    info = _in_root(old_root.path, old_root.exe_inside, "info")
    assert info.returncode == 0, info.stderr
    assert NAME in info.stdout
    verify = _in_root(old_root.path, old_root.exe_inside, "verify")
    assert verify.returncode == 0, verify.stderr
    there = _in_root(old_root.path, old_root.exe_inside, "predict", old_root.rows_inside)
    assert there.returncode == 0, there.stderr
    here = subprocess.run([str(old_root.host_exe), "predict", str(old_root.rows_csv)], capture_output=True, text=True, timeout=300)
    assert here.returncode == 0, here.stderr
    np.testing.assert_allclose(_proba(there.stdout), _proba(here.stdout), atol=1e-5)


def test_install_and_serve_in_debian_11(old_root: OldRoot) -> None:
    prefix = "/opt/mlpack-test"
    shutil.rmtree(old_root.path / prefix.lstrip("/"), ignore_errors=True)
    proc = _in_root(old_root.path, old_root.exe_inside, "install", "--prefix", prefix, "--allow-unsigned")
    assert proc.returncode == 0, proc.stderr
    from mlpack_edge.builder._buildroot import _chroot_command

    exe = f"{prefix}/{NAME}/current/{NAME}"
    server = subprocess.Popen(
        _chroot_command(old_root.path, [exe, "serve", "--port", "0"]), stderr=subprocess.PIPE, text=True
    )
    try:
        assert server.stderr is not None
        line = server.stderr.readline()
        match = re.search(r"on (http://127\.0\.0\.1:\d+)", line)
        assert match, f"expected the listening line, got {line!r}"
        url = match.group(1)
        with open(old_root.rows_csv, newline="") as fh:
            row = {k: float(v) for k, v in next(csv.DictReader(fh)).items()}
        request = urllib.request.Request(url + "/predict", json.dumps(row).encode(), {"Content-Type": "application/json"})
        answer = json.loads(urllib.request.urlopen(request, timeout=60).read())
        assert answer["label"] in ("benign", "malignant")
        here = subprocess.run([str(old_root.host_exe), "predict", str(old_root.rows_csv)], capture_output=True, text=True, timeout=300)
        expected = _proba(here.stdout)[0, 1]
        assert abs(float(answer["probabilities"]["malignant"]) - expected) <= 1e-5
    finally:
        server.terminate()
        try:
            server.wait(timeout=60)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
        shutil.rmtree(old_root.path / prefix.lstrip("/"), ignore_errors=True)


def test_a_host_frozen_executable_does_not_start_there(old_root: OldRoot, tmp_path: Path) -> None:
    """The Debian 11 root tells the floors apart: on a newer host, the default (host) freeze fails in it.

    Not with mlpack's one-line refusal: the bootloader built on a glibc >= 2.34 host itself
    needs GLIBC_2.34 (``__libc_start_main``), so on 2.31 the dynamic loader refuses it first.
    """
    from mlpack_edge.builder import RecordingReporter, build

    result = build(spec_copy(tmp_path, "1.0.0", 0.5), tmp_path / "dist", reporter=RecordingReporter())
    assert result.executable is not None
    floor = inspect_path(result.executable).executable.glibc_floor  # type: ignore[union-attr]
    assert floor is not None
    if version_key(floor) <= version_key(GLIBC):
        pytest.skip(f"this machine's runtime needs only glibc {floor}: it would start in Debian 11 too")
    target = old_root.path / old_root.exe_inside.lstrip("/")
    host_exe = target.with_name("host-" + target.name)
    shutil.copy2(result.executable, host_exe)
    proc = _in_root(old_root.path, old_root.exe_inside.replace(target.name, host_exe.name), "info")
    assert proc.returncode != 0
    assert "GLIBC_" in proc.stderr and "not found" in proc.stderr, proc.stderr


def test_two_freezes_in_the_build_root_give_the_same_bytes(old_root: OldRoot, tmp_path: Path) -> None:
    from mlpack_edge.builder import _bootloader, _buildroot, _freeze

    cache = _cache()
    cached = _freeze.frozen_runtime(cache, floor=f"glibc-{GLIBC}")
    assert cached.reused
    root = _buildroot.build_root(cache, _freeze._pins())
    out = tmp_path / "again"
    out.mkdir()
    bootloader = _bootloader.build_bootloader(root, cache, pyinstaller=root.versions["pyinstaller"])
    floor = _freeze._freeze(_freeze.stage_sources(), out, tmp_path / "freeze.log", buildroot=root, bootloader=bootloader)
    assert floor == cached.glibc_floor
    assert (out / _freeze.FROZEN_NAME).read_bytes() == cached.executable.read_bytes()
    # The bootloader itself compiles to the same bytes again (a fresh waf build in a new scratch folder).
    rebuilt = tmp_path / "bootloader"
    rebuilt.mkdir()
    sdist = next((cache / "sdist").glob(f"pyinstaller-{root.versions['pyinstaller']}.tar.gz"))
    _bootloader._build(sdist, rebuilt, root, root.arch, tmp_path / "waf.log")
    assert (rebuilt / "run").read_bytes() == bootloader.host_path.read_bytes()


def test_a_runtime_frozen_elsewhere_imports_and_serves_builds(old_root: OldRoot, tmp_path: Path) -> None:
    """The build-root runtime stands in for one frozen on a device: imported, found, same floor; a cut copy is refused."""
    from click.testing import CliRunner

    from mlpack_edge.builder import _freeze
    from mlpack_edge.cli import main

    cached = _freeze.frozen_runtime(_cache(), floor=f"glibc-{GLIBC}")
    fresh = tmp_path / "cache"
    argv = ["runtime", "import", str(cached.executable), "--target", "linux-x86_64", "--cache-dir", str(fresh)]
    result = CliRunner().invoke(main, argv)
    assert result.exit_code == 0, result.output
    assert f"glibc {cached.glibc_floor} or newer" in result.stdout
    found = _freeze._imported(fresh, "linux-x86_64", _freeze.stage_sources(), "(test)")
    assert found.glibc_floor == cached.glibc_floor
    assert found.executable.read_bytes() == cached.executable.read_bytes()
    cut = tmp_path / "cut"
    cut.write_bytes(cached.executable.read_bytes()[:-4096])
    result = CliRunner().invoke(main, [*argv[:2], str(cut), *argv[3:]])
    assert result.exit_code == 1 and "not a frozen mlpack runtime, or damaged" in result.stderr


def _refusal(need: str, have: str) -> str:
    return f"mlpack: this executable needs glibc {need} or newer; this system has glibc {have}\n"


def test_an_older_glibc_is_refused_in_one_line_by_the_download_and_the_installed_executable(old_root: OldRoot) -> None:
    """Debian 11 has glibc 2.31: a copy whose marker asks for 2.32 refuses every command, before unpacking.

    The marker is what the freeze set (the measured floor, also in the signed manifest);
    raising it in a copy stands in for a device older than the floor, with the real
    bootloader, the real executable and a real old glibc.
    """
    from mlpack_edge.builder._bootloader import marker_floor, with_floor

    data = old_root.host_exe.read_bytes()
    info = inspect_path(old_root.host_exe)
    assert info.executable is not None
    assert marker_floor(data) == info.executable.glibc_floor
    assert info.manifest.data["targets"] == {"linux-x86_64": {"glibc_floor": info.executable.glibc_floor}}
    scratch = old_root.path / old_root.exe_inside.lstrip("/")
    for floor, ok in (("2.32", False), ("2.31", True)):
        copy = scratch.with_name(f"floor-{floor}")
        copy.write_bytes(with_floor(data, floor))
        copy.chmod(0o755)
        inside = old_root.exe_inside.replace(scratch.name, copy.name)
        # (install of a copy that starts must fail anyway: the trailer's runtime sha256 no longer matches)
        install = [] if ok else [["install", "--prefix", "/opt/mlpack-refused", "--allow-unsigned"]]
        for argv in [["info"], ["verify"], *install]:
            proc = _in_root(old_root.path, inside, *argv)
            if ok:
                assert proc.returncode == 0, (argv, proc.stderr)
                continue
            assert (proc.returncode, proc.stdout, proc.stderr) == (1, "", _refusal("2.32", "2.31")), argv
    assert not (old_root.path / "opt" / "mlpack-refused").exists()

    prefix = old_root.path / "opt" / "mlpack-refusal-test"
    shutil.rmtree(prefix, ignore_errors=True)
    proc = _in_root(old_root.path, old_root.exe_inside, "install", "--prefix", "/opt/mlpack-refusal-test", "--allow-unsigned")
    assert proc.returncode == 0, proc.stderr
    try:
        launcher = (prefix / NAME / "current" / NAME).resolve()
        assert marker_floor(launcher.read_bytes()) == info.executable.glibc_floor  # the unpacked launcher is marked too
        launcher.write_bytes(with_floor(launcher.read_bytes(), "2.32"))
        for argv in (["info"], ["predict", old_root.rows_inside], ["serve", "--port", "0"]):
            proc = _in_root(old_root.path, f"/opt/mlpack-refusal-test/{NAME}/current/{NAME}", *argv)
            assert (proc.returncode, proc.stdout, proc.stderr) == (1, "", _refusal("2.32", "2.31")), argv
    finally:
        shutil.rmtree(prefix, ignore_errors=True)
