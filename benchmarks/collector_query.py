"""Fleet page query latency with 1,000 devices x 7 days of minute windows.

    .venv/bin/python benchmarks/collector_query.py [--backend sqlite|postgres|both] [--devices 1000]
        [--db URL] [--baseline-src DIR]

The database is seeded in roll-up form: per device, 168 hourly roll-ups (each the sum of
60 one-minute windows of 100 rows of a 20-feature model) plus their 7 daily roll-ups,
and the fleet's own hourly and daily rows — exactly what the ingest path maintains for
10 million windows, without spending an hour ingesting them (the page never reads raw
windows). 5 % of devices drift on one feature; two model versions share the fleet.

After seeding, the running totals are built as migration 9 backfills them (timed). The
page's server-side render (overview + HTML, 100 devices a page as ``GET /`` serves it)
is timed three ways, interleaved: with the devices' scores the process keeps
(``queries._RangeScores``: only devices whose totals moved are scored again), with every
device scored again (the kept scores dropped first: what each page did before), and
scored from roll-ups (days + edge hours, what it did before migration 9); min and median,
for 24 h and 7 day ranges (all first checked equal). Then ``GET /`` and ``GET
/api/v1/fleet`` (first page) through a real collector process, warm, and after 100
devices' totals changed (touched through another connection, as another collector
process's ingest would) each time; with ``--baseline-src`` (a checkout, e.g. ``git
archive main``) that source's collector serves the same database in a second process,
its requests interleaved with ours.
``--devices 10000`` seeds 1.75 million roll-up rows (~15 min on SQLite, ~30 on PostgreSQL
on a loaded 2-core machine); ``--db`` reuses a database seeded before (it is not dropped).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import tempfile
import statistics
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mlpack_edge.collector import fleet_overview, open_storage, queries, time_range  # noqa: E402
from mlpack_edge.collector.page import fleet_page  # noqa: E402
from mlpack_edge.collector.models import model_from_upload  # noqa: E402
from mlpack_edge.collector.rollup import DAY, FLEET, HOUR, Rollup  # noqa: E402
from mlpack_edge.collector.storage._range_totals import backfill  # noqa: E402
from mlpack_edge.monitor_agent.profile import build_profile  # noqa: E402
from mlpack_edge.monitor_agent.wire import SystemStats  # noqa: E402

from collector_ingest import scratch_db  # noqa: E402  (same folder)

_INSERT = (
    "INSERT INTO rollups (level, device, model, bucket, windows, requests, rows, errors, error_kinds, latency, "
    "counts, system) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)


def models() -> list:
    rng = np.random.default_rng(0)
    profile = build_profile(
        [(f"f{i:02d}", "numeric", rng.normal(0, 1, 5000)) for i in range(20)],
        ("categorical", list(rng.choice(["a", "b", "c"], 5000)), ["a", "b", "c"]),
    ).to_dict()
    return [model_from_upload(c * 64, {"name": "bench", "version": v, "profile": profile}, "bench")
            for c, v in (("a", "1.0.0"), ("b", "1.1.0"))]


def seed(storage, n_devices: int, now: float) -> None:
    rng = np.random.default_rng(42)
    ms = models()
    for m in ms:
        storage.add_model(m, now)
    end = int(now // HOUR) * HOUR + HOUR
    start = end - 7 * DAY
    hours = np.arange(start, end, HOUR)
    first_day = (start // DAY) * DAY
    fleet: dict[tuple[str, str, int], Rollup] = {}
    sys_row = SystemStats(samples=360, proc_cpu=3600.0, proc_rss_sum=1.8e10, proc_rss_max=6e7, cpu=28800.0,
                          mem=18000.0, disk_free_min=1e10)
    with storage.write() as tx:
        conn = tx._c
        storage.executemany(conn, "INSERT INTO devices (name, token_hash, created_at, last_seen, last_model, last_seq) "
                                  "VALUES (?, ?, ?, ?, ?, ?)",
                            [(f"dev-{i:04d}", f"{i:064x}", start, now - rng.uniform(0, 600), ms[i % 2].hash, 10_080)
                             for i in range(n_devices)])
    for i in range(n_devices):
        m = ms[i % 2]
        drifted = i % 20 == 0
        rows = []
        day_sums: dict[int, Rollup] = {}
        counts = np.zeros((len(hours), m.size), dtype=np.int64)
        for sec in m.sections:
            shares = np.asarray(sec.shares)
            if drifted and sec.name == "f00":
                shares = shares * np.where(np.arange(sec.n_bins) < 2, 6.0, 1.0)  # the low bins fill up
            counts[:, sec.start : sec.start + sec.n_bins] = rng.multinomial(6000, shares / shares.sum(), size=len(hours))
        lat_idx = rng.integers(-640, -600, 30)
        for k, h in enumerate(hours):
            r = Rollup(windows=60, requests=6000, rows=6000, errors=int(rng.poisson(6)), error_kinds={},
                       latency={int(j): int(c) for j, c in zip(lat_idx, rng.multinomial(6000, [1 / 30] * 30))},
                       counts=counts[k], system=SystemStats(**sys_row.to_dict()))
            r.error_kinds = {"validation": r.errors} if r.errors else {}
            rows.append(("h", f"dev-{i:04d}", m.hash, int(h), *r.to_row()))
            d = int(h) // DAY * DAY
            day_sums.setdefault(d, Rollup()).merge(r)
            for key in (("h", m.hash, int(h)), ("d", m.hash, d)):
                fleet.setdefault(key, Rollup()).merge(r)
        rows += [("d", f"dev-{i:04d}", m.hash, d, *r.to_row()) for d, r in day_sums.items() if d >= first_day]
        with storage.write() as tx:
            storage.executemany(tx._c, _INSERT, rows)
    with storage.write() as tx:
        storage.executemany(tx._c, _INSERT, [(lv, FLEET, mh, b, *r.to_row()) for (lv, mh, b), r in fleet.items()])


def timed(fn, runs: int) -> float:
    return timed2(fn, runs)[1]


def timed2(fn, runs: int) -> tuple[float, float]:
    """(min, median) milliseconds of ``runs`` calls."""
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times) * 1000.0, statistics.median(times) * 1000.0


def render(storage, rng, now: float, per_page: int | None, totals: bool = True, kept: bool = True) -> str:
    """What ``GET /`` does on the server: the overview (one page of devices) and its HTML.
    Not ``kept``: every device scored again, as if no page had been served before."""
    if not kept:
        queries._SCORES.clear()
    return fleet_page(fleet_overview(storage, rng, now, per_page=per_page, totals=totals), None)


def serve(db_url: str, src: str | None = None) -> tuple[subprocess.Popen, str]:
    """A collector process on ``db_url``: this checkout's, or the one in ``src``."""
    env = dict(os.environ)
    if src is not None:  # mlpack_edge and its subpackages (the repository's top folders) from src
        shim = Path(tempfile.mkdtemp(prefix="collector-baseline-")) / "mlpack_edge"
        shim.mkdir()
        for f in (Path(src) / "mlpack_edge").iterdir():
            (shim / f.name).symlink_to(f)
        for sub in ("builder", "collector", "monitor_agent", "runtime"):
            (shim / sub).symlink_to(Path(src) / sub)
        env["PYTHONPATH"] = str(shim.parent)
    proc = subprocess.Popen([sys.executable, "-m", "mlpack_edge.cli", "collector", "serve", "--db", db_url, "--port", "0"],
                            stdout=subprocess.PIPE, text=True, env=env, cwd=tempfile.gettempdir())
    assert proc.stdout is not None
    return proc, proc.stdout.readline().split()[2]


