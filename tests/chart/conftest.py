"""Shared helpers: render the chart with the real Helm engine (helm-python-sdk, Helm v4
Go SDK) and look objects up in the result. Every render is also written under
test-output/chart/ so the validators (kubernetes-validate, kubernetes-models, checkov)
check exactly what the assertions saw."""

from __future__ import annotations

import os
import re
from pathlib import Path

import helm_python as helm
import jsonschema
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "helm"
GRAFANA = ROOT / "grafana"
OUT = Path(os.environ.get("CHART_TEST_OUT", ROOT / "test-output" / "chart"))
RELEASE = "sms-app"
NAMESPACE = "sms-app"

helm.disable_logging()

# The experiment's scenarios, as a user would type them after `helm upgrade --set`.
SCENARIOS = {
    "defaults": "",
    "canary-on": "istio.canary.enabled=true",
    "shadow-25": "modelService.shadow.enabled=true,modelService.shadow.mirror.percent=25",
    "weights-80-20": "istio.canary.weights.stable=80,istio.canary.weights.canary=20",
    "canary-weight-0": "istio.canary.weights.stable=100,istio.canary.weights.canary=0",
    "canary-disabled": "istio.canary.enabled=false",
    "no-istio": "istio.enabled=false",
    "alerting": "alerting.enabled=true,alerting.smtp.existingSecret=smtp-credentials",
    "alerting-chart-secret": "alerting.enabled=true,alerting.smtp.password=not-a-real-password",
    "flagger": "flagger.enabled=true",
    "everything-off": "istio.enabled=false,ingress.enabled=false,monitoring.enabled=false,"
    "networkPolicy.enabled=false,autoscaling.enabled=false,appService.replicas=1,modelService.replicas=1",
    "keda": "autoscaling.keda.enabled=true,modelService.shadow.enabled=true",
    "flagger-keda": "flagger.enabled=true,autoscaling.keda.enabled=true",
}


def parse_set(expr: str) -> dict:
    """`--set a.b=1,c=x` exactly as Helm parses it (strvals, via the Go SDK)."""
    return helm.parse_set_string(expr) if expr else {}


class Rendered:
    """The objects of one render, with lookups by kind and name."""

    def __init__(self, manifests: dict[str, str], path: Path):
        self.manifests = manifests
        self.path = path
        self.notes = next((v for k, v in manifests.items() if k.endswith("NOTES.txt")), "")
        self.docs = []
        for name in sorted(manifests):
            if name.endswith("NOTES.txt"):
                continue
            for doc in yaml.safe_load_all(manifests[name]):
                if doc:
                    self.docs.append(doc)

    def all(self, kind: str) -> list[dict]:
        return [d for d in self.docs if d["kind"] == kind]

    def names(self, kind: str) -> set[str]:
        return {d["metadata"]["name"] for d in self.all(kind)}

    def get(self, kind: str, name: str) -> dict:
        found = [d for d in self.all(kind) if d["metadata"]["name"] == name]
        assert found, f"no {kind} {name!r}; have {sorted(self.names(kind))}"
        assert len(found) == 1, f"{len(found)} objects {kind} {name!r}"
        return found[0]

    def find(self, kind: str, name: str) -> dict | None:
        found = [d for d in self.all(kind) if d["metadata"]["name"] == name]
        return found[0] if found else None


def render(values: dict | None = None, tag: str | None = None, release: str = RELEASE,
           namespace: str = NAMESPACE) -> Rendered:
    with helm.Chart.load(CHART) as chart:
        manifests = chart.render(values or {}, name=release, namespace=namespace)
    OUT.mkdir(parents=True, exist_ok=True)
    path = OUT / f"rendered-{tag or 'adhoc'}.yaml"
    body = "\n---\n".join(
        f"# Source: {k}\n{v.strip()}" for k, v in sorted(manifests.items()) if not k.endswith("NOTES.txt")
    )
    path.write_text(body + "\n")
    return Rendered(manifests, path)


def render_error(values: dict) -> str:
    """Render values that must be refused; return the engine's message."""
    with helm.Chart.load(CHART) as chart:
        with pytest.raises(helm.HelmError) as info:
            chart.render(values, name=RELEASE, namespace=NAMESPACE)
    return str(info.value)


@pytest.fixture(scope="session")
def scenario():
    cache: dict[str, Rendered] = {}

    def get(name: str) -> Rendered:
        if name not in cache:
            cache[name] = render(parse_set(SCENARIOS[name]), tag=name)
        return cache[name]

    return get


