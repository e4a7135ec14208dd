"""A model service that cannot start says why in one line on stderr and exits non-zero,
before it listens (what an operator sees in `kubectl logs` of a crash-looping pod)."""

import pytest

from conftest import addr, local

CASES = {
    "missing ONNX Runtime": ({"ORT_DYLIB_PATH": "/nonexistent/libonnxruntime.so"}, ["ORT_DYLIB_PATH", "make ort"]),
    "missing model": ({"MODEL_VERSION": "v7"}, ["v7/model.json", "MODEL_ROOT"]),
    "invalid setting": ({"METRICS_SOURCE": "canary"}, ["METRICS_SOURCE must be `app` or `shadow`"]),
    "invalid idle timeout": ({"IDLE_TIMEOUT_SECS": "soon"}, ["IDLE_TIMEOUT_SECS", "not valid"]),
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
