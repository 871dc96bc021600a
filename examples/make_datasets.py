"""Write the example CSVs (committed, so the examples build on a fresh clone).

    python examples/make_datasets.py          # rewrites the three CSVs, byte for byte
    python examples/make_datasets.py OUTDIR   # writes them under OUTDIR/<example>/ instead

* ``breast_cancer/breast_cancer.csv`` and ``diabetes/diabetes.csv``: datasets that
  scikit-learn ships, as CSV (the diagnosis spelled out instead of 0/1).
* ``fleet_faults/fleet_faults.csv``: a synthetic multiclass problem (which fault a
  device has) with numeric and categorical columns and missing values, generated from
  a fixed seed so the file never changes.
"""

from __future__ import annotations

import csv
import io
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
SEED = 20240611


def _write(path: Path, header: list[str], rows: list[list[object]]) -> None:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(buf.getvalue(), encoding="utf-8")
    print(f"wrote {path} ({len(rows)} rows)")


def _num(x: float) -> str:
    return "" if np.isnan(x) else repr(round(float(x), 4))


def breast_cancer(root: Path = HERE) -> None:
    from sklearn.datasets import load_breast_cancer

    d = load_breast_cancer()
    names = [n.replace(" ", "_") for n in d.feature_names]
    labels = [str(d.target_names[t]) for t in d.target]  # 0 = malignant, 1 = benign
    rows = [[_num(v) for v in x] + [y] for x, y in zip(d.data, labels)]
    _write(root / "breast_cancer" / "breast_cancer.csv", names + ["diagnosis"], rows)


def diabetes(root: Path = HERE) -> None:
    from sklearn.datasets import load_diabetes

    d = load_diabetes(scaled=False)
    rows = [[_num(v) for v in x] + [_num(y)] for x, y in zip(d.data, d.target)]
    _write(root / "diabetes" / "diabetes.csv", list(d.feature_names) + ["progression"], rows)


def fleet_faults(root: Path = HERE, n: int = 1500) -> None:
    """Devices in the field: which fault (if any) explains their readings."""
    rng = np.random.default_rng(SEED)
    models = np.array(["X100", "X200", "X300"])
    sites = np.array(["north", "south", "east", "west", "depot"])
    firmware = np.array(["1.2", "1.3", "2.0"])
    model = rng.choice(models, n, p=[0.5, 0.3, 0.2])
    site = rng.choice(sites, n, p=[0.3, 0.25, 0.2, 0.2, 0.05])
    fw = rng.choice(firmware, n, p=[0.2, 0.5, 0.3])
    ambient = rng.normal(22, 7, n) + np.where(site == "south", 8, 0)
    load = rng.uniform(0, 1, n)
    uptime = rng.gamma(2.0, 400.0, n)
    fault = np.full(n, "none", dtype=object)
    overheat = (ambient + 25 * load + np.where(model == "X100", 6, 0) + rng.normal(0, 4, n)) > 48
    power = (rng.uniform(0, 1, n) < 0.08 + 0.12 * (fw == "1.2")) & ~overheat
    sensor = (rng.uniform(0, 1, n) < 0.04 + uptime / 40000) & ~overheat & ~power
    fault[overheat], fault[power], fault[sensor] = "overheat", "power", "sensor"
    temp = ambient + 30 * load + np.where(fault == "overheat", 12, 0) + rng.normal(0, 2, n)
    voltage = np.where(fault == "power", rng.normal(10.8, 0.6, n), rng.normal(12.1, 0.25, n))
    vibration = rng.gamma(2.0, 0.5, n) + np.where(fault == "sensor", 3.5, 0) * rng.uniform(0.6, 1, n)
    fan_rpm = 1200 + 2600 * load + rng.normal(0, 150, n) - np.where(fault == "overheat", 700, 0)
    # Missing readings: sensors drop out, and a few devices never report firmware.
    fan_rpm[rng.uniform(0, 1, n) < 0.08] = np.nan
    vibration[rng.uniform(0, 1, n) < 0.05] = np.nan
    fw = np.where(rng.uniform(0, 1, n) < 0.06, "", fw)
    header = ["device_model", "site", "firmware", "temp_c", "voltage", "vibration", "fan_rpm", "uptime_h", "fault"]
    rows = [
        [
            model[i],
            site[i],
            fw[i],
            _num(temp[i]),
            _num(voltage[i]),
            _num(vibration[i]),
            _num(fan_rpm[i]),
            _num(uptime[i]),
            fault[i],
        ]
        for i in range(n)
    ]
    _write(root / "fleet_faults" / "fleet_faults.csv", header, rows)


if __name__ == "__main__":
    out = Path(sys.argv[1]) if len(sys.argv) > 1 else HERE
    breast_cancer(out)
    diabetes(out)
    fleet_faults(out)
