"""ServiceMonitors, the PrometheusRule and dashboard ConfigMaps built from grafana/
(one source of truth, through the helm/files/grafana link), and the AlertmanagerConfig."""

from __future__ import annotations

import base64
import json
import os
import re

import yaml

from conftest import CHART, GRAFANA, parse_set, render, render_error


def dashboards():
    return sorted((GRAFANA / "dashboards").glob("*.json"))


def rule_files():
    return sorted((GRAFANA / "rules").glob("*.rules.yml"))


def test_grafana_files_come_through_the_link_not_a_copy():
    link = CHART / "files" / "grafana"
    assert link.is_symlink(), "helm/files/grafana must be a link to ../../grafana"
    assert os.readlink(link) == "../../grafana"
    assert link.resolve() == GRAFANA.resolve()
    copies = [p for p in (CHART / "files").rglob("*") if p.is_file() and not str(p).startswith(str(link))]
    assert not copies, f"files copied into the chart: {copies}"


def test_service_monitors(scenario):
    r = scenario("defaults")
    for name, port, component in (("sms-app-app", "http", "app"), ("sms-app-model", "http-metrics", "model")):
        sm = r.get("ServiceMonitor", name)
        assert sm["metadata"]["labels"]["release"] == "kube-prometheus-stack"
        assert sm["spec"]["namespaceSelector"] == {"matchNames": ["sms-app"]}
        (ep,) = sm["spec"]["endpoints"]
        assert ep["port"] == port and ep["path"] == "/metrics" and ep["interval"] == "15s"
        # It selects exactly one Service, which has that port (no duplicate targets
        # through the -stable or -headless Services).
        selected = [s for s in r.all("Service")
                    if sm["spec"]["selector"]["matchLabels"].items() <= s["metadata"]["labels"].items()]
        assert [s["metadata"]["name"] for s in selected] == [name]
        assert port in [p["name"] for p in selected[0]["spec"]["ports"]]
        assert selected[0]["spec"]["selector"]["app.kubernetes.io/component"] == component


