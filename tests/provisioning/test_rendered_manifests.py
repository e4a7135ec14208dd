"""The manifests the playbooks apply, rendered by Ansible itself: valid YAML,
`kubernetes-validate --strict`, the Istio profile against its CRD schema, and the
addresses, hosts and values of each add-on.
"""

import ipaddress
import json
import re
import subprocess

import pytest
import yaml

from conftest import GROUP_VARS, PROV, ROOT, dotted_keys, explain, load_docs, run, tool


def test_every_rendered_file_is_valid_yaml(rendered):
    files = sorted(p for p in rendered.rglob("*.yaml"))
    templates = sorted(PROV.glob("roles/*/templates/*.yaml.j2"))
    assert [f.relative_to(rendered).as_posix() for f in files] == sorted(
        f"{t.parent.parent.name}/{t.name[:-3]}" for t in templates)
    assert len(files) >= 9
    for path in files:
        yaml.safe_load_all(path.read_text())  # raises on a YAML error
        assert "{{" not in path.read_text() and "{%" not in path.read_text(), path


def test_rendered_hosts_name_every_node(rendered):
    lines = (rendered / "common" / "hosts").read_text().split("\n")
    assert "192.168.56.100 ctrl" in lines
    assert "192.168.56.101 node-1" in lines
    assert "192.168.56.102 node-2" in lines


def test_core_manifests_pass_kubernetes_validate_strict(rendered):
    files = [rendered / "addons" / "dashboard-ingress.yaml", rendered / "sms_app" / "sms-app-namespace.yaml"]
    proc = run([tool("kubernetes-validate"), "-k", "1.32.0", "--strict", *files])
    assert proc.returncode == 0, explain(proc)
    passed = re.findall(r"passed for resource (\S+)", proc.stdout + proc.stderr)
    assert sorted(passed) == sorted([
        "ingress/kubernetes-dashboard", "serviceaccount/admin-user",
        "clusterrolebinding/kubernetes-dashboard-admin-user", "secret/admin-user-token", "namespace/sms-app",
    ]), explain(proc)


