"""The agent's logger, without importing :mod:`logging` until the first message.

``logging`` (with ``traceback``, ``string`` and friends) costs a couple of milliseconds to
import, and a one-shot ``predict`` that logs nothing would pay them at start-up for the
agent's modules alone. The same logger object serves every message, so handlers, levels
and ``caplog`` behave exactly as with ``logging.getLogger(NAME)``.
"""

from __future__ import annotations

from typing import Any

__all__ = ["NAME", "log"]

NAME = "mlpack_edge.monitor_agent"


class _LazyLogger:
    """Forwards every attribute to ``logging.getLogger(NAME)``, imported on first use."""

    __slots__ = ("_logger",)

    def __init__(self) -> None:
        self._logger: Any = None

    def __getattr__(self, attr: str) -> Any:
        if self._logger is None:
            import logging

            self._logger = logging.getLogger(NAME)
        return getattr(self._logger, attr)


log: Any = _LazyLogger()
