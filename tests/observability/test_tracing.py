"""W3C trace context: a request to the app with a `traceparent` header is logged under the
same trace id by the app and by the model it called (the app passes the context on in the
gRPC metadata). App v1 and model v1 log JSON (as the chart runs them): there the id must
be a `trace_id` field; app v2 logs text: there it must read `trace_id=<id>`."""
import json
import os
import re

import pytest

from conftest import LOG_FORMATS
from harness import poll

ANSI = re.compile(r"\x1b\[[0-9;]*m")


def logged_with(log: str, fmt: str, trace_id: str) -> list:
    """The log records that carry trace_id as their trace id."""
    out = []
    for line in log.splitlines():
        if fmt == "json":
            try:
                rec = json.loads(line)
            except ValueError:
                continue
            fields = [rec] + [v for v in rec.values() if isinstance(v, dict)]
            if any(f.get("trace_id") == trace_id for f in fields):
                out.append(rec)
        elif re.search(rf"\btrace_id=\"?{trace_id}\b", ANSI.sub("", line)):
            out.append(line)
    return out


@pytest.mark.parametrize("version", ["v1", "v2"])
def test_trace_id_in_app_and_model_logs(stack, trace_id, version):
    parent_span = os.urandom(8).hex()
    headers = {"traceparent": f"00-{trace_id}-{parent_span}-01"}
    # a text no one sent before, so v2's cache cannot answer it without the model
    r = stack.classify(version, f"Trace me please, message {trace_id[:12]}", headers=headers)
    assert r.status_code == 200, r.text
    app, model = stack.apps[version]["proc"], stack.models["app"]["proc"]
    app_fmt, model_fmt = LOG_FORMATS[app.name], LOG_FORMATS[model.name]
    try:
        poll(lambda: logged_with(app.log(), app_fmt, trace_id), 10,
             what=f"trace_id {trace_id} in the app's {app_fmt} log")
        poll(lambda: logged_with(model.log(), model_fmt, trace_id), 10,
             what=f"trace_id {trace_id} in the model's {model_fmt} log")
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n--- app log tail:\n{app.tail(5)}\n"
                             f"--- model log tail:\n{model.tail(5)}") from None
    # what the app hands back (if it does) names the same trace
    back = r.headers.get("traceparent")
    assert back is None or back.split("-")[1] == trace_id, back
    assert r.headers.get("x-trace-id", trace_id) == trace_id, r.headers
