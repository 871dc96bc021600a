"""What signature checking costs on the device, against baselines measured in the same run.

    .venv/bin/python benchmarks/signing.py [--runs 15]

* one Ed25519 verification in pure Python (``runtime/_ed25519.py``, the device path)
  against ``cryptography``'s verify (OpenSSL; the workstation library, not shipped to devices);
* ``Bundle.open`` (signature + every file's sha256) of a signed bundle with a trusted
  key, against the same bundle opened unsigned (manifest.sig removed);
* a cold process that opens the bundle (what ``predict``/``serve`` pay at start), signed
  against unsigned: the signature adds the verifier's import and one verification.

Builds the breast-cancer example once (no executable) into a temporary folder. The
machine is shared: read the ratios, not the absolute times.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "breast_cancer"


def _median(fn: Callable[[], object], runs: int, inner: int = 1) -> float:
    samples = []
    for _ in range(runs):
        t0 = time.perf_counter()
        for _ in range(inner):
            fn()
        samples.append((time.perf_counter() - t0) / inner)
    return statistics.median(samples)


def _cold(bundle: Path, trust: str | None, runs: int) -> float:
    policy = f"TrustPolicy.from_key_files([{trust!r}])" if trust else "None"
    code = (
        "from mlpack_edge.runtime.bundle import Bundle; from mlpack_edge.runtime._trust import TrustPolicy; "
        f"Bundle.open({str(bundle)!r}, trust={policy})"
    )
    samples = []
    for _ in range(runs):
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-c", code], check=True)
        samples.append(time.perf_counter() - t0)
    return statistics.median(samples)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=15)
    args = parser.parse_args()

    from cryptography.hazmat.primitives.serialization import load_pem_public_key

    from mlpack_edge.builder import NullReporter, build
    from mlpack_edge.builder.signing import generate_key
    from mlpack_edge.runtime import _ed25519
    from mlpack_edge.runtime._trust import Signature, TrustPolicy
    from mlpack_edge.runtime.bundle import Bundle

    with tempfile.TemporaryDirectory(prefix="mlpack-bench-signing-") as scratch:
        work = Path(scratch)
        pair = generate_key(work, "bench")
        signed = build(
            EXAMPLE / "mlpack.toml", work / "dist", executable=False, reporter=NullReporter(), sign_key=pair.private
        ).bundle_dir
        unsigned = Path(shutil.copytree(signed, work / "unsigned"))
        (unsigned / "manifest.sig").unlink()
        raw = (signed / "manifest.json").read_bytes()
        sig = Signature.parse((signed / "manifest.sig").read_bytes(), "bench")
        public = load_pem_public_key(pair.public.read_bytes())
        trust = TrustPolicy.from_key_files([pair.public])

        assert _ed25519.verify(sig.public_key, sig.signature, raw)
        device = _median(lambda: _ed25519.verify(sig.public_key, sig.signature, raw), args.runs, 20)
        library = _median(lambda: public.verify(sig.signature, raw), args.runs, 200)
        open_signed = _median(lambda: Bundle.open(signed, trust=trust), args.runs, 20)
        open_unsigned = _median(lambda: Bundle.open(unsigned, trust=TrustPolicy.ad_hoc()), args.runs, 20)
        cold_signed = _cold(signed, str(pair.public), args.runs)
        cold_unsigned = _cold(unsigned, None, args.runs)
        results = {
            "manifest_bytes": len(raw),
            "verify_pure_python_us": round(device * 1e6, 1),
            "verify_cryptography_us": round(library * 1e6, 1),
            "verify_ratio_pure_python_to_cryptography": round(device / library, 2),
            "bundle_open_signed_ms": round(open_signed * 1e3, 3),
            "bundle_open_unsigned_ms": round(open_unsigned * 1e3, 3),
            "bundle_open_ratio_signed_to_unsigned": round(open_signed / open_unsigned, 2),
            "cold_open_signed_s": round(cold_signed, 3),
            "cold_open_unsigned_s": round(cold_unsigned, 3),
            "cold_open_ratio_signed_to_unsigned": round(cold_signed / cold_unsigned, 3),
        }
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
