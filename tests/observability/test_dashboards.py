"""Static checks of the dashboards and rules against docs/contracts.md: every metric and
label they use is one the contract lists, each dashboard is importable Grafana JSON
with units, legends and the datasource / namespace variables, and the committed JSON is
what the dashboards' code (grafana/dashboards/src/) generates."""
import json
import re
import subprocess

import pytest
import yaml

from harness import BUILTIN, ROOT, RULES, SCRAPE_LABELS, contract_metrics, promql_names, variable_query

DASHBOARDS = sorted((ROOT / "grafana" / "dashboards").glob("*.json"))
GENERATE = ROOT / "grafana" / "dashboards" / "src" / "generate.sh"
RULE_FILES = sorted((ROOT / "grafana" / "rules").glob("*.rules.yml"))


def test_contract_parser_reads_the_metrics():
    m = contract_metrics()
    # known answers, so that a parser that reads nothing cannot pass the tests below
    assert m["sms_model_predictions_total"] == {"version", "source", "result", "protocol"}
    assert m["sms_model_inference_seconds_bucket"] == {"version", "source", "protocol", "le"}
    assert m["sms_cache_misses_total"] == {"version"}
    assert m["sms_requests_total"] == {"version", "method", "route", "status"}
    assert len(m) >= 16


def load(path):
    return json.loads(path.read_text())


