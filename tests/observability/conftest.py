"""Fixtures: the real services (two model servers, two app versions) and a real Prometheus
scraping them the way the chart's ServiceMonitors do. Everything binds 127.0.0.1 and is
stopped by PID when the session (or module) ends."""
from __future__ import annotations

import itertools
import os
import uuid
from pathlib import Path

import pytest
import requests

from harness import (ROOT, Prometheus, free_port, local, poll, scrape_config,
                     wait_http_ok)
from smsdev import protos

RULES = ROOT / "grafana" / "rules" / "sms-app.rules.yml"
DASHBOARDS = sorted((ROOT / "grafana" / "dashboards").glob("*.json"))

HAM = [
    "Are we still on for lunch tomorrow at noon?",
    "Can you pick up some milk on your way home",
    "I'll be late, the train is stuck outside the station",
    "Happy birthday! Hope you have a lovely day",
    "Ok, see you at the gym at 6",
    "Did you finish the report for Monday's meeting?",
    "Mum says dinner is at 7, don't be late",
    "Thanks for yesterday, it was really fun",
]
SPAM = [
    "WINNER!! You have won a 1000 GBP cash prize. Call 09061701461 now to claim",
    "URGENT! Your mobile number has won a free holiday. Text CLAIM to 81010",
    "Free entry in 2 a wkly comp to win FA Cup final tkts. Text FA to 87121",
    "Congratulations! You've been selected for a free iPhone. Reply YES to claim now",
    "You have 1 new voicemail. Call 09058094565 to collect your prize today",
    "Get a FREE ringtone! Reply TONE to 85233. 150p/msg, 18+ only",
    "Your account has been credited with 500 pounds bonus. Claim at www.win-cash.example",
    "PRIVATE! Your 2003 Account Statement shows 800 un-redeemed points. Call 08719899230",
]
TEXTS = [(t, "ham") for t in HAM] + [(t, "spam") for t in SPAM]
# JSON as the chart runs them (the serving path), text for the others: both are checked.
LOG_FORMATS = {"model-v1": "json", "app-v1": "json", "model-shadow-v2": "text", "app-v2": "text"}


@pytest.fixture(scope="session")
def log_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("observability-logs")


# --------------------------------------------------------------------------- gRPC client

class Grpc:
    """A gRPC client for sms.v1.SpamClassifier built from the repository's proto files at
    test time (grpc_tools.protoc, into the package smsdev.generated.proto), plus the
    standard health check."""

    def __init__(self):
        import importlib

        import grpc
        from google.protobuf import descriptor_pool, message_factory
        proto_root = ROOT / "proto"
        files = sorted(str(p.relative_to(proto_root)) for p in proto_root.rglob("*.proto"))
        assert files, "no .proto files under proto/"
        pkg = protos.generate("proto", proto_root, files)
        for f in files:
            importlib.import_module(f"{pkg}." + f[:-len(".proto")].replace("/", ".") + "_pb2")
        pool = descriptor_pool.Default()
        method = pool.FindServiceByName("sms.v1.SpamClassifier").FindMethodByName("Classify")
        self.request_cls = message_factory.GetMessageClass(method.input_type)
        self.response_cls = message_factory.GetMessageClass(method.output_type)
        self.grpc = grpc
        self.channels = {}

    def _channel(self, addr):
        if addr not in self.channels:
            self.channels[addr] = self.grpc.insecure_channel(addr)
        return self.channels[addr]

    def classify(self, addr: str, text: str, metadata=None, timeout: float = 5):
        call = self._channel(addr).unary_unary(
            "/sms.v1.SpamClassifier/Classify",
            request_serializer=self.request_cls.SerializeToString,
            response_deserializer=self.response_cls.FromString)
        return call(self.request_cls(text=text), metadata=metadata, timeout=timeout)

    def serving(self, addr: str) -> bool:
        # grpc.health.v1.Health/Check with an empty request; SERVING is status = 1 (08 01)
        call = self._channel(addr).unary_unary(
            "/grpc.health.v1.Health/Check",
            request_serializer=lambda b: b, response_deserializer=lambda b: b)
        return call(b"", timeout=2) == b"\x08\x01"

    def close(self):
        for ch in self.channels.values():
            ch.close()


@pytest.fixture(scope="session")
def grpc_client():
    client = Grpc()
    try:
        yield client
    finally:
        client.close()


# --------------------------------------------------------------------------- the services

