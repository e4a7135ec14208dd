"""OTLP export: with OTEL_EXPORTER_OTLP_ENDPOINT set, both services (real processes, started
by smsdev.stack) export their spans over OTLP/gRPC to a real gRPC receiver (grpcio,
serving the OTLP collector protos of the very opentelemetry-proto crate the services link),
as one trace that continues the caller's `traceparent`, the model's span a child of the
app's, each under its own `service.name`; and their metrics, by the same names as on their
Prometheus pages (without Prometheus' `_total`)."""
from __future__ import annotations

import importlib
import json
import re
import subprocess
import threading
from concurrent import futures
from pathlib import Path

import grpc
import pytest
import requests

from harness import ROOT, free_port, local, poll
from smsdev import protos

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
CALLER_SPAN = "00f067aa0ba902b7"


def otlp_protos() -> Path:
    """The .proto files shipped inside the opentelemetry-proto crate of Cargo.lock."""
    # This machine's platform only: the build downloaded its crates, not those of other
    # targets (wasm, Windows), which `cargo metadata` would otherwise need offline.
    host = re.search(r"^host: (\S+)$", subprocess.run(["rustc", "-vV"], capture_output=True, text=True,
                                                       check=True, timeout=60).stdout, re.M).group(1)
    meta = json.loads(subprocess.run(
        ["cargo", "metadata", "--format-version", "1", "--locked", "--offline", "--filter-platform", host],
        cwd=ROOT, capture_output=True, text=True, check=True, timeout=120).stdout)
    crate = next(p for p in meta["packages"] if p["name"] == "opentelemetry-proto")
    root = Path(crate["manifest_path"]).parent / "src" / "proto" / "opentelemetry-proto"
    assert root.is_dir(), f"no OTLP protos in {root}"
    return root


class Receiver:
    """Records (service.name, span) and (service.name, metric name) of every export."""

    def __init__(self):
        files = [f"opentelemetry/proto/{p}" for p in (
            "common/v1/common.proto", "resource/v1/resource.proto", "trace/v1/trace.proto",
            "metrics/v1/metrics.proto", "collector/trace/v1/trace_service.proto",
            "collector/metrics/v1/metrics_service.proto")]
        pkg = protos.generate("otlp", otlp_protos(), files)  # the package smsdev.generated.otlp
        self.trace = importlib.import_module(f"{pkg}.opentelemetry.proto.collector.trace.v1.trace_service_pb2")
        self.metrics = importlib.import_module(f"{pkg}.opentelemetry.proto.collector.metrics.v1.metrics_service_pb2")
        self.spans, self.metric_names, self.lock = [], set(), threading.Lock()

    @staticmethod
    def service(resource) -> str:
        return next((a.value.string_value for a in resource.attributes if a.key == "service.name"), "")

    def export_trace(self, request, _ctx):
        with self.lock:
            for rs in request.resource_spans:
                for ss in rs.scope_spans:
                    self.spans += [(self.service(rs.resource), s) for s in ss.spans]
        return self.trace.ExportTraceServiceResponse()

    def export_metrics(self, request, _ctx):
        with self.lock:
            for rm in request.resource_metrics:
                for sm in rm.scope_metrics:
                    self.metric_names |= {(self.service(rm.resource), m.name) for m in sm.metrics}
        return self.metrics.ExportMetricsServiceResponse()

    def serve(self) -> tuple[grpc.Server, str]:
        server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        handlers = {
            "opentelemetry.proto.collector.trace.v1.TraceService": {"Export": grpc.unary_unary_rpc_method_handler(
                self.export_trace, request_deserializer=self.trace.ExportTraceServiceRequest.FromString,
                response_serializer=self.trace.ExportTraceServiceResponse.SerializeToString)},
            "opentelemetry.proto.collector.metrics.v1.MetricsService": {"Export": grpc.unary_unary_rpc_method_handler(
                self.export_metrics, request_deserializer=self.metrics.ExportMetricsServiceRequest.FromString,
                response_serializer=self.metrics.ExportMetricsServiceResponse.SerializeToString)},
        }
        server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler(name, methods)
                                         for name, methods in handlers.items()])
        port = server.add_insecure_port("127.0.0.1:0")
        server.start()
        return server, f"http://127.0.0.1:{port}"


@pytest.fixture(scope="module")
def receiver():
    r = Receiver()
    server, endpoint = r.serve()
    r.endpoint = endpoint
    try:
        yield r
    finally:
        server.stop(grace=None)


def test_both_services_export_one_trace_and_their_metrics_over_otlp(receiver, log_dir):
    export = {"OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint, "OTEL_METRIC_EXPORT_INTERVAL": "500"}
    stack = local.Stack(log_dir / "otlp")
    try:
        model = local.model("otlp-model", grpc=f"127.0.0.1:{free_port()}", metrics=f"127.0.0.1:{free_port()}",
                            MODEL_RELOAD_SECS="0", **export)
        stack.up(model)
        app = local.app("otlp-app", http=f"127.0.0.1:{free_port()}", model_host=f"http://{model.addresses['grpc']}",
                        **export)
        stack.up(app)
        # Exactly one request carries this trace.
        r = requests.post(app.addresses["url"] + "/sms/", json={"sms": "WINNER!! Claim your free prize now"},
                          headers={"traceparent": f"00-{TRACE_ID}-{CALLER_SPAN}-01"}, timeout=5)
        assert r.status_code == 200, r.text

        def span_of(service):
            with receiver.lock:
                return next((s for svc, s in receiver.spans if svc == service and s.trace_id.hex() == TRACE_ID), None)

        app_span, model_span = poll(lambda: (a, m) if (a := span_of("app-service")) and (m := span_of("model-service"))
                                    else None, 30, "one span of each service in the trace")
        assert app_span.name == "POST /sms/"
        assert app_span.parent_span_id.hex() == CALLER_SPAN, "the app continues the caller's span"
        assert model_span.name == "sms.v1.SpamClassifier/Classify"
        assert model_span.parent_span_id == app_span.span_id, "the model's span is the app's child"

        want = {("app-service", "sms_requests"), ("app-service", "sms_model_calls"),
                ("model-service", "sms_model_requests"), ("model-service", "sms_model_inference_seconds")}
        poll(lambda: want <= receiver.metric_names, 30,
             f"metrics exported: missing {want - receiver.metric_names}")
    finally:
        stack.stop_all()
