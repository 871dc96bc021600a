"""mlpack: package a scikit-learn model into a signed, self-contained offline executable.

The distribution is one namespace whose subpackages follow the life of a model:

* ``mlpack_edge.builder``       — workstation: spec → trained, gated, converted, proven bundle
* ``mlpack_edge.runtime``       — device: verified bundle → validated input → onnxruntime output
* ``mlpack_edge.monitor_agent`` — device: telemetry windows, drift, on-disk outbox, upload
* ``mlpack_edge.collector``     — central: ingest, storage, fleet page, Prometheus metrics

Dependencies point one way (builder → runtime → monitor_agent; collector →
monitor_agent's wire format). ``mlpack_edge.errors`` is the one exception tree; ``mlpack_edge._fs``
holds crash-safe file output used by all of them.
"""

__version__ = "0.1.0"

__all__ = ["__version__"]
