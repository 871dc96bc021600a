"""What a fleet rollout costs: bytes downloaded, the shadow phase on ``serve``, the offer check on ingest.

    .venv/bin/python benchmarks/rollout.py [--rounds 7] [--block 400] [--ingest 300]

``--budget`` (repeatable) sets the live shadow's CPU budget (``runtime.shadow.DEFAULT_BUDGET``
otherwise); ``--skip-ingest`` skips part 3.

1. **Bytes for a model-only update vs the full executable.** The breast-cancer example is
   built as 1.0.0 (device executable) and 1.0.1 (bundle only, another C); 1.0.1 is
   published to a real collector process and downloaded by the device's own downloader
   (``monitor_agent.download``, Range requests) through a counting fetcher. Baseline: the
   1.0.0 executable a user would otherwise copy. Goal (issue 12): <= 1%.
2. **Shadow cost on single-row ``serve`` p50.** Two server processes of the same model
   (``runtime.server.PredictServer``, started afresh each round in rotating order), one with
   a live shadow of the candidate attached (``runtime.shadow.LiveShadow``: the request
   path only enqueues, a background thread runs both models), one without. One keep-alive
   client posts single rows to each in turn, ``--block`` requests per block, 3 blocks per
   round; the result is the per-round p50 ratio shadow/plain (min and median). Goal: <= 1.3.
3. **Collector cost of the offer check per ingest.** Two collector processes, one with an
   active rollout whose offer goes to the uploading device (the reply carries it), one
   without; single-window uploads alternate between them; per-round p50 ratio.
4. **The desired-version check, in process** (``--devices``, default 1,000; SQLite). Part 3
   is lost in HTTP noise on a loaded machine, so the two halves of the check are timed
   directly, each beside its no-rollout baseline in the same run, interleaved:
   *per ingest / per poll* — the reply's lookup (``RolloutService.offers_for``) for a
   device the rollout concerns vs a collector with no rollout, beside the in-process cost
   of storing one window (``apply_batches``) for scale; *per tick* — the re-read every
   ``rollout_tick`` (2 s) does (``rollout.offers``: rollouts, releases, device labels and
   models, the stage's hold health from its devices' stored windows) with one active
   rollout whose first stage (10%) is in its hold, vs the same fleet with no rollout.

Timing on a shared machine is noisy: read the ratios, and the machine's load.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import http.client
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tests._proc import start_and_wait  # noqa: E402

EXAMPLE = ROOT / "examples" / "breast_cancer"


def _build(work: Path, version: str, c: float, executable: bool) -> tuple[Path, Path | None]:
    from mlpack_edge.builder import NullReporter, build

    folder = work / f"spec-{version}"
    folder.mkdir()
    for f in EXAMPLE.iterdir():
        (folder / f.name).write_bytes(f.read_bytes())
    spec = folder / "mlpack.toml"
    spec.write_text(spec.read_text().replace('version = "1.0.0"', f'version = "{version}"').replace("C = 0.5", f"C = {c}"))
    r = build(spec, work / "dist", executable=executable, reporter=NullReporter())
    return r.bundle_dir, r.executable


def _collector(db: Path, *extra: str) -> tuple[object, str]:
    started = start_and_wait([sys.executable, "-m", "mlpack_edge.cli", "collector", "serve", "--db", str(db),
                              "--port", "0", "--allow-unsigned-releases", *extra],
                             "listening on ", stream="stdout", stderr=subprocess.STDOUT, timeout=120)
    assert started.line is not None, started.output()
    return started, started.line.split()[2]


def bytes_for_update(work: Path) -> dict[str, float]:
    from mlpack_edge.builder.remote import pack_bundle
    from mlpack_edge.collector import admin
    from mlpack_edge.monitor_agent.download import download
    from mlpack_edge.monitor_agent.transport import UrllibTransport
    from mlpack_edge.runtime.manifest import read_manifest

    _, exe = _build(work, "1.0.0", 0.5, executable=True)
    bundle, _ = _build(work, "1.0.1", 0.7, executable=False)
    assert exe is not None
    db = work / "c.db"
    admin_token = admin.add_admin("sqlite:///" + str(db), "ops")
    device_token = admin.add_device("sqlite:///" + str(db), "press-01")
    proc, url = _collector(db)
    try:
        archive = pack_bundle(bundle)
        req = http.client.HTTPConnection(url.split("//")[1])
        req.request("POST", "/api/v1/releases", archive, {"Authorization": f"Bearer {admin_token}"})
        assert req.getresponse().status == 201

        class Counting:
            def __init__(self) -> None:
                self.inner, self.bytes = UrllibTransport(), 0

            def get(self, u: str, h: dict[str, str]):  # type: ignore[no-untyped-def]
                r = self.inner.get(u, h)
                self.bytes += len(r.body)
                return r

        fetcher = Counting()
        content_hash = read_manifest(bundle).content_hash
        download(fetcher, f"{url}/api/v1/releases/{content_hash}/bundle", {"Authorization": f"Bearer {device_token}"},
                 work / "dl", hashlib.sha256(archive).hexdigest(), len(archive))
    finally:
        proc.proc.terminate()  # type: ignore[attr-defined]
        proc.proc.wait()  # type: ignore[attr-defined]
    full = exe.stat().st_size
    return {"downloaded": fetcher.bytes, "executable": full, "ratio": fetcher.bytes / full}


_SERVER = """
import sys, time
from pathlib import Path
from mlpack_edge.runtime.bundle import Bundle
from mlpack_edge.runtime.model import Model
from mlpack_edge.runtime.server import PredictServer, ServeConfig
from mlpack_edge.runtime.shadow import LiveShadow
model = Model(Bundle.open(sys.argv[1]))
server = PredictServer(model, ServeConfig(port=0))
if len(sys.argv) > 3:
    server.shadow = LiveShadow(model, Model(Bundle.open(sys.argv[3])), {"shadow": 1e9}, time.time(),
                               budget=float(sys.argv[2]))
