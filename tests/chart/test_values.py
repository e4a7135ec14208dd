"""values.yaml, values.schema.json and the template checks: nonsense is refused with a
message naming the value; helm lint is clean."""

from __future__ import annotations

import json

import helm_python as helm
import pytest
import yaml

from conftest import CHART, SCENARIOS, parse_set, render_error


@pytest.mark.parametrize("expr,needles", [
    ("istio.canary.weights.stable=80",
     ["istio.canary.weights.stable (80)", "istio.canary.weights.canary (10)", "must add up to 100"]),
    ("istio.canary.weights.stable=50,istio.canary.weights.canary=60",
     ["istio.canary.weights.stable (50)", "istio.canary.weights.canary (60)", "must add up to 100"]),
    ("istio.canary.weights.canary=-5", ["/istio/canary/weights/canary", "minimum", "-5"]),
    ("istio.canary.weights.stable=101,istio.canary.weights.canary=-1", ["/istio/canary/weights/stable", "maximum"]),
    ("modelService.shadow.mirror.percent=150", ["/modelService/shadow/mirror/percent", "maximum", "150"]),
    ("modelService.shadow.mirror.percent=-1", ["/modelService/shadow/mirror/percent", "minimum"]),
    ("modelService.shadow.mirror.percent=100.5", ["/modelService/shadow/mirror/percent", "100.5"]),
    ("modelService.shadow.mirror.percent=lots", ["/modelService/shadow/mirror/percent", "lots"]),
    ("istio.canary.weights.canary=ten", ["/istio/canary/weights/canary", "string"]),
    ("istio.canary.stickyCookie.ttl=soon", ["/istio/canary/stickyCookie/ttl", "soon"]),
    ("istio.canary.stickyCookie.name=a;b", ["/istio/canary/stickyCookie/name"]),
    ("istio.hosts={Not A Host}", ["/istio/hosts/0"]),
    ("istio.canary.wieghts.stable=90", ["additional properties 'wieghts'"]),
    ("appService.canary.version=v1", ["appService.canary.version", "must differ"]),
    ("istio.podAffinityCookie=sms-app-version", ["istio.podAffinityCookie", "sms-app-version"]),
    ("alerting.enabled=true", ["alerting.smtp.existingSecret", "alerting.smtp.password"]),
    ("modelService.modelStorage.hostPath=models", ["/modelService/modelStorage/hostPath"]),
    ("image.pullPolicy=Sometimes", ["/image/pullPolicy"]),
    ("tracing.otlpEndpoint=collector:4317", ["/tracing/otlpEndpoint"]),
    ("flagger.thresholds.guessAgreementGap=2", ["/flagger/thresholds/guessAgreementGap"]),
    ("flagger.thresholds.errorShareIncrease=a-little", ["/flagger/thresholds/errorShareIncrease", "a-little"]),
    ("flagger.analysis.interval=soon", ["/flagger/analysis/interval", "soon"]),
    ("flagger.analysis.maxWeight=120", ["/flagger/analysis/maxWeight", "maximum"]),
    ("flagger.prometheusAddress=prometheus:9090", ["/flagger/prometheusAddress"]),
    ("flagger.enabled=true,istio.enabled=false", ["flagger.enabled needs istio.enabled"]),
])
def test_nonsense_is_refused_naming_the_value(expr, needles):
    message = render_error(parse_set(expr))
    for needle in needles:
        assert needle in message, f"{expr}: {needle!r} not in {message!r}"


def test_rollback_weights_are_accepted():
    from conftest import render

    render(parse_set("istio.canary.weights.stable=100,istio.canary.weights.canary=0"), tag="rollback-ok")
    render(parse_set("istio.canary.weights.stable=0,istio.canary.weights.canary=100"), tag="promote")


def lint_findings(report):
    return [m for m in report["messages"] if m["severity"] >= 2] + list(report["errors"])


