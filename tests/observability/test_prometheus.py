"""The real services scraped by a real Prometheus (1 s interval, labels
as the ServiceMonitors add them) while traffic goes through app v1 (no cache) and app v2
(cache) to model v1, and straight to the v2 shadow model. Then EVERY dashboard panel query
and every alert expression must return data, with the version/source series expected."""
import json
import re

import pytest
import requests
import yaml

from harness import (NAMESPACE, ROOT, Load, data_queries, finite, poll, promql_names,
                     require_tool, run, variable_query)

DASHBOARDS = sorted((ROOT / "grafana" / "dashboards").glob("*.json"))
RULES = ROOT / "grafana" / "rules" / "sms-app.rules.yml"

# What the test stack runs: app versions, and the model (version, source) pairs.
APP_SERIES = [{"version": "v1"}, {"version": "v2"}]
MODEL_SERIES = [{"version": "v1", "source": "app"}, {"version": "v2", "source": "shadow"}]
SEED_QUICK_CHECK = 'sum by (version,source) (rate(sms_model_predictions_total{namespace="sms-app"}[1m]))'


def substitute(expr: str) -> str:
    """Grafana's variables, as Grafana would fill them in for this namespace."""
    out = (expr.replace("${namespace}", NAMESPACE).replace("$namespace", NAMESPACE)
           .replace("$__rate_interval", "1m").replace("${__rate_interval}", "1m"))
    assert "$" not in out, f"unsubstituted variable in {out}"
    return out


def panel_targets():
    for path in DASHBOARDS:
        for panel in json.loads(path.read_text())["panels"]:
            for t in panel.get("targets", []):
                yield pytest.param(panel["title"], t["expr"], t["legendFormat"],
                                   id=f"{path.stem}:{panel['title']}:{t['refId']}")


RULE_FILES = sorted(RULES.parent.glob("*.rules.yml"))


# Alerts on what the proxies count (the ingress gateway's answers), which this stack of
# services without proxies cannot show: each fires on real Envoys in the file named.
PROXY_ALERTS = {"CanaryUnreachable": "tests/cluster/test_dead_canary.py"}


def alert_rules():
    for path in RULE_FILES:
        for g in yaml.safe_load(path.read_text())["groups"]:
            for r in g["rules"]:
                if "alert" in r and r["alert"] not in PROXY_ALERTS:
                    yield pytest.param(r["alert"], r["expr"], id=r["alert"])


def test_proxy_alerts_are_proven_on_real_proxies():
    for alert, test_file in PROXY_ALERTS.items():
        assert alert in (ROOT / test_file).read_text(), f"{alert} is not exercised by {test_file}"


def expected_series(expr: str) -> list[dict]:
    """The version/source combinations a query should show in this stack: model series for
    the model's metrics, app series otherwise, narrowed by the query's own = matchers."""
    metrics = promql_names(expr)["metrics"]
    model = any((re.search(r"(^|:)sms_(model|shadow)_", m) and "sms_model_calls" not in m) for m in metrics)
    combos = MODEL_SERIES if model else APP_SERIES
    if any(re.search(r"(^|:)sms_shadow_", m) for m in metrics):  # only the shadow compares
        combos = [c for c in MODEL_SERIES if c["source"] == "shadow"]
    for matchers in metrics.values():
        for label, op, value in matchers:
            if op == "=" and label in ("version", "source"):
                combos = [c for c in combos if c.get(label, value) == value]
    return combos


def check_result(expr, result, legend=None):
    """None when the result is what the panel needs, else why not."""
    if not result:
        return "no data"
    bad = [s["metric"] for s in result if not finite(s)]
    if bad:
        return f"NaN/Inf values for {bad}"
    seen_labels = {k for s in result for k in s["metric"]} & {"version", "source"}
    if seen_labels:
        want = {tuple(sorted((k, c[k]) for k in seen_labels if k in c)) for c in expected_series(expr)}
        got = {tuple(sorted((k, s["metric"].get(k)) for k in seen_labels)) for s in result}
        if not want <= got:
            return f"series {sorted(want - got)} missing (got {sorted(got)})"
    for label in re.findall(r"\{\{\s*(\w+)\s*\}\}", legend or ""):
        missing = [s["metric"] for s in result if label not in s["metric"]]
        if missing:
            return f"legend label {label!r} missing in {missing}"
    return None


@pytest.fixture(scope="module")
def traffic(stack, prometheus):
    """Bounded background traffic for the whole module (stops at its end or after 4 min)."""
    with Load(stack.traffic_step, pause=0.1, max_seconds=240) as load:
        # data in every rate window: both app versions and both models seen moving
        poll(lambda: len(prometheus.query(SEED_QUICK_CHECK + " > 0")) == 2
             and len(prometheus.query(
                 'sum by (version) (rate(sms_messages_classified_total{namespace="sms-app"}[1m])) > 0')) == 2,
             60, what="traffic to show in Prometheus")
        yield load
    assert not load.errors, f"traffic errors: {load.errors}"


def test_scrape_targets_carry_servicemonitor_labels(prometheus, stack):
    targets = prometheus.api("targets")["activeTargets"]
    assert len(targets) == 4
    for t in targets:
        assert t["health"] == "up", t
        labels = t["labels"]
        assert labels["namespace"] == NAMESPACE
        assert labels["job"] in {"sms-app-app", "sms-app-model"}
        assert labels["pod"].startswith(labels["job"] + "-")


