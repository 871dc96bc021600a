"""Drift false alarms and detection, before (PSI >= 0.2 alone) and after (PSI AND chi-square).

    .venv/bin/python benchmarks/drift_false_alarm.py [--reps 1000] [--sizes 20,50,100,200,1000,10000]

For each example (breast_cancer: 30 numeric; diabetes: 10 numeric; fleet_faults: 5 numeric
+ 3 categorical with missing values) the reference profile is built exactly as the
builder builds it (``builder.data.load_data`` for the seeded split, then
``monitor_agent.profile.build_profile`` on the training rows with the spec's bins).
Samples of ``n`` rows are then drawn with replacement from the **held-out rows** and
binned with the device's binning rule, ``--reps`` samples per ``n`` and condition:

* unshifted: the share of samples with overall drift (any feature ``drift``), goal <= 1%;
* shift: one numeric feature (cycling over them) moved by one training standard
  deviation, detection goal >= 95% at n >= 200;
* scale: one numeric feature scaled x1.6 about its training mean, goal >= 99% at n >= 100.

"before" is the old rule (PSI >= psi_drift on any feature), "after" is
:func:`mlpack_edge.monitor_agent.drift.classify` (the device's and collector's verdict),
both on the same samples in the same run. The test counts a model's prediction among its
tests (Bonferroni over features + 1), as on a device; the prediction itself is not
simulated (it needs a trained model and the held-out predictions *are* its reference).

A held-out split has only 89-300 rows, so a sample of 1,000 or 10,000 of them repeats
rows: it is the held-out set's own empirical distribution, which differs from the training
split by that split's sampling noise. Any consistent test flags that difference once n is
large. The extra pool "fleet_faults (fresh rows)" draws from 50,000 new rows of the same
generator that made the CSV (``examples/make_datasets.py``), which is a true unshifted
population at every n.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from mlpack_edge.builder import data
from mlpack_edge.builder.spec import load_spec
from mlpack_edge.monitor_agent.drift import Thresholds, classify, psi, psi_rows
from mlpack_edge.monitor_agent.profile import CategoricalProfile, NumericProfile, Profile, build_profile
from mlpack_edge.monitor_agent.status import reference_count

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ("breast_cancer", "diabetes", "fleet_faults")


@dataclass
class Pool:
    """Rows to draw from, pre-binned: ``bins[j]`` is each row's bin of feature j (-1: not binned)."""

    name: str
    profile: Profile
    bins: list[np.ndarray]
    shifted: dict[int, np.ndarray]  # numeric feature j -> bins after +1 sd
    scaled: dict[int, np.ndarray]  # numeric feature j -> bins after x1.6 about the mean


def _bin_column(f: NumericProfile | CategoricalProfile, values: Any) -> np.ndarray:
    if isinstance(f, NumericProfile):
        x = np.asarray(values, dtype=np.float64)
        out = np.searchsorted(np.asarray(f.edges), x, side="right")
        return np.where(np.isnan(x), -1, out)
    index = {c: i for i, c in enumerate(f.categories)}
    return np.array([index.get(str(v), -1) if v not in ("", None) else -1 for v in values], dtype=np.int64)


def _pool(name: str, profile: Profile, rows: pd.DataFrame, train: pd.DataFrame) -> Pool:
    bins, shifted, scaled = [], {}, {}
    for j, f in enumerate(profile.features):
        col = rows[f.name].to_numpy()
        bins.append(_bin_column(f, col))
        if isinstance(f, NumericProfile):
            ref = train[f.name].to_numpy(dtype=np.float64)
            mean, sd = np.nanmean(ref), np.nanstd(ref)
            x = col.astype(np.float64)
            shifted[j] = _bin_column(f, x + sd)
            scaled[j] = _bin_column(f, mean + 1.6 * (x - mean))
    return Pool(name, profile, bins, shifted, scaled)


def load_example(example: str) -> tuple[Profile, Any]:
    spec = load_spec(ROOT / "examples" / example / "mlpack.toml")
    ds = data.load_data(spec.data, spec.model.task, spec.model.seed)
    profile = build_profile(
        [(f.name, f.kind, ds.x_train[f.name].to_numpy()) for f in ds.features], None, bins=spec.drift.bins
    )
    return profile, ds


def fresh_fleet_rows(n: int = 51500) -> pd.DataFrame:
    """New rows from the generator that made fleet_faults.csv (its first 1,500 dropped)."""
    sys.path.insert(0, str(ROOT / "examples"))
    import make_datasets  # type: ignore[import-not-found]

    with tempfile.TemporaryDirectory() as tmp, contextlib.redirect_stdout(io.StringIO()):
        (Path(tmp) / "fleet_faults").mkdir()
        make_datasets.fleet_faults(Path(tmp), n=n)
        frame = pd.read_csv(Path(tmp) / "fleet_faults" / "fleet_faults.csv", dtype=str, keep_default_na=False)
    return frame.iloc[1500:].reset_index(drop=True)


