"""Bad input through the protocol's own clients: each call gets the protocol's error (gRPC
status, or HTTP status with the body {"error": "..."}) and nothing else; the next good
call is answered as before."""

from __future__ import annotations

import json
import struct
import urllib.error
import urllib.request

import grpc
import pytest
from kserve.protocol.grpc import grpc_predict_v2_pb2 as pb, grpc_predict_v2_pb2_grpc as pb_grpc

GOOD = "WIN a free prize now! call 09061701461"


def request(rows: list[bytes], shape=None, datatype="BYTES", name="sms-spam", version="", raw=False):
    tensor = pb.ModelInferRequest.InferInputTensor(name="text", datatype=datatype,
                                                  shape=shape if shape is not None else [len(rows)])
    r = pb.ModelInferRequest(model_name=name, model_version=version, inputs=[tensor])
    if raw:
        r.raw_input_contents.append(b"".join(struct.pack("<I", len(x)) + x for x in rows))
    else:
        r.inputs[0].contents.bytes_contents.extend(rows)
    return r


def broken_prefixes():
    r = request([b"hello", b"there"], raw=True)
    r.raw_input_contents[0] = r.raw_input_contents[0][:-1]
    return r


def mixed():
    r = request([b"hi"], raw=True)
    r.inputs[0].contents.bytes_contents.append(b"hi")
    return r


GRPC_CASES = {
    "wrong datatype": (lambda: request([b"hi"], datatype="FP32"), grpc.StatusCode.INVALID_ARGUMENT, "must be BYTES"),
    "wrong shape": (lambda: request([b"hi"], shape=[1, 2]), grpc.StatusCode.INVALID_ARGUMENT, "[N] or [N, 1]"),
    "unknown model": (lambda: request([b"hi"], name="resnet"), grpc.StatusCode.NOT_FOUND, 'serves model "sms-spam" version "v1"'),
    "unknown version": (lambda: request([b"hi"], version="v3"), grpc.StatusCode.NOT_FOUND, 'serves version "v1"'),
    "empty text": (lambda: request([b"   "]), grpc.StatusCode.INVALID_ARGUMENT, "empty"),
    "over-long text": (lambda: request([b"a" * 1001]), grpc.StatusCode.INVALID_ARGUMENT, "1001 characters"),
    "more rows than the bound": (lambda: request([b"hi"] * 65), grpc.StatusCode.INVALID_ARGUMENT, "at most 64 rows"),
    "non-UTF-8 bytes": (lambda: request([b"\xff\xfe"], raw=True), grpc.StatusCode.INVALID_ARGUMENT, "not valid UTF-8"),
    "raw prefixes that do not add up": (broken_prefixes, grpc.StatusCode.INVALID_ARGUMENT, "do not add up"),
    "raw and typed contents mixed": (mixed, grpc.StatusCode.INVALID_ARGUMENT, "never both"),
    # tonic refuses a message over the 1 MiB bound before decoding it.
    "a 5 MB request": (lambda: request([b"a" * (5 * 1024 * 1024)]), grpc.StatusCode.OUT_OF_RANGE, "too large"),
}


@pytest.mark.parametrize("case", GRPC_CASES)
def test_grpc_bad_input(model, case):
    make, code, says = GRPC_CASES[case]
    with grpc.insecure_channel(model.grpc, options=[("grpc.max_send_message_length", 8 << 20)]) as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        with pytest.raises(grpc.RpcError) as e:
            stub.ModelInfer(make(), timeout=10)
        assert e.value.code() == code, e.value.details()
        assert says in e.value.details()
        ok = stub.ModelInfer(request([GOOD.encode()]), timeout=10)
        assert list(ok.outputs[0].contents.bytes_contents) == [b"spam"]


def post(model, path: str, body: bytes, headers=None) -> tuple[int, dict, dict]:
    req = urllib.request.Request(f"http://{model.http}{path}", data=body, method="POST",
                                 headers={"Content-Type": "application/json", **(headers or {})})
    try:
        with urllib.request.urlopen(req, timeout=20) as r:
            return r.status, json.loads(r.read()), dict(r.headers)
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read()), dict(e.headers)


def post_large(model, path: str, body: bytes) -> tuple[int, dict]:
    """A body over the bound: the server answers 413 from the headers and closes without
    reading it, so the client reads the answer whatever happens to the rest of its send."""
    import socket
    host, port = model.http.split(":")
    with socket.create_connection((host, int(port)), timeout=20) as s:
        s.sendall(f"POST {path} HTTP/1.1\r\nHost: {model.http}\r\nContent-Type: application/json\r\n"
                  f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode())
        try:
            s.sendall(body)
        except OSError:
            pass
        answer = b""
        while chunk := s.recv(65536):
            answer += chunk
    head, _, payload = answer.partition(b"\r\n\r\n")
    return int(head.split()[1]), json.loads(payload)


def infer_body(rows, shape=None, datatype="BYTES") -> bytes:
    return json.dumps({"inputs": [{"name": "text", "datatype": datatype,
                                   "shape": shape if shape is not None else [len(rows)], "data": rows}]}).encode()


def binary_body(raw: bytes, n: int) -> tuple[bytes, dict]:
    head = json.dumps({"inputs": [{"name": "text", "datatype": "BYTES", "shape": [n],
                                   "parameters": {"binary_data_size": len(raw)}}]}).encode()
    return head + raw, {"Inference-Header-Content-Length": str(len(head))}


REST_CASES = {
    "wrong datatype": ("/v2/models/sms-spam/infer", lambda: (infer_body(["hi"], datatype="INT64"), {}), 400, "must be BYTES"),
    "wrong shape": ("/v2/models/sms-spam/infer", lambda: (infer_body(["hi"], shape=[1, 1, 1]), {}), 400, "[N] or [N, 1]"),
    "unknown model": ("/v2/models/bert/infer", lambda: (infer_body(["hi"]), {}), 404, "not served here"),
    "unknown version": ("/v2/models/sms-spam/versions/v9/infer", lambda: (infer_body(["hi"]), {}), 404, 'no version "v9"'),
    "empty text": ("/v2/models/sms-spam/infer", lambda: (infer_body([" "]), {}), 400, "empty"),
    "over-long text": ("/v2/models/sms-spam/infer", lambda: (infer_body(["a" * 1001]), {}), 400, "1001 characters"),
    "more rows than the bound": ("/v2/models/sms-spam/infer", lambda: (infer_body(["hi"] * 65), {}), 400, "at most 64 rows"),
    "non-UTF-8 bytes": ("/v2/models/sms-spam/infer", lambda: binary_body(struct.pack("<I", 2) + b"\xc3\x28", 1), 400, "not valid UTF-8"),
    "binary prefixes that do not add up": ("/v2/models/sms-spam/infer", lambda: binary_body(struct.pack("<I", 9) + b"short", 1), 400, "do not add up"),
    "a 5 MB request": ("/v2/models/sms-spam/infer", lambda: (infer_body(["a" * (5 * 1024 * 1024)]), {}), 413, "over 1048576 bytes"),
}


@pytest.mark.parametrize("case", REST_CASES)
def test_rest_bad_input(model, case):
    path, make, status, says = REST_CASES[case]
    body, headers = make()
    if len(body) > 1 << 20:
        got, answer = post_large(model, path, body)
    else:
        got, answer, _ = post(model, path, body, headers)
    assert got == status, answer
    assert list(answer) == ["error"] and says in answer["error"], answer
    ok, answer, _ = post(model, "/v2/models/sms-spam/infer", infer_body([GOOD]))
    assert ok == 200 and answer["outputs"][0]["data"] == ["spam"]
