"""The optional Flagger automation (flagger.enabled): the Canary and MetricTemplates
validate against Flagger's own CRD schema (artifacts/flagger/crd.yaml of Flagger's Go
module, fetched by run.sh), carry the chart's settings, leave Flagger the objects it
owns, and the MetricTemplates' queries, filled in as Flagger does, give the decision
rule's figures on a real Prometheus engine (promtool)."""

from __future__ import annotations

import copy
import os
import shutil
import subprocess

import jsonschema
import pytest
import yaml

from conftest import crd_schemas, parse_set, render, render_error, schema_errors

FLAGGER_GROUP = "flagger.app/"


@pytest.fixture(scope="session")
def flagger_schemas() -> dict[tuple[str, str], jsonschema.protocols.Validator]:
    schemas = crd_schemas("FLAGGER_CRD", "FLAGGER_MODULE")
    assert {("flagger.app/v1beta1", "Canary"), ("flagger.app/v1beta1", "MetricTemplate")} <= set(schemas)
    return schemas


def flagger_docs(r) -> list[dict]:
    return [d for d in r.docs if d["apiVersion"].startswith(FLAGGER_GROUP)]


def test_canary_and_metric_templates_validate_against_flaggers_crd(scenario, flagger_schemas):
    docs = flagger_docs(scenario("flagger"))
    assert sorted(d["kind"] for d in docs) == ["Canary"] + ["MetricTemplate"] * 3
    for doc in docs:
        assert schema_errors(flagger_schemas, doc) == [], doc["metadata"]["name"]


@pytest.mark.parametrize("breakage,where", [
    (lambda c: c["spec"]["analysis"]["sessionAffinity"].pop("cookieName"), "cookieName"),
    (lambda c: c["spec"]["analysis"]["metrics"][0]["thresholdRange"].update(max="0.1%"), "thresholdRange"),
    (lambda c: c["spec"]["analysis"].update(stepWeigth=10), "stepWeigth"),
    (lambda c: c["spec"].pop("targetRef"), "targetRef"),
])
def test_flaggers_schema_refuses_a_broken_canary(scenario, flagger_schemas, breakage, where):
    (canary,) = scenario("flagger").all("Canary")
    broken = copy.deepcopy(canary)
    breakage(broken)
    errors = schema_errors(flagger_schemas, broken)
    assert errors and where in " ".join(errors), errors


def test_flaggers_schema_refuses_an_unknown_metrics_provider(scenario, flagger_schemas):
    template = copy.deepcopy(scenario("flagger").all("MetricTemplate")[0])
    template["spec"]["provider"]["type"] = "promql"
    assert any("promql" in e for e in schema_errors(flagger_schemas, template))


