"""Fixtures: the real model service (v1, and a v2 shadow of it) as processes on 127.0.0.1
as smsdev.stack describes them, stopped by PID; sms.v1's Python stubs made from the repository's
.proto with grpcio-tools (smsdev.protos), so each answer can be checked against Classify's."""

from __future__ import annotations

import importlib

import grpc
import pytest

from smsdev import ROOT, protos
from smsdev import stack as local  # the one description of the local stack
from smsdev.procs import free_port

OUT = ROOT / "test-output" / "protocol"


class Model:
    def __init__(self, service: local.Service):
        self.grpc = service.addresses["grpc"]
        self.http = service.addresses["inference"].removesuffix("/v2").removeprefix("http://")
        self.metrics_url = service.addresses["metrics"]

    def metrics(self) -> str:
        import urllib.request
        with urllib.request.urlopen(self.metrics_url, timeout=5) as r:
            return r.read().decode()


def addr() -> str:
    return f"127.0.0.1:{free_port()}"


@pytest.fixture(scope="session")
def stack():
    s = local.Stack(OUT)
    try:
        yield s
    finally:
        s.stop_all()


@pytest.fixture(scope="session")
def model(stack) -> Model:
    svc = local.model("model-v1", grpc=addr(), metrics=addr(), http=addr(), MODEL_RELOAD_SECS="0")
    stack.up(svc)
    return Model(svc)


@pytest.fixture(scope="session")
def shadow(stack) -> Model:
    svc = local.model("shadow-v2", grpc=addr(), metrics=addr(), http=addr(), version="v2", source="shadow",
                      REFERENCE_VERSION="v1", MODEL_RELOAD_SECS="0")
    stack.up(svc)
    return Model(svc)


@pytest.fixture(scope="session")
def sms_v1():
    """sms.v1's messages and stub, generated from proto/sms/v1/classifier.proto (into the
    package smsdev.generated.sms_v1)."""
    pkg = protos.generate("sms_v1", ROOT / "proto", ["sms/v1/classifier.proto"], grpc=True)
    return (importlib.import_module(f"{pkg}.sms.v1.classifier_pb2"),
            importlib.import_module(f"{pkg}.sms.v1.classifier_pb2_grpc"))


@pytest.fixture(scope="session")
def classify(model, sms_v1):
    """Classify's (label, probability) for each text, through sms.v1."""
    pb2, pb2_grpc = sms_v1
    channel = grpc.insecure_channel(model.grpc)
    stub = pb2_grpc.SpamClassifierStub(channel)

    def run(texts: list[str]) -> tuple[list[str], list[float]]:
        answers = [stub.Classify(pb2.ClassifyRequest(text=t), timeout=10) for t in texts]
        return [a.label for a in answers], [a.spam_probability for a in answers]

    yield run
    channel.close()
