#!/usr/bin/env python3
"""Receive mlpack collector alerts and retrain: a drift or gate alert runs ``mlpack build``.

Standard library only, so it runs on any CI runner or small VM next to the training data:

    python3 examples/retrain_webhook/receiver.py --spec path/to/mlpack.toml --out dist \\
        --secret-file hook.secret [--fetch-cmd "./fetch_fresh_data.sh"] [--port 9000]
    mlpack collector add-webhook http://127.0.0.1:9000/alerts --secret-file hook.secret

It accepts both webhook formats (``--format json`` and ``--format alertmanager``),
checks ``X-Mlpack-Signature`` (HMAC-SHA256 of the body) when given the secret and
answers 401 on a mismatch, answers 202 at once (the collector never waits for a build),
and runs at most one build at a time: alerts arriving during a build are folded into one
more build afterwards. Only *firing* alerts whose kind matches ``--kinds`` (default
``drift,*gate*``: drift and production gate breaches) trigger; resolved ones are logged.

Before each build ``--fetch-cmd`` (a shell command) may refresh the training data the
spec points at, e.g. ``mlpack collector export-samples`` or a query against the
warehouse. Every event is one JSON line on stdout.
"""

from __future__ import annotations

import argparse
import fnmatch
import hashlib
import hmac
import json
import shlex
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

MAX_BODY = 1024 * 1024
_LOG_LOCK = threading.Lock()


def log(event: str, **fields: Any) -> None:
    """One JSON line per event. The request threads and the build thread both log, and
    print() writes the text and its newline separately, so lines are written whole under a lock."""
    line = json.dumps({"time": round(time.time(), 3), "event": event, **fields}, sort_keys=True) + "\n"
    with _LOG_LOCK:
        sys.stdout.write(line)
        sys.stdout.flush()


def alerts_of(body: dict[str, Any]) -> list[dict[str, Any]]:
    """(status, kind, device, model, message) of each alert, from either format."""
    if body.get("version") == "4" and isinstance(body.get("alerts"), list):  # Alertmanager's shape
        return [
            {"status": a.get("status"), "kind": a.get("labels", {}).get("kind", a.get("labels", {}).get("alertname")),
             "device": a.get("labels", {}).get("device"), "message": a.get("annotations", {}).get("summary"),
             "model": " ".join(filter(None, (a.get("labels", {}).get("model_name"),
                                             a.get("labels", {}).get("model_version")))) or None}
            for a in body["alerts"]
        ]
    a = body.get("alert") or {}
    model = " ".join(filter(None, (a.get("model_name"), a.get("model_version")))) or None
    return [{"status": body.get("event"), "kind": a.get("kind"), "device": a.get("device"), "model": model,
             "message": a.get("message")}]


class Retrainer:
    """Runs the build in a background thread; requests during a build coalesce into one rerun."""

    def __init__(self, build: list[str], fetch: str | None) -> None:
        self.build = build
        self.fetch = fetch
        self._lock = threading.Lock()
        self._running = False
        self._again = False
        self.builds = 0

    def request(self, reason: str) -> None:
        with self._lock:
            if self._running:
                self._again = True
                log("build_queued", reason=reason)
                return
            self._running = True
        threading.Thread(target=self._loop, args=(reason,), daemon=True).start()

    def _loop(self, reason: str) -> None:
        while True:
            self._run_once(reason)
            with self._lock:
                if not self._again:
                    self._running = False
                    return
                self._again = False
                reason = "alerts during the previous build"

    def _run_once(self, reason: str) -> None:
        if self.fetch:
            log("fetch_started", command=self.fetch)
            done = subprocess.run(self.fetch, shell=True, capture_output=True, text=True)
            if done.returncode != 0:
                log("fetch_failed", code=done.returncode, stderr=done.stderr.strip()[-500:])
                return
        log("build_started", reason=reason, command=shlex.join(self.build))
        t0 = time.monotonic()
        done = subprocess.run(self.build, capture_output=True, text=True)
        self.builds += 1
        result: Any = None
        try:
            full = json.loads(done.stdout) if done.stdout.strip() else None
        except json.JSONDecodeError:
            full = None
            result = done.stdout.strip()[-500:]
        if isinstance(full, dict):  # mlpack build --json: what a CI log wants to see
            result = {k: full.get(k) for k in ("ok", "name", "version", "bundle", "content_hash", "error")
                      if full.get(k) is not None}
            gates = full.get("gates")
            if gates:
                result["gates"] = f"{sum(1 for g in gates if g.get('passed'))}/{len(gates)} passed"
        log("build_finished" if done.returncode == 0 else "build_failed", code=done.returncode,
            seconds=round(time.monotonic() - t0, 2), result=result, stderr=done.stderr.strip()[-500:] or None)


