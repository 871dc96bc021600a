"""Collector ingest throughput with a real HTTP load generator (wrk) on loopback.

    .venv/bin/python benchmarks/collector_ingest.py [--backend sqlite|postgres|both] [--seconds 10]
                                                     [--models-every-batch] [--windows 1 10] [--no-breakdown]
    .venv/bin/python benchmarks/collector_ingest.py --processes 1 2 [--rounds 3] [--seconds 5] [--windows 1]
    [MLPACK_BENCH_TREE=<tree>] .venv/bin/python benchmarks/collector_ingest.py --write-stage [--rounds 5]

Starts a real ``mlpack collector serve`` process per backend, registers 100 devices, then
drives it with ``wrk`` (``apt-get install wrk``) whose Lua script builds a *new* batch for
every request (each device's sequence numbers advance, so every upload is stored, not
acknowledged as a duplicate), for batches of 1 and of 10 windows of a 20-feature model.

Batches are shaped like the agent's: a device's first batch carries the ``models``
section (name, version, reference profile: ~7 KiB of JSON), later ones leave it out,
because the agent sends it only until the collector acknowledged it. The collector is
not told the model in advance; it learns it from those first batches.
``--models-every-batch`` sends it with every batch instead (what agents did before).
wrk sends plain JSON (it cannot gzip per request); the agent's gzip costs the collector
an inflate, shown in the in-process breakdown.

Reports uploads/s and windows/s next to a baseline measured in the same run
(``GET /healthz``: the HTTP stack plus one tiny query), the load average of the machine
(shared with the load generator and anything else running), checks that the database
holds exactly the windows acknowledged, and breaks one upload down in-process
(gunzip + JSON, validate, write) to show where the time goes.

``--processes 1 2`` instead compares PostgreSQL with 1 and 2 collector processes sharing
one database (each its own devices and half the connections) against SQLite with one,
interleaved over ``--rounds`` rounds, with min and median and the fleet size each rate
serves at one upload per device per minute, and the CPU per upload of the collector
processes and of the PostgreSQL backends serving them (``/proc``, via psutil): on shared
cores the steadier figure, and what bounds the rate.
"""

from __future__ import annotations

import argparse
import contextlib
import gzip
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
if os.environ.get("MLPACK_BENCH_TREE"):
    # Import mlpack_edge from another tree (a folder holding an ``mlpack_edge`` package laid
    # out as installed): the same measurement of older code, for an A/B in one session.
    sys.path.insert(0, os.environ["MLPACK_BENCH_TREE"])
    sys.meta_path[:] = [f for f in sys.meta_path if "editable" not in repr(f).lower()]

from mlpack_edge.collector import Ack, admin, apply_batches, decode_body, open_storage, parse_batch  # noqa: E402
from mlpack_edge.collector.auth import hash_token  # noqa: E402
from mlpack_edge.monitor_agent.histogram import LatencyHistogram  # noqa: E402
from mlpack_edge.monitor_agent.profile import build_profile  # noqa: E402
from mlpack_edge.monitor_agent.wire import BinCounts, SystemStats, Window  # noqa: E402

N_FEATURES = 20
DEVICES = 100
PG_BASE = os.environ.get("MLPACK_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")


def make_model() -> tuple[str, dict]:
    rng = np.random.default_rng(0)
    profile = build_profile(
        [(f"f{i:02d}", "numeric", rng.normal(0, 1, 5000)) for i in range(N_FEATURES)],
        ("categorical", list(rng.choice(["a", "b", "c"], 5000)), ["a", "b", "c"]),
    )
    h = "ab" * 32
    return h, {"name": "bench", "version": "1.0.0", "profile": profile.to_dict()}


def window_dict(model: str, profile: dict, seq: int, start: float, rng: np.random.Generator) -> dict:
    feats = {}
    for f in profile["features"]:
        bins = rng.multinomial(100, f["shares"]).tolist()
        feats[f["name"]] = BinCounts(bins, 0, 1, 0, 0)
    lat = LatencyHistogram()
    lat.add_many(rng.lognormal(np.log(0.002), 0.4, 100).tolist())
    w = Window(model=model, seq=seq, start=start, end=start + 60, requests=100, rows=100,
               errors={"validation": 1}, latency=lat, features=feats,
               predictions=BinCounts(rng.multinomial(100, [0.3, 0.3, 0.4]).tolist()),
               system=SystemStats(samples=6, proc_cpu=12.0, proc_rss_sum=3e8, proc_rss_max=6e7, cpu=80.0, mem=200.0,
                                  disk_free_min=1e10))
    return w.to_dict()


