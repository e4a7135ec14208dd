"""Every rendered object validated by real schema tools: kubernetes-validate (--strict,
Kubernetes 1.32) for core objects (HorizontalPodAutoscalers included), the
kubernetes-models CRD schemas for Istio and prometheus-operator objects, and checkov with
the justified skip list (Flagger's and KEDA's objects: test_flagger.py, test_autoscaling.py)."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
import yaml

from conftest import OUT, ROOT, SCENARIOS

HERE = Path(__file__).resolve().parent
CORE_KINDS = {"Deployment", "Service", "ServiceAccount", "ConfigMap", "Secret", "Ingress",
              "PodDisruptionBudget", "NetworkPolicy", "HorizontalPodAutoscaler"}
CRD_KINDS = {"Gateway", "VirtualService", "DestinationRule", "PeerAuthentication", "AuthorizationPolicy",
             "ServiceMonitor", "PodMonitor", "PrometheusRule", "AlertmanagerConfig"}
FLAGGER_KINDS = {"Canary", "MetricTemplate"}  # validated against Flagger's CRD: test_flagger.py
KEDA_KINDS = {"ScaledObject"}  # validated against KEDA's CRD: test_autoscaling.py


def tool(env: str) -> str:
    path = os.environ.get(env)
    assert path and Path(path).exists(), f"{env} is not set to an installed tool (run tests/chart/run.sh)"
    return path


@pytest.fixture(scope="module")
def rendered_files(all_scenarios):
    files = {name: r.path for name, r in all_scenarios.items()}
    kinds = {d["kind"] for r in all_scenarios.values() for d in r.docs}
    known = CORE_KINDS | CRD_KINDS | FLAGGER_KINDS | KEDA_KINDS
    assert kinds <= known, f"unexpected kinds {kinds - known}"
    assert kinds == known, f"scenarios miss {known - kinds}"
    return files


@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_kubernetes_validate_strict(rendered_files, all_scenarios, name):
    path = rendered_files[name]
    proc = subprocess.run([tool("KUBERNETES_VALIDATE"), "-k", "1.32.0", "--strict", str(path)],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    passed = [line for line in proc.stdout.splitlines() if line.startswith("INFO") and " passed " in line]
    core = [d for d in all_scenarios[name].docs if d["kind"] in CORE_KINDS]
    assert len(passed) == len(core), proc.stdout  # every core object was really checked


def test_kubernetes_validate_catches_a_broken_object(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("apiVersion: v1\nkind: Service\nmetadata: {name: x}\nspec:\n  ports: [{port: 80, targetPort: http, bogus: 1}]\n")
    proc = subprocess.run([tool("KUBERNETES_VALIDATE"), "-k", "1.32.0", "--strict", str(bad)],
                          capture_output=True, text=True)
    assert proc.returncode != 0


def node_validate(paths: list[Path]) -> dict:
    validator = HERE.parent / "tools" / "crds"
    proc = subprocess.run(["node", str(validator / "validate-crds.mjs"), *map(str, paths)],
                          capture_output=True, text=True, cwd=validator)
    report = json.loads(proc.stdout)
    report["returncode"] = proc.returncode
    return report


def test_crd_objects_validate_with_kubernetes_models(rendered_files, all_scenarios):
    report = node_validate(list(rendered_files.values()))
    assert report["returncode"] == 0 and not report["errors"] and not report["unknown"], report
    want = sum(1 for r in all_scenarios.values() for d in r.docs if d["kind"] in CRD_KINDS)
    assert len(report["validated"]) == want


def test_kubernetes_models_catch_a_broken_route(tmp_path, all_scenarios):
    vs = next(d for d in all_scenarios["defaults"].docs if d["kind"] == "VirtualService")
    vs = json.loads(json.dumps(vs))
    vs["spec"]["http"][-1]["route"][0]["weight"] = "ninety"
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(vs))
    report = node_validate([bad])
    assert report["returncode"] != 0 and "weight" in report["errors"][0]


def test_istio_install_profile_validates(tmp_path):
    out = subprocess.run(["kubectl", "kustomize", str(ROOT / "istio")], check=True, capture_output=True, text=True)
    path = OUT / "istio-install.yaml"
    path.write_text(out.stdout)
    report = node_validate([path])
    assert report["returncode"] == 0, report
    assert [v.split(": ", 1)[1] for v in report["validated"]] == ["install.istio.io/v1alpha1 IstioOperator sms-app-istio"]


def skip_list() -> dict[str, str]:
    skips = {}
    for line in (HERE / "checkov-skips.txt").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            check, why = line.split(None, 1)
            skips[check] = why
    return skips


def run_checkov(paths: list[Path], skips: list[str]) -> dict:
    # One -f per scenario: checkov keys resources by file, so same-named objects of
    # different scenarios are all checked.
    cmd = [tool("CHECKOV"), "--skip-download", "--framework", "kubernetes", "-f", *map(str, paths),
           "-o", "json", "--quiet"]
    if skips:
        cmd += ["--skip-check", ",".join(skips)]
    proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "LOG_LEVEL": "ERROR"})
    data = json.loads(proc.stdout) if proc.stdout.strip() else {}
    if isinstance(data, list):
        data = next((d for d in data if d.get("check_type") == "kubernetes"), {})
    return data


@pytest.fixture(scope="module")
def checkov_input(rendered_files, all_scenarios):
    return [rendered_files[name] for name in sorted(all_scenarios)]


def test_checkov_finds_nothing_outside_the_skip_list(checkov_input, all_scenarios):
    skips = skip_list()
    assert skips and all(len(why) > 40 for why in skips.values()), "every skip needs a reason"
    data = run_checkov(checkov_input, list(skips))
    summary = data["summary"]
    (OUT / "checkov-summary.json").write_text(json.dumps(summary, indent=2))
    failed = [(f["check_id"], f["resource"]) for f in data["results"]["failed_checks"]]
    assert summary["failed"] == 0, failed
    objects = sum(len(r.docs) for r in all_scenarios.values())
    assert summary["resource_count"] >= objects, summary  # every object of every scenario (+ pods)
    assert summary["passed"] > 1000


def test_checkov_skips_are_still_needed(checkov_input):
    data = run_checkov(checkov_input, [])
    failing = {f["check_id"] for f in data["results"]["failed_checks"]}
    assert set(skip_list()) == failing, f"skip list {sorted(skip_list())} vs failing {sorted(failing)}"
