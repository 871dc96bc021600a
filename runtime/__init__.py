"""The device runtime: a verified bundle, validated input, onnxruntime output.

Python API::

    from mlpack_edge.runtime import open_model
    model = open_model("dist/iris-1.0.0")          # verifies every file first
    model.predict({"sepal_length": 5.1, ...})      # one row -> one label (or value)
    model.predict_proba(rows)                      # batch -> [N, C], columns = model.classes
    model.predict_one(row)                         # Prediction(label, probabilities={class: p})
    result = model.predict_rows(rows)              # bad rows reported, good rows predicted

* :class:`Bundle` — open a folder or archive; :meth:`Bundle.verify` is the one integrity check
* :class:`Model`, :func:`open_model` — validation + one onnxruntime session
* :class:`Prediction`, :class:`BatchResult` — outputs; :class:`Recorder` — the monitoring hook
* :func:`self_test` — integrity plus golden-set replay on this CPU (``verify``)
* :class:`PredictServer`, :class:`ServeConfig` — local HTTP (``serve``)
* :func:`predict_stream` — streaming CSV / JSON Lines batch predict (``predict``)

Names are imported on first use, so importing a submodule (the manifest contract, the
install code, the CLI) does not pay for onnxruntime. Nothing here imports scikit-learn,
pandas, scipy or onnx.
"""

from __future__ import annotations

from mlpack_edge._lazy import lazy_attributes

__all__ = [
    "Bundle",
    "Model",
    "open_model",
    "Prediction",
    "BatchResult",
    "Recorder",
    "Schema",
    "Batch",
    "SelfTest",
    "self_test",
    "PredictServer",
    "ServeConfig",
    "predict_stream",
    "StreamSummary",
]

_WHERE = {
    "Bundle": "bundle",
    "Model": "model",
    "open_model": "model",
    "Prediction": "model",
    "BatchResult": "model",
    "Recorder": "model",
    "Schema": "schema",
    "Batch": "schema",
    "SelfTest": "selftest",
    "self_test": "selftest",
    "PredictServer": "server",
    "ServeConfig": "server",
    "predict_stream": "io",
    "StreamSummary": "io",
}


__getattr__, __dir__ = lazy_attributes(__name__, _WHERE, globals())