def lua_script(template: str, tokens: list[tuple[str, str]], per_batch: int, threads: int, first_seq: int,
               models: str, models_every_batch: bool = False) -> str:
    """A wrk script that fills ``@DEVICE@``, ``@SEQn@`` and ``@MODELS@`` per request, one
    device rotation per thread. Sequence numbers start at ``first_seq`` so a later run
    never replays an earlier one; ``@MODELS@`` is ``models`` in a device's first batch of
    the run (every batch with ``models_every_batch``) and ``{}`` after, like the agent."""
    parts = re.split(r"(@DEVICE@|@MODELS@|@SEQ\d+@)", template)
    lua_parts = ",".join(json.dumps(p) for p in parts)
    devs = ",".join(f'{{"{n}","{t}"}}' for n, t in tokens)
    per_thread = len(tokens) // threads
    return f"""
local parts = {{{lua_parts}}}
local devices = {{{devs}}}
local models = {json.dumps(models)}
local every = {'true' if models_every_batch else 'false'}
local per_thread = {per_thread}
local per_batch = {per_batch}
local n = 0
local seqs = {{}}
local counter = 0
function setup(thread)
  thread:set("tid", n)
  n = n + 1
end
function request()
  local k = tid * per_thread + (counter % per_thread) + 1
  counter = counter + 1
  local dev = devices[k]
  local first = seqs[k] == nil
  local base = seqs[k] or {first_seq}
  seqs[k] = base + per_batch
  local out = {{}}
  for i, p in ipairs(parts) do
    if p == "@DEVICE@" then out[i] = dev[1]
    elseif p == "@MODELS@" then out[i] = (first or every) and models or "{{}}"
    elseif string.sub(p, 1, 4) == "@SEQ" then out[i] = tostring(base + tonumber(string.sub(p, 5, -2)))
    else out[i] = p end
  end
  return wrk.format("POST", "/api/v1/ingest",
    {{["Authorization"] = "Bearer " .. dev[2], ["Content-Type"] = "application/json"}}, table.concat(out))
end
"""


def agent_batch(model: tuple[str, dict], per_batch: int, rng: np.random.Generator) -> tuple[str, str]:
    """``(template, models section)``: a batch of ``per_batch`` windows with ``@DEVICE@``,
    ``@MODELS@`` and ``@SEQn@`` placeholders, and the JSON of the models section."""
    h, entry = model
    ws = [window_dict(h, entry["profile"], 0, time.time() - 1800, rng) for _ in range(per_batch)]
    payload = {"schema": 1, "device": "@DEVICE@", "models": "@MODELS@", "windows": ws, "audit": [],
               "outbox": {"produced": 1, "merged": 0, "dropped": 0, "dropped_rows": 0}}
    text = json.dumps(payload).replace('"@MODELS@"', "@MODELS@")
    for j in range(per_batch):
        text = text.replace('"seq": 0, "seq_last": 0', f'"seq": @SEQ{j}@, "seq_last": @SEQ{j}@', 1)
    return text, json.dumps({h: entry})


def parse_wrk(out: str) -> dict:
    def num(pattern: str) -> float:
        m = re.search(pattern, out)
        return float(m.group(1)) if m else float("nan")

    def ms(text: str) -> float:
        value, unit = re.fullmatch(r"([\d.]+)(us|ms|s)", text).groups()  # type: ignore[union-attr]
        return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]

    lat = dict(re.findall(r"^\s+(50|99)%\s+(\S+)$", out, re.M))
    return {
        "requests": int(num(r"(\d+) requests in")),
        "rps": num(r"Requests/sec:\s+([\d.]+)"),
        "non2xx": int(num(r"Non-2xx or 3xx responses: (\d+)")) if "Non-2xx" in out else 0,
        "errors": "Socket errors" in out,
        "p50_ms": ms(lat["50"]) if "50" in lat else None,
        "p99_ms": ms(lat["99"]) if "99" in lat else None,
    }


