"""Chaos: an installed device under load, ``kill -9`` of the device and of the collector;
rows answered vs rows counted at the collector.

    .venv/bin/python benchmarks/chaos.py [--exe EXE] [--backend sqlite|postgres|both]
        [--kills 40] [--clients 4] [--checkpoint-seconds 0.5] [--predict] [--json OUT]

One run per backend:

1. installs EXE (the device executable; built from ``examples/breast_cancer`` when not
   given) under a temporary prefix, configured for a real collector process
   (``mlpack collector serve`` on a SQLite file, or a private schema of the PostgreSQL
   test database) with 1-second windows;
2. starts the installed ``serve`` and drives it with ``--clients`` threads posting single
   rows over keep-alive connections; kills it with SIGKILL after a random life of
   ``--min-life``..``--max-life`` seconds, ``--kills`` times, starting it again each time;
   meanwhile another thread kills the collector with SIGKILL every few seconds and
   starts it again after an outage;
3. after the last kill, the installed ``agent sync`` delivers what is left (the last
   killed process's checkpoint included: opening the outbox stores it);
4. compares, per device process, the rows it answered (responses its clients received
   between its start and the next process's start) with the rows of the collector's
   windows whose end falls in that span (a window ends inside the life of the process
   that recorded it: at its boundary, or at the checkpoint a dead process left), and
   reports the distribution of rows lost per kill next to the rows that process answered
   in its last second, rows counted beyond what was answered (duplicates), overlapping
   sequence ranges at the collector, the outbox's accounting, and the device's
   ``status`` rows against the collector's.

``--predict ROWS`` adds a one-shot ``predict`` of a ROWS-row CSV (default 60-second window)
killed once 90% of its output arrived: rows it had written vs rows the collector counts
from it, next to the rows it wrote in its last second.

The rule the slow test (tests/chaos) asserts: rows lost per kill <= rows answered in the
process's last second; no duplicate; accounting balanced. ``--checkpoint-seconds 0``
runs the agent without checkpoints (a kill then loses the whole open window: the
behaviour before checkpoints), for a before/after comparison in the same conditions.
Timing on a shared machine is noisy; the distributions, not single kills, are the result.
"""

from __future__ import annotations

import argparse
import csv
import http.client
import json
import os
import random
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # the test helpers that start collectors and PostgreSQL schemas
    sys.path.insert(0, str(ROOT))

from tests._proc import Started, start_and_wait  # noqa: E402

EXAMPLE = ROOT / "examples" / "breast_cancer"
NAME = "breast-cancer"


# ---------------------------------------------------------------------------- results


@dataclass
class Life:
    """One device process: when it started and died, what it answered, what was counted."""

    instance: int
    spawned: float
    killed: float
    answered: int = 0
    last_second: int = 0
    counted: int = 0

    @property
    def lost(self) -> int:
        return max(0, self.answered - self.counted)

    @property
    def excess(self) -> int:
        """Rows counted beyond those answered (a request answered as the process died is recorded
        but its response may never arrive: up to one per client is not a duplicate)."""
        return max(0, self.counted - self.answered)


@dataclass
class Report:
    backend: str
    checkpoint_seconds: float
    clients: int
    lives: list[Life] = field(default_factory=list)
    collector_kills: int = 0
    answered: int = 0
    counted: int = 0
    windows: int = 0
    overlaps: int = 0
    duplicates: int = 0  # rows counted beyond answered + one in-flight request per client, summed
    accounting: dict[str, int] = field(default_factory=dict)
    balanced: bool = False
    status_rows: int | None = None  # what the device's ``status`` counts, after everything ran
    collector_rows: int = 0  # what the collector counts for the device, after everything ran
    unattributed: int = 0  # rows in windows whose end fell in no process's span
    predict: dict[str, Any] | None = None

    @property
    def violations(self) -> list[Life]:
        """Kills that lost more than the rows of the process's last second."""
        return [life for life in self.lives if life.lost > life.last_second]

    def summary(self) -> dict[str, Any]:
        lost = [life.lost for life in self.lives]
        last = [life.last_second for life in self.lives]
        ratio = [life.lost / life.last_second for life in self.lives if life.last_second]
        return {
            "backend": self.backend,
            "checkpoint_seconds": self.checkpoint_seconds,
            "device_kills": len(self.lives),
            "collector_kills": self.collector_kills,
            "answered": self.answered,
            "counted": self.counted,
            "lost": self.answered - self.counted,
            "lost_per_kill": _dist(lost),
            "last_second_rows_per_kill": _dist(last),
            "lost_over_last_second": _dist(ratio, 2),
            "kills_over_last_second": len(self.violations),
            "duplicates": self.duplicates,
            "overlapping_ranges": self.overlaps,
            "windows": self.windows,
            "unattributed_rows": self.unattributed,
            "accounting": self.accounting,
            "balanced": self.balanced,
            "status_rows": self.status_rows,
            "collector_rows": self.collector_rows,
            "predict": self.predict,
        }


