"""Where a batch ``POST /predict`` spends its CPU in ``serve`` (agent on), stage by stage.

    .venv/bin/python benchmarks/serve_batch_stages.py [--bundle DIR] [--example breast_cancer]
        [--batch 100] [--requests 3000] [--rounds 3]

Runs the stages of ``PredictServer.predict``'s batch path in turn on the calling thread, as
``serve`` does with the monitoring agent on (its tick thread running), and adds the request
thread's CPU (``time.thread_time``) of each stage:

* ``json.loads``: the body to Python rows (what a uvicorn + starlette app pays too);
* ``validate``: ``Schema.rows`` (the rows to the float32 block the model is fed);
* ``run + record``: onnxruntime and the recorder's batch ``record`` (and its share of the flushes);
* ``ids + remember``: generated ids, class codes, the hand-off to the agent;
* ``format``: the reply's bytes (``predictions_json``);
* ``free``: dropping the decoded rows and the rest.

The same rows then go through the uvicorn + starlette app's own steps
(``benchmarks/_serve_baselines.py``: ``json.loads``, the float32 array, the run, starlette's
``JSONResponse`` encoding, the free), in the same process and rounds, for comparison.

Reported: min and median over ``--rounds`` of microseconds per request. It leaves out the HTTP
layer (``runtime/_http.py``: reading the body, the head, the send) and the agent's tick thread
(``benchmarks/feedback_batch_ids.py`` measures that one); ``serve_throughput.py`` measures the
whole process under wrk. Stage CPU on a loaded machine runs above the same code timed alone
(caches): compare runs made together.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

from feedback import _bundle  # benchmarks/ is sys.path[0] when run as a script
from serve_throughput import _rows

STAGES = ("json.loads", "validate", "run + record", "ids + remember", "format", "free")
BASELINE = ("json.loads", "array", "run", "JSONResponse", "free")


def one_round(bundle: Path, work: Path, body: bytes, requests: int) -> list[float]:
    """CPU microseconds per request of each stage (request thread)."""
    from mlpack_edge.monitor_agent.agent import Agent, ModelInfo
    from mlpack_edge.runtime import Bundle, Model
    from mlpack_edge.runtime._format import predictions_json

    agent = Agent.open(ModelInfo.from_bundle_dir(bundle), Path(tempfile.mkdtemp(dir=work)))
    model = Model(Bundle.open(bundle, verify=False), recorder=agent.recorder)
    agent.start()
    clock = time.thread_time
    total = [0.0] * len(STAGES)
    try:
        for i in range(requests + 200):  # the first 200 warm up
            t0 = clock()
            payload = json.loads(body)
            t1 = clock()
            batch = model._validate(payload, 0)
            t2 = clock()
            result = model._infer(batch, time.perf_counter())
            t3 = clock()
            ids = agent.new_ids(result.predicted)
            agent.remember(ids, model.codes(result))
            t4 = clock()
            out = predictions_json(result, ids)
            t5 = clock()
            del payload, batch, result, out, ids
            t6 = clock()
            if i >= 200:
                for k, (a, b) in enumerate(((t0, t1), (t1, t2), (t2, t3), (t3, t4), (t4, t5), (t5, t6))):
                    total[k] += b - a
    finally:
        agent.stop()
    return [1e6 * t / requests for t in total]


def baseline_round(bundle: Path, body: bytes, requests: int) -> list[float]:
    """The uvicorn app's steps for the same body, CPU microseconds per request of each."""
    from _serve_baselines import _Predictor
    from starlette.responses import JSONResponse

    model = _Predictor(str(bundle / "model.onnx"))
    clock = time.thread_time
    total = [0.0] * len(BASELINE)
    for i in range(requests + 200):
        t0 = clock()
        payload = json.loads(body)
        t1 = clock()
        feeds = model._feeds(payload)
        t2 = clock()
        labels, probabilities = model.sess.run(None, feeds)
        t3 = clock()
        content = model.batch_reply(labels, probabilities)
        out = JSONResponse(content).body  # what the app's handler returns, rendered by starlette itself
        t4 = clock()
        del payload, feeds, labels, probabilities, content, out
        t5 = clock()
        if i >= 200:
            for k, (a, b) in enumerate(((t0, t1), (t1, t2), (t2, t3), (t3, t4), (t4, t5))):
                total[k] += b - a
    return [1e6 * t / requests for t in total]


def _report(title: str, names: tuple[str, ...], runs: list[list[float]]) -> None:
    print(title)
    for k, name in enumerate(names):
        values = [r[k] for r in runs]
        print(f"  {name:15} {min(values):7.1f} / {statistics.median(values):7.1f}")
    sums = [sum(r) for r in runs]
    print(f"  {'all':15} {min(sums):7.1f} / {statistics.median(sums):7.1f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bundle")
    ap.add_argument("--example", default="breast_cancer")
    ap.add_argument("--batch", type=int, default=100)
    ap.add_argument("--requests", type=int, default=3000)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        bundle = _bundle(args.bundle, work, args.example)
        body = json.dumps(_rows(args.example, args.batch)).encode()
        runs: list[list[float]] = []
        base: list[list[float]] = []
        for _ in range(args.rounds):  # interleaved: the machine's load moves both alike
            runs.append(one_round(bundle, work, body, args.requests))
            base.append(baseline_round(bundle, body, args.requests))
    print(f"{args.example}, batch {args.batch} ({len(body)} bytes), {args.requests} requests, {args.rounds} rounds:"
          " request-thread CPU us a request (min / median)")
    _report("serve (agent on):", STAGES, runs)
    _report("the uvicorn app's steps:", BASELINE, base)


if __name__ == "__main__":
    main()
