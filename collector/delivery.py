"""Sending queued webhook deliveries: bounded time per attempt, retries with backoff.

One thread per collector process takes due deliveries from the ``deliveries`` table
(:meth:`Storage.due_deliveries`), claims each (a lease: another process skips it, and a
process that dies mid-send leaves it to be retried), and POSTs its stored body. A 2xx is
*delivered*; anything else (an error status, a refused connection, no answer within
``webhook_timeout``) is retried after ``backoff * 2**(attempts-1)`` seconds (capped at
``max_backoff``) until ``max_attempts``, then *failed* — visible on the alerts page and
in the API with its last status and error. Attempts run on a small pool (``workers``),
at most half of it per webhook, so a hanging receiver costs its own timeout and never
holds up ingest or the other webhooks.

The HTTP client and the clock are injected (a test gives a transport or moves time).
"""

from __future__ import annotations

import concurrent.futures
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import httpx

from mlpack_edge import __version__
from mlpack_edge.collector.storage import DueDelivery, Storage
from mlpack_edge.collector.webhooks import SIGNATURE_HEADER, signature

__all__ = ["RetryPolicy", "Dispatcher", "Outcome", "send_once", "new_client"]

log = logging.getLogger("mlpack_edge.collector.delivery")


@dataclass(frozen=True)
class RetryPolicy:
    timeout: float = 5.0  # seconds one attempt may take (connect + send + answer)
    backoff: float = 5.0  # first retry after this many seconds, doubling
    max_backoff: float = 900.0
    max_attempts: int = 20

    def delay(self, attempts: int) -> float:
        """Seconds before the next attempt after ``attempts`` failed ones."""
        return min(self.max_backoff, self.backoff * 2 ** max(0, attempts - 1))


@dataclass(frozen=True)
class Outcome:
    status: int | None  # the HTTP status, None when no answer came
    error: str | None  # None: delivered


class Dispatcher:
    """Sends due deliveries; :meth:`run_once` is one pass (what the thread repeats)."""

    def __init__(
        self,
        storage: Storage,
        policy: RetryPolicy = RetryPolicy(),
        clock: Callable[[], float] = time.time,
        client: httpx.Client | None = None,
        poll: float = 1.0,
        workers: int = 4,
    ) -> None:
        self._storage = storage
        self.policy = policy
        self._clock = clock
        self._client = client or new_client(policy.timeout)
        self._own_client = client is None
        self._poll = poll
        self._pool = concurrent.futures.ThreadPoolExecutor(workers, thread_name_prefix="mlpack-webhook")
        self._workers = workers
        self._per_webhook = max(1, workers // 2)
        self._inflight: dict[int, int] = {}  # delivery id -> webhook id, being sent by this process
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="mlpack-collector-delivery", daemon=True)

    def send(self, d: DueDelivery) -> Outcome:
        """One attempt: POST the stored body (signed when the webhook has a secret)."""
        return send_once(self._client, d, self.policy.timeout)

    def attempt(self, d: DueDelivery) -> Outcome | None:
        """Claim ``d``, send it once and record the result; ``None`` if another process had it."""
        now = self._clock()
        # the lease outlasts the attempt (timeout + the grace of _post_within + the write)
        if not self._storage.claim_delivery(d.id, now, now + self.policy.timeout + 5.0):
            return None
        out = self.send(d)
        done = self._clock()
        attempts = d.attempts + 1
        retry_at = None
        if out.error is not None and attempts < self.policy.max_attempts:
            retry_at = done + self.policy.delay(attempts)
        self._storage.finish_delivery(d.id, done, out.status, out.error, retry_at)
        if out.error is not None:
            what = f"retry in {retry_at - done:.1f} s" if retry_at is not None else "giving up"
            log.warning("webhook %d: delivery %d (%s) attempt %d failed: %s; %s", d.webhook, d.id, d.event,
                        attempts, out.error, what)
        return out

    def run_once(self, wait: bool = True) -> int:
        """Start what is due now and not already being sent, at most ``per_webhook`` at once
        per webhook (a hanging receiver holds only its own share of the workers); returns
        how many were started. ``wait`` returns only when they are done (the thread does not
        wait: it picks up other webhooks' deliveries while one hangs)."""
        due = self._storage.due_deliveries(self._clock(), limit=self._workers * 8)
        started: list[concurrent.futures.Future[None]] = []
        with self._lock:
            for d in due:
                busy = sum(1 for hook in self._inflight.values() if hook == d.webhook)
                if d.id in self._inflight or busy >= self._per_webhook:
                    continue
                if len(self._inflight) >= self._workers:
                    break
                self._inflight[d.id] = d.webhook
                started.append(self._pool.submit(self._safe_attempt, d))
        if wait:
            concurrent.futures.wait(started)
        return len(started)

    def _safe_attempt(self, d: DueDelivery) -> None:
        try:
            self.attempt(d)
        except Exception as exc:  # storage down: the lease runs out and the delivery is tried again
            log.warning("webhook delivery %d: %s", d.id, exc)
        finally:
            with self._lock:
                self._inflight.pop(d.id, None)
            self._wake.set()  # a worker is free: look for more

    def wake(self) -> None:
        self._wake.set()

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread.is_alive():
            self._thread.join(timeout)
        self._pool.shutdown(wait=False, cancel_futures=True)
        if self._own_client:
            self._client.close()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.run_once(wait=False)
            except Exception as exc:
                log.warning("webhook deliveries: %s", exc)
            self._wake.wait(self._poll)
            self._wake.clear()


def send_once(client: httpx.Client, d: DueDelivery, timeout: float) -> Outcome:
    """POST ``d``'s body to its webhook once (signed when it has a secret); never raises."""
    body = d.payload.encode("utf-8")
    headers = {"Content-Type": "application/json", "X-Mlpack-Delivery": str(d.id), "X-Mlpack-Event": d.event}
    if d.secret:
        headers[SIGNATURE_HEADER] = signature(d.secret, body)
    try:
        # The overall deadline, not only per socket operation: a receiver trickling bytes
        # still ends the attempt on time.
        r = _post_within(client, d.url, body, headers, timeout)
    except httpx.TimeoutException:
        return Outcome(None, f"no answer within {timeout:g} s")
    except httpx.HTTPError as exc:
        return Outcome(None, f"{exc.__class__.__name__}: {' '.join(str(exc).split()) or 'connection failed'}")
    if 200 <= r.status_code < 300:
        return Outcome(r.status_code, None)
    return Outcome(r.status_code, f"HTTP {r.status_code}: {' '.join(r.text.split())[:200]}")


def new_client(timeout: float) -> httpx.Client:
    return httpx.Client(timeout=httpx.Timeout(timeout), follow_redirects=False,
                        headers={"User-Agent": f"mlpack-collector/{__version__}"})


def _post_within(client: httpx.Client, url: str, body: bytes, headers: dict[str, str], seconds: float) -> httpx.Response:
    """POST and read the answer, giving up after ``seconds`` in total."""
    result: list[httpx.Response] = []
    error: list[BaseException] = []
    done = threading.Event()

    def go() -> None:
        try:
            result.append(client.post(url, content=body, headers=headers))
        except BaseException as exc:  # handed to the caller
            error.append(exc)
        finally:
            done.set()

    threading.Thread(target=go, name="mlpack-webhook-post", daemon=True).start()
    if not done.wait(seconds + 0.5):
        raise httpx.ReadTimeout(f"no answer within {seconds:g} s")
    if error:
        raise error[0]
    return result[0]