def test_strict_validation_catches_a_broken_manifest(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("apiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata: {name: x}\n"
                   "spec: {ingressClassName: nginx, rulez: []}\n")
    proc = run([tool("kubernetes-validate"), "-k", "1.32.0", "--strict", bad])
    assert proc.returncode != 0, explain(proc)


def test_dashboard_ingress_serves_dashboard_local_over_https(rendered):
    docs = {d["kind"]: d for d in load_docs(rendered / "addons" / "dashboard-ingress.yaml")}
    ingress = docs["Ingress"]
    ns = GROUP_VARS["charts"]["kubernetes_dashboard"]["namespace"]
    assert ingress["metadata"]["namespace"] == ns
    assert ingress["spec"]["ingressClassName"] == "nginx"
    rule = ingress["spec"]["rules"][0]
    assert rule["host"] == "dashboard.local"
    backend = rule["http"]["paths"][0]["backend"]["service"]
    # the kubernetes-dashboard 7.x chart's Kong proxy, named after the release
    assert backend == {"name": "kubernetes-dashboard-kong-proxy", "port": {"number": 443}}
    assert ingress["metadata"]["annotations"]["nginx.ingress.kubernetes.io/backend-protocol"] == "HTTPS"
    assert ingress["spec"]["tls"][0]["hosts"] == ["dashboard.local"]
    assert docs["ClusterRoleBinding"]["subjects"][0] == {"kind": "ServiceAccount", "name": "admin-user", "namespace": ns}
    assert docs["Secret"]["type"] == "kubernetes.io/service-account-token"


def test_metallb_pool_and_l2_advertisement(rendered):
    """No registry package ships MetalLB's CRD schema: check the fields its CRDs
    (metallb.io/v1beta1 IPAddressPool, L2Advertisement) require, and the addresses."""
    docs = load_docs(rendered / "addons" / "metallb-pool.yaml")
    assert [(d["apiVersion"], d["kind"]) for d in docs] == [
        ("metallb.io/v1beta1", "IPAddressPool"), ("metallb.io/v1beta1", "L2Advertisement")]
    pool, l2 = docs
    ns = GROUP_VARS["charts"]["metallb"]["namespace"]
    for doc in docs:
        assert set(doc) == {"apiVersion", "kind", "metadata", "spec"}
        assert doc["metadata"]["namespace"] == ns == "metallb-system"
        assert re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", doc["metadata"]["name"])
    assert set(pool["spec"]) <= {"addresses", "autoAssign", "avoidBuggyIPs", "serviceAllocation"}
    assert pool["spec"]["addresses"] == ["192.168.56.90-192.168.56.99"]
    assert pool["spec"]["autoAssign"] is True
    assert set(l2["spec"]) <= {"ipAddressPools", "ipAddressPoolSelectors", "nodeSelectors", "interfaces"}
    assert l2["spec"]["ipAddressPools"] == [pool["metadata"]["name"]]
    first, last = (ipaddress.ip_address(a) for a in pool["spec"]["addresses"][0].split("-"))
    for key in ("ingress_nginx_ip", "istio_gateway_ip"):
        assert first <= ipaddress.ip_address(GROUP_VARS[key]) <= last, key
    nodes = ipaddress.ip_address(GROUP_VARS["control_ip"])
    assert not first <= nodes <= last, "the pool must not overlap the node addresses"


@pytest.fixture(scope="session")
def istio_profile(tmp_path_factory):
    """The Istio install profile the playbook applies: the project's istio/ folder
    rendered by kustomize, as the addons role does on the control node."""
    proc = run([tool("kubectl"), "kustomize", ROOT / "istio"])
    assert proc.returncode == 0, explain(proc)
    path = tmp_path_factory.mktemp("istio") / "istio-install.yaml"
    path.write_text(proc.stdout)
    return path


def test_playbook_installs_istio_from_the_kustomized_profile():
    tasks = yaml.safe_load((PROV / "roles" / "addons" / "tasks" / "istio.yml").read_text())
    commands = [t.get("ansible.builtin.command", "") for t in tasks]
    assert "kubectl kustomize {{ manifests_dir }}/istio" in commands
    assert any(c.startswith("istioctl install") and "istio-install.yaml" in c for c in commands)


CRD_VALIDATOR = ROOT / "tests" / "tools" / "crds"  # the chart's tests use the same one


def validate_crds(path) -> tuple[subprocess.CompletedProcess, dict]:
    proc = run([tool("node"), CRD_VALIDATOR / "validate-crds.mjs", path], cwd=CRD_VALIDATOR)
    return proc, json.loads(proc.stdout)


def test_istio_operator_against_its_crd_schema(istio_profile):
    proc, report = validate_crds(istio_profile)
    assert proc.returncode == 0, explain(proc)
    assert len(report["validated"]) == 1 and "IstioOperator" in report["validated"][0], report


def test_crd_validator_rejects_a_wrong_istio_operator(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("apiVersion: install.istio.io/v1alpha1\nkind: IstioOperator\nmetadata: {name: [1]}\n")
    proc, report = validate_crds(bad)
    assert proc.returncode != 0 and len(report["errors"]) == 1, explain(proc)


def test_istio_profile_puts_the_gateway_at_96(istio_profile):
    """The IstioOperator CRD leaves spec open (preserve-unknown-fields): assert it."""
    (op,) = load_docs(istio_profile)
    spec = op["spec"]
    assert op["metadata"]["namespace"] == "istio-system"
    assert spec["profile"] == "default"
    assert set(spec) <= {"profile", "tag", "hub", "meshConfig", "components", "values", "revision", "namespace"}
    (gateway,) = spec["components"]["ingressGateways"]
    # the chart's Gateway selects `istio: ingressgateway`, the label of this gateway
    assert gateway["name"] == "istio-ingressgateway" and gateway["enabled"] is True
    assert gateway["k8s"]["service"]["type"] == "LoadBalancer"
    ip = GROUP_VARS["istio_gateway_ip"]
    assert ip == "192.168.56.96"
    assert gateway["k8s"]["serviceAnnotations"]["metallb.universe.tf/loadBalancerIPs"] == ip
    # the same check the playbook makes before installing
    assert f"loadBalancerIPs: {ip}" in istio_profile.read_text()
    chart_values = yaml.safe_load((ROOT / "helm" / "values.yaml").read_text())
    assert chart_values["istio"]["gateway"]["selector"].items() <= {"istio": "ingressgateway", **gateway.get("label", {})}.items()
    assert spec["meshConfig"]["accessLogFile"] == "/dev/stdout"


def test_ingress_nginx_at_95(rendered):
    values = yaml.safe_load((rendered / "addons" / "ingress-nginx-values.yaml").read_text())
    controller = values["controller"]
    assert controller["service"]["type"] == "LoadBalancer"
    assert controller["service"]["annotations"]["metallb.universe.tf/loadBalancerIPs"] == "192.168.56.95"
    assert controller["ingressClassResource"] == {"name": "nginx", "default": True}


def test_monitoring_values_serve_grafana_and_select_every_monitor(rendered):
    values = yaml.safe_load((rendered / "addons" / "kube-prometheus-stack-values.yaml").read_text())
    prom = values["prometheus"]["prometheusSpec"]
    assert prom["serviceMonitorSelectorNilUsesHelmValues"] is False
    assert prom["ruleSelectorNilUsesHelmValues"] is False
    grafana = values["grafana"]
    assert grafana["ingress"]["enabled"] is True
    assert grafana["ingress"]["hosts"] == ["grafana.local"]
    assert grafana["ingress"]["ingressClassName"] == "nginx"
    chart_values = yaml.safe_load((ROOT / "helm" / "values.yaml").read_text())
    dashboards = chart_values["monitoring"]["dashboards"]
    assert grafana["sidecar"]["dashboards"]["label"] in dashboards["labels"]
    assert grafana["sidecar"]["dashboards"]["searchNamespace"] == "ALL"
    assert chart_values["monitoring"]["labels"] == {"release": "kube-prometheus-stack"}


def test_flannel_uses_the_private_network(rendered):
    values = yaml.safe_load((rendered / "control_plane" / "flannel-values.yaml").read_text())
    assert values["podCidr"] == GROUP_VARS["pod_network_cidr"]
    (arg,) = [a for a in values["flannel"]["args"] if a.startswith("--iface-regex=")]
    pattern = re.compile(arg.split("=", 1)[1])
    assert pattern.search(GROUP_VARS["control_ip"]) and pattern.search("192.168.56.101")
    assert not pattern.search("10.0.2.15")  # VirtualBox NAT address, the same on every VM


def test_app_values_use_names_the_chart_defines(rendered):
    ours = yaml.safe_load((rendered / "sms_app" / "sms-app-values.yaml").read_text())
    assert "alerting" not in ours  # alert e-mail is off without SMTP settings
    chart = yaml.safe_load((ROOT / "helm" / "values.yaml").read_text())
    missing = dotted_keys(ours) - dotted_keys(chart)
    assert not missing, f"values the chart does not define: {missing}"
    assert ours["ingress"]["host"] == "sms-app.local"
    assert ours["istio"]["hosts"] == ["sms-istio.local"]
    assert ours["modelService"]["modelStorage"]["hostPath"] == "/mnt/shared/models"
    ns = load_docs(rendered / "sms_app" / "sms-app-namespace.yaml")[0]
    assert ns["metadata"] == {"name": "sms-app", "labels": {"istio-injection": "enabled"}}
