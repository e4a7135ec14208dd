"""W3C trace context: a request to the app with a `traceparent` header is traced under the
same trace id in the app's log and in the model's log (the app passes the context on in
the gRPC metadata)."""
import os

from harness import poll


def test_trace_id_in_app_and_model_logs(stack, trace_id):
    parent_span = os.urandom(8).hex()
    headers = {"traceparent": f"00-{trace_id}-{parent_span}-01"}
    r = stack.classify("v1", f"Trace me please, message {trace_id[:8]}", headers=headers)
    assert r.status_code == 200, r.text
    app, model = stack.apps["v1"]["proc"], stack.models["app"]["proc"]
    try:
        poll(lambda: trace_id in app.log(), 10, what="the trace id in the app's log")
        poll(lambda: trace_id in model.log(), 10, what="the trace id in the model's log")
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n--- app log tail:\n{app.tail(8)}\n"
                             f"--- model log tail:\n{model.tail(8)}") from None
    # what the app hands back (if it does) names the same trace
    back = r.headers.get("traceparent")
    assert back is None or back.split("-")[1] == trace_id, back
    assert r.headers.get("x-trace-id", trace_id) == trace_id, r.headers
