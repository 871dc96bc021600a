"""Start a server process and wait, with a deadline, for the line that says it is ready.

A bare ``readline()`` waits forever on a child that hangs before printing, and a deadline
checked between lines does not help either; here a daemon thread reads the stream (and
keeps draining it after the match, so the child never blocks on a full pipe) while the
test waits on a queue with a real timeout.
"""

from __future__ import annotations

import queue
import subprocess
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Started", "start_and_wait"]


@dataclass
class Started:
    proc: subprocess.Popen[str]
    line: str | None  # the ready line, or None when the process ended without printing it
    lines: list[str] = field(default_factory=list)  # everything read so far (keeps growing)
    reader: threading.Thread | None = None

    def output(self) -> str:
        return "".join(self.lines)

    def finish(self, timeout: float = 30.0) -> tuple[int, str]:
        """Wait for the process to end (kill it and fail after ``timeout``); its exit code and
        everything the watched stream printed. Use this, not ``communicate``: the stream
        belongs to the reader thread."""
        try:
            code = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError(f"still running {timeout:g} s later:\n{self.output()}") from None
        if self.reader is not None:
            self.reader.join(timeout=timeout)
        return code, self.output()


def start_and_wait(
    cmd: Sequence[str],
    ready_prefix: str,
    *,
    stream: str = "stderr",
    timeout: float = 60.0,
    **popen: Any,
) -> Started:
    """Run ``cmd`` and return once a line of ``stream`` starts with ``ready_prefix``.

    If the process exits first, ``line`` is ``None`` (the caller decides whether that is
    the expected refusal); if neither happens within ``timeout`` seconds the process is
    killed and the test fails with what it printed.
    """
    if stream == "stderr":
        popen.setdefault("stderr", subprocess.PIPE)
    else:
        popen.setdefault("stdout", subprocess.PIPE)
    proc = subprocess.Popen(list(cmd), text=True, **popen)
    pipe = proc.stderr if stream == "stderr" else proc.stdout
    assert pipe is not None
    started = Started(proc, None)
    seen: queue.Queue[str | None] = queue.Queue()

    def read() -> None:
        for raw in pipe:
            started.lines.append(raw)
            seen.put(raw)
        seen.put(None)

    started.reader = threading.Thread(target=read, daemon=True)
    started.reader.start()
    deadline = time.monotonic() + timeout
    while True:
        try:
            got = seen.get(timeout=max(0.0, deadline - time.monotonic()))
        except queue.Empty:
            proc.kill()
            proc.wait()
            raise AssertionError(
                f"{cmd[0]}: no line starting with {ready_prefix!r} within {timeout:g} s:\n{started.output()}"
            ) from None
        if got is None:
            proc.wait(timeout=timeout)
            return started
        if got.startswith(ready_prefix):
            started.line = got.rstrip("\n")
            return started