def _counts(col_bins: np.ndarray, idx: np.ndarray, n_bins: int) -> np.ndarray:
    """Bin counts of each sample (a row of ``idx``): one bincount over offset indices."""
    b = col_bins[idx]  # [samples, n]
    b = np.where(b < 0, n_bins, b)  # not binned -> a spill column, dropped below
    reps = idx.shape[0]
    flat = (b + (n_bins + 1) * np.arange(reps)[:, None]).ravel()
    return np.bincount(flat, minlength=reps * (n_bins + 1)).reshape(reps, n_bins + 1)[:, :n_bins]


def run(pool: Pool, n: int, reps: int, condition: str, rng: np.random.Generator, t: Thresholds) -> dict[str, float]:
    """Shares of samples with overall drift: before (PSI only) and after (PSI and test)."""
    feats = pool.profile.features
    n_tests = len(feats) + 1  # the prediction is one of a model's tests on a device
    numeric = sorted(pool.shifted)
    before = np.zeros(reps, dtype=bool)
    after = np.zeros(reps, dtype=bool)
    after_warn = np.zeros(reps, dtype=bool)
    chunk = max(1, 2_000_000 // n)
    rows = len(pool.bins[0])
    for lo in range(0, reps, chunk):
        hi = min(reps, lo + chunk)
        idx = rng.integers(0, rows, (hi - lo, n))
        moved = np.array([numeric[i % len(numeric)] for i in range(lo, hi)])
        for j, f in enumerate(feats):
            counts = _counts(pool.bins[j], idx, f.n_bins)
            if condition != "none" and j in pool.shifted:
                alt = (pool.shifted if condition == "shift" else pool.scaled)[j]
                mine = moved == j
                if mine.any():
                    counts[mine] = _counts(alt, idx[mine], f.n_bins)
            p = psi_rows(f.shares, counts)
            before[lo:hi] |= (p >= t.psi_drift) & (counts.sum(axis=1) > 0)
            for r in np.flatnonzero(p >= t.psi_warn):  # below psi_warn the verdict is ok or no data
                s = classify(
                    f.shares, counts[r], t, reference_count=reference_count(f), n_tests=n_tests,
                    ordered=isinstance(f, NumericProfile),
                ).status
                after[lo + r] |= s == "drift"
                after_warn[lo + r] |= s in ("warn", "drift")
    return {"before": float(before.mean()), "after": float(after.mean()), "after_warn": float(after_warn.mean())}


def _verdicts(profile: Profile, counts: list[np.ndarray], t: Thresholds) -> tuple[bool, bool, bool]:
    """(before: any PSI >= psi_drift, after: any drift, after: any warn or drift) of one sample."""
    n_tests = len(profile.features) + 1
    before = after = warn = False
    for f, c in zip(profile.features, counts):
        before |= bool(c.sum() > 0 and psi(f.shares, c) >= t.psi_drift)
        s = classify(f.shares, c, t, reference_count=reference_count(f), n_tests=n_tests,
                     ordered=isinstance(f, NumericProfile)).status
        after |= s == "drift"
        warn |= s in ("warn", "drift")
    return before, after, warn


def resplit(
    frame: pd.DataFrame, kinds: dict[str, str], bins: int, test_size: float, sizes: list[int], reps: int,
    rng: np.random.Generator, t: Thresholds,
) -> dict[tuple[str, int], np.ndarray]:
    """Independent nulls from a small CSV: per repetition a fresh random split, the reference
    built from its training rows (``build_profile``, as the builder does), and ``n`` distinct
    held-out rows (without replacement). Returns shares (before, after, after_warn)."""
    rows = len(frame)
    n_test = int(round(rows * test_size))
    out: dict[tuple[str, int], np.ndarray] = {}
    names = list(kinds)
    for rep in range(reps):
        perm = rng.permutation(rows)
        train, held = frame.iloc[perm[n_test:]], frame.iloc[perm[:n_test]]
        profile = build_profile([(c, kinds[c], train[c].to_numpy()) for c in names], None, bins=bins)  # type: ignore[misc]
        numeric = [j for j, f in enumerate(profile.features) if isinstance(f, NumericProfile)]
        moved = numeric[rep % len(numeric)]
        for n in sizes:
            if n > n_test:
                continue
            sample = held.iloc[:n]
            base = [np.bincount(b[b >= 0], minlength=f.n_bins)
                    for f, b in ((f, _bin_column(f, sample[f.name].to_numpy())) for f in profile.features)]
            for cond in ("none", "shift", "scale"):
                counts = list(base)
                if cond != "none":
                    f = profile.features[moved]
                    ref = train[f.name].to_numpy(dtype=np.float64)
                    mean, sd = np.nanmean(ref), np.nanstd(ref)
                    x = sample[f.name].to_numpy(dtype=np.float64)
                    x = x + sd if cond == "shift" else mean + 1.6 * (x - mean)
                    b = _bin_column(f, x)
                    counts[moved] = np.bincount(b[b >= 0], minlength=f.n_bins)
                out.setdefault((cond, n), np.zeros(3))
                out[(cond, n)] += _verdicts(profile, counts, t)
    return {k: v / reps for k, v in out.items()}


def timing(profile: Profile, rounds: int = 7, calls: int = 2000) -> tuple[list[float], list[float]]:
    """µs per feature: the old verdict (PSI + JS) vs classify (PSI + JS + test), interleaved."""
    f = next(x for x in profile.features if isinstance(x, NumericProfile))
    rng = np.random.default_rng(0)
    samples = [rng.multinomial(500, f.shares) for _ in range(calls)]
    t = Thresholds()
    old, new = [], []
    from mlpack_edge.monitor_agent.drift import js_divergence

    for _ in range(rounds):
        a = time.perf_counter()
        for c in samples:
            psi(f.shares, c)
            js_divergence(f.shares, c)
        b = time.perf_counter()
        for c in samples:
            classify(f.shares, c, t, reference_count=reference_count(f), n_tests=11)
        e = time.perf_counter()
        old.append((b - a) / calls * 1e6)
        new.append((e - b) / calls * 1e6)
    return old, new


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=1000)
    ap.add_argument("--sizes", default="20,50,100,200,1000,10000")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",")]
    t = Thresholds()
    pools = []
    for ex in EXAMPLES:
        profile, ds = load_example(ex)
        pools.append(_pool(f"{ex} (held-out, {len(ds.x_test)} rows)", profile, ds.x_test, ds.x_train))
        if ex == "fleet_faults":
            fresh = fresh_fleet_rows()
            typed = pd.DataFrame({
                f.name: (pd.to_numeric(fresh[f.name].replace("", np.nan)) if f.kind == "numeric" else fresh[f.name])
                for f in ds.features
            })
            pools.append(_pool(f"fleet_faults (fresh rows, {len(typed)})", profile, typed, ds.x_train))
    print(f"thresholds: psi_drift {t.psi_drift}, psi_warn {t.psi_warn}, alpha {t.alpha} (family), min_count {t.min_count}; "
          f"{args.reps} samples per cell, seed {args.seed}")
    print("cells: share of samples with overall DRIFT, before (PSI >= 0.2) -> after (PSI and chi-square);"
          " [after, warn or drift]")
    rng = np.random.default_rng(args.seed)

    def cell(r: Any) -> str:
        return f"{100 * r[0]:5.1f}% -> {100 * r[1]:5.1f}% [{100 * r[2]:5.1f}%]"

    head = f"{'n':>6}  {'unshifted (goal <= 1%)':<30} {'+1 sd shift (goal >= 95%, n>=200)':<36} x1.6 scale (goal >= 99%, n>=100)"
    print("\nA. Independent held-out rows: a fresh seeded split per sample, n distinct held-out rows")
    for ex in EXAMPLES:
        spec = load_spec(ROOT / "examples" / ex / "mlpack.toml")
        ds = data.load_data(spec.data, spec.model.task, spec.model.seed)
        frame = pd.concat([ds.x_train, ds.x_test], ignore_index=True)
        kinds = {f.name: f.kind for f in ds.features}
        started = time.perf_counter()
        rates = resplit(frame, kinds, spec.drift.bins, spec.data.test_size, sizes, args.reps, rng, t)
        print(f"\n{ex}: {len(kinds)} features, {len(frame)} rows, held-out {int(round(len(frame) * spec.data.test_size))}"
              f" ({time.perf_counter() - started:.1f} s)")
        print(head)
        for n in sizes:
            if ("none", n) in rates:
                print(f"{n:>6}  {cell(rates[('none', n)]):<30} {cell(rates[('shift', n)]):<36} {cell(rates[('scale', n)])}")
            else:
                print(f"{n:>6}  (more than the held-out rows)")
    print("\nB. Bootstrap (with replacement) from one pool of rows, reference = the builder's own split")
    for pool in pools:
        print(f"\n{pool.name}: {len(pool.profile.features)} features")
        print(f"{'n':>6}  {'unshifted (goal <= 1%)':<30} {'+1 sd shift (goal >= 95%, n>=200)':<36} x1.6 scale (goal >= 99%, n>=100)")
        for n in sizes:
            started = time.perf_counter()
            cells = []
            for cond in ("none", "shift", "scale"):
                r = run(pool, n, args.reps, cond, rng, t)
                cells.append(cell((r["before"], r["after"], r["after_warn"])))
            print(f"{n:>6}  {cells[0]:<30} {cells[1]:<36} {cells[2]}   ({time.perf_counter() - started:.1f} s)")
    old, new = timing(pools[0].profile)
    print(f"\nverdict cost per feature (10 bins, n=500; machine loaded): PSI+JS min {min(old):.1f} µs median "
          f"{statistics.median(old):.1f} µs; PSI+JS+chi-square min {min(new):.1f} µs median {statistics.median(new):.1f} µs")


if __name__ == "__main__":
    main()
