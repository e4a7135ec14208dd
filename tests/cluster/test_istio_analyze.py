"""`istioctl analyze` (built from the same Istio module as the cluster's istiod) over the
chart: offline over every scenario `helm template` renders (the real helm), and live
against the running cluster, where the analyzers that need cluster state (injection, the
gateway's pods and Services, the mesh config) have it. No error, and each warning or info
message is one explained below."""

from __future__ import annotations

import re
import subprocess

import pytest

from conftest import BIN, OUT, ROOT
from smsdev.cluster.objects import LOCAL_VALUES

SCENARIOS = {
    "defaults": [],
    "split-80-20": ["istio.canary.weights.stable=80", "istio.canary.weights.canary=20"],
    "rollback-100-0": ["istio.canary.weights.stable=100", "istio.canary.weights.canary=0"],
    "canary-off": ["istio.canary.enabled=false"],
    "shadow-50": ["modelService.shadow.enabled=true", "modelService.shadow.mirror.percent=50"],
    "pod-affinity-cookie": ["istio.podAffinityCookie=sms-pod"],
    "cookie-renamed-ttl-10m": ["istio.canary.stickyCookie.name=exp-version", "istio.canary.stickyCookie.ttl=10m"],
    "local-cluster": [LOCAL_VALUES[i + 1] for i in range(0, len(LOCAL_VALUES), 2)],
}

# Messages istioctl prints for these objects, and why they are expected (code -> reason).
EXPLAINED: dict[str, str] = {
    # Live only: the release's namespace has no `istio-injection` label because the chart
    # labels its pods `sidecar.istio.io/inject: "true"` (docs/helm.md: the namespace needs
    # none); test_mesh.py checks every pod got its proxy.
    "IST0102": "the namespace is not enabled for injection: the chart's pods ask for it themselves",
}

LINE = re.compile(r"^(Error|Warning|Info) \[(IST\d+)\] (.*)$")


def render(values: list[str]) -> str:
    args = [a for v in values for a in ("--set", v)]
    r = subprocess.run([str(BIN / "helm"), "template", "sms-app", str(ROOT / "helm"), "-n", "sms-app",
                        "--kube-version", "v1.36.1", *args], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    return r.stdout


def analyze(*args: str):
    r = subprocess.run([str(BIN / "istioctl"), "analyze", "--failure-threshold", "Error", "--output-threshold", "Info",
                        *args], capture_output=True, text=True, timeout=120)
    return r, [m for m in (LINE.match(line) for line in (r.stdout + r.stderr).splitlines()) if m]


def offline(name: str, text: str):
    """istioctl analyze offline over one render, every namespace (-A: without it only the
    `default` namespace's findings are printed, and the chart's objects are in sms-app)."""
    path = OUT / "analyze" / f"{name}.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    r, messages = analyze("--use-kube=false", "-A", str(path))
    path.with_suffix(".out").write_text(r.stdout + r.stderr)
    return r, messages


def assert_clean(r, messages):
    errors = [m.group(0) for m in messages if m.group(1) == "Error"]
    unexplained = [m.group(0) for m in messages if m.group(1) != "Error" and m.group(2) not in EXPLAINED]
    assert r.returncode == 0 and not errors, (r.returncode, errors, r.stderr[-2000:])
    assert not unexplained, unexplained
    assert "No validation issues found" in r.stdout + r.stderr or messages, r.stdout + r.stderr


def test_istioctl_analyze_does_find_a_broken_reference():
    """The check can fail: a render whose routes name a subset no DestinationRule has."""
    r, messages = offline("broken-subset", render([]).replace("subset: v2", "subset: v9"))
    assert r.returncode != 0 and any(m.group(1) == "Error" and m.group(2) == "IST0101" for m in messages), r.stdout


@pytest.mark.parametrize("name", list(SCENARIOS))
def test_istioctl_analyze_finds_no_error_in_a_render(name):
    assert_clean(*offline(name, render(SCENARIOS[name])))


def test_istioctl_analyze_finds_no_error_in_the_running_cluster(cluster):
    """Live: the release as the API server holds it, with istiod's mesh config, the
    injected pods and the ingress gateway's Deployment and Service."""
    r, messages = analyze("--kubeconfig", str(cluster.kubeconfig), "-n", "sms-app", "--istioNamespace", "istio-system")
    (OUT / "analyze").mkdir(parents=True, exist_ok=True)
    (OUT / "analyze" / "live.out").write_text(r.stdout + r.stderr)
    print(f"istioctl analyze -n sms-app on the running cluster: {r.stdout.strip().splitlines()[-1:] or r.stderr[-200:]}")
    assert_clean(r, messages)
