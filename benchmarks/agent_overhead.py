"""What monitoring costs a prediction: single-row p50, batch cost per row×feature, memory.

    .venv/bin/python benchmarks/agent_overhead.py [--calls 20000] [--rounds 1] [--keep DIR]

Builds two real bundles with the builder (breast_cancer: 30 numeric features, logistic
regression; fleet_faults: 5 numeric + 3 categorical, gradient boosting), opens them with
the runtime and measures, in the same run and interleaved in blocks so machine noise
hits both sides alike:

1. single-row ``Model.predict`` p50 with the agent's recorder attached vs without
   (target ≤ 1.05×), and ``Model.predict_proba``'s. The recorder is as the running agent
   (``serve``) has it: ``auto_roll`` off, its thread rolls windows, and the model appends rows
   to the recorder's row sink; both methods are also measured with ``auto_roll`` on (a
   Python API user's ``Recorder``, an agent not started), whose sinks take rows until the
   window's end. Both the end-to-end runtime path and the recorder alone
   (``InferenceSession.run`` + ``Recorder.record_row`` vs ``run``) are shown, because the
   runtime takes a faster validation path when no recorder is attached;
2. the single-row call that flushes the buffer (bins ~511 rows): the longest pause a
   ``serve`` request sees from the recorder, which its p99 pays;
3. batch recording cost in µs per row×feature (``record`` + the flush that bins it),
   target ≤ 1 µs;
4. peak traced memory while recording ~10⁴ vs ~10⁶ rows (target: flat).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

import numpy as np

from mlpack_edge.builder import build
from mlpack_edge.monitor_agent.agent import ModelInfo
from mlpack_edge.monitor_agent.recorder import Recorder
from mlpack_edge.runtime.bundle import Bundle
from mlpack_edge.runtime.model import Model

ROOT = Path(__file__).resolve().parents[1]


def _p50_pair(off: object, on: object, calls: int, block: int = 500) -> tuple[float, float]:
    """Median seconds per call of two zero-argument callables, interleaved in blocks."""
    t_off: list[float] = []
    t_on: list[float] = []
    clock = time.perf_counter
    for _ in range(max(1, calls // block)):
        for fn, out in ((off, t_off), (on, t_on)):
            for _ in range(block):
                t0 = clock()
                fn()  # type: ignore[operator]
                out.append(clock() - t0)
    return statistics.median(t_off), statistics.median(t_on)


def _mean_pair(off: object, on: object, calls: int) -> tuple[float, float]:
    """Mean seconds per call (includes the amortised flushes the median hides)."""
    res = []
    for fn in (off, on, off, on):
        t0 = time.perf_counter()
        for _ in range(calls):
            fn()  # type: ignore[operator]
        res.append((time.perf_counter() - t0) / calls)
    return min(res[0], res[2]), min(res[1], res[3])


def _rows(bundle: Bundle, n: int, seed: int = 0) -> list[dict[str, object]]:
    """Rows like the golden probes (valid inputs), repeated to ``n``."""
    base = bundle.read_json("golden.json")["rows"]
    rng = np.random.default_rng(seed)
    return [base[int(i)] for i in rng.integers(0, len(base), n)]


def _spread(values: list[float]) -> str:
    return f"min {min(values):.3f} median {statistics.median(values):.3f}"


def single_row(bundle: Bundle, info: ModelInfo, calls: int, rounds: int = 1) -> None:
    plain = Model(bundle, threads=1)
    rec = Recorder(info.profile, info.content_hash, on_window=lambda w: None)
    rec.auto_roll = False  # as under serve: the agent's thread rolls windows
    watched = Model(bundle, threads=1, recorder=rec)
    one_shot = Model(bundle, threads=1, recorder=Recorder(info.profile, info.content_hash, on_window=lambda w: None))
    rows = _rows(bundle, 64)
    i = [0]

    def pick() -> dict[str, object]:
        i[0] = (i[0] + 1) & 63
        return rows[i[0]]

    offs, ons, ratios = [], [], []
    for _ in range(rounds):
        off, on = _p50_pair(lambda: plain.predict(pick()), lambda: watched.predict(pick()), calls)
        offs.append(off * 1e6)
        ons.append(on * 1e6)
        ratios.append(on / off)
        print(f"  Model.predict(dict row) p50   off {off * 1e6:7.1f} µs   on {on * 1e6:7.1f} µs   ratio {on / off:.3f}")
    if rounds > 1:
        print(f"  Model.predict(dict row) p50 over {rounds} rounds: off µs {_spread(offs)}, on µs {_spread(ons)},"
              f" ratio {_spread(ratios)}")

    # A recorder that rolls its own windows (a Python API user's, or one-shot predict's): the
    # sinks take rows until the window's end, read on perf_counter.
    for method in ("predict", "predict_proba"):
        off_call, on_call = getattr(plain, method), getattr(one_shot, method)  # looked up once, outside the timed calls
        ar: list[float] = []
        for _ in range(rounds):
            off, on = _p50_pair(lambda: off_call(pick()), lambda: on_call(pick()), calls)
            ar.append(on / off)
            print(f"  Model.{method}(dict row) p50, auto_roll on: off {off * 1e6:5.1f} µs   on {on * 1e6:7.1f} µs"
                  f"   ratio {on / off:.3f}")
        if rounds > 1:
            print(f"  Model.{method}(dict row) p50 ratio, auto_roll on, over {rounds} rounds: {_spread(ar)}")

    pr: list[float] = []
    for _ in range(rounds):
        off, on = _p50_pair(lambda: plain.predict_proba(pick()), lambda: watched.predict_proba(pick()), calls)
        pr.append(on / off)
        bound = "both run into a bound output" if watched._proba_sink is not None else "on also asks for the label"
        print(f"  Model.predict_proba(dict row) p50 off {off * 1e6:5.1f} µs   on {on * 1e6:7.1f} µs   ratio {on / off:.3f}"
              f"   ({bound})")
    if rounds > 1:
        print(f"  Model.predict_proba(dict row) p50 ratio over {rounds} rounds: {_spread(pr)}")

    # The recorder alone: the same session run, with and without record() after it.
    batch = watched.schema.rows([rows[0]], 0)
    feeds = watched._feeds(batch)  # noqa: SLF001 - benchmark reaches in to isolate the recorder
    run = watched._run  # noqa: SLF001
    outputs = watched._outputs  # noqa: SLF001
    codes = np.zeros(1, dtype=np.int64)

    def bare() -> None:
        run(outputs, feeds, None)

    def recorded() -> None:  # record_row: what the runtime's single-row path calls
        t0 = time.perf_counter()
        run(outputs, feeds, None)
        rec.record_row(batch.numeric, batch.categorical, codes, time.perf_counter() - t0)

    off, on = _p50_pair(bare, recorded, calls)
    print(f"  session.run (+ record) p50    off {off * 1e6:7.1f} µs   on {on * 1e6:7.1f} µs   ratio {on / off:.3f}"
          f"   (record: {(on - off) * 1e6:.2f} µs)")
    off, on = _mean_pair(bare, recorded, calls)
    print(f"  session.run (+ record) mean   off {off * 1e6:7.1f} µs   on {on * 1e6:7.1f} µs   ratio {on / off:.3f}"
          f"   (incl. amortised binning)")


def flush_stall(bundle: Bundle, info: ModelInfo, flushes: int = 60) -> None:
    """The single-row call that fills the buffer bins it: the longest pause a request sees
    (``serve``'s p99 pays it), against the calls that only append."""
    model = Model(bundle, threads=1)
    rows = _rows(bundle, 64)
    batch = model.schema.rows(rows[:1], 0)
    codes = np.zeros(1, dtype=np.int64)
    rec = Recorder(info.profile, info.content_hash, on_window=lambda w: None)
    rec.auto_roll = False  # as under serve: the agent's thread rolls windows
    clock = time.perf_counter
    times: list[float] = []
    for _ in range(flushes * 512):
        numeric = None if batch.numeric is None else batch.numeric.copy()
        t0 = clock()
        rec.record_row(numeric, batch.categorical, codes, 0.001)
        times.append(clock() - t0)
    times.sort()
    stalls = times[-flushes:]  # one flushing call in ~511
    print(f"  single-row record_row: p50 {statistics.median(times[:-flushes]) * 1e6:.2f} µs; the call that flushes"
          f" ~511 rows: min {stalls[0] * 1e6:.0f} µs, median {statistics.median(stalls) * 1e6:.0f} µs")


def batch_cost(bundle: Bundle, info: ModelInfo) -> None:
    model = Model(bundle, threads=1)
    n_feat = len(info.profile.features)
    for size in (1, 100, 10_000):
        rows = _rows(bundle, size)
        batch = model.schema.rows(rows, 0)
        codes = np.zeros(size, dtype=np.int64)
        rec = Recorder(info.profile, info.content_hash, on_window=lambda w: None)
        reps = max(1, 200_000 // size)
        t0 = time.perf_counter()
        for _ in range(reps):
            rec.record(batch.numeric, batch.categorical, codes, 0.001)
        rec.snapshot()  # bins whatever is still buffered
        per = (time.perf_counter() - t0) / (reps * size * n_feat)
        print(f"  batch of {size:>6} rows × {n_feat} features: {per * 1e6:.3f} µs per row×feature")


def memory(bundle: Bundle, info: ModelInfo) -> None:
    model = Model(bundle, threads=1)
    rows = _rows(bundle, 1000)
    batch = model.schema.rows(rows, 0)
    one = model.schema.rows(rows[:1], 0)
    codes = np.zeros(1000, dtype=np.int64)
    for batches in (10, 1000):  # 10^4 vs 10^6 rows, the same mix of calls
        rec = Recorder(info.profile, info.content_hash, on_window=lambda w: None)
        tracemalloc.start()
        for _ in range(batches):  # a fresh array per call, as from real requests
            numeric = None if batch.numeric is None else batch.numeric.copy()
            rec.record(numeric, batch.categorical, codes.copy(), 0.001)
        for _ in range(5_000):
            rec.record(one.numeric, one.categorical, codes[:1], 0.001)
        rec.snapshot()
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        print(f"  {batches * 1000 + 5000:>9} rows recorded: peak traced memory {peak / 1024:8.1f} KiB")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=1, help="single-row rounds (min and median of the ratios)")
    parser.add_argument("--keep", type=Path, help="build bundles here (reused if present)")
    args = parser.parse_args()
    out = args.keep or Path(tempfile.mkdtemp(prefix="agent-bench-"))
    for example in ("breast_cancer", "fleet_faults"):
        spec = ROOT / "examples" / example / "mlpack.toml"
        found = sorted(out.glob(f"{example.replace('_', '-')}-*"))
        bundle_dir = found[0] if found and found[0].is_dir() else build(spec, out, executable=False).bundle_dir
        bundle = Bundle.open(bundle_dir)
        info = ModelInfo.from_bundle_bytes(bundle.manifest.raw, bundle.read("profile.json"), str(bundle_dir))
        n_num = sum(f.kind == "numeric" for f in info.profile.features)
        print(f"{info.name}: {n_num} numeric + {len(info.profile.features) - n_num} categorical features")
        single_row(bundle, info, args.calls, args.rounds)
        flush_stall(bundle, info)
        batch_cost(bundle, info)
        memory(bundle, info)
    return 0


if __name__ == "__main__":
    sys.exit(main())