def _dist(values: list[float], digits: int = 0) -> dict[str, float]:
    if not values:
        return {}
    s = sorted(values)

    def r(x: float) -> float:
        return round(x, digits) if digits else int(round(x))

    return {"min": r(s[0]), "median": r(statistics.median(s)), "p90": r(s[int(0.9 * (len(s) - 1))]),
            "max": r(s[-1]), "mean": round(statistics.fmean(s), 2)}


# ---------------------------------------------------------------------------- processes


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Collector:
    """A real ``mlpack collector serve`` on a fixed port (the device's configured URL), restartable."""

    def __init__(self, db_url: str) -> None:
        self.db_url = db_url
        self.port = free_port()
        self.started: Started | None = None
        self.kills = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        cmd = [sys.executable, "-m", "mlpack_edge.cli", "collector", "serve", "--db", self.db_url,
               "--port", str(self.port)]
        for _ in range(50):  # the port may linger a moment after a kill
            started = start_and_wait(cmd, "listening on ", stream="stdout", stderr=subprocess.STDOUT, cwd=ROOT)
            if started.line is not None:
                self.started = started
                return
            time.sleep(0.2)
        raise RuntimeError("collector did not start:\n" + started.output())

    def kill(self) -> None:
        if self.started is not None:
            self.started.proc.send_signal(signal.SIGKILL)
            self.started.proc.wait()
            self.started = None
            self.kills += 1

    def stop(self) -> None:
        if self.started is not None:
            self.started.proc.terminate()
            try:
                self.started.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.started.proc.kill()
                self.started.proc.wait()
            self.started = None

    def windows(self, device: str) -> list[tuple[int, int, float, float, int]]:
        """``(seq, seq_last, start, end, rows)`` of every window stored for ``device``."""
        query = "SELECT seq, seq_last, start_ts, end_ts, body FROM windows WHERE device = {} ORDER BY seq"
        if self.db_url.startswith("sqlite:///"):
            conn = sqlite3.connect(f"file:{self.db_url[len('sqlite:///'):]}?mode=ro", uri=True)
            try:
                rows = conn.execute(query.format("?"), (device,)).fetchall()
            finally:
                conn.close()
        else:
            import psycopg

            with psycopg.connect(self.db_url) as conn:
                rows = conn.execute(query.format("%s"), (device,)).fetchall()
        return [(int(s), int(sl), float(a), float(b), int(json.loads(body)["rows"])) for s, sl, a, b, body in rows]


@contextmanager
def database(backend: str, work: Path) -> Iterator[str]:
    """A collector database URL: a SQLite file in ``work``, or a private PostgreSQL schema."""
    if backend == "sqlite":
        yield f"sqlite:///{work / 'fleet.db'}"
        return
    from tests.collector.process import pg_schema

    with pg_schema() as url:
        yield url


def device_env(window_seconds: float, checkpoint_seconds: float) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLPACK_")}
    env["MLPACK_WINDOW_SECONDS"] = str(window_seconds)
    env["MLPACK_CHECKPOINT_SECONDS"] = str(checkpoint_seconds)
    return env


