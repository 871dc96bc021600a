"""linux-aarch64 from this x86-64 machine: freeze time, size per target, emulated predict latency.

    .venv/bin/python benchmarks/aarch64.py [--cache DIR] [--runs 7] [--repro]

Informative only (issue 15): emulation is not the device. Needs root, mmdebstrap, qemu-user
registered with binfmt_misc and the cross compiler (``mlpack runtime freeze --target
linux-aarch64`` says what is missing). The build roots are taken from ``--cache`` (default:
the slow test's ``~/.cache/mlpack-test-buildroot``, so a warm machine does not make them
again); the runtimes are frozen into a fresh temporary cache that borrows those roots, so:

* ``freeze_first_s`` — freezing the model-free aarch64 runtime (PyInstaller emulated by
  qemu, build root already made), beside the x86-64 runtime frozen the same way in its
  bullseye root (native): the baseline a user has today;
* ``freeze_cached_s`` — the same call again (the cache key and input check, no freeze),
  median of ``--runs``;
* ``size_mb`` — the fleet_faults executable per target;
* ``predict_s`` — ``predict`` of one CSV row, whole process (onefile unpack, import,
  onnxruntime session, one row), the aarch64 executable under qemu-user inside the arm64
  root and the x86-64 one natively, interleaved, ``--runs`` rounds after a warm-up each,
  min and median;
* ``same_bytes_as_cached`` — the aarch64 runtime frozen here compared byte for byte with
  the newest one the slow test froze into ``--cache`` from the same sources (another
  freeze, another cache folder): the reproducibility promise across freezes;
* ``--repro`` freezes it once more into a second empty cache and compares those two.
"""

from __future__ import annotations

import argparse
import csv
import filecmp
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "fleet_faults"
ARM = "linux-aarch64"
X86 = "linux-x86_64"


class _Progress:
    def info(self, message: str) -> None:
        print(f"  [{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def _borrowing_cache(roots_from: Path) -> Path:
    """An empty mlpack cache whose build roots are ``roots_from``'s (made once, minutes)."""
    cache = Path(tempfile.mkdtemp(prefix="mlpack-bench-aarch64-"))
    (roots_from / "buildroot").mkdir(parents=True, exist_ok=True)
    (cache / "buildroot").symlink_to(roots_from / "buildroot")
    return cache


def _timed_freeze(cache: Path, target: str) -> tuple[float, Path]:
    from mlpack_edge.builder._freeze import frozen_runtime

    t0 = time.perf_counter()
    runtime = frozen_runtime(cache, _Progress(), floor="glibc-2.31", target=target)
    return time.perf_counter() - t0, runtime.executable


def _newest_runtime(cache: Path, target: str) -> Path | None:
    """The runtime the slow test froze into ``cache`` for ``target`` from today's sources, if there."""
    from mlpack_edge.builder._buildroot import build_root
    from mlpack_edge.builder._freeze import _pins, runtime_key, stage_sources

    root = build_root(cache, _pins(), target=target)
    versions = {**root.versions, "environment": str(root.path), "floor": "glibc-2.31"}
    exe = cache / "runtime" / runtime_key(stage_sources(), versions, target) / "mlpack-device"
    return exe if exe.is_file() else None


def _one_row(scratch: Path) -> Path:
    with open(EXAMPLE / "fleet_faults.csv", newline="") as fh:
        row = next(csv.DictReader(fh))
    row.pop("fault")
    path = scratch / "one-row.csv"
    with open(path, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(row))
        writer.writeheader()
        writer.writerow(row)
    return path


def _run(cmd: list[str]) -> float:
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, timeout=600)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} exited with {proc.returncode}: {proc.stderr.decode()[-300:]}")
    return time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache", type=Path, default=Path(os.environ.get("MLPACK_TEST_BUILDROOT_CACHE") or Path.home() / ".cache" / "mlpack-test-buildroot"))
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--repro", action="store_true", help="freeze the aarch64 runtime twice and compare the bytes")
    args = parser.parse_args()

    from mlpack_edge.builder import RecordingReporter, build
    from mlpack_edge.builder._buildroot import _chroot_command, build_root
    from mlpack_edge.builder._freeze import _pins

    out: dict[str, object] = {}
    cache = _borrowing_cache(args.cache)
    work = Path(tempfile.mkdtemp(prefix="mlpack-bench-aarch64-work-"))
    try:
        for target in (X86, ARM):
            first, exe = _timed_freeze(cache, target)
            previous = _newest_runtime(args.cache, target)
            if previous is not None:
                out[f"same_bytes_as_cached_{target}"] = filecmp.cmp(exe, previous, shallow=False)
            cached = [_timed_freeze(cache, target)[0] for _ in range(args.runs)]
            out[f"freeze_first_s_{target}"] = round(first, 1)
            out[f"freeze_cached_s_{target}"] = {"min": round(min(cached), 3), "median": round(statistics.median(cached), 3)}
        spec = work / "fleet_faults"
        shutil.copytree(EXAMPLE, spec)
        os.environ["MLPACK_CACHE_DIR"] = str(cache)
        result = build(spec, work / "dist", reporter=RecordingReporter(), floor="glibc-2.31", targets=(X86, ARM))
        x86_exe, arm_exe = result.executables
        out["size_mb"] = {X86: round(x86_exe.stat().st_size / 1e6, 1), ARM: round(arm_exe.stat().st_size / 1e6, 1)}

        root = build_root(args.cache, _pins(), target=ARM)
        scratch = root.path / "tmp" / f"mlpack-bench-{os.getpid()}"
        scratch.mkdir(parents=True)
        try:
            shutil.copy2(arm_exe, scratch / arm_exe.name)
            row = _one_row(scratch)
            commands = {
                ARM: _chroot_command(root.path, [root.inside(scratch / arm_exe.name), "predict", root.inside(row)]),
                X86: [str(x86_exe), "predict", str(row)],
            }
            times: dict[str, list[float]] = {name: [] for name in commands}
            for cmd in commands.values():
                _run(cmd)  # warm-up: page cache
            for _ in range(args.runs):
                for name, cmd in commands.items():
                    times[name].append(_run(cmd))
            out["predict_s"] = {
                name: {"min": round(min(t), 2), "median": round(statistics.median(t), 2)} for name, t in times.items()
            }
            out["predict_ratio_median"] = round(statistics.median(times[ARM]) / statistics.median(times[X86]), 1)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)

        if args.repro:
            other = _borrowing_cache(args.cache)
            try:
                seconds, again = _timed_freeze(other, ARM)
                _, one = _timed_freeze(cache, ARM)
                out["repro_second_freeze_s"] = round(seconds, 1)
                out["repro_identical"] = filecmp.cmp(one, again, shallow=False)
                out["repro_sizes"] = [one.stat().st_size, again.stat().st_size]
            finally:
                shutil.rmtree(other, ignore_errors=True)
    finally:
        shutil.rmtree(cache, ignore_errors=True)
        shutil.rmtree(work, ignore_errors=True)
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
