"""An upload whose JSON is not UTF-8: 400 naming the byte, plain or gzip, on a real collector."""

from __future__ import annotations

import gzip
import json
import time

from tests.collector.sim import gz

from .test_api import post


def test_a_body_that_is_not_utf8_names_the_byte(collector, profile, demo_hash) -> None:
    dev, token = collector.device(profile, demo_hash)
    text = json.dumps(dev.batch([dev.window(time.time() - 120)]), ensure_ascii=False)
    bad = text.replace('"device": ', '"device": "\udce9", "x": ', 1).encode("utf-8", "surrogateescape")
    offset = bad.index(b"\xe9")
    r = post(collector, token, bad, encoding=None)
    assert (r.status_code, r.json()) == (400, {"error": f"body: not UTF-8 JSON (byte {offset}: invalid continuation byte)"})
    r = post(collector, token, gzip.compress(bad))
    assert (r.status_code, r.json()) == (
        400, {"error": f"body: not UTF-8 JSON (after inflating, byte {offset}: invalid continuation byte)"}
    )
    assert post(collector, token, gz(json.loads(text))).status_code == 200  # the same batch in UTF-8 is fine
