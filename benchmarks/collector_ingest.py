"""Collector ingest throughput with a real HTTP load generator (wrk) on loopback.

    .venv/bin/python benchmarks/collector_ingest.py [--backend sqlite|postgres|both] [--seconds 10]

Starts a real ``mlpack collector serve`` process per backend, registers 100 devices and a
20-feature model, then drives it with ``wrk`` (``apt-get install wrk``) whose Lua script
builds a *new* batch for every request (each device's sequence numbers advance, so every
upload is stored, not acknowledged as a duplicate). Reports uploads/s and windows/s next
to a baseline measured in the same run (``GET /healthz``: the HTTP stack plus one tiny
query), checks that the database holds exactly the windows acknowledged, and breaks one
upload down in-process (decode, validate, write) to show where the time goes.
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

from mlpack.collector import admin, apply_batches, decode_body, open_storage, parse_batch  # noqa: E402
from mlpack.collector.auth import hash_token  # noqa: E402
from mlpack.collector.models import model_from_upload  # noqa: E402
from mlpack.monitor_agent.histogram import LatencyHistogram  # noqa: E402
from mlpack.monitor_agent.profile import build_profile  # noqa: E402
from mlpack.monitor_agent.wire import BinCounts, SystemStats, Window  # noqa: E402

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


def lua_script(template: str, tokens: list[tuple[str, str]], per_batch: int, threads: int, first_seq: int) -> str:
    """A wrk script that fills ``@DEVICE@`` and ``@SEQn@`` per request, one device rotation per
    thread; sequence numbers start at ``first_seq`` so a later run never replays an earlier one."""
    parts = re.split(r"(@DEVICE@|@SEQ\d+@)", template)
    lua_parts = ",".join(json.dumps(p) for p in parts)
    devs = ",".join(f'{{"{n}","{t}"}}' for n, t in tokens)
    per_thread = len(tokens) // threads
    return f"""
local parts = {{{lua_parts}}}
local devices = {{{devs}}}
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
  local base = seqs[k] or {first_seq}
  seqs[k] = base + per_batch
  local out = {{}}
  for i, p in ipairs(parts) do
    if p == "@DEVICE@" then out[i] = dev[1]
    elseif string.sub(p, 1, 4) == "@SEQ" then out[i] = tostring(base + tonumber(string.sub(p, 5, -2)))
    else out[i] = p end
  end
  return wrk.format("POST", "/api/v1/ingest",
    {{["Authorization"] = "Bearer " .. dev[2], ["Content-Type"] = "application/json"}}, table.concat(out))