def touch(db_url: str, names: list[str], step: int) -> None:
    """Change ``names``' running totals (windows + ``step``) through a connection of their own,
    as another collector process's ingest would: the server must score them again."""
    s = open_storage(db_url)
    try:
        with s.write() as tx:
            marks = ", ".join("?" * len(names))
            tx._exec(f"UPDATE rollups SET windows = windows + ? WHERE level IN ('t24', 't168') AND device IN ({marks})",
                     (step, *names))
    finally:
        s.close()


def cpu_ms(pid: int) -> float:
    """User + system CPU time of process ``pid`` so far, in ms (load-independent, unlike wall time)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) * 1000.0 / os.sysconf("SC_CLK_TCK")


def stats(xs: list[float]) -> str:
    return f"{min(xs):7.1f} / {statistics.median(xs):7.1f} ms"


def run_backend(backend: str, n_devices: int, runs: int, db: str | None, baseline: str | None,
                http_only: bool = False) -> None:
    with (contextlib.nullcontext(db) if db else scratch_db(backend)) as db_url:
        storage = open_storage(db_url)
        if db is None:
            now = time.time()
            t0 = time.perf_counter()
            seed(storage, n_devices, now)
            if backend == "postgres":
                with storage.write() as tx:
                    tx._c.execute("ANALYZE rollups")
            print(f"[{backend}] seeded {n_devices} devices x 7 days (= {n_devices * 7 * 1440:,} minute windows as "
                  f"{n_devices * 175:,} roll-up rows) in {time.perf_counter() - t0:.0f} s")
            t0 = time.perf_counter()
            with storage.write() as tx:  # the rows went in behind the ingest path: build the totals as migration 9 does
                tx._exec("DELETE FROM range_totals")
                backfill(tx, now)
            print(f"[{backend}] running totals (migration 9's backfill) built in {time.perf_counter() - t0:.1f} s")
        now = time.time()
        if db is not None:  # seeded earlier: uploads as recent as when seeded (no device silent since)
            with storage.write() as tx:
                last = tx._exec("SELECT MAX(last_seen) FROM devices").fetchone()[0]
                tx._exec("UPDATE devices SET last_seen = last_seen + ?", (now - float(last),))
        n_devices = len(storage.devices())
        print(f"[{backend}] {n_devices:,} devices; load average {os.getloadavg()[0]:.1f}")
        for hours in () if http_only else (24, 168):
            rng = time_range(None, None, now, hours)
            data = fleet_overview(storage, rng, now)
            assert data == fleet_overview(storage, rng, now, totals=False), "totals disagree with roll-ups"
            page = fleet_overview(storage, rng, now, per_page=100)
            assert page == fleet_overview(storage, rng, now, per_page=100, totals=False), "kept scores disagree"
            assert render(storage, rng, now, 100) == render(storage, rng, now, 100, kept=False)
            drifting = data["status_counts"]["drift"]
            kept, scored, before = [], [], []
            for _ in range(runs):
                kept.append(timed2(lambda: render(storage, rng, now, 100), 1)[0])
                scored.append(timed2(lambda: render(storage, rng, now, 100, kept=False), 1)[0])
                before.append(timed2(lambda: render(storage, rng, now, 100, totals=False), 1)[0])
            size = len(render(storage, rng, now, 100).encode())
            print(f"[{backend}] server-side render of the fleet page {hours:>3} h, 100 devices per page "
                  f"({size / 1024:.0f} KiB, {drifting} drifting), min / median of {runs}: scores kept {stats(kept)}; "
                  f"every device scored {stats(scored)} (x{statistics.median(scored) / statistics.median(kept):.1f}); "
                  f"from roll-ups {stats(before)} (x{statistics.median(before) / statistics.median(kept):.1f})")
        if os.environ.get("MLPACK_BENCH_PROFILE"):
            import cProfile
            import pstats

            prof = cProfile.Profile()
            prof.runcall(render, storage, time_range(None, None, now, 168), now, 100)
            pstats.Stats(prof).sort_stats("cumulative").print_stats(18)
        names = [d.name for d in storage.devices()]
        storage.close()
        servers = [("ours", *serve(db_url))] + ([("baseline", *serve(db_url, baseline))] if baseline else [])
        try:
            clients = {label: httpx.Client(base_url=url, timeout=300) for label, _, url in servers}
            pids = {label: proc.pid for label, proc, _ in servers}
            for hours in (24, 168):
                for path in ("/", "/api/v1/fleet"):
                    times: dict[str, list[float]] = {label: [] for label in clients}
                    sizes = {}
                    for label, cl in clients.items():  # warm: first request of the range (advances, scores)
                        sizes[label] = len(cl.get(path, params={"hours": hours}).raise_for_status().content)
                    cpu = {label: 0.0 for label in clients}
                    for _ in range(runs):
                        for label, cl in clients.items():
                            c0 = cpu_ms(pids[label])
                            times[label].append(timed2(lambda: cl.get(path, params={"hours": hours}).raise_for_status(), 1)[0])
                            cpu[label] += cpu_ms(pids[label]) - c0
                    line = "; ".join(f"{label} {stats(t)}, server CPU {cpu[label] / runs:.0f} ms a request "
                                     f"({sizes[label] / 1024:.0f} KiB)" for label, t in times.items())
                    ratio = (f" -> x{statistics.median(times['baseline']) / statistics.median(times['ours']):.1f}"
                             if "baseline" in times else "")
                    print(f"[{backend}] GET {path}?hours={hours:<3} min / median of {runs}: {line}{ratio} "
                          f"(load {os.getloadavg()[0]:.1f})")
                changed = []
                for r in range(runs):  # 100 devices' totals changed before each page: those are scored again
                    batch = names[(r * 100) % len(names):][:100]
                    touch(db_url, batch, 1)
                    changed.append(timed2(lambda: clients["ours"].get("/", params={"hours": hours}).raise_for_status(), 1)[0])
                    touch(db_url, batch, -1)
                    clients["ours"].get("/", params={"hours": hours}).raise_for_status()
                print(f"[{backend}] GET /?hours={hours:<3} after 100 devices' totals changed: ours {stats(changed)}")
            dev = timed(lambda: clients["ours"].get("/devices/dev-0000", params={"hours": 168}).raise_for_status(), runs)
            print(f"[{backend}] GET /devices/dev-0000?hours=168: {dev:7.1f} ms median of {runs}")
        finally:
            for _, proc, _ in servers:
                proc.terminate()
                proc.wait(timeout=60)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--backend", choices=["sqlite", "postgres", "both"], default="both")
    ap.add_argument("--devices", type=int, default=1000)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--db", help="a database seeded by an earlier run (with --backend sqlite or postgres)")
    ap.add_argument("--baseline-src", help="a checkout whose collector serves the same database, interleaved")
    ap.add_argument("--http-only", action="store_true", help="only the requests to collector processes")
    args = ap.parse_args()
    for backend in (["sqlite", "postgres"] if args.backend == "both" else [args.backend]):
        run_backend(backend, args.devices, args.runs, args.db, args.baseline_src, args.http_only)


if __name__ == "__main__":
    main()
