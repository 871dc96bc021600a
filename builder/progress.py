"""How a build tells the outside world what it is doing, without knowing who listens.

The pipeline talks to a :class:`Reporter`; the CLI prints stages as they run
(:class:`ConsoleReporter`), ``--json`` and ``--quiet`` stay silent while the build
runs, and tests or other tools (the executable stage) pass their own object.
"""

from __future__ import annotations

import sys
from typing import Any, Protocol, TextIO, runtime_checkable

__all__ = ["Reporter", "NullReporter", "ConsoleReporter", "RecordingReporter"]


@runtime_checkable
class Reporter(Protocol):
    def stage_started(self, name: str) -> None:
        """A stage begins (it may take a while: say so now)."""

    def stage_finished(self, name: str, seconds: float, summary: str) -> None:
        """A stage is done; ``summary`` is one line."""

    def stage_failed(self, name: str, seconds: float, error: str) -> None:
        """A stage raised; the error itself is reported by whoever catches it."""

    def info(self, message: str) -> None:
        """A line of detail inside the current stage."""


class NullReporter:
    """Says nothing (``--quiet``, ``--json`` and library use without a reporter)."""

    def stage_started(self, name: str) -> None:
        pass

    def stage_finished(self, name: str, seconds: float, summary: str) -> None:
        pass

    def stage_failed(self, name: str, seconds: float, error: str) -> None:
        pass

    def info(self, message: str) -> None:
        pass


class RecordingReporter(NullReporter):
    """Keeps every event as a tuple, in order: for ``--json`` and for tests."""

    def __init__(self) -> None:
        self.events: list[tuple[Any, ...]] = []

    def stage_started(self, name: str) -> None:
        self.events.append(("started", name))

    def stage_finished(self, name: str, seconds: float, summary: str) -> None:
        self.events.append(("finished", name, seconds, summary))

    def stage_failed(self, name: str, seconds: float, error: str) -> None:
        self.events.append(("failed", name, seconds, error))

    def info(self, message: str) -> None:
        self.events.append(("info", message))

    def stages(self) -> list[dict[str, object]]:
        """Finished and failed stages as ``{"name", "seconds", "ok"}``."""
        return [
            {"name": e[1], "seconds": round(e[2], 4), "ok": e[0] == "finished"}
            for e in self.events
            if e[0] in ("finished", "failed")
        ]


class ConsoleReporter:
    """One line per stage, written as the stage starts and completed when it ends.

    For example ``"  train        0.41s  SimpleImputer -> StandardScaler -> LogisticRegression"``;
    ``info`` lines are indented under the summaries.
    """

    def __init__(self, stream: TextIO | None = None) -> None:
        self.stream = stream if stream is not None else sys.stdout
        self._open: str | None = None  # stage whose line awaits its timing

    def _write(self, text: str) -> None:
        self.stream.write(text)
        self.stream.flush()

    def stage_started(self, name: str) -> None:
        self._close()
        self._write(f"  {name:<11}")
        self._open = name

    def stage_finished(self, name: str, seconds: float, summary: str) -> None:
        self._end(name, f"{seconds:6.2f}s  {summary}")

    def stage_failed(self, name: str, seconds: float, error: str) -> None:
        self._end(name, f"{seconds:6.2f}s  FAILED")

    def info(self, message: str) -> None:
        self._close()
        self._write(f"  {'':<11}         {message}\n")

    def _end(self, name: str, text: str) -> None:
        if self._open != name:
            self._close()
            self._write(f"  {name:<11}")
        self._write(text + "\n")
        self._open = None

    def _close(self) -> None:
        if self._open is not None:
            self._write("...\n")
            self._open = None