end
"""


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
    proc = subprocess.Popen([sys.executable, "-m", "mlpack.cli", "collector", "serve", "--db", db_url, "--port", "0"],
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line.startswith("listening on "):
        proc.kill()
        raise SystemExit(f"collector did not start: {line}")
    return proc, line.split()[2]


def breakdown(db_url: str, model: tuple[str, dict], per_batch: int, group: int, n: int = 256) -> dict[str, float]:
    """Microseconds per upload in each in-process stage (no HTTP), writing ``group`` batches per
    transaction as the writer thread does under load; on a scratch device of its own."""
    h, entry = model
    name = f"breakdown-{per_batch}-{group}"
    th = hash_token(admin.add_device(db_url, name))
    rng = np.random.default_rng(1)
    now = time.time()
    bodies = []
    for b in range(n):
        payload = {"schema": 1, "device": name, "models": {h: entry},
                   "windows": [window_dict(h, entry["profile"], b * per_batch + j, now - 3600, rng) for j in range(per_batch)]}
        bodies.append(json.dumps(payload).encode())
    storage = open_storage(db_url, migrate=False)
    known = {h: model_from_upload(h, entry, "bench")}
    t0 = time.perf_counter()
    payloads = [decode_body(body, None, 1 << 25) for body in bodies]
    t1 = time.perf_counter()
    batches = [parse_batch(p, name, th) for p in payloads]
    t2 = time.perf_counter()
    for i in range(0, n, group):
        apply_batches(storage, batches[i : i + group], known, now)
    t3 = time.perf_counter()
    storage.close()
    return {"json": round((t1 - t0) / n * 1e6), "validate": round((t2 - t1) / n * 1e6), "write": round((t3 - t2) / n * 1e6)}


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


def run_backend(backend: str, seconds: int, connections: int, threads: int) -> None:
    with scratch_db(backend) as db_url:
        model = make_model()
        h, entry = model
        storage = open_storage(db_url)
        storage.add_model(model_from_upload(h, entry, "bench"), time.time())
        storage.close()
        tokens = [(f"bench-{i:03d}", admin.add_device(db_url, f"bench-{i:03d}")) for i in range(DEVICES)]
        proc, url = start(db_url)
        try:
            base = wrk(url + "/healthz", seconds, None, connections, threads)
            print(f"[{backend}] baseline GET /healthz: {base['rps']:.0f} req/s, p50 {base['p50_ms']:.2f} ms, p99 {base['p99_ms']:.2f} ms")
            rng = np.random.default_rng(0)
            for per_batch in (1, 10):
                ws = [window_dict(h, entry["profile"], 0, time.time() - 1800, rng) for _ in range(per_batch)]
                # Shaped like the agent's batches: the models section rides along every time.
                payload = {"schema": 1, "device": "@DEVICE@", "models": {h: entry}, "windows": ws, "audit": [],
                           "outbox": {"produced": 1, "merged": 0, "dropped": 0, "dropped_rows": 0}}
                text = json.dumps(payload)
                for j in range(per_batch):
                    text = text.replace('"seq": 0, "seq_last": 0', f'"seq": @SEQ{j}@, "seq_last": @SEQ{j}@', 1)
                size = len(text.encode())
                before = _count(db_url)
                res = wrk(url + "/api/v1/ingest", seconds, lua_script(text, tokens, per_batch, threads, first_seq=per_batch * 10_000_000), connections, threads)
                stored = _count(db_url) - before
                ok = res["requests"] - res["non2xx"]
                extra = stored - ok * per_batch  # uploads still in flight when wrk stopped counting
                exact = 0 <= extra <= connections * per_batch
                print(
                    f"[{backend}] ingest {per_batch:>2} window(s)/batch ({size / 1024:.1f} KiB JSON, {size and len(gzip.compress(text.encode())) / 1024:.1f} KiB gzip): "
                    f"{res['rps']:.0f} uploads/s = {res['rps'] * per_batch:.0f} windows/s "
                    f"(x{res['rps'] / base['rps']:.2f} of baseline), p50 {res['p50_ms']:.1f} ms, p99 {res['p99_ms']:.1f} ms, "
                    f"non-2xx {res['non2xx']}; stored {stored} windows for {ok} acked uploads "
                    f"({'ok' if exact else 'MISMATCH'}: +{extra} from uploads in flight when wrk stopped)"
                )
        finally:
            proc.terminate()
            proc.wait(timeout=60)
        for per_batch, group in ((1, 1), (1, 32), (10, 32)):
            print(f"[{backend}] in-process µs per upload ({per_batch} window(s), {group} batch(es) per transaction, "
                  f"no HTTP): {breakdown(db_url, model, per_batch, group)}")


def _count(db_url: str) -> int:
    s = open_storage(db_url, migrate=False)
    try:
        return s.window_count()
    finally:
        s.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--backend", choices=["sqlite", "postgres", "both"], default="both")
    ap.add_argument("--seconds", type=int, default=10)
    ap.add_argument("--connections", type=int, default=32)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not installed (apt-get install wrk)")
    print(f"collector ingest benchmark: {N_FEATURES}-feature model, {DEVICES} devices, wrk -t{args.threads} "
          f"-c{args.connections} -d{args.seconds}s, {os.cpu_count()} cores shared with the load generator")
    for backend in (["sqlite", "postgres"] if args.backend == "both" else [args.backend]):
        run_backend(backend, args.seconds, args.connections, args.threads)


if __name__ == "__main__":
    main()
