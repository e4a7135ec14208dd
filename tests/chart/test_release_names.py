"""The alert rules follow the release's own names: rendered under another release name
(or a fullnameOverride) the PrometheusRule selects that release's scrape jobs and pods,
and the dashboards' target panel shows that release's jobs; promtool proves AppServiceDown, ModelServiceDown and ShadowModelDown fire for that
release, and only for it, when two releases share a namespace."""

from __future__ import annotations

import os
import re
import shutil
import subprocess

import pytest
import yaml

from conftest import parse_set, render

# (release name, --set, name prefix the chart derives: sms-app.fullname)
RELEASES = [
    ("other", "", "other-sms-app"),
    ("sms-app-blue", "", "sms-app-blue"),
    ("anything", "fullnameOverride=spam-filter", "spam-filter"),
]
SELECTOR_ALERTS = {"AppServiceDown", "ModelServiceDown", "ShadowModelDown"}


def rules_of(r) -> list[dict]:
    (pr,) = r.all("PrometheusRule")
    return [rule for g in pr["spec"]["groups"] for rule in g["rules"]]


def alert(r, name: str) -> dict:
    (rule,) = [x for x in rules_of(r) if x.get("alert") == name]
    return rule


def scrape_jobs(r) -> dict[str, str]:
    """component -> job name: the operator names a ServiceMonitor's job after the Service it
    selects, so this is the `job` the rules must select."""
    jobs = {}
    for sm in r.all("ServiceMonitor"):
        want = sm["spec"]["selector"]["matchLabels"]
        (svc,) = [s for s in r.all("Service") if want.items() <= s["metadata"]["labels"].items()]
        jobs[sm["metadata"]["labels"]["app.kubernetes.io/component"]] = svc["metadata"]["name"]
    return jobs


@pytest.mark.parametrize("release,sets,prefix", RELEASES)
def test_rules_select_the_releases_own_jobs_and_pods(release, sets, prefix):
    r = render(parse_set(sets), tag=f"release-{release}", release=release)
    jobs = scrape_jobs(r)
    assert jobs == {"app": f"{prefix}-app", "model": f"{prefix}-model"}
    assert f"{prefix}-model" in r.names("Deployment")  # the serving pods are named <Deployment>-...

    app_down = alert(r, "AppServiceDown")["expr"]
    assert f'up{{job="{jobs["app"]}"}}' in app_down, app_down
    model_down = alert(r, "ModelServiceDown")["expr"]
    assert f'job="{jobs["model"]}", pod!~"{prefix}-model-shadow-.*"' in model_down, model_down
    shadow_down = alert(r, "ShadowModelDown")
    assert f'job="{jobs["model"]}", pod=~"{prefix}-model-shadow-.*"' in shadow_down["expr"]
    assert f"get deploy {prefix}-model-shadow" in shadow_down["annotations"]["description"]

    # No rule of this release names another release's objects.
    text = yaml.safe_dump(rules_of(r))
    foreign = [m.group(0) for m in re.finditer(r"[a-z0-9-]*sms-app-(app|model)\b", text)
               if not m.group(0).startswith(prefix + "-")]
    assert not foreign, foreign
    if prefix != "sms-app":
        assert "sms-app-app" not in text.replace(f"{prefix}-app", "")


def test_default_release_keeps_the_files_names(scenario):
    r = scenario("defaults")
    assert 'up{job="sms-app-app"}' in alert(r, "AppServiceDown")["expr"]


@pytest.mark.parametrize("bad", ["Spam_Filter", "9lives", "spam.filter"])
def test_a_name_prefix_that_cannot_name_services_is_refused(bad):
    from conftest import render_error

    assert "must be lower-case letters" in render_error({"fullnameOverride": bad})


# --- promtool: the rendered rules of release `other` evaluated on series shaped like the
# scrape of two releases (`other` and `sms-app`) in the same namespaces.


def promtool() -> str:
    path = os.environ.get("PROMTOOL") or shutil.which("promtool")
    assert path, "promtool is not installed (tests/chart/run.sh installs the prometheus package)"
    return path


def up(ns: str, job: str, pod: str, values: str) -> dict:
    return {"series": f'up{{namespace="{ns}",job="{job}",pod="{pod}"}}', "values": values}