def test_seed_quick_check_returns_both_sources(prometheus, traffic):
    result = prometheus.query(SEED_QUICK_CHECK)
    got = {(s["metric"]["version"], s["metric"]["source"]) for s in result}
    print("seed quick check:", {(s["metric"]["version"], s["metric"]["source"]): s["value"][1] for s in result})
    assert got == {("v1", "app"), ("v2", "shadow")}, result
    assert all(float(s["value"][1]) > 0 for s in result), result


def test_namespace_variable_query(prometheus, traffic):
    d = json.loads(DASHBOARDS[0].read_text())
    (ns,) = [v for v in d["templating"]["list"] if v["name"] == "namespace"]
    m = re.fullmatch(r"label_values\((.+), *(\w+)\)", variable_query(ns))
    values = prometheus.api(f"label/{m.group(2)}/values", **{"match[]": m.group(1)})
    assert NAMESPACE in values


@pytest.mark.parametrize("title,expr,legend", list(panel_targets()))
def test_dashboard_panel_query_returns_expected_series(prometheus, traffic, title, expr, legend):
    q = substitute(expr)
    problem = ["not run"]

    def ok():
        problem[0] = check_result(q, prometheus.query(q), legend)
        return problem[0] is None
    try:
        poll(ok, 45, interval=1, what=title)
    except AssertionError:
        pytest.fail(f"{title}: {problem[0]}\nquery: {q}")
    series = sorted(",".join(f"{k}={v}" for k, v in sorted(s["metric"].items())) for s in prometheus.query(q))
    print(f"{title}: {len(series)} series: {'; '.join(series)}")
    # the panel draws a graph: the same query over a range has points too
    assert prometheus.query_range(q, seconds=20), f"{title}: range query empty: {q}"


@pytest.mark.parametrize("alert,expr", list(alert_rules()))
def test_alert_expression_sees_data(prometheus, traffic, alert, expr):
    queries = data_queries(expr)
    assert queries, expr
    for q in queries:
        def ok(q=q):
            r = prometheus.query(q)
            return r and all(s["metric"].get("namespace") == NAMESPACE and finite(s) for s in r)
        poll(ok, 45, interval=1, what=f"{alert}: data for {' '.join(q.split())}")


def test_shipped_rules_evaluate_cleanly_and_only_high_request_rate_reacts(prometheus, traffic):
    rules = [r for g in prometheus.api("rules")["groups"] for r in g["rules"]]
    names = {r["name"] for r in rules}
    shipped = {r.get("alert") or r["record"] for path in RULE_FILES
               for g in yaml.safe_load(path.read_text())["groups"] for r in g["rules"]}
    assert names == shipped
    for r in rules:
        assert r["health"] == "ok", f"{r['name']}: {r.get('lastError')}"
    # the test traffic is far above 15 classifications a minute: HighRequestRate must be
    # pending (for: 2m) or firing. It is also a handful of fixed texts, half of them spam,
    # nothing like the held-out mix the model cards measured: PredictionDrift must be
    # pending (for: 30m) for both models. A healthy stack must raise nothing else.
    def states():
        return {a["labels"]["alertname"]: a["state"] for a in prometheus.api("alerts")["alerts"]}
    poll(lambda: states().get("HighRequestRate") in {"pending", "firing"}, 30,
         what="HighRequestRate to react to the traffic")
    drifting = lambda: {a["labels"]["version"] for a in prometheus.api("alerts")["alerts"]  # noqa: E731
                        if a["labels"]["alertname"] == "PredictionDrift" and a["state"] == "pending"}
    poll(lambda: drifting() == {"v1", "v2"}, 45, what="PredictionDrift pending for v1 and v2 on the test traffic")
    others = {k: v for k, v in states().items() if k not in {"HighRequestRate", "PredictionDrift"}}
    assert others == {}, f"alerts raised on a healthy stack: {others}"


def test_experiment_signal(prometheus, traffic):
    """The canary's cache shows where the experiment looks: v1 calls the model once per
    classification, v2 (cache on, repeated texts) far less; its cache hit ratio is high."""
    per_class = ('sum by (version) (rate(sms_model_calls_total{namespace="sms-app"}[1m])) / '
                 'sum by (version) (rate(sms_messages_classified_total{namespace="sms-app"}[1m]))')
    got = {}

    def cache_pays():  # the first round of texts misses; repeats then hit
        got.update({s["metric"]["version"]: float(s["value"][1]) for s in prometheus.query(per_class)})
        return got.get("v2", 1) < 0.5
    try:
        poll(cache_pays, 60, interval=1, what="v2's model calls per classification to fall")
    except AssertionError as exc:
        raise AssertionError(f"{exc}: {got}") from None
    print("model calls per classification:", got)
    assert 0.95 <= got["v1"] <= 1.05, got
    hits = prometheus.query('sum by (version) (sms_cache_hits_total{namespace="sms-app"})')
    hits = {s["metric"]["version"]: float(s["value"][1]) for s in hits}
    assert hits.get("v1", 0) == 0 and hits["v2"] > 0, hits


@pytest.mark.parametrize("name", ["app v1", "app v2", "model app", "model shadow"])
def test_promtool_check_metrics_is_silent(stack, traffic, name):
    url = stack.metrics_urls()[name]
    body = requests.get(url, timeout=5).text
    assert "sms_" in body
    res = run([require_tool("promtool"), "check", "metrics"], input=body)
    assert res.returncode == 0 and not (res.stdout + res.stderr).strip(), (
        f"promtool check metrics on {name} {url}:\n{res.stdout}{res.stderr}")