print("serving on", server.url, flush=True)
server.serve_forever()
"""


def _server(bundle: Path, candidate: Path | None, budget: float) -> tuple[object, http.client.HTTPConnection]:
    cmd = [sys.executable, "-c", _SERVER, str(bundle), str(budget)] + ([str(candidate)] if candidate else [])
    started = start_and_wait(cmd, "serving on ", stream="stdout", timeout=120)
    assert started.line is not None, started.output()
    host, port = started.line.split("http://")[1].strip().split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=30)
    conn.connect()
    assert conn.sock is not None
    conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return started, conn


def _p50(conn: http.client.HTTPConnection, path: str, bodies: list[bytes], n: int, headers: dict[str, str]) -> list[float]:
    out = []
    for i in range(n):
        t0 = time.perf_counter()
        conn.request("POST", path, bodies[i % len(bodies)], headers)
        r = conn.getresponse()
        r.read()
        out.append(time.perf_counter() - t0)
        assert r.status == 200, r.status
    return out


def shadow_cost(work: Path, rounds: int, block: int, budget: float) -> list[float]:
    bundle = work / "dist" / "breast-cancer-1.0.0"
    candidate = work / "dist" / "breast-cancer-1.0.1"
    import csv

    with open(EXAMPLE / "breast_cancer.csv", newline="") as fh:
        rows = [{k: float(v) for k, v in r.items() if k != "diagnosis"} for r in csv.DictReader(fh)]
    bodies = [json.dumps(r).encode() for r in rows[:200]]
    ratios = []
    for rnd in range(rounds):
        order = [None, candidate] if rnd % 2 == 0 else [candidate, None]
        servers = {str(c): _server(bundle, c, budget) for c in order}
        times: dict[str, list[float]] = {k: [] for k in servers}
        for _ in range(3):
            for k, (_, conn) in servers.items():
                times[k] += _p50(conn, "/predict", bodies, block, {"Content-Type": "application/json"})
        for started, conn in servers.values():
            conn.close()
            started.proc.terminate()  # type: ignore[attr-defined]
            started.proc.wait()  # type: ignore[attr-defined]
        p50 = {k: statistics.median(v) for k, v in times.items()}
        ratios.append(p50[str(candidate)] / p50["None"])
        print(f"  round {rnd + 1}: p50 plain {p50['None'] * 1e3:.3f} ms, with shadow {p50[str(candidate)] * 1e3:.3f} ms "
              f"-> {ratios[-1]:.3f}", flush=True)
    return ratios


def ingest_cost(work: Path, rounds: int, n: int) -> list[float]:
    from tests.collector.sim import make_profile

    profile = make_profile()
    conns, tokens, sims = {}, {}, {}
    procs: list[object] = []
    try:
        return _ingest_rounds(work, rounds, n, profile, conns, tokens, sims, procs)
    finally:  # also when setting up failed half-way: no collector is left running
        for p in procs:
            p.proc.terminate()  # type: ignore[attr-defined]
            p.proc.wait()  # type: ignore[attr-defined]


def _ingest_rounds(work: Path, rounds: int, n: int, profile: object, conns: dict, tokens: dict, sims: dict,
                   procs: list[object]) -> list[float]:
    from mlpack_edge.builder.remote import pack_bundle
    from mlpack_edge.collector import admin
    from tests.collector.sim import SimDevice, model_hash

    for label in ("plain", "rollout"):
        db = work / f"ingest-{label}.db"
        url_db = "sqlite:///" + str(db)
        admin_token = admin.add_admin(url_db, "ops")
        tokens[label] = admin.add_device(url_db, "press-01")
        proc, url = _collector(db, "--release-dir", str(work / f"rel-{label}"))
        procs.append(proc)
        host, port = url.split("//")[1].split(":")
        conn = http.client.HTTPConnection(host, int(port), timeout=30)
        sims[label] = SimDevice("press-01", profile, model_hash("breast-cancer", "1.0.0"))
        first = sims[label].batch([sims[label].window(time.time() - 120)], name="breast-cancer")
        def call(method: str, path: str, body: bytes, headers: dict[str, str]) -> int:
            conn.request(method, path, body, headers)
            reply = conn.getresponse()
            reply.read()
            return reply.status

        assert call("POST", "/api/v1/ingest", gzip.compress(json.dumps(first).encode()),
                    {"Authorization": f"Bearer {tokens[label]}", "Content-Encoding": "gzip"}) == 200
        if label == "rollout":
            assert call("POST", "/api/v1/releases", pack_bundle(work / "dist" / "breast-cancer-1.0.1"),
                        {"Authorization": f"Bearer {admin_token}"}) == 201
            assert call("POST", "/api/v1/rollouts", json.dumps({"model": "breast-cancer", "version": "1.0.1",
                                                                "stages": [100], "devices": ["press-01"]}).encode(),
                        {"Authorization": f"Bearer {admin_token}", "Content-Type": "application/json"}) == 201
        conns[label] = conn
    ratios = []
    for rnd in range(rounds):
        times: dict[str, list[float]] = {"plain": [], "rollout": []}
        for _ in range(3):
            for label, conn in conns.items():
                sim = sims[label]
                bodies = [gzip.compress(json.dumps(sim.batch([sim.window(time.time() - 60)], name="breast-cancer",
                                                             include_model=False)).encode()) for _ in range(n // 3)]
                headers = {"Authorization": f"Bearer {tokens[label]}", "Content-Encoding": "gzip"}
                for body in bodies:
                    t0 = time.perf_counter()
                    conn.request("POST", "/api/v1/ingest", body, headers)
                    r = conn.getresponse()
                    reply = json.loads(r.read())
                    times[label].append(time.perf_counter() - t0)
                    assert r.status == 200 and (("updates" in reply) == (label == "rollout")), reply
        p50 = {k: statistics.median(v) for k, v in times.items()}
        ratios.append(p50["rollout"] / p50["plain"])
        print(f"  round {rnd + 1}: ingest p50 plain {p50['plain'] * 1e3:.2f} ms, with an offer "
              f"{p50['rollout'] * 1e3:.2f} ms -> {ratios[-1]:.3f}", flush=True)
    return ratios


def _fleet_storage(path: Path, devices: int, rollout: bool, hold_windows: int) -> tuple[object, object]:
    """A SQLite collector store: ``devices`` devices with 5 windows each of 1.0.0; with ``rollout``,
    1.1.0 rolling out, its first stage (10%) updated, its hold over, each stage device but one
    with ``hold_windows`` one-minute windows of 1.1.0 in it: the silent one keeps the stage
    waiting, so every tick judges every stage device's hold again (the worst steady state)."""
    from mlpack_edge.collector import apply_batches, open_storage, parse_batch
    from mlpack_edge.collector import rollout as ro
    from mlpack_edge.collector.auth import hash_token
    from mlpack_edge.collector.storage import Release
    from tests.collector.sim import SimDevice, make_profile, model_hash

    old, new = model_hash("demo", "1.0.0"), model_hash("demo", "1.1.0")
    profile = make_profile()
    storage = open_storage("sqlite:///" + str(path))
    t0 = time.time() - 4000
    sims = []
    for i in range(devices):
        name = f"dev-{i:05d}"
        storage.add_device(name, hash_token(name), t0)  # type: ignore[attr-defined]
        sim = SimDevice(name, profile, old, seed=i)
        payload = sim.batch([sim.window(t0 + 60 * k, rows=50) for k in range(5)], version="1.0.0")
        apply_batches(storage, [parse_batch(payload, name, hash_token(name))], {}, t0 + 300)
        sims.append(sim)
    if not rollout:
        return storage, None
    storage.add_release(Release(new, "demo", "1.1.0", 1000, "ab" * 32, None, None, t0, "ops"))  # type: ignore[attr-defined]
    r = ro.start_rollout(storage, "demo", "1.1.0", ro.RolloutPlan(stages=(10, 100), hold=600, shadow=0), t0 + 400)
    _, first = ro.members(storage, r)
    for i, name in enumerate(first):
        sim = next(s for s in sims if s.name == name)
        sim.model = new
        audit = [{"seq": 0, "time": t0 + 500, "event": "update_installed",
                  "detail": {"rollout": r.id, "version": "1.1.0", "hash": new}}]
        windows = [] if i == len(first) - 1 else [sim.window(t0 + 800 + 60 * k, rows=50) for k in range(hold_windows)]
        for k in range(0, max(1, len(windows)), 100):  # batches of at most 100 windows
            batch = parse_batch(sim.batch(windows[k:k + 100], version="1.1.0", audit=audit if k == 0 else []),
                                name, hash_token(name))
            apply_batches(storage, [batch], {}, t0 + 900)
            ro.observe_audit(storage, name, batch.audit, t0 + 800)
    return storage, first[0]