def test_the_gateways_answers_for_this_release_are_scraped(scenario):
    pm = scenario("defaults").get("PodMonitor", "sms-app-gateway")
    assert pm["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    assert pm["spec"]["namespaceSelector"] == {"matchNames": ["istio-system"]}
    # The pods the chart's Gateway runs on.
    gateway = scenario("defaults").get("Gateway", "sms-app-gateway")
    assert pm["spec"]["selector"]["matchLabels"] == gateway["spec"]["selector"] == {"istio": "ingressgateway"}
    (ep,) = pm["spec"]["podMetricsEndpoints"]
    assert (ep["port"], ep["path"], ep["interval"]) == ("http-envoy-prom", "/stats/prometheus", "15s")
    # Bounded: only istio_requests_total to this release's app Service in its namespace.
    (keep,) = ep["metricRelabelings"]
    assert keep == {"sourceLabels": ["__name__", "destination_service_namespace", "destination_service_name"],
                    "regex": "istio_requests_total;sms-app;sms-app-app", "action": "keep"}

    # A gateway with a stock Envoy (no Istio stats): its per-subset answer counts of this
    # release's app only, renamed from Istio's bootstrap tags to the names the rules read
    # (a real Prometheus applies them in tests/cluster/test_prometheus.py).
    r = render(parse_set("monitoring.gateway.metric=envoy_cluster_upstream_rq_xx"), release="exp", tag="gateway-envoy")
    rules = r.get("PodMonitor", "exp-sms-app-gateway")["spec"]["podMetricsEndpoints"][0]["metricRelabelings"]
    assert [x.get("targetLabel") or x["action"] for x in rules] == [
        "__name__", "envoy_cluster_name", "envoy_response_code_class", "labeldrop", "keep"], rules
    keep = rules[-1]
    assert keep["sourceLabels"] == ["__name__", "envoy_cluster_name"]
    kept = lambda cluster: re.fullmatch(keep["regex"], f"envoy_cluster_upstream_rq_xx;{cluster}")  # noqa: E731
    assert kept("outbound|8080|v1|exp-sms-app-app.sms-app.svc.cluster.local")
    assert kept("outbound|8080|v2|exp-sms-app-app.sms-app.svc.cluster.local")
    assert not kept("outbound|8080|v1|sms-app-app.sms-app.svc.cluster.local")  # another release's app
    assert not kept("outbound|8081|v1|exp-sms-app-model.sms-app.svc.cluster.local")
    assert re.fullmatch(rules[0]["regex"], "envoy_cluster_upstream_rq;5xx")
    assert "value must be one of 'istio_requests_total', 'envoy_cluster_upstream_rq_xx'" in render_error(
        parse_set("monitoring.gateway.metric=requests"))

    r = render(parse_set("monitoring.gateway.namespace=ingress,istio.gateway.selector.app=gw"), tag="gateway-ns")
    pm = r.get("PodMonitor", "sms-app-gateway")
    assert pm["spec"]["namespaceSelector"] == {"matchNames": ["ingress"]}
    assert pm["spec"]["selector"]["matchLabels"] == {"istio": "ingressgateway", "app": "gw"}
    for off in ("monitoring.gateway.enabled=false", "istio.enabled=false"):
        assert "PodMonitor" not in {d["kind"] for d in render(parse_set(off), tag="gateway-off").docs}, off


def test_release_label_is_configurable():
    r = render(parse_set("monitoring.labels.release=prom"), tag="release-label")
    for sm in r.all("ServiceMonitor") + r.all("PrometheusRule"):
        assert sm["metadata"]["labels"]["release"] == "prom"


def test_prometheus_rule_is_the_rules_file(scenario):
    r = scenario("defaults")
    files = rule_files()
    if not files:
        assert not r.all("PrometheusRule")
        return
    want = [g for f in files for g in (yaml.safe_load(f.read_text()) or {}).get("groups", [])]
    pr = r.get("PrometheusRule", "sms-app-rules")
    assert pr["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    assert pr["spec"]["groups"] == want
    assert want, "the rules file has no groups"


def test_alert_hold_times_can_be_tuned_by_name():
    """`alertFor` replaces the `for` of exactly the alerts it names; every other rule stays
    the file's; a name no rule alerts as (a typo) is refused, naming the chart's alerts."""
    want = [g for f in rule_files() for g in (yaml.safe_load(f.read_text()) or {}).get("groups", [])]
    r = render(parse_set("monitoring.prometheusRule.alertFor.PredictionDrift=2h"), tag="alert-for")
    got = r.get("PrometheusRule", "sms-app-rules")["spec"]["groups"]
    changed = [(g["name"], rule["alert"]) for g, w in zip(got, want) for rule, was in zip(g["rules"], w["rules"])
               if rule != was]
    assert changed == [("sms-drift.alerts", "PredictionDrift")], changed
    drift = next(rule for g in got for rule in g["rules"] if rule.get("alert") == "PredictionDrift")
    assert drift["for"] == "2h"

    err = render_error(parse_set("monitoring.prometheusRule.alertFor.PredictionDrfit=2h"))
    assert 'alertFor names "PredictionDrfit", which no rule of the chart alerts as' in err, err
    assert "PredictionDrift" in err.split("its alerts:")[1], err
    err = render_error(parse_set("monitoring.prometheusRule.alertFor.PredictionDrift=soon"))
    assert "alertFor" in err and "soon" in err, err


def test_dashboard_config_maps_are_the_dashboard_files(scenario):
    r = scenario("defaults")
    cms = [c for c in r.all("ConfigMap") if c["metadata"].get("labels", {}).get("grafana_dashboard") == "1"]
    files = dashboards()
    assert len(cms) == len(files)
    by_key = {k: v for c in cms for k, v in c["data"].items()}
    for f in files:
        assert json.loads(by_key[f.name]) == json.loads(f.read_text()), f.name
    for c in cms:
        assert c["metadata"]["name"].startswith("sms-app-dashboard-")
        assert c["metadata"]["annotations"]["grafana_folder"] == "SMS app"


def test_dashboards_can_go_to_grafanas_namespace():
    r = render(parse_set("monitoring.dashboards.namespace=monitoring"), tag="dashboards-ns")
    cms = [c for c in r.all("ConfigMap") if "grafana_dashboard" in c["metadata"].get("labels", {})]
    assert len(cms) == len(dashboards())
    assert all(c["metadata"]["namespace"] == "monitoring" for c in cms)


def test_monitoring_off_renders_no_monitoring_objects(scenario):
    r = scenario("everything-off")
    kinds = {d["kind"] for d in r.docs}
    assert not kinds & {"ServiceMonitor", "PodMonitor", "PrometheusRule", "AlertmanagerConfig"}
    assert not [c for c in r.all("ConfigMap") if "grafana_dashboard" in c["metadata"].get("labels", {})]


def email_config(r):
    amc = r.get("AlertmanagerConfig", "sms-app-email")
    (receiver,) = amc["spec"]["receivers"]
    assert amc["spec"]["route"]["receiver"] == receiver["name"]
    (email,) = receiver["emailConfigs"]
    return email


def test_alerting_with_an_existing_secret(scenario):
    r = scenario("alerting")
    email = email_config(r)
    assert email["authPassword"] == {"name": "smtp-credentials", "key": "password"}
    assert email["to"] == "ops@sms-app.local" and email["smarthost"] == "smtp.sms-app.local:587"
    assert not r.all("Secret")  # the chart creates none


def test_alerting_with_a_chart_made_secret(scenario):
    r = scenario("alerting-chart-secret")
    email = email_config(r)
    secret = r.get("Secret", "sms-app-smtp")
    assert email["authPassword"] == {"name": "sms-app-smtp", "key": "password"}
    assert base64.b64decode(secret["data"]["password"]).decode() == "not-a-real-password"
    # The password is in the Secret only: no ConfigMap or other object carries it.
    for doc in r.docs:
        if doc["kind"] != "Secret":
            assert "not-a-real-password" not in yaml.safe_dump(doc), doc["kind"]


def test_alerting_is_off_by_default(scenario):
    assert not scenario("defaults").all("AlertmanagerConfig")
    assert not scenario("defaults").all("Secret")


def test_packaged_chart_carries_the_grafana_files(tmp_path):
    """`helm package` follows the files/grafana link: the archive holds real copies of the
    dashboards and rules (and not grafana's promtool tests, nor the dashboards' code), and
    renders the same objects."""
    import helm_python as helm

    from conftest import NAMESPACE, RELEASE

    archive = helm.package(CHART, destination=tmp_path)
    with helm.Chart.load(archive) as chart:
        names = {f["name"] for f in chart.files}
        manifests = chart.render({}, name=RELEASE, namespace=NAMESPACE)
    for f in dashboards() + rule_files():
        assert f"files/grafana/{f.parent.name}/{f.name}" in names
    assert not [n for n in names if n.endswith(".test.yml")]
    assert not [n for n in names if n.startswith("files/grafana/dashboards/src/")]
    docs = [d for k, v in manifests.items() if not k.endswith("NOTES.txt") for d in yaml.safe_load_all(v) if d]
    assert sum(1 for d in docs if d["kind"] == "ConfigMap" and "grafana_dashboard" in d["metadata"].get("labels", {})) \
        == len(dashboards())


def test_notes_warn_about_a_password_given_as_a_value(scenario):
    assert "Helm's release record" in scenario("alerting-chart-secret").notes
    assert "release record" not in scenario("alerting").notes
