"""The shadow compares calls that came in through the protocol with the serving version,
and counts the user's guess (request parameter `guess`, or `x-sms-guess` metadata)."""

from __future__ import annotations

import json
import time
import urllib.request

import grpc
from kserve.protocol.grpc import grpc_predict_v2_pb2 as pb, grpc_predict_v2_pb2_grpc as pb_grpc

from smsdev.promtext import metric


def count(text: str, name: str, **labels) -> float:
    return metric(text, name, **labels)


def test_the_shadow_counts_agreement_for_protocol_calls(shadow):
    before = shadow.metrics()
    compared0 = count(before, "sms_shadow_comparisons_total")
    guesses0 = count(before, "sms_model_guesses_total")
    rows = [b"Want explicit SEX in 30 secs? Ring 02073162414 now! Costs 20p/min", b"see you at lunch?"]
    with grpc.insecure_channel(shadow.grpc) as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        r = pb.ModelInferRequest(model_name="sms-spam", inputs=[
            pb.ModelInferRequest.InferInputTensor(name="text", datatype="BYTES", shape=[2])])
        r.inputs[0].contents.bytes_contents.extend(rows)
        r.parameters["guess"].string_param = "spam"
        stub.ModelInfer(r, timeout=10)
        stub.ModelInfer(r, timeout=10, metadata=[("x-sms-guess", "ham")])
    body = json.dumps({"parameters": {"guess": "ham"}, "inputs": [
        {"name": "text", "datatype": "BYTES", "shape": [1], "data": ["hello there"]}]}).encode()
    req = urllib.request.Request(f"http://{shadow.http}/v2/models/sms-spam/infer", data=body, method="POST")
    with urllib.request.urlopen(req, timeout=10) as answer:
        assert answer.status == 200
    deadline = time.time() + 5
    while True:
        after = shadow.metrics()
        if count(after, "sms_shadow_comparisons_total") - compared0 == 5 or time.time() > deadline:
            break
        time.sleep(0.1)
    assert count(after, "sms_shadow_comparisons_total") - compared0 == 5
    assert count(after, "sms_model_guesses_total") - guesses0 == 5
    assert count(after, "sms_model_predictions_total", protocol="oip-grpc") == 4
    assert count(after, "sms_model_predictions_total", protocol="oip-rest") == 1