def desired_version_cost(work: Path, rounds: int, devices: int, hold_windows: int) -> dict[str, list[float]]:
    """Part 4 (module doc): seconds per lookup and per tick, with a rollout and without, per round."""
    import timeit

    from mlpack_edge.collector import apply_batches, parse_batch
    from mlpack_edge.collector import rollout as ro
    from mlpack_edge.collector.auth import hash_token
    from mlpack_edge.collector.config import CollectorConfig
    from mlpack_edge.collector.rollout_api import RolloutService

    t = time.perf_counter()
    plain, _ = _fleet_storage(work / "dv-plain.db", devices, rollout=False, hold_windows=hold_windows)
    rolling, member = _fleet_storage(work / "dv-rollout.db", devices, rollout=True, hold_windows=hold_windows)
    print(f"  two fleets of {devices} devices set up in {time.perf_counter() - t:.1f} s ({hold_windows} windows "
          "per stage device in the hold)", flush=True)
    services = {}
    for label, storage in (("plain", plain), ("rollout", rolling)):
        services[label] = RolloutService(storage, CollectorConfig(db_url="sqlite://", release_dir=work / "rel-dv"))
        services[label].tick()
    assert rolling.rollouts("demo")[0].stage == 0, "the stage must stay waiting (one silent device)"  # type: ignore[attr-defined]
    assert member is not None and services["rollout"].offers_for(str(member))
    assert not services["plain"].offers_for(str(member))
    out: dict[str, list[float]] = {k: [] for k in ("lookup_plain", "lookup_rollout", "tick_plain", "tick_rollout",
                                                   "ingest_window", "judge_once")}
    from mlpack_edge.collector._rollout_health import device_health

    r = rolling.rollouts("demo")[0]  # type: ignore[attr-defined]
    _, stage = ro.members(rolling, r)
    judged = [d for d in stage if rolling.has_window_since(d, r.release, 0)]  # type: ignore[attr-defined]
    from tests.collector.sim import SimDevice, make_profile, model_hash

    sim = SimDevice("dev-00000", make_profile(), model_hash("demo", "1.0.0"), seed=99)
    sim.seq = 1000
    for rnd in range(rounds):
        for label in ("plain", "rollout") if rnd % 2 == 0 else ("rollout", "plain"):
            svc = services[label]
            n = 200_000
            out[f"lookup_{label}"].append(min(timeit.repeat(lambda: svc.offers_for(str(member)), number=n, repeat=3)) / n)
            ticks = []
            for _ in range(3):
                t0 = time.perf_counter()
                ro.offers(svc.storage, time.time(), svc.releases.runtime_info)
                ticks.append(time.perf_counter() - t0)
            out[f"tick_{label}"].append(min(ticks))
        t0 = time.perf_counter()  # what the tick does once, when the last stage device reports
        for d in judged:
            device_health(rolling, r, d, r.stage_started_at, r.stage_started_at, time.time())
        out["judge_once"].append(time.perf_counter() - t0)
        stored = []
        for _ in range(20):
            payload = sim.batch([sim.window(time.time() - 60, rows=50)], include_model=False)
            t0 = time.perf_counter()
            apply_batches(plain, [parse_batch(payload, sim.name, hash_token(sim.name))], {}, time.time())
            stored.append(time.perf_counter() - t0)
        out["ingest_window"].append(statistics.median(stored))
        print(f"  round {rnd + 1}: lookup {out['lookup_rollout'][-1] * 1e9:.0f} ns (no rollout "
              f"{out['lookup_plain'][-1] * 1e9:.0f} ns; storing one window {out['ingest_window'][-1] * 1e6:.0f} us); "
              f"tick {out['tick_rollout'][-1] * 1e3:.1f} ms (no rollout {out['tick_plain'][-1] * 1e3:.1f} ms); "
              f"judging the stage's {len(judged)} devices once {out['judge_once'][-1] * 1e3:.0f} ms",
              flush=True)
    for s in (plain, rolling):
        s.close()  # type: ignore[attr-defined]
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--block", type=int, default=400)
    ap.add_argument("--ingest", type=int, default=300, help="uploads per collector per round")
    ap.add_argument("--budget", type=float, action="append",
                    help="the live shadow's CPU budget (share of one core); repeatable [default: the runtime's]")
    ap.add_argument("--skip-ingest", action="store_true")
    ap.add_argument("--devices", type=int, default=1000, help="fleet size for part 4")
    ap.add_argument("--hold-windows", type=int, default=60, help="part 4: windows per stage device in the hold")
    ap.add_argument("--only-check", action="store_true", help="run part 4 alone")
    args = ap.parse_args()
    print(f"load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs")
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        if args.only_check:
            _report_check(desired_version_cost(work, args.rounds, args.devices, args.hold_windows))
            return
        b = bytes_for_update(work)
        print(f"model-only update: {b['downloaded']:,} bytes downloaded vs the {b['executable']:,}-byte executable "
              f"= {b['ratio'] * 100:.3f}%")
        from mlpack_edge.runtime.shadow import DEFAULT_BUDGET

        for budget in args.budget or [DEFAULT_BUDGET]:
            print(f"shadow cost on single-row serve p50 (shadow / plain), budget {budget:g} of a core:")
            s = shadow_cost(work, args.rounds, args.block, budget)
            print(f"shadow cost (budget {budget:g}): min {min(s):.3f}x, median {statistics.median(s):.3f}x "
                  f"over {len(s)} rounds")
        if args.skip_ingest:
            return
        print("offer check on ingest (with an offer in the reply / without):")
        i = ingest_cost(work, args.rounds, args.ingest)
        print(f"ingest cost: min {min(i):.3f}x, median {statistics.median(i):.3f}x over {len(i)} rounds")
        print(f"desired-version check in process, {args.devices} devices:")
        _report_check(desired_version_cost(work, args.rounds, args.devices, args.hold_windows))
    print(f"load average {os.getloadavg()[0]:.2f}")


