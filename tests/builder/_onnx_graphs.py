"""Small ONNX graphs made with the ``onnx`` helper API, and their outputs computed by numpy.

They stand in for a network exported from another framework: a bring-your-own build
must load them, bind them to the data, and (with reference outputs) prove them.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from onnx import TensorProto, helper, numpy_helper

__all__ = ["linear_classifier", "linear_regressor", "softmax", "columns_classifier", "reference_csv"]

W = np.array([[-1.5, 1.5], [-0.8, 0.8], [0.6, -0.6]], dtype=np.float32)  # a, b, c -> logits (no, yes)
B = np.array([0.1, -0.1], dtype=np.float32)


def _model(nodes: list[Any], inputs: list[Any], outputs: list[Any], inits: list[Any], opset: int = 17) -> bytes:
    graph = helper.make_graph(nodes, "net", inputs, outputs, initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], producer_name="numpy-test")
    model.ir_version = 8
    return model.SerializeToString()


def linear_classifier(
    head: str = "softmax", batch: Any = "N", input_name: str = "x", width: int = 3, opset: int = 17
) -> bytes:
    """x [N, 3] -> logits [N, 2]; head: softmax (probabilities), logits, sigmoid1 ([N, 1] p(yes)), label."""
    x = helper.make_tensor_value_info(input_name, TensorProto.FLOAT, [batch, width])
    inits = [numpy_helper.from_array(W[:width], "W"), numpy_helper.from_array(B, "B")]
    nodes = [helper.make_node("MatMul", [input_name, "W"], ["mm"]), helper.make_node("Add", ["mm", "B"], ["logits"])]
    if head == "logits":
        out = [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [batch, 2])]
    elif head == "softmax":
        nodes.append(helper.make_node("Softmax", ["logits"], ["probs"], axis=1))
        out = [helper.make_tensor_value_info("probs", TensorProto.FLOAT, [batch, 2])]
    elif head == "sigmoid1":
        inits.append(numpy_helper.from_array(np.array([[-1.0], [1.0]], dtype=np.float32), "D"))
        nodes += [helper.make_node("MatMul", ["logits", "D"], ["d"]), helper.make_node("Sigmoid", ["d"], ["p_yes"])]
        out = [helper.make_tensor_value_info("p_yes", TensorProto.FLOAT, [batch, 1])]
    elif head == "label":
        nodes.append(helper.make_node("ArgMax", ["logits"], ["cls"], axis=1, keepdims=0))
        out = [helper.make_tensor_value_info("cls", TensorProto.INT64, [batch])]
    else:
        raise ValueError(head)
    return _model(nodes, [x], out, inits, opset)


def softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def linear_regressor(width: int = 3) -> bytes:
    x = helper.make_tensor_value_info("features", TensorProto.FLOAT, ["batch", width])
    w = np.array([[3.0], [-2.0], [0.5]], dtype=np.float32)[:width]
    inits = [numpy_helper.from_array(w, "W"), numpy_helper.from_array(np.array([10.0], np.float32), "B")]
    nodes = [helper.make_node("MatMul", ["features", "W"], ["mm"]), helper.make_node("Add", ["mm", "B"], ["y"])]
    return _model(nodes, [x], [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 1])], inits)


def columns_classifier(classes: int = 3) -> bytes:
    """x1, x2 float [N, 1] and colour, shape string [N, 1] -> probabilities [N, classes] (no label)."""
    ins = [
        helper.make_tensor_value_info("x1", TensorProto.FLOAT, ["N", 1]),
        helper.make_tensor_value_info("x2", TensorProto.FLOAT, ["N", 1]),
        helper.make_tensor_value_info("colour", TensorProto.STRING, ["N", 1]),
        helper.make_tensor_value_info("shape", TensorProto.STRING, ["N", 1]),
    ]
    enc = lambda name, keys, values: helper.make_node(  # noqa: E731
        "LabelEncoder", [name], [f"{name}_v"], domain="ai.onnx.ml", keys_strings=keys, values_floats=values,
        default_float=0.0,
    )
    rng = np.random.default_rng(0)
    w = rng.normal(size=(4, classes)).astype(np.float32)
    nodes = [
        enc("colour", ["red", "green", "blue"], [1.5, 0.0, -0.5]),
        enc("shape", ["round", "square"], [0.0, -1.0]),
        helper.make_node("Concat", ["x1", "x2", "colour_v", "shape_v"], ["h"], axis=1),
        helper.make_node("MatMul", ["h", "W"], ["logits"]),
        helper.make_node("Softmax", ["logits"], ["probabilities_raw"], axis=1),
    ]
    graph = helper.make_graph(
        nodes,
        "net",
        ins,
        [helper.make_tensor_value_info("probabilities_raw", TensorProto.FLOAT, ["N", classes])],
        initializer=[numpy_helper.from_array(w, "W")],
    )
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("ai.onnx.ml", 3)], producer_name="t"
    )
    model.ir_version = 8
    return model.SerializeToString()


def reference_csv(proba: np.ndarray | None = None, classes: list[str] | None = None, values: np.ndarray | None = None,
                  labels: list[str] | None = None) -> str:
    """The reference outputs file: proba_<class> (+ label) columns, or value."""
    if values is not None:
        return "value\n" + "".join(f"{v:.9g}\n" for v in values)
    assert proba is not None and classes is not None
    head = ([] if labels is None else ["label"]) + [f"proba_{c}" for c in classes]
    lines = [",".join(head)]
    for i, row in enumerate(proba):
        cells = ([] if labels is None else [labels[i]]) + [f"{v:.9g}" for v in row]
        lines.append(",".join(cells))
    return "\n".join(lines) + "\n"
