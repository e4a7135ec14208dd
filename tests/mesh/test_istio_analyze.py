"""`istioctl analyze --use-kube=false` (istioctl built from the same Istio module as
istio-xds) over every rendered chart scenario: no error, and each warning or info message
is one explained below. Analyzers that need live cluster state (pods, injection, the
mesh's gateway deployment) have no data offline; `-v` would list them."""

from __future__ import annotations

import re
import subprocess

import pytest

from harness import OUT, istio_dir
from smsdev.mesh import overlay
from smsdev.mesh import render as chart
from smsdev.mesh.plan import LOCAL_DEFAULTS

SCENARIOS = {
    "defaults": [],
    "split-80-20": ["istio.canary.weights.stable=80", "istio.canary.weights.canary=20"],
    "rollback-100-0": ["istio.canary.weights.stable=100", "istio.canary.weights.canary=0"],
    "canary-off": ["istio.canary.enabled=false"],
    "shadow-50": ["modelService.shadow.enabled=true", "modelService.shadow.mirror.percent=50"],
    "pod-affinity-cookie": ["istio.podAffinityCookie=sms-pod"],
    "cookie-renamed-ttl-10m": ["istio.canary.stickyCookie.name=exp-version", "istio.canary.stickyCookie.ttl=10m"],
    "local-mode": [LOCAL_DEFAULTS[i + 1] for i in range(0, len(LOCAL_DEFAULTS), 2)],
}

# Messages istioctl prints for these renders, and why they are expected (code -> reason).
EXPLAINED: dict[str, str] = {}

LINE = re.compile(r"^(Error|Warning|Info) \[(IST\d+)\] (.*)$")


def analyze(path):
    """istioctl analyze offline over one file, every namespace (-A: without it only the
    `default` namespace's findings are printed, and the chart's objects are in sms-app)."""
    r = subprocess.run([istio_dir() / "istioctl", "analyze", "--use-kube=false", "-A", "--failure-threshold", "Error",
                        "--output-threshold", "Info", str(path)], capture_output=True, text=True, timeout=120)
    path.with_suffix(".out").write_text(r.stdout + r.stderr)
    return r, [m for m in (LINE.match(line) for line in (r.stdout + r.stderr).splitlines()) if m]


def test_istioctl_analyze_does_find_a_broken_reference():
    """The check can fail: a render whose routes name a subset no DestinationRule has."""
    broken = OUT / "analyze" / "broken-subset.yaml"
    broken.parent.mkdir(parents=True, exist_ok=True)
    broken.write_text(chart.render(chart.values_from([])).replace("subset: v2", "subset: v9"))
    r, messages = analyze(broken)
    assert r.returncode != 0 and any(m.group(1) == "Error" and m.group(2) == "IST0101" for m in messages), r.stdout


@pytest.mark.parametrize("name", list(SCENARIOS))
def test_istioctl_analyze_finds_no_error(name):
    rendered = OUT / "analyze" / f"{name}.yaml"
    rendered.parent.mkdir(parents=True, exist_ok=True)
    rendered.write_text(chart.render(chart.values_from(SCENARIOS[name])))
    r, messages = analyze(rendered)
    errors = [m.group(0) for m in messages if m.group(1) == "Error"]
    unexplained = [m.group(0) for m in messages if m.group(1) != "Error" and m.group(2) not in EXPLAINED]
    assert r.returncode == 0 and not errors, (r.returncode, errors, r.stderr[-2000:])
    assert not unexplained, unexplained
    assert "No validation issues found" in r.stdout + r.stderr or messages, r.stdout + r.stderr


def test_istioctl_analyze_accepts_the_local_overlay():
    """What istio-xds is given in the local mode (the chart's objects, the Gateway bound to
    127.0.0.1, the ServiceEntries, the Sidecar), beside the render's Kubernetes objects."""
    docs = overlay.load_docs(chart.render(chart.values_from(SCENARIOS["local-mode"])))
    listen = {"sms-app-app": {"http": 18080}, "sms-app-app-canary": {"http": 18081},
              "sms-app-model": {"grpc": 18090, "http-metrics": 19464},
              "sms-app-model-shadow": {"grpc": 18091, "http-metrics": 19465}}
    objs = overlay.overlay(docs, listen, 8000, "127.0.0.2")
    kube = [d for d in docs if "istio.io" not in d.get("apiVersion", "")]
    path = OUT / "analyze" / "local-overlay.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(overlay.dump(kube + objs))
    r, messages = analyze(path)
    errors = [m.group(0) for m in messages if m.group(1) == "Error"]
    unexplained = [m.group(0) for m in messages if m.group(1) != "Error" and m.group(2) not in EXPLAINED]
    assert r.returncode == 0 and not errors, (errors, r.stdout[-2000:])
    assert not unexplained, unexplained