def test_helm_lint_is_clean():
    report = helm.lint(CHART)
    assert report["total_charts_linted"] == 1
    assert not lint_findings(report), report
    strict = helm.lint(CHART, strict=True, namespace="sms-app", kube_version="v1.32.0")
    assert not lint_findings(strict), strict


@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_helm_lint_is_clean_for_every_scenario(name):
    report = helm.lint(CHART, parse_set(SCENARIOS[name]), strict=True, namespace="sms-app")
    assert not lint_findings(report), report


def test_every_value_is_documented_and_in_the_schema():
    """Each leaf of values.yaml has a comment above it or its parent, and the schema
    knows every key (it refuses unknown ones)."""
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    schema = json.loads((CHART / "values.schema.json").read_text())

    def walk(v, s, path):
        if isinstance(v, dict) and s.get("type") == "object" and s.get("properties"):
            for k, sub in v.items():
                assert k in s["properties"], f"{path}{k} missing from values.schema.json"
                walk(sub, s["properties"][k], f"{path}{k}.")

    walk(values, schema, "")
    text = (CHART / "values.yaml").read_text().splitlines()
    for i, line in enumerate(text):
        stripped = line.strip()
        if not stripped or stripped.startswith("#") or stripped.startswith("-"):
            continue
        # a key line: a comment right above it, or above an enclosing block
        j = i - 1
        indent = len(line) - len(line.lstrip())
        documented = False
        while j >= 0:
            prev = text[j]
            p = prev.strip()
            pind = len(prev) - len(prev.lstrip())
            if p.startswith("#") and pind <= indent:
                documented = True
                break
            if p and not p.startswith("#") and pind < indent:
                indent = pind  # go up to the parent key
            if p == "" and pind == 0 and indent == 0:
                break
            j -= 1
        assert documented, f"values.yaml line {i + 1} has no comment: {line}"


def test_seed_value_names_exist():
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    assert values["istio"]["canary"]["weights"] == {"stable": 90, "canary": 10}
    assert values["istio"]["canary"]["stickyCookie"] == {"enabled": True, "name": "sms-app-version", "ttl": "3600s"}
    assert values["modelService"]["shadow"]["mirror"]["percent"] == 25
    assert values["istio"]["hosts"] == ["sms-istio.local"]


def test_chart_metadata():
    meta = yaml.safe_load((CHART / "Chart.yaml").read_text())
    assert meta["name"] == "sms-app" and meta["appVersion"] == "0.1.0" and meta["apiVersion"] == "v2"
    assert (CHART / "templates" / "NOTES.txt").exists() and (CHART / ".helmignore").exists()


def _merge(a: dict, b: dict) -> dict:
    for k, v in b.items():
        a[k] = _merge(a.get(k, {}), v) if isinstance(v, dict) and isinstance(a.get(k), dict) else v
    return a


def doc_examples():
    """Every `$U --set ...` example of docs/helm.md, as the argument list a shell gives helm."""
    import re

    from conftest import ROOT

    for line in (ROOT / "docs" / "helm.md").read_text().splitlines():
        for span in re.findall(r"`(\$U [^`]+)`", line):
            yield span


@pytest.mark.parametrize("example", list(doc_examples()))
def test_every_documented_set_example_renders(example):
    """The README's `helm upgrade --set` examples are accepted by the chart as written."""
    import shlex

    from conftest import render

    args = shlex.split(example.replace('"$SMTP_PASSWORD"', "example-password").replace("<64 hex>", "a" * 64))[1:]
    values: dict = {}
    it = iter(args)
    for arg in it:
        if arg == "--set":
            values = _merge(values, helm.parse_set_string(next(it)))
        elif arg == "--set-string":
            values = _merge(values, helm.parse_set_string_values(next(it)))
        else:
            raise AssertionError(f"unexpected argument {arg!r} in {example!r}")
    render(values, tag="doc-example")
