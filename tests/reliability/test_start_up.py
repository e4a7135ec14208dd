"""A model service that cannot start says why in one line on stderr and exits non-zero,
before it listens (what an operator sees in `kubectl logs` of a crash-looping pod); one
that starts runs the threads its settings ask for."""

import os
from pathlib import Path

import pytest

from conftest import addr, local, procs

CASES = {
    "missing ONNX Runtime": ({"ORT_DYLIB_PATH": "/nonexistent/libonnxruntime.so"}, ["ORT_DYLIB_PATH", "make ort"]),
    "missing model": ({"MODEL_VERSION": "v7"}, ["v7/model.json", "MODEL_ROOT"]),
    "invalid setting": ({"METRICS_SOURCE": "canary"}, ["METRICS_SOURCE must be `app` or `shadow`"]),
    "invalid idle timeout": ({"IDLE_TIMEOUT_SECS": "soon"}, ["IDLE_TIMEOUT_SECS", "not valid"]),
    "no runtime threads": ({"RUNTIME_THREADS": "0"}, ["RUNTIME_THREADS must be at least 1"]),
}


@pytest.mark.parametrize("case", CASES)
def test_a_model_service_that_cannot_start_says_why_in_one_line(stack, case):
    env, words = CASES[case]
    proc = stack.launch(local.model(grpc=addr(), metrics=addr(), **env))
    assert proc.popen.wait(timeout=30) != 0
    lines = proc.log().splitlines()
    assert len(lines) == 1 and all(w in lines[0] for w in words), lines


def test_an_app_with_an_invalid_setting_says_why_in_one_line(stack):
    proc = stack.launch(local.app(http=addr(), model_host="http://127.0.0.1:9", SHUTDOWN_TIMEOUT_SECS="0"))
    assert proc.popen.wait(timeout=30) != 0
    lines = proc.log().splitlines()
    assert len(lines) == 1 and "SHUTDOWN_TIMEOUT_SECS must be above 0" in lines[0], lines


@pytest.mark.parametrize("env", [{}, {"RUNTIME_THREADS": "3", "INFERENCE_WORKERS": "2"}], ids=["defaults", "set"])
def test_the_model_splits_the_cores_between_serving_and_inference(stack, env):
    cores = len(os.sched_getaffinity(0))
    serving = int(env.get("RUNTIME_THREADS", max(1, cores // 2)))
    inference = int(env.get("INFERENCE_WORKERS", -(-cores // 2)))
    proc = stack.up(local.model(grpc=addr(), metrics=addr(), MODEL_RELOAD_SECS="0", RUST_LOG="info", **env))
    procs.poll(lambda: "ready:" in proc.log(), 10, "the ready line")
    ready = next(line for line in proc.log().splitlines() if "ready:" in line)
    assert f", {inference} inference threads; {serving} serving threads" in ready, ready
    # The threads are there (tokio names its workers and its blocking pool alike).
    names = [(t / "comm").read_text().strip() for t in Path(f"/proc/{proc.pid}/task").iterdir()]
    assert sum(n.startswith("inference-") for n in names) == inference, names