def _report_check(c: dict[str, list[float]]) -> None:
    med = {k: statistics.median(v) for k, v in c.items()}
    print(f"per ingest/poll: offer lookup {med['lookup_rollout'] * 1e9:.0f} ns median (min "
          f"{min(c['lookup_rollout']) * 1e9:.0f}) vs {med['lookup_plain'] * 1e9:.0f} ns with no rollout "
          f"(min {min(c['lookup_plain']) * 1e9:.0f}); storing one window {med['ingest_window'] * 1e6:.0f} us: "
          f"{med['lookup_rollout'] / med['ingest_window'] * 100:.4f}% of it")
    print(f"per tick (every 2 s): {med['tick_rollout'] * 1e3:.1f} ms median (min {min(c['tick_rollout']) * 1e3:.1f}) "
          f"vs {med['tick_plain'] * 1e3:.1f} ms with no rollout (min {min(c['tick_plain']) * 1e3:.1f}): "
          f"{med['tick_rollout'] / 2 * 100:.2f}% of one core vs {med['tick_plain'] / 2 * 100:.2f}%; judging a stage "
          f"once its last device reports: {med['judge_once'] * 1e3:.0f} ms median (min {min(c['judge_once']) * 1e3:.0f})")


if __name__ == "__main__":
    main()