def install(exe: Path, prefix: Path, collector: Collector, device: str, token: str) -> Path:
    """Install ``exe`` under ``prefix`` with the agent configured; returns the installed launcher."""
    token_file = prefix.parent / "device.token"
    token_file.write_text(token + "\n")
    token_file.chmod(0o600)
    proc = subprocess.run(
        [str(exe), "install", "--prefix", str(prefix), "--allow-unsigned", "--collector-url", collector.url,
         "--device-id", device, "--token-file", str(token_file)],
        capture_output=True, text=True, timeout=300, env=device_env(1, 0.5),
    )
    if proc.returncode != 0:
        raise RuntimeError(f"install failed: {proc.stderr}")
    return prefix / NAME / "current" / NAME


def sample_rows() -> list[bytes]:
    with open(EXAMPLE / "breast_cancer.csv", newline="") as fh:
        rows = [{k: float(v) for k, v in r.items() if k != "diagnosis"} for r in csv.DictReader(fh)]
    return [json.dumps(r).encode() for r in rows]


# ---------------------------------------------------------------------------- load


class Load:
    """Client threads posting single rows to whichever device process is up; every 200 is
    timestamped (the time its response arrived)."""

    def __init__(self, clients: int, rows: list[bytes]) -> None:
        self.rows = rows
        self.url: tuple[str, int] | None = None
        self.answered: list[list[float]] = [[] for _ in range(clients)]
        self.refused = 0
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, args=(i,), daemon=True) for i in range(clients)]

    def start(self) -> None:
        for t in self._threads:
            t.start()

    def stop(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(timeout=10)

    def times(self) -> list[float]:
        return sorted(t for per in self.answered for t in per)

    def _run(self, i: int) -> None:
        out = self.answered[i]
        rnd = random.Random(i)
        conn: http.client.HTTPConnection | None = None
        target: tuple[str, int] | None = None
        while not self._stop.is_set():
            url = self.url
            if url is None:
                time.sleep(0.005)
                continue
            if conn is None or target != url:
                if conn is not None:
                    conn.close()
                conn, target = http.client.HTTPConnection(*url, timeout=10), url
            body = self.rows[rnd.randrange(len(self.rows))]
            try:
                conn.request("POST", "/predict", body, {"Content-Type": "application/json"})
                reply = conn.getresponse()
                reply.read()
            except (OSError, http.client.HTTPException):
                conn.close()
                conn = None
                time.sleep(0.005)
                continue
            if reply.status == 200:
                out.append(time.time())
            else:
                self.refused += 1


# ---------------------------------------------------------------------------- the run


def run(
    exe: Path,
    backend: str,
    *,
    kills: int = 40,
    clients: int = 4,
    min_life: float = 0.5,
    max_life: float = 3.5,
    window_seconds: float = 1.0,
    checkpoint_seconds: float = 0.5,
    collector_every: tuple[float, float] = (3.0, 9.0),
    outage: tuple[float, float] = (0.3, 2.5),
    predict_rows: int = 0,
    seed: int = 1,
    log: Any = None,
) -> Report:
    """One chaos run against ``backend`` ("sqlite" or "postgres"); see the module docstring."""
    from mlpack_edge.collector import admin

    say = log or (lambda *a: None)
    rnd = random.Random(seed)
    report = Report(backend, checkpoint_seconds, clients)
    with tempfile.TemporaryDirectory(prefix="mlpack-chaos-") as tmp:
        work = Path(tmp)
        with database(backend, work) as db_url:
            from mlpack_edge.collector.storage import open_storage

            open_storage(db_url).close()  # migrated before the device's first upload
            collector = Collector(db_url)
            collector.start()
            device = f"chaos-{uuid.uuid4().hex[:8]}"
            token = admin.add_device(db_url, device)
            (work / "opt").mkdir()
            launcher = install(exe, work / "opt", collector, device, token)
            state = work / "opt" / NAME / "state"
            env = device_env(window_seconds, checkpoint_seconds)
            load = Load(clients, sample_rows())
            chaos_stop = threading.Event()
            chaos = threading.Thread(target=_kill_collector, args=(collector, chaos_stop, rnd.random(), collector_every,
                                                                   outage), daemon=True)
            lives: list[Life] = []
            try:
                load.start()
                chaos.start()
                for i in range(kills):
                    spawned = time.time()
                    started = start_and_wait([str(launcher), "serve", "--port", "0"], "serving ", env=env,
                                             timeout=120)
                    if started.line is None:
                        raise RuntimeError(f"serve did not start: {started.output()}")
                    host, port = started.line.split(" on http://")[1].split(" ")[0].split(":")
                    load.url = (host, int(port))
                    time.sleep(rnd.uniform(min_life, max_life))
                    killed = time.time()
                    started.proc.send_signal(signal.SIGKILL)
                    load.url = None
                    started.proc.wait()
                    lives.append(Life(i, spawned, killed))
                    say(f"{backend}: kill {i + 1}/{kills}")
            finally:
                load.stop()
                chaos_stop.set()
                chaos.join(timeout=60)
            if collector.started is None:
                collector.start()
            _sync_all(launcher, env)
            report.collector_kills = collector.kills
            stored = collector.windows(device)
            if predict_rows:
                report.predict = _predict_killed(launcher, device_env(60, checkpoint_seconds), collector, device,
                                                 predict_rows, work, len(stored))
            report.collector_rows = sum(rows for *_, rows in collector.windows(device))
            collector.stop()
        _attribute(report, lives, load.times(), stored, clients)
        _books(report, state, launcher, env)
    return report


def _kill_collector(collector: Collector, stop: threading.Event, seed: float, every: tuple[float, float],
                    outage: tuple[float, float]) -> None:
    rnd = random.Random(seed)
    while not stop.wait(rnd.uniform(*every)):
        collector.kill()
        stop.wait(rnd.uniform(*outage))
        collector.start()


def _sync_all(launcher: Path, env: dict[str, str]) -> None:
    """``agent sync`` until nothing is left (it stores dead processes' checkpoints first)."""
    for _ in range(30):
        proc = subprocess.run([str(launcher), "agent", "sync"], capture_output=True, text=True, timeout=120, env=env)
        if proc.returncode == 3:  # nothing (left) to deliver
            return
        if proc.returncode not in (0, 4):
            raise RuntimeError(f"agent sync exited {proc.returncode}: {proc.stderr}")
        time.sleep(0.5)
    raise RuntimeError("agent sync never finished delivering")


def _attribute(report: Report, lives: list[Life], answered: list[float],
               stored: list[tuple[int, int, float, float, int]], clients: int) -> None:
    """Rows answered and rows counted per device process (see the module docstring)."""
    import bisect

    starts = [life.spawned for life in lives]
    for t in answered:
        i = bisect.bisect_right(starts, t) - 1
        if i >= 0:
            life = lives[i]
            life.answered += 1
            if life.killed - 1.0 < t <= life.killed:
                life.last_second += 1
    for _, _, _, end, rows in stored:
        i = bisect.bisect_left(starts, end) - 1  # spawned < end
        if i >= 0:
            lives[i].counted += rows
        else:
            report.unattributed += rows
    report.lives = lives
    report.answered = len(answered)
    report.counted = sum(rows for *_, rows in stored)
    report.windows = len(stored)
    covered: list[int] = []
    for seq, seq_last, *_ in stored:
        covered.extend(range(seq, seq_last + 1))
    report.overlaps = len(covered) - len(set(covered))
    report.duplicates = sum(max(0, life.excess - clients) for life in lives)


def _books(report: Report, state: Path, launcher: Path, env: dict[str, str]) -> None:
    status = subprocess.run([str(launcher), "status", "--json", "--hours", "48"], capture_output=True, text=True,
                            timeout=120, env=env)
    if status.returncode == 0:
        data = json.loads(status.stdout)
        report.status_rows = int(data["rows"])
        report.accounting = dict(data["outbox"] or {})
        acc = report.accounting
        report.balanced = bool(acc) and acc["produced"] == sum(
            acc[k] for k in ("delivered", "pending", "merged", "dropped", "dead_letter"))


def _predict_killed(launcher: Path, env: dict[str, str], collector: Collector, device: str, rows: int,
                    work: Path, before: int) -> dict[str, Any]:
    """A one-shot ``predict`` of ``rows`` rows killed once 90% of its output arrived (with the
    default 60-second window: without checkpoints a kill loses everything since the
    minute began)."""
    data = work / "big.csv"
    with open(EXAMPLE / "breast_cancer.csv", newline="") as fh:
        reader = csv.DictReader(fh)
        fields = [f for f in reader.fieldnames or [] if f != "diagnosis"]
        base = [[r[f] for f in fields] for r in reader]
    with open(data, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(fields)
        for i in range(rows):
            w.writerow(base[i % len(base)])
    proc = subprocess.Popen([str(launcher), "predict", str(data)], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                            env=env)
    assert proc.stdout is not None
    seen: list[float] = []
    next(proc.stdout)  # the header
    for _ in proc.stdout:
        seen.append(time.time())
        if len(seen) >= 0.9 * rows:
            break
    killed = time.time()
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    _sync_all(launcher, env)
    counted = sum(r for *_, r in collector.windows(device)[before:])
    last_second = sum(1 for t in seen if killed - 1.0 < t <= killed)
    return {"rows": rows, "written_at_kill": len(seen), "counted": counted,
            "lost": max(0, len(seen) - counted), "last_second": last_second}


# ---------------------------------------------------------------------------- command line


def build_example(work: Path) -> Path:
    """The breast-cancer example's device executable (the runtime cache makes a rebuild quick)."""
    import shutil

    from mlpack_edge.builder import build

    spec_dir = work / "spec"
    shutil.copytree(EXAMPLE, spec_dir)
    result = build(spec_dir / "mlpack.toml", work / "dist")
    assert result.executable is not None
    return Path(result.executable)


def _print(report: Report) -> None:
    s = report.summary()
    print(f"\n== {s['backend']}  checkpoint_seconds={s['checkpoint_seconds']}  "
          f"{s['device_kills']} device kills, {s['collector_kills']} collector kills")
    print(f"rows answered {s['answered']}, counted at the collector {s['counted']}, lost {s['lost']}")
    print(f"rows lost per kill            {s['lost_per_kill']}")
    print(f"rows of the last second       {s['last_second_rows_per_kill']}")
    print(f"lost / last second            {s['lost_over_last_second']}")
    print(f"kills losing more than the last second: {s['kills_over_last_second']}")
    print(f"duplicates {s['duplicates']}, overlapping seq ranges {s['overlapping_ranges']}, windows {s['windows']},"
          f" unattributed rows {s['unattributed_rows']}")
    print(f"outbox accounting {s['accounting']} balanced={s['balanced']}; device status rows {s['status_rows']}"
          f" vs collector {s['collector_rows']}")
    if s["predict"]:
        print(f"one-shot predict killed near its end: {s['predict']}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--exe", type=Path, help="device executable (default: build examples/breast_cancer)")
    p.add_argument("--backend", choices=["sqlite", "postgres", "both"], default="both")
    p.add_argument("--kills", type=int, default=40)
    p.add_argument("--clients", type=int, default=4)
    p.add_argument("--min-life", type=float, default=0.5)
    p.add_argument("--max-life", type=float, default=3.5)
    p.add_argument("--checkpoint-seconds", type=float, default=0.5, help="0: no checkpoints (the old behaviour)")
    p.add_argument("--predict", type=int, default=0, metavar="ROWS", help="also kill a one-shot predict of ROWS rows")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--json", type=Path, help="write the summaries here")
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="mlpack-chaos-build-") as tmp:
        exe = args.exe or build_example(Path(tmp))
        summaries = []
        for backend in (["sqlite", "postgres"] if args.backend == "both" else [args.backend]):
            report = run(exe, backend, kills=args.kills, clients=args.clients, min_life=args.min_life,
                         max_life=args.max_life, checkpoint_seconds=args.checkpoint_seconds,
                         predict_rows=args.predict, seed=args.seed, log=lambda m: print(m, file=sys.stderr))
            _print(report)
            summaries.append({**report.summary(), "lives": [asdict(life) | {"lost": life.lost} for life in report.lives]})
    if args.json:
        args.json.write_text(json.dumps(summaries, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