def test_committed_dashboards_are_what_the_code_generates(tmp_path):
    proc = subprocess.run([str(GENERATE), str(tmp_path)], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, f"{GENERATE.relative_to(ROOT)} failed:\n{proc.stdout}{proc.stderr}"
    fresh = sorted(tmp_path.glob("*.json"))
    assert [p.name for p in fresh] == [p.name for p in DASHBOARDS], (fresh, DASHBOARDS)
    stale = [p.name for p in DASHBOARDS if p.read_bytes() != (tmp_path / p.name).read_bytes()]
    assert not stale, (f"grafana/dashboards/{{{','.join(stale)}}} differ from what grafana/dashboards/src/ "
                       "generates: run `make dashboards` and commit the result (edit the code, not the JSON)")


def dashboard_exprs():
    for path in DASHBOARDS:
        for panel in load(path)["panels"]:
            for target in panel.get("targets", []):
                yield f"{path.name}: {panel['title']} ({target['refId']})", target["expr"]


def rule_exprs():
    for path in RULE_FILES:
        for g in yaml.safe_load(path.read_text())["groups"]:
            for r in g["rules"]:
                yield f"rule {r.get('alert') or r.get('record')}", r["expr"]


def recorded_series() -> dict:
    """{name: {labels}} of the series the shipped rules record (what their `by` keeps):
    dashboards may read them like the services' own metrics."""
    out = {}
    for path in RULE_FILES:
        for g in yaml.safe_load(path.read_text())["groups"]:
            for r in g["rules"]:
                if "record" in r:
                    # the rule's own `labels:` are on the series too (Sloth's sloth_id, ...);
                    # a name recorded by several rules has every one's labels
                    labels = (promql_names(r["expr"])["grouping"] - {"le"}) | set(r.get("labels", {}))
                    out[r["record"]] = out.get(r["record"], set()) | labels
    return out


def constant_series() -> set:
    """Names the shipped rules record from a constant only (Sloth's `vector(0.999)`)."""
    return {r["record"] for path in RULE_FILES for g in yaml.safe_load(path.read_text())["groups"]
            for r in g["rules"] if "record" in r and re.fullmatch(r"vector\([^()]*\)", r["expr"].strip())}


def test_every_dashboard_exists():
    assert [p.name for p in DASHBOARDS] == ["experiment.json", "operational.json", "shadow.json"]


@pytest.mark.parametrize("where,expr", list(dashboard_exprs()) + list(rule_exprs()),
                         ids=lambda x: x if isinstance(x, str) and len(x) < 80 else None)
def test_every_metric_and_label_is_in_the_contract(where, expr):
    contract = contract_metrics()
    known = dict(contract, **BUILTIN, **recorded_series())
    used = promql_names(expr)
    # a constant (Sloth records each SLO's objective and budget as `vector(0.999)`) reads no metric
    assert used["metrics"] or re.fullmatch(r"vector\([-+0-9.e*/ ]+\)", expr.strip()), (
        f"{where}: no metric found in {expr}")
    allowed_labels = set(SCRAPE_LABELS) | {"le"} | used["created"]
    for name, matchers in used["metrics"].items():
        assert name in known, f"{where}: {name} is not a metric of docs/contracts.md"
        labels = known[name] | SCRAPE_LABELS
        allowed_labels |= known[name]
        for label, _, _ in matchers:
            assert label in labels, f"{where}: {name} has no label {label!r}"
    assert used["grouping"] <= allowed_labels, (
        f"{where}: groups by {used['grouping'] - allowed_labels}, which none of its metrics has")


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.name)
def test_dashboard_structure(path):
    d = load(path)
    assert d["uid"].startswith("sms-app-") and d["title"]
    assert d["schemaVersion"] >= 36
    assert d.get("id") is None, "no fixed id: Grafana assigns it on import"
    variables = {v["name"]: v for v in d["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    ns = variables["namespace"]
    assert ns["type"] == "query" and ns["datasource"]["uid"] == "${datasource}"
    assert ns["current"]["value"] == "sms-app"
    assert re.fullmatch(r"label_values\(.+, *namespace\)", variable_query(ns))

    ids = [p["id"] for p in d["panels"]]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    graphs = [p for p in d["panels"] if p["type"] != "row"]
    assert len(graphs) >= 8
    for p in graphs:
        where = f"{path.name}: {p['title']}"
        assert p["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, where
        assert p["fieldConfig"]["defaults"].get("unit"), f"{where}: no unit"
        assert p.get("description"), f"{where}: no description"
        assert p["options"]["legend"]["showLegend"] is True, f"{where}: legend hidden"
        assert {"h", "w", "x", "y"} <= set(p["gridPos"]), where
        assert p["targets"], f"{where}: no query"
        for t in p["targets"]:
            assert t["datasource"]["uid"] == "${datasource}", where
            legend = t.get("legendFormat", "")
            assert legend and legend != "__auto", f"{where} {t['refId']}: no legend"
            # every selector is restricted to the dashboard's namespace (but a constant a
            # rule records, such as an SLO's error budget, has no namespace to filter by)
            for name, matchers in promql_names(t["expr"])["metrics"].items():
                # the app counts no scrape or probe in its request series: no route to leave out
                assert "route" not in {label for label, _, _ in matchers}, f"{where}: {name} selects routes"
                if name in constant_series():
                    continue
                assert ("namespace", "=", "$namespace") in matchers, (
                    f"{where}: {name} is not filtered by namespace=\"$namespace\"")
            # a legend can only name labels the query keeps
            kept = promql_names(t["expr"])["grouping"] - {"le"}
            for label in re.findall(r"\{\{\s*(\w+)\s*\}\}", legend):
                assert not kept or label in kept, f"{where}: legend {{{{{label}}}}} not in by ({kept})"


def test_operational_dashboard_panels():
    d = load(ROOT / "grafana" / "dashboards" / "operational.json")
    exprs = " ".join(t["expr"] for p in d["panels"] for t in p.get("targets", []))
    for metric in ("sms_requests_total", "sms_active_requests", "sms_request_latency_seconds_bucket",
                   "sms_model_predictions_total", "sms_model_inference_seconds_bucket",
                   "sms_model_inflight_requests"):
        assert metric in exprs, metric
    for q in ("0.5", "0.95", "0.99"):
        assert f"histogram_quantile({q}, sum by (version, le)" in exprs, q
        assert f"histogram_quantile({q}, sum by (version, source, le)" in exprs, q
    assert 'status=~"5.."' in exprs


def test_experiment_dashboard_panels():
    d = load(ROOT / "grafana" / "dashboards" / "experiment.json")
    titles = {p["title"] for p in d["panels"]}
    for t in ("Throughput", "Error %", "p95 response time", "Cache hit ratio", "Model calls",
              "Guess agreement rate", "Prediction rate", "Spam share", "Inference latency p95"):
        assert t in titles, t
    exprs = " ".join(t["expr"] for p in d["panels"] for t in p.get("targets", []))
    assert 'source="app"' in exprs and 'source="shadow"' in exprs


def test_alert_threshold_stripping_used_by_the_prometheus_test():
    """test_3 runs each alert expression without its threshold; check that cut on known answers."""
    from harness import data_queries
    assert data_queries("sum by (namespace) (rate(x[1m])) * 60 > 15") == [
        "sum by (namespace) (rate(x[1m])) * 60"]
    assert data_queries('(max by (namespace) (up{job="a"}) == 0)\nor\n(count(up) unless on (namespace) count(up{pod=~"s-.*"}))') == [
        'max by (namespace) (up{job="a"})', "count(up)", 'count(up{pod=~"s-.*"})']
    assert data_queries('(a or b * 0) / b > 0.05') == ["(a or b * 0) / b"]
    # Sloth's burn-rate alerts compare inside the aggregation, against a product
    assert data_queries('(\n  max(r5m{s="a"} > (14.4 * 0.001)) without (w)\n  and\n  max(r1h{s="a"} > (14.4 * 0.001)) without (w)\n)\nor\n'
                        '(max(r30m > (6 * 0.0009999999999999432)) without (w) and max(r6h > (6 * 0.001)) without (w))') == [
        'max(r5m{s="a"}) without (w)', 'max(r1h{s="a"}) without (w)', "max(r30m) without (w)", "max(r6h) without (w)"]
    for g in yaml.safe_load(RULES.read_text())["groups"]:
        for r in g["rules"]:
            for q in data_queries(r["expr"]):
                assert not re.search(r"(>|<|==)\s*[0-9.]+\s*$", q), (r["alert"], q)