@pytest.fixture(scope="session")
def all_scenarios(scenario):
    return {name: scenario(name) for name in SCENARIOS}


def strict(schema):
    """A CRD's OpenAPI schema with unknown fields refused (as `kubectl apply
    --validate=strict` refuses them), except where the CRD keeps unknown fields."""
    if isinstance(schema, list):
        return [strict(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {k: strict(v) for k, v in schema.items()}
    if (out.get("type") == "object" and isinstance(out.get("properties"), dict)
            and "additionalProperties" not in out and not out.get("x-kubernetes-preserve-unknown-fields")):
        out["additionalProperties"] = False
    return out


def crd_schemas(crd_env: str, module_env: str) -> dict[tuple[str, str], jsonschema.protocols.Validator]:
    """Validators of every served version of the CRDs in the file $crd_env, which run.sh
    takes from the Go module $module_env (MODULE@VERSION): {(apiVersion, kind): validator}."""
    path = os.environ.get(crd_env)
    assert path and Path(path).is_file(), f"{crd_env} is not set to a CRD file (run tests/chart/run.sh)"
    module = os.environ.get(module_env, "")
    assert module and module.split("@")[-1] in path, (module, path)  # the pinned version
    schemas = {}
    for crd in yaml.safe_load_all(Path(path).read_text()):
        if not crd or crd.get("kind") != "CustomResourceDefinition":
            continue
        for version in crd["spec"]["versions"]:
            if version.get("served"):
                key = (f"{crd['spec']['group']}/{version['name']}", crd["spec"]["names"]["kind"])
                schemas[key] = jsonschema.Draft7Validator(strict(version["schema"]["openAPIV3Schema"]))
    return schemas


def schema_errors(schemas, doc) -> list[str]:
    """What the CRD's schema (and the API server's name rule) refuses in `doc`."""
    validator = schemas.get((doc["apiVersion"], doc["kind"]))
    assert validator, f"the CRDs have no schema for {doc['apiVersion']} {doc['kind']}"
    errors = [f"{'.'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(doc)]
    name = doc["metadata"]["name"]
    if not re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", name) or len(name) > 63:
        errors.append(f"metadata.name {name!r} is not a DNS-1123 label")
    return errors


def container_env(container: dict) -> dict[str, str]:
    return {e["name"]: e.get("value") for e in container.get("env", [])}


def pod_spec(deployment: dict) -> dict:
    return deployment["spec"]["template"]["spec"]


def http_routes(vs: dict) -> list[dict]:
    return vs["spec"].get("http", [])


# --- a small model of how Envoy evaluates the VirtualService's HTTP routes -----------
# Istio turns each `match` into an Envoy route: header `regex` is an RE2 full match,
# `exact` an equality; match blocks are OR-ed, conditions within one are AND-ed; the
# first route that matches wins. Good enough to check which subset a request reaches.


def _string_match(rule: dict, value: str | None) -> bool:
    if value is None:
        return False
    if "exact" in rule:
        return value == rule["exact"]
    if "prefix" in rule:
        return value.startswith(rule["prefix"])
    if "regex" in rule:
        return re.fullmatch(rule["regex"], value) is not None
    raise AssertionError(f"unsupported string match {rule}")


def _match_block(block: dict, authority: str, headers: dict[str, str]) -> bool:
    if "authority" in block and not _string_match(block["authority"], authority):
        return False
    for name, rule in block.get("headers", {}).items():
        if not _string_match(rule, headers.get(name.lower())):
            return False
    unsupported = set(block) - {"authority", "headers", "name"}
    assert not unsupported, f"model does not handle {unsupported}"
    return True


def route_request(vs: dict, authority: str, headers: dict[str, str] | None = None) -> dict:
    """The first HTTP route of `vs` that a request with this authority and these headers
    takes (header names lower-case)."""
    headers = {k.lower(): v for k, v in (headers or {}).items()}
    for route in http_routes(vs):
        blocks = route.get("match")
        if not blocks or any(_match_block(b, authority, headers) for b in blocks):
            return route
    raise AssertionError(f"no route for {authority} {headers}")


def reachable_subsets(route: dict) -> dict[str, int]:
    """Subsets a route can send the request to, with their weights (> 0 only)."""
    dests = route.get("route", [])
    if len(dests) == 1 and "weight" not in dests[0]:
        return {dests[0]["destination"]["subset"]: 100}
    return {d["destination"]["subset"]: d.get("weight", 0) for d in dests if d.get("weight", 0) > 0}
