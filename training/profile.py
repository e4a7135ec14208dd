"""Where the time of one message goes in each model: ONNX Runtime on one thread, one message
of 84 characters a call, as the model service calls it.

Prints, per model, the wall time of one `session.run` from Python (median and 10th
percentile over `--calls` calls, the models taking turns in rounds; it includes ~5-8 us of Python binding overhead, what an
empty graph costs), then a per-op-type table from ORT's profiler: each node's median us
per message, the nodes of one type summed (medians, because the machine may be shared).
The profiler rounds to whole us and adds its own cost to every node, so the table shows
where the time goes, and the wall time (measured without the profiler) is the figure to
compare. training/README.md records the figures.

Usage: python training/profile.py [--calls 2000] [--models models/v1 models/v2]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import onnxruntime as ort
from onnx import TensorProto, helper

# 84 characters, a typical spam message (normalized: single spaces, trimmed).
MESSAGE = "WINNER!! You have won a 1000 cash prize. To claim call 09061701461 now. T&C apply 18"
ROOT = Path(__file__).resolve().parent.parent


def session(path: Path | bytes, profile_dir: str | None = None) -> ort.InferenceSession:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    if profile_dir is not None:
        opts.enable_profiling = True
        opts.profile_file_prefix = os.path.join(profile_dir, "ort")
    model = path if isinstance(path, bytes) else str(path)
    return ort.InferenceSession(model, opts, providers=["CPUExecutionProvider"])


def empty_graph() -> bytes:
    """`text` -> Identity: what a call costs before any op does work (binding, feeds)."""
    text = helper.make_tensor_value_info("text", TensorProto.STRING, [None, 1])
    out = helper.make_tensor_value_info("same", TensorProto.STRING, [None, 1])
    graph = helper.make_graph([helper.make_node("Identity", ["text"], ["same"])], "empty", [text], [out])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=8).SerializeToString()


def wall_us(models: list[Path | bytes], calls: int, rounds: int = 10) -> list[tuple[float, float]]:
    """Median and 10th percentile wall time of one `session.run` (us) for each model, in
    interleaved rounds, so that the load of a shared machine hits every model alike."""
    sessions = [session(m) for m in models]
    feed = {"text": np.array([[MESSAGE]], dtype=object)}
    times = [[] for _ in models]
    for _ in range(rounds):
        for sess, out in zip(sessions, times):
            for _ in range(50):
                sess.run(None, feed)
            for _ in range(calls // rounds):
                t0 = time.perf_counter_ns()
                sess.run(None, feed)
                out.append(time.perf_counter_ns() - t0)
    return [(float(np.median(t)) / 1e3, float(np.percentile(t, 10)) / 1e3) for t in times]


def op_profile(path: Path, calls: int) -> dict[str, tuple[int, float]]:
    """Per op type: (nodes, sum of the nodes' median us per message)."""
    with tempfile.TemporaryDirectory() as tmp:
        sess = session(path, tmp)
        feed = {"text": np.array([[MESSAGE]], dtype=object)}
        for _ in range(200 + calls):
            sess.run(None, feed)
        events = json.loads(Path(sess.end_profiling()).read_text())
    # The warm-up runs are in the trace too: keep the last `calls` runs only.
    runs = [e for e in events if e.get("cat") == "Session" and e["name"] == "model_run"]
    if len(runs) < calls:
        raise SystemExit(f"{path}: profiler saw {len(runs)} runs, want {calls}")
    runs = runs[-calls:]
    start = runs[0]["ts"]
    per_node: dict[tuple[str, str], list[float]] = defaultdict(list)
    for e in events:
        if e.get("cat") == "Node" and e["name"].endswith("_kernel_time") and e["ts"] >= start:
            per_node[(e["args"]["op_name"], e["name"])].append(e["dur"])
    # Medians, not means: the machine is shared, and a preempted call is not the graph's cost.
    per_type: dict[str, tuple[int, float]] = {}
    for (op, _), durations in per_node.items():
        n, us = per_type.get(op, (0, 0.0))
        per_type[op] = (n + 1, us + float(np.median(durations)))
    return per_type


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--calls", type=int, default=2000)
    ap.add_argument("--models", nargs="+", type=Path, default=[ROOT / "models/v1", ROOT / "models/v2"])
    args = ap.parse_args()
    assert len(MESSAGE) == 84, len(MESSAGE)
    print(f"onnxruntime {ort.__version__}, one thread, {args.calls} calls of one {len(MESSAGE)}-character message")
    paths = [folder / "model.onnx" for folder in args.models]
    (empty, *walls) = wall_us([empty_graph(), *paths], args.calls)
    print(f"empty graph (binding overhead): session.run wall median {empty[0]:.1f} us (p10 {empty[1]:.1f})")
    for path, (median, p10) in zip(paths, walls):
        print(f"{path.parent}: session.run wall median {median:.1f} us (p10 {p10:.1f})")
    for path in paths:
        ops = op_profile(path, args.calls)
        print(f"\n{path.parent}: ORT profiler, per op type")
        print("| op type | nodes | us per message (median) |\n|---|---|---|")
        for op, (n, us) in sorted(ops.items(), key=lambda kv: -kv[1][1]):
            print(f"| {op} | {n} | {us:.1f} |")
        print(f"| (sum of kernels) | {sum(n for n, _ in ops.values())} | {sum(us for _, us in ops.values()):.1f} |")


if __name__ == "__main__":
    main()