def expected(rule: dict, ns: str) -> dict:
    annotations = {k: v.replace("{{ $labels.namespace }}", ns) for k, v in rule["annotations"].items()}
    assert not any("{{" in v for v in annotations.values()), annotations  # only $labels.namespace used
    return {"exp_labels": {**rule["labels"], "namespace": ns}, "exp_annotations": annotations}


def test_promtool_alerts_fire_for_another_release_name(tmp_path):
    r = render(tag="release-other-promtool", release="other", namespace="shop")
    (pr,) = r.all("PrometheusRule")
    (tmp_path / "other.rules.yml").write_text(yaml.safe_dump({"groups": pr["spec"]["groups"]}))
    o, s = "other-sms-app", "sms-app"
    # shop: release `other` is down everywhere (app, serving model, no shadow target) while
    #       release `sms-app` beside it is up: other's alerts fire.
    # qa:   the reverse: `sms-app` is down, `other` is up: other's alerts stay quiet.
    series = [
        up("shop", f"{o}-app", f"{o}-app-7d9f8c6b5-a1b2c", "0x40"),
        up("shop", f"{o}-model", f"{o}-model-6d4f8b9c7-x1y2z", "0x40"),
        up("shop", f"{s}-app", f"{s}-app-5c7d9e8f6-d3e4f", "1x40"),
        up("shop", f"{s}-model", f"{s}-model-6d4f8b9c7-g5h6i", "1x40"),
        up("shop", f"{s}-model", f"{s}-model-shadow-8b7c5d4e3-j7k8l", "1x40"),
        up("qa", f"{o}-app", f"{o}-app-7d9f8c6b5-m9n0p", "1x40"),
        up("qa", f"{o}-model", f"{o}-model-6d4f8b9c7-q1r2s", "1x40"),
        up("qa", f"{o}-model", f"{o}-model-shadow-8b7c5d4e3-t3u4v", "1x40"),
        up("qa", f"{s}-app", f"{s}-app-5c7d9e8f6-w5x6y", "0x40"),
        up("qa", f"{s}-model", f"{s}-model-6d4f8b9c7-z7a8b", "0x40"),
    ]
    # shop's model job has no shadow pod of `other` but a serving pod that is down:
    # ModelServiceDown fires; ShadowModelDown fires because other's shadow target is missing.
    rules = {name: alert(r, name) for name in SELECTOR_ALERTS}
    tests = {
        "rule_files": ["other.rules.yml"],
        "evaluation_interval": "15s",
        "tests": [{
            "interval": "15s",
            "input_series": series,
            "alert_rule_test": [
                {"eval_time": "8m", "alertname": name, "exp_alerts": [expected(rules[name], "shop")]}
                for name in sorted(SELECTOR_ALERTS)
            ],
        }],
    }
    (tmp_path / "other.rules.test.yml").write_text(yaml.safe_dump(tests, width=10_000))
    proc = subprocess.run([promtool(), "test", "rules", "other.rules.test.yml"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and "SUCCESS" in proc.stdout, proc.stdout + proc.stderr

    # The same series against the rules as the file writes them (release `sms-app`): its
    # alerts fire for qa, not shop. Proves the series above really tell the releases apart.
    from conftest import GRAFANA
    shutil.copy(GRAFANA / "rules" / "sms-app.rules.yml", tmp_path / "other.rules.yml")
    proc = subprocess.run([promtool(), "test", "rules", "other.rules.test.yml"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0, proc.stdout
    assert 'namespace="qa"' in proc.stdout + proc.stderr, proc.stdout + proc.stderr


@pytest.mark.parametrize("release,sets,prefix", RELEASES)
def test_the_dashboards_show_the_releases_own_jobs(release, sets, prefix):
    r = render(parse_set(sets), tag=f"release-{release}", release=release)
    jobs = scrape_jobs(r)
    exprs = [t["expr"] for cm in r.all("ConfigMap") if "-dashboard-" in cm["metadata"]["name"]
             for doc in cm["data"].values() for panel in yaml.safe_load(doc)["panels"]
             for t in panel.get("targets", []) if "up{" in t.get("expr", "")]
    assert exprs, "no dashboard panel shows the scrape targets"
    for expr in exprs:
        assert f'job=~"{jobs["app"]}|{jobs["model"]}"' in expr, expr
