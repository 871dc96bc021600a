"""What the model card and `mlpack inspect` cost, against baselines measured in the same run.

    .venv/bin/python benchmarks/model_card.py [--repeat 20] [--runtime-mb 38]

1. ``render_card`` per example (median of ``--repeat``) against the whole build of that
   example (sum of its stages): the card's share of the build. Card size against the
   bundle's other files.
2. ``inspect_path`` on a bundle folder against the device's own integrity check
   (``read_manifest`` + ``verify_files``): what the facts, the profile and the signature
   check add.
3. ``inspect_path`` on an executable (a stand-in runtime of ``--runtime-mb`` random
   bytes, the size of the real one, with the bundle appended) against one sha256 pass
   over the same file (``hashlib.file_digest``): inspect hashes the file once for both
   the runtime check and the file's own digest, so the target is about 1×.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

from mlpack_edge.builder import build
from mlpack_edge.builder.inspect import inspect_path
from mlpack_edge.builder.report import CARD_FILE, render_card
from mlpack_edge.monitor_agent.profile import Profile
from mlpack_edge.runtime.embedded import append_bundle
from mlpack_edge.runtime.manifest import read_manifest, verify_files

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ("breast_cancer", "diabetes", "fleet_faults")


def _median(fn: Callable[[], object], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def _verify(bundle: Path) -> None:
    """The device's integrity check: every file against the manifest's digests."""
    verify_files(read_manifest(bundle), lambda n: (bundle / n).read_bytes(), str(bundle))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=20)
    ap.add_argument("--runtime-mb", type=float, default=38.0)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="mlpack-bench-card-") as tmp:
        print(f"{'example':<14} {'build s':>8} {'card ms':>8} {'share':>6} {'card kB':>8} {'other kB':>9}")
        bundles = []
        for name in EXAMPLES:
            result = build(ROOT / "examples" / name / "mlpack.toml", Path(tmp) / name, executable=False)
            manifest = json.loads((result.bundle_dir / "manifest.json").read_bytes())
            profile = Profile.from_dict(json.loads((result.bundle_dir / "profile.json").read_bytes()))
            card = _median(partial(render_card, manifest, profile), args.repeat)
            whole = sum(s for _, s in result.stages)
            sizes = {p.name: p.stat().st_size for p in result.bundle_dir.iterdir()}
            other = sum(v for k, v in sizes.items() if k != CARD_FILE)
            print(
                f"{name:<14} {whole:>8.3f} {card * 1e3:>8.2f} {card / whole:>6.1%} "
                f"{sizes[CARD_FILE] / 1e3:>8.1f} {other / 1e3:>9.1f}"
            )
            bundles.append(result.bundle_dir)

        print(f"\n{'inspect (bundle)':<22} {'baseline ms':>11} {'inspect ms':>10} {'ratio':>6}")
        for b in bundles:
            m = read_manifest(b)
            base = _median(partial(_verify, b), args.repeat)
            ins = _median(partial(inspect_path, b), args.repeat)
            print(f"{m.name:<22} {base * 1e3:>11.2f} {ins * 1e3:>10.2f} {ins / base:>6.2f}")

        exe = Path(tmp) / "exe"
        files = {p.name: p.read_bytes() for p in sorted(bundles[-1].iterdir())}
        exe.write_bytes(append_bundle(os.urandom(int(args.runtime_mb * 1e6)), files))
        repeat = max(3, args.repeat // 4)

        def sha256_file() -> str:
            with open(exe, "rb") as fh:
                return hashlib.file_digest(fh, "sha256").hexdigest()

        base = _median(sha256_file, repeat)
        ins = _median(partial(inspect_path, exe), repeat)
        print(f"\n{'inspect (executable)':<22} {'sha256 ms':>11} {'inspect ms':>10} {'ratio':>6}")
        print(f"{f'{exe.stat().st_size / 1e6:.1f} MB':<22} {base * 1e3:>11.1f} {ins * 1e3:>10.1f} {ins / base:>6.2f}")


if __name__ == "__main__":
    main()