class Stack:
    """model v1 (source=app), model v2 (source=shadow), app v1 (no cache), app v2 (cache),
    both apps calling model v1."""

    def __init__(self, group: local.Stack, grpc_client: Grpc):
        self.group = group
        self.grpc = grpc_client
        ort = os.environ.get("ORT_DYLIB_PATH", "")
        assert ort and Path(ort).is_file(), (
            "ORT_DYLIB_PATH must name libonnxruntime.so (run.sh sets it from scripts/ensure-ort.sh)")
        self.models, self.apps = {}, {}
        for name, version, source, pod in (
                ("model-v1", "v1", "app", "sms-app-model-6d4f8b9c7-tst01"),
                ("model-shadow-v2", "v2", "shadow", "sms-app-model-shadow-8b7c5d6f4-tst02")):
            grpc_addr, metrics_addr = f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"
            # The shadow compares itself with the serving version, as the chart sets it up.
            reference = {"REFERENCE_VERSION": "v1"} if source == "shadow" else {}
            proc = group.launch(local.model(name, grpc=grpc_addr, metrics=metrics_addr, version=version,
                                            source=source, INFERENCE_WORKERS="1", MODEL_RELOAD_SECS="0",
                                            LOG_FORMAT=LOG_FORMATS[name],
                                            # The model's line per answer is a debug line.
                                            RUST_LOG="info,model_service=debug", **reference))
            self.models[source] = {"proc": proc, "grpc": grpc_addr, "metrics": metrics_addr,
                                   "pod": pod, "version": version}
        for m in self.models.values():
            def ready(m=m):
                m["proc"].check_alive()
                return self.grpc.serving(m["grpc"])
            poll(ready, 90, what=f"{m['proc'].name} gRPC health SERVING")
            wait_http_ok(f"http://{m['metrics']}/metrics", m["proc"])
        for name, version, cache, pod in (
                ("app-v1", "v1", False, "sms-app-app-5c7d9e8f6-tst03"),
                ("app-v2", "v2", True, "sms-app-app-canary-7f6e5d4c3-tst04")):
            addr = f"127.0.0.1:{free_port()}"
            proc = group.launch(local.app(name, http=addr, model_host=f"http://{self.models['app']['grpc']}",
                                          version=version, cache=cache, MODEL_TIMEOUT_MS="2000",
                                          LOG_FORMAT=LOG_FORMATS[name], RUST_LOG="info"))
            self.apps[version] = {"proc": proc, "addr": addr, "pod": pod, "url": f"http://{addr}"}
        for a in self.apps.values():
            wait_http_ok(f"{a['url']}/readyz", a["proc"])
        self.session = requests.Session()
        self._cycle = itertools.cycle(TEXTS)
        self.sent = {"v1": 0, "v2": 0, "shadow": 0}

    def targets(self) -> list[dict]:
        out = [{"job": "sms-app-app", "address": a["addr"], "pod": a["pod"], "endpoint": "http"}
               for a in self.apps.values()]
        out += [{"job": "sms-app-model", "address": m["metrics"], "pod": m["pod"],
                 "endpoint": "http-metrics"} for m in self.models.values()]
        return out

    def classify(self, version: str, text: str, guess: str | None = None, headers=None):
        body = {"sms": text}
        if guess:
            body["guess"] = guess
        r = self.session.post(f"{self.apps[version]['url']}/sms/", json=body,
                              headers=headers, timeout=5)
        self.sent[version] += 1
        return r

    def traffic_step(self):
        """One round of realistic traffic: a classification with a guess to each app
        (texts repeat, so the v2 cache gets hits) and the same text to the shadow model
        (what the mesh's mirror does), now and then a bad request (4xx)."""
        text, label = next(self._cycle)
        n = self.sent["shadow"]
        guess = label if n % 4 else ("spam" if label == "ham" else "ham")  # 3 in 4 agree
        for version in ("v1", "v2"):
            r = self.classify(version, text, guess)
            assert r.status_code == 200, f"app {version}: HTTP {r.status_code} {r.text[:200]}"
        # The mirror copies the call's metadata, the user's guess included.
        self.grpc.classify(self.models["shadow"]["grpc"], text, metadata=(("x-sms-guess", guess),))
        self.sent["shadow"] += 1
        if n % 10 == 0:
            for version in ("v1", "v2"):
                r = self.session.post(f"{self.apps[version]['url']}/sms/", json={"sms": ""}, timeout=5)
                assert 400 <= r.status_code < 500, f"empty sms to {version}: HTTP {r.status_code}"

    def metrics_urls(self) -> dict:
        urls = {f"app {v}": f"{a['url']}/metrics" for v, a in self.apps.items()}
        urls.update({f"model {s}": f"http://{m['metrics']}/metrics" for s, m in self.models.items()})
        return urls


@pytest.fixture(scope="session")
def stack(log_dir, grpc_client):
    group = local.Stack(log_dir)
    try:
        yield Stack(group, grpc_client)
    finally:
        group.stop_all()


@pytest.fixture(scope="session")
def prometheus(stack, log_dir, tmp_path_factory):
    """A real Prometheus scraping the four services every second, with the shipped rules."""
    group = local.Stack(log_dir)
    config = scrape_config(stack.targets())
    config["rule_files"] = [str(p) for p in sorted(RULES.parent.glob("*.rules.yml"))]
    try:
        prom = Prometheus(group, tmp_path_factory.mktemp("prometheus"), config)
        poll(lambda: prom.targets_up(len(stack.targets())), 60,
             what="every scrape target to be up")
        yield prom
    finally:
        group.stop_all()


@pytest.fixture
def trace_id() -> str:
    return uuid.uuid4().hex
