"""The two shapes the same rows take: what scikit-learn is fitted on, and what ONNX is fed.

``matrix`` layout: one float32 [N, F] array in feature order, for sklearn and ONNX
alike. ``columns`` layout: a DataFrame for sklearn (a ColumnTransformer picks columns
by name) and one [N, 1] tensor per feature for ONNX, float32 or string, missing
categorical values as ``""``. Keeping both conversions here keeps them in step.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from mlpack_edge.runtime.manifest import Feature

__all__ = ["model_input", "onnx_feeds"]


def model_input(frame: pd.DataFrame, layout: str) -> Any:
    """Rows as the fitted estimator takes them."""
    if layout == "matrix":
        return frame.to_numpy(dtype=np.float32)
    return frame


def onnx_feeds(frame: pd.DataFrame, features: Sequence[Feature], layout: str) -> dict[str, np.ndarray]:
    """Rows as the ONNX graph takes them (input names as recorded in the manifest)."""
    if layout == "matrix":
        return {"X": frame.to_numpy(dtype=np.float32)}
    feeds = {}
    for f in features:
        col = frame[f.name].to_numpy()
        if f.kind == "numeric":
            feeds[f.name] = col.astype(np.float32).reshape(-1, 1)
        else:
            feeds[f.name] = np.array([str(v) for v in col], dtype=object).reshape(-1, 1)
    return feeds
