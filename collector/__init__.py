"""The central collector: authenticated, idempotent telemetry ingest, SQLite or
PostgreSQL storage with migrations, a fleet web page, a JSON API and Prometheus metrics.

Library entry points (the CLI ``mlpack collector`` is a thin layer over them):

* :func:`create_app` — the ASGI app over an open storage; :func:`serve` runs it;
* :func:`open_storage` — a migrated :class:`Storage` from a ``sqlite:///`` or
  ``postgresql://`` URL;
* :mod:`.admin` — devices, tokens, models from bundles;
* :mod:`.queries` — fleet statistics (series, device table, alerts) from roll-ups;
* :mod:`.alerts` — alert state (opened/resolved) from a list of conditions others append to;
* :mod:`.webhooks` and :mod:`.delivery` — webhook bodies (JSON, Alertmanager), signatures,
  and the durable delivery queue with retries.
"""

from __future__ import annotations

from mlpack_edge.collector.admin import add_device, add_model, list_devices, model_from_bundle, revoke_device
from mlpack_edge.collector.app import create_app
from mlpack_edge.collector.config import CollectorConfig, resolve_db_url
from mlpack_edge.collector.ingest import Ack, Batch, Rejected, apply_batches, decode_body, parse_batch
from mlpack_edge.collector.models import ModelInfo
from mlpack_edge.collector.queries import device_detail, fleet_overview, model_detail, time_range
from mlpack_edge.collector.server import serve
from mlpack_edge.collector.storage import Storage, open_storage

__all__ = [
    "CollectorConfig",
    "resolve_db_url",
    "create_app",
    "serve",
    "Storage",
    "open_storage",
    "ModelInfo",
    "Ack",
    "Batch",
    "Rejected",
    "decode_body",
    "parse_batch",
    "apply_batches",
    "fleet_overview",
    "device_detail",
    "model_detail",
    "time_range",
    "add_device",
    "revoke_device",
    "list_devices",
    "add_model",
    "model_from_bundle",
]
