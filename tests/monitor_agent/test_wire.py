"""The wire schema's strict parse: every defect is a WireError whose text names the field.

``Window.from_dict`` takes a fast path for well-formed windows and falls back to the
field-by-field checks when something is off; these tests pin what each defect says, so
the fast path can never change what is accepted or how a refusal reads.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import pytest

from mlpack_edge.monitor_agent.histogram import LatencyHistogram
from mlpack_edge.monitor_agent.wire import BinCounts, SystemStats, Window, WireError, validate_batch

from .helpers import MODEL_HASH, T0


def _window() -> dict[str, Any]:
    lat = LatencyHistogram()
    lat.add_many([0.001, 0.002, 0.002, 0.05])
    w = Window(
        model=MODEL_HASH, seq=7, start=T0, end=T0 + 60, requests=4, rows=9, errors={"validation": 1},
        latency=lat, features={"age": BinCounts([1, 2, 3], 1, 0, 2, 0), "colour": BinCounts([4, 5], 0, 0, 0, 1)},
        predictions=BinCounts([6, 3]),
        system=SystemStats(samples=2, proc_cpu=3.5, proc_rss_sum=2e8, proc_rss_max=1e8, cpu=40.0, mem=61.0,
                           disk_free_min=1e10),
    )
    return w.to_dict()


def _set(path: str, value: Any) -> Callable[[dict[str, Any]], None]:
    def mutate(d: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        for p in parents:
            d = d[p] if not p.isdigit() else d[int(p)]  # type: ignore[index]
        if last.isdigit():
            d[int(last)] = value  # type: ignore[index]
        else:
            d[last] = value
    return mutate


def _drop(key: str) -> Callable[[dict[str, Any]], None]:
    return lambda d: d.pop(key)


W = "windows[3]"
CASES = [
    (_set("model", "ab" * 31), f"{W}.model: expected a sha256 hex content hash"),
    (_drop("seq"), f"{W}.seq: expected an integer count, got NoneType"),
    (_set("seq", 7.5), f"{W}.seq: expected an integer count, got float"),
    (_set("seq", 2**53), f"{W}.seq: at most 2**53-1, got a 16-digit number"),
    (_set("seq_last", 6), f"{W}.seq_last: must be >= seq (7), got 6"),
    (_set("seq_last", True), f"{W}.seq_last: expected an integer count, got bool"),
    (_set("start", "now"), f"{W}.start: expected a finite number"),
    (_set("start", float("nan")), f"{W}.start: expected a finite number"),
    (_set("end", 10**400), f"{W}.end: expected a finite number"),  # too large for a float
    (_set("end", T0 - 1), f"{W}.end: must be >= start"),
    (_set("start", -5.0), f"{W}.start: must be >= 0.0, got -5.0"),
    (_set("errors", []), f"{W}.errors: expected an object"),
    (_set("errors", {"Bad Kind": 1}), f"{W}.errors: invalid error kind 'Bad Kind'"),
    (_set("errors", {"runtime": -2}), f"{W}.errors.runtime: counts must be non-negative, got -2"),
    (_set("latency", [1, 2]), f"{W}.latency: expected an object"),
    (_set("latency.alpha", 0.02), f"{W}.latency: latency.alpha must be 0.01"),
    (_set("latency.counts", [1]), f"{W}.latency: latency.index and latency.counts differ in length"),
    (_set("latency.counts", [1, 1, -1]), f"{W}.latency: latency buckets must be integers with non-negative counts"),
    (_set("latency", {"index": []}), f"{W}.latency.counts: missing (latency holds index and counts, or nothing)"),
    (_set("features", [1]), f"{W}.features: expected an object"),
    (_set("features.age", [1, 2, 3]), f"{W}.features.age: expected an object"),
    (_set("features.age.bins", (1, 2, 3)), f"{W}.features.age.bins: expected a list of counts"),
    (_set("features.age.bins.1", -1), f"{W}.features.age.bins[1]: counts must be non-negative, got -1"),
    (_set("features.age.bins.2", 1.5), f"{W}.features.age.bins[2]: expected an integer count, got float"),
    (_set("features.age.bins.2", 2**60), f"{W}.features.age.bins[2]: at most 2**53-1, got a 19-digit number"),
    (_set("latency.index.0", 10_001), f"{W}.latency: latency bucket indices lie within ±10000 and counts at most 2**53-1"),
    (_set("features.age.bins.0", False), f"{W}.features.age.bins[0]: expected an integer count, got bool"),
    (_set("features.colour.unseen", -1), f"{W}.features.colour.unseen: counts must be non-negative, got -1"),
    (_set("features.colour.missing", "1"), f"{W}.features.colour.missing: expected an integer count, got str"),
    (_set("predictions.bins.1", None), f"{W}.predictions.bins[1]: expected an integer count, got NoneType"),
    (_set("system", 3), f"{W}.system: expected an object"),
    (_set("system.cpu", float("inf")), f"{W}.system.cpu: expected a finite number"),
    (_set("system.mem", -1.0), f"{W}.system.mem: must be >= 0.0, got -1.0"),
    (_set("system.samples", -1), f"{W}.system.samples: counts must be non-negative, got -1"),
    (_set("system.disk_free_min", True), f"{W}.system.disk_free_min: expected a finite number"),
    (_set("requests", -1), f"{W}.requests: counts must be non-negative, got -1"),
    (_set("rows", 2.5), f"{W}.rows: expected an integer count, got float"),
]


@pytest.mark.parametrize(("mutate", "message"), CASES, ids=[m for _, m in CASES])
def test_each_defect_is_named(mutate: Callable[[dict[str, Any]], None], message: str) -> None:
    d = _window()
    mutate(d)
    with pytest.raises(WireError) as exc:
        Window.from_dict(d, W)
    assert str(exc.value) == message


def test_the_first_defect_in_field_order_is_the_one_reported() -> None:
    d = _window()
    d["features"]["age"]["bins"][2] = -3
    d["features"]["age"]["missing"] = -1
    d["rows"] = -1
    with pytest.raises(WireError, match=r"^w\.features\.age\.bins\[2\]: counts must be non-negative, got -3$"):
        Window.from_dict(d, "w")


def test_a_valid_window_round_trips_and_copies_its_lists() -> None:
    d = _window()
    w = Window.from_dict(d)
    assert w.to_dict() == d
    d["features"]["age"]["bins"][0] = 99  # the parsed window does not alias the payload
    assert w.features["age"].bins == [1, 2, 3]
    assert isinstance(w.start, float) and isinstance(w.system.cpu, float)


def test_lenient_spellings_stay_accepted() -> None:
    """What the field-by-field checks always accepted: integer numbers, a repeated
    latency bucket (summed), alpha as a string, absent optional fields."""
    d = _window()
    d["start"], d["end"] = int(T0), int(T0) + 60
    d["system"]["cpu"] = 40
    idx, counts = d["latency"]["index"], d["latency"]["counts"]
    d["latency"] = {"alpha": "0.01", "index": idx + [idx[0]], "counts": counts + [5]}
    for key in ("errors", "predictions", "requests"):
        d.pop(key)
    del d["features"]["colour"]["unseen"]
    w = Window.from_dict(d)
    assert (w.start, w.end, w.system.cpu) == (T0, T0 + 60, 40.0) and isinstance(w.start, float)
    assert w.latency.buckets[idx[0]] == counts[0] + 5
    assert (w.errors, w.predictions, w.requests, w.features["colour"].unseen) == ({}, None, 0, 0)
    assert Window.from_dict({**_window(), "latency": None}).latency.count == 0


def test_batches_name_the_window_and_the_model_key() -> None:
    base = {"schema": 1, "device": "d", "models": {}, "windows": [_window(), _window()]}
    bad = copy.deepcopy(base)
    bad["windows"][1]["features"]["age"]["bins"][0] = -1
    with pytest.raises(WireError) as exc:
        validate_batch(bad)
    assert str(exc.value) == "windows[1].features.age.bins[0]: counts must be non-negative, got -1"
    with pytest.raises(WireError, match=r"^models: key 'x' is not a sha256 hex content hash$"):
        validate_batch({**base, "models": {"x": {}}})
    device, models, windows, audit, outbox = validate_batch(base)
    assert (device, models, len(windows), audit, outbox) == ("d", {}, 2, [], {})


def test_an_integral_float_is_the_integer_json_cannot_tell_apart() -> None:
    """JSON Schema's "integer" admits 7.0, and some encoders write it: the wire takes it as 7."""
    d = _window()
    d["seq"], d["seq_last"], d["rows"] = 7.0, 9.0, 340.0
    d["features"]["age"]["bins"] = [1.0, 2, 3]
    d["latency"] = {"alpha": 0.01, "index": [float(i) for i in d["latency"]["index"]], "counts": d["latency"]["counts"]}
    w = Window.from_dict(d, W)
    assert (w.seq, w.seq_last, w.rows, w.features["age"].bins) == (7, 9, 340, [1, 2, 3])
    assert all(type(v) is int for v in (w.seq, w.seq_last, w.rows, *w.features["age"].bins, *w.latency.buckets))
