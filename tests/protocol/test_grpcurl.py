"""grpcurl without a .proto file lists and calls both services through reflection: the
1.9 release (asks reflection v1 first) and the 1.8 release (v1alpha only)."""

from __future__ import annotations

import base64
import json
import os
import subprocess

import pytest

RELEASES = {"v1": os.environ.get("GRPCURL_V1", "grpcurl"), "v1alpha": os.environ.get("GRPCURL_V1ALPHA", "grpcurl")}


def grpcurl(binary: str, *args: str, data: dict | None = None) -> str:
    cmd = [binary, "-plaintext", "-max-time", "10"]
    if data is not None:
        cmd += ["-d", json.dumps(data)]
    r = subprocess.run(cmd + list(args), capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, f"{cmd + list(args)}: {r.stderr}"
    return r.stdout


@pytest.mark.parametrize("reflection", RELEASES)
def test_grpcurl_lists_and_calls_both_services(model, reflection):
    binary = RELEASES[reflection]
    version = subprocess.run([binary, "-version"], capture_output=True, text=True).stderr.strip()
    print(f"{reflection}: {version}")
    services = grpcurl(binary, model.grpc, "list").split()
    for s in ("sms.v1.SpamClassifier", "inference.GRPCInferenceService", "grpc.health.v1.Health"):
        assert s in services, services
    methods = grpcurl(binary, model.grpc, "list", "inference.GRPCInferenceService").split()
    assert "inference.GRPCInferenceService.ModelInfer" in methods
    described = grpcurl(binary, model.grpc, "describe", "inference.ModelInferRequest")
    assert "raw_input_contents = 7" in described
    classified = json.loads(grpcurl(binary, model.grpc, "sms.v1.SpamClassifier/Classify",
                                    data={"text": "WIN a free prize now! call 09061701461"}))
    infer = {"model_name": "sms-spam", "inputs": [{"name": "text", "datatype": "BYTES", "shape": ["1"],
             "contents": {"bytes_contents": [base64.b64encode(b"WIN a free prize now! call 09061701461").decode()]}}]}
    answer = json.loads(grpcurl(binary, model.grpc, "inference.GRPCInferenceService/ModelInfer", data=infer))
    outputs = {o["name"]: o["contents"] for o in answer["outputs"]}
    assert base64.b64decode(outputs["label"]["bytesContents"][0]).decode() == classified["label"]
    assert abs(outputs["spam_probability"]["fp32Contents"][0] - classified["spamProbability"]) <= 1e-6
