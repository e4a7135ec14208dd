"""KServe's Python SDK against the model service, over gRPC and HTTP: live,
ready, model metadata (through its generated stub), and `infer` with 1 and 64 rows, raw and typed contents;
every answer equals Classify's for the same texts (labels exactly, probabilities to 1e-6)."""

from __future__ import annotations

import asyncio

import grpc
import numpy as np
import pytest
from kserve import InferenceGRPCClient, InferenceRESTClient, InferInput, InferRequest, RESTConfig
from kserve.protocol.grpc import grpc_predict_v2_pb2 as pb, grpc_predict_v2_pb2_grpc as pb_grpc

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
def test_kserve_sdk_rest(model, classify, n):
    async def run():
        client = InferenceRESTClient(RESTConfig(protocol="v2", timeout=30))
        base = f"http://{model.http}"
        assert await client.is_server_live(base) and await client.is_server_ready(base)
        assert await client.is_model_ready(base, "sms-spam")
        rows = texts(n)
        answers = []
        typed = InferInput("text", [n], "BYTES", rows)
        answers.append(await client.infer(base, InferRequest("sms-spam", [typed]), model_name="sms-spam"))
        raw = InferInput("text", [n], "BYTES")
        raw.set_data_from_numpy(as_numpy_rows(rows, False), binary_data=True)
        answers.append(await client.infer(base, InferRequest("sms-spam", [raw]), model_name="sms-spam"))
        await client.close()
        return rows, answers

    rows, answers = asyncio.run(run())
    for r in answers:
        out = {o.name: o.as_numpy() for o in r.outputs}
        same(out["label"], out["spam_probability"], classify(rows))


@pytest.mark.parametrize("n", [1, 64])
def test_kserve_sdk_grpc(model, classify, n):
    async def run():
        client = InferenceGRPCClient(model.grpc, timeout=30)
        assert await client.is_server_live() and await client.is_server_ready()
        assert await client.is_model_ready("sms-spam")
        rows = texts(n)
        typed = InferInput("text", [n], "BYTES", rows)
        raw = InferInput("text", [n, 1], "BYTES")
        raw.set_data_from_numpy(as_numpy_rows(rows, True))
        answers = [await client.infer(InferRequest("sms-spam", [typed])),
                   await client.infer(InferRequest("sms-spam", [raw]))]
        await client.close()
        return rows, answers

    rows, answers = asyncio.run(run())
    for r in answers:
        out = {o.name: o.as_numpy() for o in r.outputs}
        same(out["label"], out["spam_probability"], classify(rows))


def test_kserve_stubs_metadata(model):
    """KServe's SDK has no metadata calls; its generated stub has them."""
    with grpc.insecure_channel(model.grpc) as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        assert stub.ServerLive(pb.ServerLiveRequest()).live
        assert stub.ServerMetadata(pb.ServerMetadataRequest()).name == "sms-model-service"
        meta = stub.ModelMetadata(pb.ModelMetadataRequest(name="sms-spam", version="v1"))
        assert (meta.name, list(meta.versions), meta.inputs[0].name) == ("sms-spam", ["v1"], "text")
        with pytest.raises(grpc.RpcError) as e:
            stub.ModelMetadata(pb.ModelMetadataRequest(name="sms-spam", version="v2"))
        assert e.value.code() == grpc.StatusCode.NOT_FOUND and '"v1"' in e.value.details()