def make_handler(secret: bytes | None, kinds: list[str], retrainer: Retrainer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def _answer(self, status: int, body: dict[str, Any]) -> None:
            out = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(out)))
            self.end_headers()
            self.wfile.write(out)

        def do_POST(self) -> None:  # noqa: N802 - http.server's name
            length = int(self.headers.get("Content-Length") or 0)
            if length > MAX_BODY:
                self._answer(413, {"error": "body too large"})
                return
            raw = self.rfile.read(length)
            if secret is not None:
                expected = "sha256=" + hmac.new(secret, raw, hashlib.sha256).hexdigest()
                if not hmac.compare_digest(self.headers.get("X-Mlpack-Signature", ""), expected):
                    log("refused", reason="bad or missing X-Mlpack-Signature")
                    self._answer(401, {"error": "X-Mlpack-Signature: does not match"})
                    return
            try:
                body = json.loads(raw)
            except (UnicodeDecodeError, json.JSONDecodeError):
                self._answer(400, {"error": "body: not JSON"})
                return
            triggered = []
            for a in alerts_of(body):
                log("alert", **a)
                if a["status"] == "firing" and any(fnmatch.fnmatch(str(a["kind"]), k) for k in kinds):
                    triggered.append(f"{a['kind']} on {a['device'] or a['model'] or 'the fleet'}")
            if triggered:
                retrainer.request("; ".join(triggered))
            self._answer(202, {"retrain": bool(triggered)})

        def log_message(self, *args: Any) -> None:
            pass

    return Handler


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--spec", required=True, help="mlpack.toml (or its folder) to build")
    p.add_argument("--out", default="dist", help="mlpack build --out (default: dist)")
    p.add_argument("--mlpack", default="mlpack", help="the mlpack command (default: mlpack on PATH)")
    p.add_argument("--build-arg", action="append", default=[], help="extra argument for mlpack build (repeatable)")
    p.add_argument("--fetch-cmd", help="shell command that refreshes the training data before each build")
    p.add_argument("--kinds", default="drift,*gate*", help="alert kinds that trigger a build (glob patterns)")
    p.add_argument("--secret-file", help="the webhook's secret: refuse requests without a matching signature")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=9000)
    args = p.parse_args(argv)
    secret = None
    if args.secret_file:
        try:
            secret = Path(args.secret_file).read_text("utf-8").strip().encode()
        except OSError as exc:
            print(f"error: --secret-file {args.secret_file}: cannot read ({exc.strerror})", file=sys.stderr)
            return 2
    build = [*shlex.split(args.mlpack), "build", args.spec, "--out", args.out, "--json", *args.build_arg]
    retrainer = Retrainer(build, args.fetch_cmd)
    kinds = [k.strip() for k in args.kinds.split(",") if k.strip()]
    server = ThreadingHTTPServer((args.host, args.port), make_handler(secret, kinds, retrainer))
    log("listening", url=f"http://{args.host}:{server.server_address[1]}/", kinds=kinds, signed=secret is not None)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
