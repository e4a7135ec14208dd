"""Triton's own client (tritonclient) against the model service, over gRPC and HTTP: live,
ready, server and model metadata, and `infer` with 1 and 64 rows, raw and typed contents;
every answer equals Classify's for the same texts (labels exactly, probabilities to 1e-6).
tritonclient and KServe's SDK both register the `inference` protobuf package, so they
run in separate pytest processes (run.sh)."""

from __future__ import annotations

import numpy as np
import pytest
import tritonclient.grpc as triton_grpc
import tritonclient.http as triton_http
from tritonclient.utils import InferenceServerException

SPAM = "WINNER!! As a valued network customer you have been selected to receive a £900 prize reward! To claim call 09061701461."
HAM = "Hey, are we still meeting for lunch tomorrow? Let me know what time works for you."
BASE = [SPAM, HAM, "Free entry to win a prize, txt WIN to 80086", "  see you\tat lunch?  ", "Ok... Ur typical reply..."]


def texts(n: int) -> list[str]:
    return [f"{BASE[i % len(BASE)]} #{i}" for i in range(n)]


def same(got_labels, got_probabilities, want):
    labels = [x.decode() if isinstance(x, bytes) else str(x) for x in np.asarray(got_labels).reshape(-1)]
    assert labels == want[0]
    np.testing.assert_allclose(np.asarray(got_probabilities, dtype=np.float64).reshape(-1), want[1], rtol=0, atol=1e-6)


def as_numpy_rows(rows: list[str], two_d: bool) -> np.ndarray:
    a = np.array([r.encode() for r in rows], dtype=np.object_)
    return a.reshape(-1, 1) if two_d else a


@pytest.mark.parametrize("n", [1, 64])
@pytest.mark.parametrize("two_d", [False, True], ids=["shape-N", "shape-Nx1"])
def test_tritonclient_grpc(model, classify, n, two_d):
    client = triton_grpc.InferenceServerClient(model.grpc)
    assert client.is_server_live() and client.is_server_ready()
    assert client.is_model_ready("sms-spam") and client.is_model_ready("sms-spam", "v1")
    assert client.get_server_metadata(as_json=True)["name"] == "sms-model-service"
    meta = client.get_model_metadata("sms-spam", as_json=True)
    assert meta["versions"] == ["v1"]
    assert [(t["name"], t["datatype"]) for t in meta["outputs"]] == [("label", "BYTES"), ("spam_probability", "FP32")]
    rows = texts(n)
    data = as_numpy_rows(rows, two_d)
    inp = triton_grpc.InferInput("text", list(data.shape), "BYTES")
    inp.set_data_from_numpy(data)  # tritonclient sends raw_input_contents
    result = client.infer("sms-spam", [inp], model_version="v1", request_id="t1")
    assert result.get_response().id == "t1"
    same(result.as_numpy("label"), result.as_numpy("spam_probability"), classify(rows))
    only = client.infer("sms-spam", [inp], outputs=[triton_grpc.InferRequestedOutput("label")])
    assert [o.name for o in only.get_response().outputs] == ["label"]
    client.close()


@pytest.mark.parametrize("n", [1, 64])
@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
def test_tritonclient_http(model, classify, n, binary):
    client = triton_http.InferenceServerClient(model.http)
    assert client.is_server_live() and client.is_server_ready() and client.is_model_ready("sms-spam")
    assert client.get_server_metadata()["name"] == "sms-model-service"
    assert client.get_model_metadata("sms-spam", "v1")["platform"] == "onnxruntime_onnx"
    rows = texts(n)
    inp = triton_http.InferInput("text", [n], "BYTES")
    inp.set_data_from_numpy(as_numpy_rows(rows, False), binary_data=binary)
    outputs = [triton_http.InferRequestedOutput(name, binary_data=binary) for name in ("label", "spam_probability")]
    result = client.infer("sms-spam", [inp], outputs=outputs)
    same(result.as_numpy("label"), result.as_numpy("spam_probability"), classify(rows))
    # tritonclient's default asks for every output as binary data.
    default = client.infer("sms-spam", [inp])
    same(default.as_numpy("label"), default.as_numpy("spam_probability"), classify(rows))
    client.close()

def test_tritonclient_reports_the_servers_reason(model):
    for mod, url in ((triton_grpc, model.grpc), (triton_http, model.http)):
        client = mod.InferenceServerClient(url)
        inp = mod.InferInput("text", [1], "BYTES")
        inp.set_data_from_numpy(np.array([b"   "], dtype=np.object_))
        with pytest.raises(InferenceServerException) as e:
            client.infer("sms-spam", [inp])
        assert "empty" in e.value.message()
        with pytest.raises(InferenceServerException) as e:
            client.infer("sms-spam", [inp], model_version="v7")
        assert 'no version "v7"' in e.value.message()
        client.close()