def test_canary_uses_the_charts_names_cookie_and_decision_rule(scenario):
    r = scenario("flagger")
    (canary,) = r.all("Canary")
    spec = canary["spec"]
    assert spec["provider"] == "istio"
    assert spec["targetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "sms-app-app"}
    r.get("Deployment", "sms-app-app")
    svc = spec["service"]
    assert svc["gateways"] == [r.get("Gateway", "sms-app-gateway")["metadata"]["name"]]
    assert svc["hosts"] == ["sms-istio.local"]
    assert (svc["port"], svc["targetPort"]) == (8080, "http")
    # Flagger's DestinationRules close idle connections before the app does, as the chart's.
    assert svc["trafficPolicy"] == {"connectionPool": {"http": {"idleTimeout": "25s"}}}
    assert spec["analysis"]["sessionAffinity"] == {"cookieName": "sms-app-version", "maxAge": 3600}
    templates = {t["metadata"]["name"]: t for t in r.all("MetricTemplate")}
    limits = {}
    for metric in spec["analysis"]["metrics"]:
        ref = metric["templateRef"]
        assert ref["namespace"] == "sms-app" and ref["name"] in templates, ref
        limits[metric["name"]] = metric["thresholdRange"]
    # docs/experiment.md: error share at most +0.5 point, p95 not higher, guess agreement within 2 points (experiment/src/rules/thresholds.rs)
    assert limits == {"error-share-increase": {"max": 0.005}, "latency-p95-increase": {"max": 0},
                      "guess-agreement-gap": {"max": 0.02}}
    for t in templates.values():
        assert t["spec"]["provider"] == {"type": "prometheus",
                                         "address": "http://kube-prometheus-stack-prometheus.monitoring:9090"}


def test_canary_follows_the_values():
    r = render(parse_set("flagger.enabled=true,istio.canary.stickyCookie.name=ab,istio.canary.stickyCookie.ttl=2h,"
                         "flagger.thresholds.guessAgreementGap=0.05,flagger.analysis.interval=2m,"
                         "flagger.analysis.maxWeight=30,istio.hosts[0]=spam.example.org"), tag="flagger-values")
    (canary,) = r.all("Canary")
    analysis = canary["spec"]["analysis"]
    assert analysis["sessionAffinity"] == {"cookieName": "ab", "maxAge": 7200}
    assert analysis["interval"] == "2m" and analysis["maxWeight"] == 30
    assert {m["name"]: m["thresholdRange"]["max"] for m in analysis["metrics"]}["guess-agreement-gap"] == 0.05
    assert all(m["interval"] == "2m" for m in analysis["metrics"])
    assert canary["spec"]["service"]["hosts"] == ["spam.example.org"]


def flagger_primary(deployment: dict) -> dict:
    """The primary Deployment Flagger derives from the target (its makePrimaryLabels: the
    selector label `app` gets the suffix -primary, every other label is kept)."""
    primary = copy.deepcopy(deployment)
    primary["metadata"]["name"] += "-primary"
    labels = primary["spec"]["template"]["metadata"]["labels"]
    labels["app"] += "-primary"
    primary["spec"]["selector"]["matchLabels"] = {"app": labels["app"]}
    return primary


def selects(selector: dict, deployment: dict) -> bool:
    return selector.items() <= deployment["spec"]["template"]["metadata"]["labels"].items()


def test_with_flagger_the_chart_leaves_flagger_its_objects(scenario):
    """Flagger owns the canary Deployment, the app's VirtualService and DestinationRules and
    the Services it names after spec.service.name: the chart renders none of them, while
    the objects that must see every app pod (metrics) or only the primary (NGINX, PDB) do."""
    r, before = scenario("flagger"), scenario("defaults")
    assert before.find("Deployment", "sms-app-app-canary") and not r.find("Deployment", "sms-app-app-canary")
    assert r.names("VirtualService") == before.names("VirtualService") - {"sms-app-vs"}  # the model's mirror stays
    assert not [vs for vs in r.all("VirtualService") if set(vs["spec"].get("gateways", [])) & {"sms-app-gateway"}]
    assert not [dr for dr in r.all("DestinationRule") if dr["spec"]["host"] == "sms-app-app"]
    apex = r.get("Canary", "sms-app-app")["spec"]["service"]["name"]
    assert not r.names("Service") & {apex, f"{apex}-primary", f"{apex}-canary"}

    target = r.get("Deployment", "sms-app-app")
    assert target["spec"]["selector"]["matchLabels"]["app"] == "sms-app-app"
    assert "version" not in target["spec"]["selector"]["matchLabels"]  # a new version is a new revision
    assert target["spec"]["template"]["metadata"]["labels"]["version"] == "v1"
    primary = flagger_primary(target)
    metrics_svc = r.get("Service", "sms-app-app")
    assert selects(metrics_svc["spec"]["selector"], target) and selects(metrics_svc["spec"]["selector"], primary)
    stable = r.get("Service", "sms-app-app-stable")["spec"]["selector"]
    assert selects(stable, primary) and not selects(stable, target)
    pdb = r.get("PodDisruptionBudget", "sms-app-app")["spec"]["selector"]["matchLabels"]
    assert selects(pdb, primary) and not selects(pdb, target)
    # the rest of the release is as without Flagger
    for kind in ("Gateway", "PrometheusRule", "ServiceMonitor"):
        assert r.names(kind) == before.names(kind), kind
    assert r.get("Deployment", "sms-app-model") == before.get("Deployment", "sms-app-model")


def test_flagger_off_by_default_and_without_it_the_chart_runs_the_canary(all_scenarios):
    for name, r in all_scenarios.items():
        if not name.startswith("flagger"):
            assert not flagger_docs(r), name
    defaults = all_scenarios["defaults"]
    assert defaults.get("Deployment", "sms-app-app")["spec"]["selector"]["matchLabels"]["version"] == "v1"
    assert "app" not in defaults.get("Deployment", "sms-app-app")["spec"]["selector"]["matchLabels"]


def test_notes_say_flagger_runs_the_canary(scenario):
    notes = scenario("flagger").notes
    assert "kubectl -n sms-app get canary sms-app-app -w" in notes
    assert "istio.canary.weights" not in notes and "canary.sms-istio.local" not in notes


def test_flagger_needs_istio():
    assert "flagger.enabled needs istio.enabled" in render_error({"flagger": {"enabled": True},
                                                                   "istio": {"enabled": False}})


# --- the MetricTemplates' queries on a real Prometheus engine (promtool)


def flagger_render(query: str, namespace: str, target: str, interval: str) -> str:
    """What Flagger's RenderQuery makes of a query: its template functions
    {{ namespace }}, {{ target }}, {{ interval }} replaced; anything else fails, as there."""
    out = query
    for name, value in {"namespace": namespace, "target": target, "interval": interval}.items():
        out = out.replace(f"{{{{ {name} }}}}", value)
    assert "{{" not in out, out
    return out


def test_metric_templates_give_the_decision_rules_figures(scenario, tmp_path):
    promtool = os.environ.get("PROMTOOL") or shutil.which("promtool")
    assert promtool, "promtool is not installed (tests/chart/run.sh installs the prometheus package)"
    r = scenario("flagger")
    queries = {t["metadata"]["name"].removeprefix("sms-app-"): flagger_render(t["spec"]["query"], "sms-app", "sms-app-app", "1m")
               for t in r.all("MetricTemplate")}
    canary, primary = "sms-app-app-7d9f8c6b5-a1b2c", "sms-app-app-primary-6c8d7f9b4-x9y8z"

    def s(metric, pod, values, **labels):
        labels = {"namespace": "sms-app", "job": "sms-app-app", "pod": pod, **labels}
        body = ",".join(f'{k}="{v}"' for k, v in labels.items())
        return {"series": f"{metric}{{{body}}}", "values": values}

    post = {"method": "POST", "route": "/sms/"}
    series = [
        # error share: canary 5 of 100 are 5xx, primary 1 of 100 -> +0.04
        s("sms_requests_total", canary, "0+95x40", status="200", **post),
        s("sms_requests_total", canary, "0+5x40", status="503", **post),
        s("sms_requests_total", primary, "0+99x40", status="200", **post),
        s("sms_requests_total", primary, "0+1x40", status="500", **post),
        # p95: canary's requests take 50-100 ms (p95 0.0975 s), primary's under 50 ms
        # (0.0475 s) -> +0.05
        s("sms_request_latency_seconds_bucket", canary, "0+0x40", le="0.05", **post),
        s("sms_request_latency_seconds_bucket", canary, "0+10x40", le="0.1", **post),
        s("sms_request_latency_seconds_bucket", canary, "0+10x40", le="+Inf", **post),
        s("sms_request_latency_seconds_bucket", primary, "0+10x40", le="0.05", **post),
        s("sms_request_latency_seconds_bucket", primary, "0+10x40", le="0.1", **post),
        s("sms_request_latency_seconds_bucket", primary, "0+10x40", le="+Inf", **post),
        # guess agreement: canary 90 %, primary 95 % -> gap 0.05
        s("sms_guesses_total", canary, "0+9x40", agreement="agree"),
        s("sms_guesses_total", canary, "0+1x40", agreement="disagree"),
        s("sms_guesses_total", primary, "0+19x40", agreement="agree"),
        s("sms_guesses_total", primary, "0+1x40", agreement="disagree"),
    ]
    no_errors = [x for x in series if "sms_requests_total" in x["series"] and 'status="200"' in x["series"]]
    want = {"error-share-increase": 0.04, "latency-p95-increase": 0.05, "guess-agreement-gap": 0.05}
    assert set(queries) == set(want)
    tests = {"rule_files": ["empty.rules.yml"], "evaluation_interval": "15s", "tests": [
        {"interval": "15s", "input_series": series, "promql_expr_test": [
            {"expr": f"round({queries[name]}, 0.0001)", "eval_time": "10m", "exp_samples": [{"labels": "{}", "value": value}]}
            for name, value in want.items()]},
        # traffic without any 5xx: the increase is 0 (a figure Flagger can judge), not "no data"
        {"interval": "15s", "input_series": no_errors, "promql_expr_test": [
            {"expr": queries["error-share-increase"], "eval_time": "10m", "exp_samples": [{"labels": "{}", "value": 0}]}]},
    ]}
    (tmp_path / "empty.rules.yml").write_text("groups: []\n")
    (tmp_path / "flagger.test.yml").write_text(yaml.safe_dump(tests, width=10_000))
    proc = subprocess.run([promtool, "test", "rules", "flagger.test.yml"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and "SUCCESS" in proc.stdout, proc.stdout + proc.stderr


def test_the_experiments_gate_adds_flaggers_webhooks_only_when_set(flagger_schemas):
    """flagger.gate.url: the Canary calls sms-experiment serve (docs/experiment.md, "Flagger's
    gate") for the three hooks its verdict decides, at the paths the gate serves."""
    r = render(parse_set("flagger.enabled=true,flagger.gate.url=http://sms-experiment.sms-app:9810/,"
                         "flagger.gate.timeout=15s"), tag="flagger-gate")
    canary = r.get("Canary", "sms-app-app")
    assert schema_errors(flagger_schemas, canary) == []
    hooks = {h["type"]: h for h in canary["spec"]["analysis"]["webhooks"]}
    assert set(hooks) == {"rollout", "rollback", "confirm-promotion"}
    for kind, hook in hooks.items():
        assert hook["url"] == f"http://sms-experiment.sms-app:9810/webhooks/{kind}"
        assert hook["timeout"] == "15s"
    assert len(canary["spec"]["analysis"]["metrics"]) == 3, "the metrics still run next to the gate"
    (plain,) = render(parse_set("flagger.enabled=true"), tag="flagger-no-gate").all("Canary")
    assert "webhooks" not in plain["spec"]["analysis"]
    assert "flagger/gate/url" in render_error(parse_set("flagger.enabled=true,flagger.gate.url=sms-experiment:9810"))


def test_with_flagger_the_apps_pre_stop_hook_survives_flaggers_copy():
    """Flagger v1.36.1 copies the app Deployment to <app>-primary with Kubernetes' v0.27
    API types, which have no `preStop.sleep`: the copy loses the action and the API server
    refuses it ("lifecycle.preStop: Required value: must specify a handler type", seen on
    the local cluster). With Flagger the hook is an exec of the app binary, which those
    types keep; without it, the plain sleep action."""
    with_flagger = render(parse_set("flagger.enabled=true"), tag="flagger-prestop")
    (c,) = with_flagger.get("Deployment", "sms-app-app")["spec"]["template"]["spec"]["containers"]
    assert c["lifecycle"]["preStop"] == {
        "exec": {"command": ["/usr/local/bin/app-service", "pre-stop-delay", "5"]}}, c["lifecycle"]
    without = render({}, tag="no-flagger-prestop")
    (c,) = without.get("Deployment", "sms-app-app")["spec"]["template"]["spec"]["containers"]
    assert c["lifecycle"]["preStop"] == {"sleep": {"seconds": 5}}