def wrk(url: str, seconds: int, script: str | None, connections: int, threads: int) -> dict:
    cmd = ["wrk", "-t", str(threads), "-c", str(connections), "-d", f"{seconds}s", "--latency", url]
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as fh:
        if script:
            fh.write(script)
            cmd[1:1] = ["-s", fh.name]
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    finally:
        os.unlink(fh.name)
    return parse_wrk(out)


def start(db_url: str) -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen([sys.executable, "-m", "mlpack_edge.cli", "collector", "serve", "--db", db_url, "--port", "0"],
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line.startswith("listening on "):
        proc.kill()
        raise SystemExit(f"collector did not start: {line}")
    return proc, line.split()[2]


def breakdown(db_url: str, model: tuple[str, dict], per_batch: int, group: int, with_models: bool,
              n: int = 256) -> dict[str, float]:
    """Microseconds per upload in each in-process stage (no HTTP), for gzip bodies as the
    agent sends them (the first one carries the models section; all of them do with
    ``with_models``), writing ``group`` batches per transaction as the writer thread does
    under load; on a scratch device of its own."""
    h, entry = model
    name = f"breakdown-{per_batch}-{group}-{int(with_models)}"
    th = hash_token(admin.add_device(db_url, name))
    rng = np.random.default_rng(1)
    now = time.time()
    bodies = []
    for b in range(n):
        payload = {"schema": 1, "device": name, "models": {h: entry} if with_models or b == 0 else {},
                   "windows": [window_dict(h, entry["profile"], b * per_batch + j, now - 3600, rng) for j in range(per_batch)],
                   "audit": [], "outbox": {"produced": 1, "merged": 0, "dropped": 0, "dropped_rows": 0}}
        bodies.append(gzip.compress(json.dumps(payload, separators=(",", ":")).encode(), 6, mtime=0))
    storage = open_storage(db_url, migrate=False)
    known: dict = {}
    t0 = time.perf_counter()
    payloads = [decode_body(body, "gzip", 1 << 25) for body in bodies]
    t1 = time.perf_counter()
    batches = [parse_batch(p, name, th) for p in payloads]
    t2 = time.perf_counter()
    outcomes = []
    for i in range(0, n, group):
        outcomes += apply_batches(storage, batches[i : i + group], known, now)
    t3 = time.perf_counter()
    storage.close()
    refused = [o for o in outcomes if not isinstance(o, Ack)]
    if refused:
        raise SystemExit(f"breakdown: {len(refused)} uploads refused, e.g. {refused[0]}")
    return {"gunzip+json": round((t1 - t0) / n * 1e6), "validate": round((t2 - t1) / n * 1e6),
            "write": round((t3 - t2) / n * 1e6)}


@contextlib.contextmanager
def scratch_db(backend: str) -> Iterator[str]:
    """A database URL that exists only for the block: a SQLite file in a temporary folder,
    or a PostgreSQL schema of its own (dropped afterwards)."""
    tmp = Path(tempfile.mkdtemp(prefix="collector-bench-"))
    schema = None
    try:
        if backend == "sqlite":
            yield f"sqlite:///{tmp}/collector.db"
            return
        import psycopg

        schema = f"bench_{uuid.uuid4().hex[:10]}"
        with psycopg.connect(PG_BASE, autocommit=True) as conn:
            conn.execute(f"CREATE SCHEMA {schema}")
        yield f"{PG_BASE}?options=-csearch_path%3D{schema}"
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        if schema:
            import psycopg

            with psycopg.connect(PG_BASE, autocommit=True) as conn:
                conn.execute(f"DROP SCHEMA {schema} CASCADE")


def run_backend(backend: str, seconds: int, connections: int, threads: int, models_every_batch: bool,
                sizes: list[int], in_process: bool) -> None:
    with scratch_db(backend) as db_url:
        model = make_model()
        tokens = [(f"bench-{i:03d}", admin.add_device(db_url, f"bench-{i:03d}")) for i in range(DEVICES)]
        proc, url = start(db_url)
        try:
            base = wrk(url + "/healthz", seconds, None, connections, threads)
            print(f"[{backend}] baseline GET /healthz: {base['rps']:.0f} req/s, p50 {base['p50_ms']:.2f} ms, "
                  f"p99 {base['p99_ms']:.2f} ms ({_load()})")
            rng = np.random.default_rng(0)
            for per_batch in sizes:
                text, models = agent_batch(model, per_batch, rng)
                full = len(text.replace("@MODELS@", models).encode())
                lean = len(text.replace("@MODELS@", "{}").encode())
                before = _count(db_url)
                script = lua_script(text, tokens, per_batch, threads, per_batch * 10_000_000, models, models_every_batch)
                res = wrk(url + "/api/v1/ingest", seconds, script, connections, threads)
                stored = _count(db_url) - before
                ok = res["requests"] - res["non2xx"]
                extra = stored - ok * per_batch  # uploads still in flight when wrk stopped counting
                exact = 0 <= extra <= connections * per_batch
                shape = (f"models in every batch: {full / 1024:.1f} KiB JSON" if models_every_batch else
                         f"models in each device's first batch only: {lean / 1024:.1f} KiB JSON, first {full / 1024:.1f} KiB")
                print(
                    f"[{backend}] ingest {per_batch:>2} window(s)/batch ({shape}): "
                    f"{res['rps']:.0f} uploads/s = {res['rps'] * per_batch:.0f} windows/s "
                    f"(x{res['rps'] / base['rps']:.2f} of baseline), p50 {res['p50_ms']:.1f} ms, p99 {res['p99_ms']:.1f} ms, "
                    f"non-2xx {res['non2xx']}; stored {stored} windows for {ok} acked uploads "
                    f"({'ok' if exact else 'MISMATCH'}: +{extra} from uploads in flight when wrk stopped) ({_load()})"
                )
        finally:
            proc.terminate()
            proc.wait(timeout=60)
        for per_batch, group, with_models in ((1, 1, False), (1, 32, False), (1, 32, True), (10, 32, False)) * in_process:
            print(f"[{backend}] in-process µs per upload ({per_batch} window(s), {group} batch(es) per transaction, "
                  f"{'with' if with_models else 'without'} models, no HTTP): "
                  f"{breakdown(db_url, model, per_batch, group, with_models)}")


def scaling(seconds: int, connections: int, processes: list[int], rounds: int, per_batch: int) -> None:
    """PostgreSQL with N collector processes against SQLite with one, interleaved.

    Each round runs every (backend, N) once, in an order that alternates between rounds;
    the N processes share one database and each gets ``connections / N`` wrk connections
    and its own devices (what a load balancer keeping a device on one process does).
    Prints each run, then min and median uploads/s per (backend, N) and the ratios.
    """
    import statistics

    model = make_model()
    rng = np.random.default_rng(0)
    text, models = agent_batch(model, per_batch, rng)
    runs: dict[tuple[str, int], list[float]] = {}
    cpu_runs: dict[tuple[str, int], list[list[float]]] = {}
    with scratch_db("sqlite") as sqlite_url, scratch_db("postgres") as pg_url:
        urls = {"sqlite": sqlite_url, "postgres": pg_url}
        tokens = {b: [(f"bench-{i:03d}", admin.add_device(u, f"bench-{i:03d}")) for i in range(DEVICES)]
                  for b, u in urls.items()}
        plan = [("sqlite", 1)] + [("postgres", n) for n in processes]
        run_no = 0
        for r in range(rounds):
            for backend, n in (plan if r % 2 == 0 else plan[::-1]):
                run_no += 1
                db_url = urls[backend]
                procs = [start(db_url) for _ in range(n)]
                try:
                    before = _count(db_url)
                    share = len(tokens[backend]) // n
                    jobs = []
                    for k, (_, url) in enumerate(procs):
                        script = lua_script(text, tokens[backend][k * share : (k + 1) * share], per_batch, 1,
                                            run_no * 10_000_000, models)
                        jobs.append(_wrk_start(url + "/api/v1/ingest", seconds, script, max(1, connections // n)))
                    time.sleep(0.5)  # the collectors' writer connections are open once uploads flow
                    cpu0 = _cpu_seconds(procs, backend)
                    results = [parse_wrk(_wrk_wait(j)) for j in jobs]
                    cpu1 = _cpu_seconds(procs, backend)
                    stored = _count(db_url) - before
                finally:
                    for proc, _ in procs:
                        proc.terminate()
                    for proc, _ in procs:
                        proc.wait(timeout=60)
                rps = sum(x["rps"] for x in results)
                ok = sum(x["requests"] - x["non2xx"] for x in results)
                extra = stored - ok * per_batch
                exact = 0 <= extra <= connections * per_batch
                runs.setdefault((backend, n), []).append(rps)
                # CPU per upload over the last ``seconds - 0.5`` s of the run (wrk's own count is for all of it).
                per = [(b - a) / max(1.0, rps * (seconds - 0.5)) * 1e6 for a, b in zip(cpu0, cpu1)]
                cpu_runs.setdefault((backend, n), []).append(per)
                print(f"round {r + 1} [{backend}] {n} process(es): {rps:.0f} uploads/s "
                      f"(p99 {max(x['p99_ms'] or 0 for x in results):.1f} ms, non-2xx {sum(x['non2xx'] for x in results)}); "
                      f"CPU µs per upload: collector(s) {per[0]:.0f}, PostgreSQL backends {per[1]:.0f}; "
                      f"stored {stored} windows for {ok} acked uploads ({'ok' if exact else 'MISMATCH'}) ({_load()})",
                      flush=True)
    base = runs[("sqlite", 1)]
    print(f"\n{per_batch}-window uploads, {rounds} rounds of {seconds} s, median CPU µs per upload "
          "(collector processes / PostgreSQL backends serving them):")
    for key, xs in cpu_runs.items():
        print(f"  {key[0]}, {key[1]} process(es): {statistics.median(x[0] for x in xs):.0f} / "
              f"{statistics.median(x[1] for x in xs):.0f}")
    print(f"{per_batch}-window uploads, {rounds} rounds of {seconds} s, min / median uploads/s:")
    print(f"  SQLite, 1 process (baseline): {min(base):.0f} / {statistics.median(base):.0f}")
    pg1 = runs.get(("postgres", 1))
    for n in processes:
        xs = runs[("postgres", n)]
        line = (f"  PostgreSQL, {n} process(es): {min(xs):.0f} / {statistics.median(xs):.0f} -> "
                f"x{statistics.median(xs) / statistics.median(base):.2f} of SQLite's median")
        if pg1 and n > 1:
            line += f", x{statistics.median(xs) / statistics.median(pg1):.2f} of PostgreSQL with 1 process"
        print(line + f"; at one upload per device per minute: {statistics.median(xs) * 60:,.0f} devices")


def _wrk_start(url: str, seconds: int, script: str, connections: int) -> tuple[subprocess.Popen[str], str]:
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as fh:
        fh.write(script)
    cmd = ["wrk", "-t", "1", "-c", str(connections), "-d", f"{seconds}s", "--latency", "-s", fh.name, url]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True), fh.name


def _wrk_wait(job: tuple[subprocess.Popen[str], str]) -> str:
    proc, path = job
    out, _ = proc.communicate()
    os.unlink(path)
    if proc.returncode:
        raise SystemExit(f"wrk failed ({proc.returncode})")
    return out


def write_stage(backend: str, group: int, rounds: int) -> list[float]:
    """Microseconds per upload of the write stage alone (``apply_batches``, no HTTP) for
    1-window uploads, ``group`` per transaction from ``group`` different devices of 100,
    as the writer thread groups them under load; one figure per round of 2,000 uploads."""
    out = []
    with scratch_db(backend) as url:
        open_storage(url).close()
        h, entry = make_model()
        names = [f"w{i:03d}" for i in range(DEVICES)]
        ths = {n: hash_token(admin.add_device(url, n)) for n in names}
        tmpl = window_dict(h, entry["profile"], 0, time.time() - 1800, np.random.default_rng(1))
        storage = open_storage(url, migrate=False)
        known: dict = {}

        def batch(n: str, seq: int, models: bool):  # type: ignore[no-untyped-def]
            w = dict(tmpl, seq=seq, seq_last=seq)
            return parse_batch({"schema": 1, "device": n, "models": {h: entry} if models else {}, "windows": [w],
                                "audit": [], "outbox": {"produced": 1, "merged": 0, "dropped": 0, "dropped_rows": 0}},
                               n, ths[n])

        apply_batches(storage, [batch(n, 0, True) for n in names], known, time.time())
        seq = 1
        for _ in range(rounds):
            bs = [batch(n, seq + r, False) for r in range(20) for n in names]
            seq += 20
            t0 = time.perf_counter()
            outs = []
            for i in range(0, len(bs), group):
                outs += apply_batches(storage, bs[i : i + group], known, time.time())
            out.append((time.perf_counter() - t0) / len(bs) * 1e6)
            assert all(isinstance(o, Ack) and o.stored for o in outs)
        storage.close()
    return out


def _cpu_seconds(procs: list[tuple[subprocess.Popen[str], str]], backend: str) -> tuple[float, float]:
    """CPU seconds used so far by the collector processes, and by the PostgreSQL backends
    serving their connections (found by client port; 0 with SQLite, which runs in-process)."""
    import psutil

    own = [psutil.Process(p.pid) for p, _ in procs]
    collectors = sum(sum(x.cpu_times()[:2]) for x in own)
    if backend != "postgres":
        return collectors, 0.0
    ports = {c.laddr.port for x in own for c in x.net_connections("tcp") if c.raddr and c.raddr.port == 5432}
    import psycopg

    with psycopg.connect(PG_BASE, autocommit=True) as conn:
        pids = [r[0] for r in conn.execute("SELECT pid, client_port FROM pg_stat_activity").fetchall()
                if r[1] in ports] if ports else []
    server = 0.0
    for pid in pids:
        with contextlib.suppress(psutil.Error):
            server += sum(psutil.Process(pid).cpu_times()[:2])
    return collectors, server


def _load() -> str:
    one, five, _ = os.getloadavg()
    return f"load average {one:.1f} / {five:.1f} over 1 / 5 min on {os.cpu_count()} cores"


def _count(db_url: str) -> int:
    """Windows stored, once uploads still in flight when wrk stopped have been written
    (else they would be counted in the next run)."""
    s = open_storage(db_url, migrate=False)
    try:
        last = s.window_count()
        while True:
            time.sleep(0.5)
            now = s.window_count()
            if now == last:
                return now
            last = now
    finally:
        s.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--backend", choices=["sqlite", "postgres", "both"], default="both")
    ap.add_argument("--seconds", type=int, default=10)
    ap.add_argument("--connections", type=int, default=32)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--models-every-batch", action="store_true",
                    help="send the models section with every batch (agents before it was sent only until acknowledged)")
    ap.add_argument("--windows", type=int, nargs="+", default=[1, 10], help="windows per batch (one wrk run each)")
    ap.add_argument("--no-breakdown", action="store_true", help="skip the in-process breakdown")
    ap.add_argument("--processes", type=int, nargs="+",
                    help="instead: PostgreSQL with these numbers of collector processes vs SQLite with one, interleaved")
    ap.add_argument("--rounds", type=int, default=3, help="rounds of the --processes comparison")
    ap.add_argument("--write-stage", action="store_true",
                    help="instead: the in-process write stage alone, µs per upload (MLPACK_BENCH_TREE= for other code)")
    args = ap.parse_args()
    if args.write_stage:
        for backend in (["sqlite", "postgres"] if args.backend == "both" else [args.backend]):
            xs = write_stage(backend, 32, args.rounds)
            print(f"[{backend}] write stage, 1-window uploads, 32 per transaction from 32 devices: "
                  f"{min(xs):.0f} / {sorted(xs)[len(xs) // 2]:.0f} µs per upload (min / median of {len(xs)} rounds) "
                  f"({_load()})", flush=True)
        return
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not installed (apt-get install wrk)")
    if args.processes:
        print(f"collector ingest scaling: {N_FEATURES}-feature model, {DEVICES} devices, {args.connections} wrk "
              f"connections in all, {os.cpu_count()} cores shared by the load generator, the collectors and PostgreSQL")
        scaling(args.seconds, args.connections, args.processes, args.rounds, args.windows[0])
        return
    print(f"collector ingest benchmark: {N_FEATURES}-feature model, {DEVICES} devices, wrk -t{args.threads} "
          f"-c{args.connections} -d{args.seconds}s, {os.cpu_count()} cores shared with the load generator")
    for backend in (["sqlite", "postgres"] if args.backend == "both" else [args.backend]):
        run_backend(backend, args.seconds, args.connections, args.threads, args.models_every_batch, args.windows,
                    not args.no_breakdown)


if __name__ == "__main__":
    main()
