"""What reading the build's missing tokens and deriving date parts cost on the device.

    .venv/bin/python benchmarks/input_contract.py [--rows 50000] [--rounds 5]

Two measurements, each against a baseline in the same process, interleaved round by
round (min and median of the ratio over rounds; the machine is shared, read the ratios):

1. **``NA`` cells**: ``predict_stream`` of a CSV (the R export's mixed model:
   ``tests/builder/data/r_export.csv``, rows repeated) where 12% of ``x2`` and 10% of
   ``colour`` are ``NA``, against the same rows with those cells left empty (what the
   device already read as missing before the tokens were recorded).
2. **datetime parts**: ``Model.predict`` on dict rows carrying ``when`` as text
   (``%Y/%m/%d %H:%M``, parts hour/day_of_week/month derived on the device), against the
   same rows carrying the three parts as numbers (the model's own features: what a user
   would send if they derived the parts themselves); in batches and one row at a time.
"""

from __future__ import annotations

import argparse
import io
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from mlpack_edge.builder import build  # noqa: E402
from mlpack_edge.runtime import open_model  # noqa: E402
from mlpack_edge.runtime.io import predict_stream  # noqa: E402
from tests._data import spec_text  # noqa: E402
from tests.builder.test_datetime_build import _data as datetime_data  # noqa: E402
from tests.builder.test_datetime_build import _spec as datetime_spec  # noqa: E402

R_EXPORT = ROOT / "tests" / "builder" / "data" / "r_export.csv"


def _time(fn) -> float:  # type: ignore[no-untyped-def]
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def _report(name: str, ratios: list[float], a: list[float], b: list[float], unit: str = "ms") -> None:
    scale = 1e3 if unit == "ms" else 1e6
    print(
        f"{name}: ratio min {min(ratios):.3f} median {statistics.median(ratios):.3f}"
        f"  (measured min {min(a) * scale:.1f} {unit}, baseline min {min(b) * scale:.1f} {unit};"
        f" medians {statistics.median(a) * scale:.1f} / {statistics.median(b) * scale:.1f} {unit})"
    )


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=50_000)
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="mlpack-bench-"))
    try:
        # 1. NA cells vs empty cells
        shutil.copy(R_EXPORT, work / "data.csv")
        (work / "mlpack.toml").write_text(
            spec_text("multiclass", "label", 'class = "LogisticRegression"\nparams = { max_iter = 500 }')
        )
        model = open_model(build(work / "mlpack.toml", work / "dist", executable=False).bundle_dir, threads=1)
        lines = R_EXPORT.read_text().splitlines()
        body = [line.rsplit(",", 1)[0] for line in lines[1:]]
        reps = args.rows // len(body) + 1
        na = "\n".join([lines[0].rsplit(",", 1)[0]] + (body * reps)[: args.rows]) + "\n"
        blank = na.replace(",NA,", ",,").replace(",NA,", ",,")  # twice: ",NA,NA," overlaps
        assert na.count("NA") > args.rows // 10 and "NA" not in blank.split("\n", 1)[1]

        def run(text: str) -> None:
            out = io.StringIO()
            s = predict_stream(model, io.StringIO(text), out, in_format="csv", out_format="csv")
            assert s.failed == 0

        ta, tb, ratios = [], [], []
        for _ in range(args.rounds):
            a, b = _time(lambda: run(na)), _time(lambda: run(blank))
            ta.append(a)
            tb.append(b)
            ratios.append(a / b)
        _report(f"CSV with NA cells vs empty cells ({args.rows} rows)", ratios, ta, tb)

        # 2. datetime text vs the parts as numbers
        (work / "dt").mkdir()
        (work / "dt" / "data.csv").write_text(datetime_data())
        (work / "dt" / "mlpack.toml").write_text(datetime_spec())
        dt = open_model(build(work / "dt" / "mlpack.toml", work / "dt" / "dist", executable=False).bundle_dir, threads=1)
        import pandas as pd

        t = pd.Timestamp("2015-01-01") + pd.to_timedelta(range(0, args.rows * 7, 7), unit="min")
        texts = [{"when": s.strftime("%Y/%m/%d %H:%M"), "x": 0.5} for s in t]
        parts = [
            {"when_hour": float(s.hour), "when_day_of_week": float(s.day_of_week), "when_month": float(s.month), "x": 0.5}
            for s in t
        ]
        assert (dt.predict(texts[:500]) == dt.predict(parts[:500])).all()
        ta, tb, ratios = [], [], []
        for _ in range(args.rounds):
            a, b = _time(lambda: dt.predict(texts)), _time(lambda: dt.predict(parts))
            ta.append(a)
            tb.append(b)
            ratios.append(a / b)
        _report(f"datetime text vs parts as numbers ({args.rows} dict rows, {len(set(r['when'] for r in texts))} distinct)", ratios, ta, tb)
        one_text, one_parts = texts[:2000], parts[:2000]
        ta, tb, ratios = [], [], []
        for _ in range(args.rounds):
            a = _time(lambda: [dt.predict_one(r) for r in one_text])
            b = _time(lambda: [dt.predict_one(r) for r in one_parts])
            ta.append(a / 2000)
            tb.append(b / 2000)
            ratios.append(a / b)
        _report("datetime single row (predict_one) text vs parts, per call", ratios, ta, tb, "µs")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
