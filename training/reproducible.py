"""What "retraining reproduces models/" means, portably.

Training runs BLAS-backed solvers (liblinear, the sigmoid calibration) whose last bits
depend on the CPU's kernels, so the same code, data and pinned versions give the same
model.onnx bytes on one kind of CPU but may differ by an ulp on another. The promise kept
on every CPU is therefore:

- the model card (model.json) is identical;
- the ONNX graph is identical in everything but its floating-point parameters
  (nodes, names, strings such as the vocabulary, integer attributes, metadata);
- every floating-point parameter tensor matches within PARAM_RTOL, measured relative to
  the tensor's largest magnitude: max|fresh - committed| <= PARAM_RTOL * max|committed|;
- predictions match within PROBA_ATOL on every test-split row (checked by test_parity.py).

Equal bytes still hold where the CPU kind is the one the models were trained on; that is a
bonus the test reports, not what it asserts.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import numpy_helper

PARAM_RTOL = 1e-6
PROBA_ATOL = 1e-6

_FLOAT_TYPES = {onnx.TensorProto.FLOAT, onnx.TensorProto.DOUBLE, onnx.TensorProto.FLOAT16}


def _split_floats(model: onnx.ModelProto) -> tuple[bytes, dict[str, np.ndarray]]:
    """The model with every float parameter blanked (as bytes), and those parameters by name."""
    skeleton = onnx.ModelProto()
    skeleton.CopyFrom(model)
    params: dict[str, np.ndarray] = {}
    for init in skeleton.graph.initializer:
        if init.data_type in _FLOAT_TYPES:
            params[f"initializer {init.name}"] = numpy_helper.to_array(init).astype(np.float64)
            init.ClearField("float_data")
            init.ClearField("double_data")
            init.ClearField("int32_data")  # float16 payloads live here
            init.ClearField("raw_data")
    for i, node in enumerate(skeleton.graph.node):
        for attr in node.attribute:
            key = f"node {i} ({node.op_type} {node.name}) attribute {attr.name}"
            if attr.type == onnx.AttributeProto.FLOATS:
                params[key] = np.array(attr.floats, dtype=np.float64)
                attr.ClearField("floats")
            elif attr.type == onnx.AttributeProto.FLOAT:
                params[key] = np.array([attr.f], dtype=np.float64)
                attr.ClearField("f")
            elif attr.type == onnx.AttributeProto.TENSOR and attr.t.data_type in _FLOAT_TYPES:
                params[key] = numpy_helper.to_array(attr.t).astype(np.float64)
                attr.t.ClearField("float_data")
                attr.t.ClearField("double_data")
                attr.t.ClearField("raw_data")
    return skeleton.SerializeToString(), params


def model_differences(committed: onnx.ModelProto, fresh: onnx.ModelProto,
                      rtol: float = PARAM_RTOL) -> list[str]:
    """Every way `fresh` is not a reproduction of `committed`; empty when it is one."""
    committed_skeleton, committed_params = _split_floats(committed)
    fresh_skeleton, fresh_params = _split_floats(fresh)
    problems = []
    if committed_skeleton != fresh_skeleton:
        problems.append("the graph differs beyond its float parameters "
                        "(nodes, vocabulary, integer attributes or metadata)")
    for key in sorted(committed_params.keys() | fresh_params.keys()):
        a, b = fresh_params.get(key), committed_params.get(key)
        if a is None or b is None:
            problems.append(f"{key}: present in only one model")
        elif a.shape != b.shape:
            problems.append(f"{key}: shape {a.shape} != committed {b.shape}")
        else:
            scale = float(np.abs(b).max()) if b.size else 0.0
            diff = float(np.abs(a - b).max()) if b.size else 0.0
            if diff > rtol * scale or (scale == 0.0 and diff > 0.0):
                problems.append(f"{key}: max |difference| {diff:.3g} exceeds {rtol:g} x {scale:.3g} "
                                f"(largest committed magnitude)")
    return problems


def max_relative_param_difference(committed: onnx.ModelProto, fresh: onnx.ModelProto) -> float:
    """The largest per-tensor max|fresh - committed| / max|committed|, for reporting."""
    _, committed_params = _split_floats(committed)
    _, fresh_params = _split_floats(fresh)
    worst = 0.0
    for key, b in committed_params.items():
        a = fresh_params.get(key)
        if a is not None and a.shape == b.shape and b.size and np.abs(b).max() > 0:
            worst = max(worst, float(np.abs(a - b).max() / np.abs(b).max()))
    return worst


def card_differences(committed: dict, fresh: dict, path: str = "") -> list[str]:
    """Every field where the committed model card differs from a fresh one (exact)."""
    if isinstance(committed, dict) and isinstance(fresh, dict):
        out = []
        for key in sorted(committed.keys() | fresh.keys(), key=str):
            where = f"{path}.{key}" if path else str(key)
            if key not in committed or key not in fresh:
                out.append(f"{where}: present in only one card")
            else:
                out += card_differences(committed[key], fresh[key], where)
        return out
    return [] if committed == fresh else [f"{path}: committed {committed!r}, training gives {fresh!r}"]
