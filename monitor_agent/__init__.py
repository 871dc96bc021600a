"""The monitoring agent: how a model is doing on the device, kept safe offline, delivered once.

* :class:`Recorder` — per-window counts of every prediction (cheap: vectorised binning at flush)
* :class:`Outbox` — closed windows in SQLite (WAL), bounded by a cap, crash-safe
* :class:`Uploader` — batches to the collector with backoff, acknowledgement and dead letters
* :class:`Agent` — the three together inside a serving process (plus psutil samples)
* :func:`build_status` — drift status (PSI/JS per feature and prediction) offline
* :func:`write_config` / :func:`load_config` — install-time configuration, env and flag overrides
* :func:`append_audit` — governance events, uploaded exactly once like windows

Contracts shared with the builder and the collector live in :mod:`.profile`,
:mod:`.wire`, :mod:`.histogram` and :mod:`.drift`. Names are imported lazily so that
``import mlpack_edge.monitor_agent.profile`` (the runtime, the builder) stays cheap.
"""

from __future__ import annotations

from mlpack_edge._lazy import lazy_attributes

__all__ = [
    "Recorder",
    "Agent",
    "ModelInfo",
    "AgentConfig",
    "write_config",
    "load_config",
    "Outbox",
    "Accounting",
    "append_audit",
    "Uploader",
    "SyncResult",
    "Backoff",
    "Transport",
    "Response",
    "TransportError",
    "UrllibTransport",
    "TlsError",
    "transport_for",
    "SystemSampler",
    "StatusReport",
    "build_status",
    "render_text",
    "render_metrics",
]

_WHERE = {
    "Recorder": "recorder",
    "Agent": "agent",
    "ModelInfo": "agent",
    "AgentConfig": "config",
    "write_config": "config",
    "load_config": "config",
    "Outbox": "outbox",
    "Accounting": "outbox",
    "append_audit": "outbox",
    "Uploader": "uploader",
    "SyncResult": "uploader",
    "Backoff": "uploader",
    "Transport": "transport",
    "Response": "transport",
    "TransportError": "transport",
    "UrllibTransport": "transport",
    "TlsError": "transport",
    "transport_for": "transport",
    "SystemSampler": "system",
    "StatusReport": "status",
    "build_status": "status",
    "render_text": "status",
    "render_metrics": "status",
}


__getattr__, __dir__ = lazy_attributes(__name__, _WHERE, globals())
