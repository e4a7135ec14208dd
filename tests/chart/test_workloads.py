"""Workloads, Services, ConfigMap, Ingress and pod hygiene of the rendered chart."""

from __future__ import annotations

import pytest

from conftest import SCENARIOS, container_env, pod_spec

APP, CANARY = "sms-app-app", "sms-app-app-canary"
MODEL, SHADOW = "sms-app-model", "sms-app-model-shadow"


def test_default_objects_have_the_contract_names(scenario):
    r = scenario("defaults")
    assert r.names("Deployment") == {APP, CANARY, MODEL}
    assert r.names("Service") == {APP, "sms-app-app-stable", MODEL, "sms-app-model-headless"}
    assert r.names("ServiceAccount") == {APP, MODEL}
    assert r.names("Ingress") == {"sms-app-ingress"}
    assert r.names("Gateway") == {"sms-app-gateway"}
    assert r.names("VirtualService") == {"sms-app-vs", "sms-app-model-vs"}
    assert r.names("DestinationRule") == {"sms-app-dr", "sms-app-model-dr"}
    assert r.names("PodDisruptionBudget") == {APP, MODEL}
    assert r.names("ServiceMonitor") == {APP, MODEL}
    for doc in r.docs:
        assert doc["metadata"]["namespace"] == "sms-app", doc["metadata"]["name"]
        assert doc["metadata"]["labels"]["app.kubernetes.io/instance"] == "sms-app"


def test_app_versions_and_canary_cache(scenario):
    r = scenario("defaults")
    stable = r.get("Deployment", APP)
    canary = r.get("Deployment", CANARY)
    for dep, version, cache in ((stable, "v1", "false"), (canary, "v2", "true")):
        tmpl = dep["spec"]["template"]
        assert tmpl["metadata"]["labels"]["version"] == version
        assert tmpl["metadata"]["labels"]["app.kubernetes.io/component"] == "app"
        (c,) = pod_spec(dep)["containers"]
        env = container_env(c)
        assert env["APP_VERSION"] == version
        assert env["CACHE_ENABLED"] == cache
        assert env["CACHE_TTL_SECS"] == "300" and env["CACHE_MAX_ENTRIES"] == "10000"
        assert c["image"] == "sms-app/app-service:0.1.0"
        assert c["envFrom"] == [{"configMapRef": {"name": APP}}]
        assert c["ports"] == [{"name": "http", "containerPort": 8080, "protocol": "TCP"}]
    # autoscaled by default: the HPAs own the counts (test_autoscaling.py)
    assert "replicas" not in stable["spec"] and "replicas" not in canary["spec"]


def test_canary_cache_settings_are_tunable(scenario):
    from conftest import parse_set, render

    r = render(parse_set("appService.canary.cache.ttlSeconds=60,appService.canary.cache.maxEntries=500,"
                         "appService.canary.replicas=3,autoscaling.enabled=false"), tag="canary-cache")
    dep = r.get("Deployment", CANARY)
    env = container_env(pod_spec(dep)["containers"][0])
    assert (env["CACHE_ENABLED"], env["CACHE_TTL_SECS"], env["CACHE_MAX_ENTRIES"]) == ("true", "60", "500")
    assert dep["spec"]["replicas"] == 3


def test_model_host_is_the_mesh_service_with_istio_and_headless_without(scenario):
    assert scenario("defaults").get("ConfigMap", APP)["data"]["MODEL_HOST"] == "http://sms-app-model:8081"
    assert scenario("no-istio").get("ConfigMap", APP)["data"]["MODEL_HOST"] == "http://sms-app-model-headless:8081"


def test_model_deployments_serving_and_shadow(scenario):
    r = scenario("shadow-25")
    for name, version, source in ((MODEL, "v1", "app"), (SHADOW, "v2", "shadow")):
        dep = r.get("Deployment", name)
        assert dep["spec"]["template"]["metadata"]["labels"]["version"] == version
        (c,) = pod_spec(dep)["containers"]
        env = container_env(c)
        assert env["MODEL_VERSION"] == version
        assert env["METRICS_SOURCE"] == source
        assert env["MODEL_ROOT"] == "/mnt/shared/models"
        assert c["image"] == "sms-app/model-service:0.1.0"
        assert {p["name"]: p["containerPort"] for p in c["ports"]} == {
            "grpc": 8081, "http-metrics": 9464, "http-inference": 8082}
        # Model loads are held to the container's own memory limit (a big graph is refused
        # before it is read, not OOM-killed half-way through a reload).
        (limit,) = [e for e in c["env"] if e["name"] == "MEMORY_LIMIT_MIB"]
        assert limit["valueFrom"] == {"resourceFieldRef": {"resource": "limits.memory", "divisor": "1Mi"}}
        assert c["resources"]["limits"]["memory"] == "512Mi"
    assert SHADOW not in scenario("defaults").names("Deployment")


def test_model_volume_is_the_read_only_host_path(scenario):
    spec = pod_spec(scenario("defaults").get("Deployment", MODEL))
    vol = next(v for v in spec["volumes"] if v["name"] == "models")
    assert vol["hostPath"] == {"path": "/mnt/shared/models", "type": "Directory"}
    mount = next(m for m in spec["containers"][0]["volumeMounts"] if m["name"] == "models")
    assert mount == {"name": "models", "mountPath": "/mnt/shared/models", "readOnly": True}


def test_model_volume_is_configurable(scenario):
    from conftest import parse_set, render

    r = render(parse_set("modelService.modelStorage.hostPath=/srv/models,modelService.modelStorage.mountPath=/models"),
               tag="model-path")
    spec = pod_spec(r.get("Deployment", MODEL))
    assert spec["volumes"][0]["hostPath"]["path"] == "/srv/models"
    assert container_env(spec["containers"][0])["MODEL_ROOT"] == "/models"


def test_probes(scenario):
    r = scenario("shadow-25")
    for name in (MODEL, SHADOW):
        c = pod_spec(r.get("Deployment", name))["containers"][0]
        for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
            assert c[probe]["grpc"] == {"port": 8081}, (name, probe)
    for name in (APP, CANARY):
        c = pod_spec(r.get("Deployment", name))["containers"][0]
        assert c["livenessProbe"]["httpGet"] == {"path": "/livez", "port": "http"}
        assert c["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}


@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_every_pod_is_hardened(all_scenarios, name):
    r = all_scenarios[name]
    assert r.all("Deployment")
    for dep in r.all("Deployment"):
        spec = pod_spec(dep)
        who = f"{name}/{dep['metadata']['name']}"
        assert spec["automountServiceAccountToken"] is False, who
        psc = spec["securityContext"]
        assert psc["runAsNonRoot"] is True and psc["runAsUser"] == 65532, who
        assert psc["seccompProfile"] == {"type": "RuntimeDefault"}, who
        for c in spec["containers"]:
            sc = c["securityContext"]
            assert sc["readOnlyRootFilesystem"] is True, who
            assert sc["allowPrivilegeEscalation"] is False, who
            assert sc["capabilities"] == {"drop": ["ALL"]}, who
            assert sc["runAsNonRoot"] is True and sc["runAsUser"] == 65532, who
            assert sc["seccompProfile"] == {"type": "RuntimeDefault"}, who
            for kind in ("requests", "limits"):
                assert set(c["resources"][kind]) == {"cpu", "memory"}, (who, kind)
    for sa in r.all("ServiceAccount"):
        assert sa["automountServiceAccountToken"] is False


def test_services(scenario):
    r = scenario("defaults")
    app = r.get("Service", APP)
    assert app["spec"]["ports"] == [
        {"name": "http", "port": 8080, "targetPort": "http", "protocol": "TCP", "appProtocol": "http"}
    ]
    assert "version" not in app["spec"]["selector"]  # both subsets behind it
    stable = r.get("Service", "sms-app-app-stable")
    assert stable["spec"]["selector"]["version"] == "v1"
    model = r.get("Service", MODEL)
    assert [(p["name"], p["port"]) for p in model["spec"]["ports"]] == [
        ("grpc", 8081), ("http-metrics", 9464), ("http-inference", 8082)]
    assert "version" not in model["spec"]["selector"]
    headless = r.get("Service", "sms-app-model-headless")
    assert headless["spec"]["clusterIP"] == "None"
    assert headless["spec"]["selector"]["version"] == "v1"  # never the shadow
    assert [(p["name"], p["port"]) for p in headless["spec"]["ports"]] == [("grpc", 8081), ("http-inference", 8082)]
    # Service selectors really select the pods.
    for svc in r.all("Service"):
        sel = svc["spec"]["selector"]
        assert any(sel.items() <= d["spec"]["template"]["metadata"]["labels"].items() for d in r.all("Deployment"))


def test_ingress_routes_the_stable_app_only(scenario):
    ing = scenario("defaults").get("Ingress", "sms-app-ingress")
    assert ing["spec"]["ingressClassName"] == "nginx"
    (rule,) = ing["spec"]["rules"]
    assert rule["host"] == "sms-app.local"
    (path,) = rule["http"]["paths"]
    assert path["path"] == "/" and path["pathType"] == "Prefix"
    assert path["backend"]["service"] == {"name": "sms-app-app-stable", "port": {"name": "http"}}
    assert "Ingress" not in {d["kind"] for d in scenario("everything-off").docs}


def test_pod_disruption_budgets(scenario):
    r = scenario("defaults")
    for name in (APP, MODEL):
        pdb = r.get("PodDisruptionBudget", name)
        assert pdb["spec"]["minAvailable"] == 1
        dep = r.get("Deployment", name)
        assert pdb["spec"]["selector"]["matchLabels"] == dep["spec"]["selector"]["matchLabels"]
    # One replica: a PDB with minAvailable 1 would block every node drain.
    assert not scenario("everything-off").all("PodDisruptionBudget")


def test_canary_and_shadow_need_istio(scenario):
    r = scenario("no-istio")
    assert r.names("Deployment") == {APP, MODEL}
    kinds = {d["kind"] for d in r.docs}
    assert not kinds & {"Gateway", "VirtualService", "DestinationRule", "PeerAuthentication", "AuthorizationPolicy"}
    for dep in r.all("Deployment"):
        assert "sidecar.istio.io/inject" not in dep["spec"]["template"]["metadata"]["labels"]
    for dep in scenario("defaults").all("Deployment"):
        assert dep["spec"]["template"]["metadata"]["labels"]["sidecar.istio.io/inject"] == "true"


def test_image_registry_tag_and_digest(scenario):
    from conftest import parse_set, render

    digest = "sha256:" + "a" * 64
    r = render(parse_set(f"image.registry=registry.example.org:5000,appService.image.tag=1.2.3,"
                         f"appService.canary.tag=1.3.0-rc1,modelService.image.digest={digest}"), tag="images")
    image = lambda n: pod_spec(r.get("Deployment", n))["containers"][0]["image"]  # noqa: E731
    assert image(APP) == "registry.example.org:5000/sms-app/app-service:1.2.3"
    assert image(CANARY) == "registry.example.org:5000/sms-app/app-service:1.3.0-rc1"
    assert image(MODEL) == f"registry.example.org:5000/sms-app/model-service@{digest}"


def test_config_change_rolls_the_app_pods(scenario):
    from conftest import parse_set, render

    a = scenario("defaults").get("Deployment", APP)["spec"]["template"]["metadata"]["annotations"]
    b = render(parse_set("appService.modelTimeoutMs=250"), tag="timeout").get("Deployment", APP)
    assert a["checksum/config"] != b["spec"]["template"]["metadata"]["annotations"]["checksum/config"]


def test_network_policies(scenario):
    r = scenario("defaults")
    model = r.get("NetworkPolicy", MODEL)
    grpc_rule = next(rule for rule in model["spec"]["ingress"] if rule["ports"][0]["port"] == 8081)
    assert grpc_rule["from"] == [{"podSelector": {"matchLabels": {
        "app.kubernetes.io/name": "sms-app", "app.kubernetes.io/instance": "sms-app",
        "app.kubernetes.io/component": "app"}}}]
    assert [p["port"] for p in grpc_rule["ports"]] == [8081, 8082]  # sms.v1 and the inference HTTP port
    open_ports = {p["port"] for rule in model["spec"]["ingress"] if "from" not in rule for p in rule["ports"]}
    assert 8081 not in open_ports and 8082 not in open_ports and 9464 in open_ports
    assert r.get("NetworkPolicy", APP)["spec"]["ingress"][0]["ports"][0]["port"] == 8080


def test_trace_export_is_off_by_default_and_reaches_every_service_when_set(scenario):
    from conftest import parse_set, render
    var = "OTEL_EXPORTER_OTLP_ENDPOINT"
    assert var not in scenario("defaults").get("ConfigMap", APP)["data"]
    endpoint = "http://otel-collector.observability:4317"
    r = render(parse_set(f"tracing.otlpEndpoint={endpoint},modelService.shadow.enabled=true"), tag="tracing")
    assert r.get("ConfigMap", APP)["data"][var] == endpoint
    for name in ("sms-app-model", "sms-app-model-shadow"):
        assert container_env(pod_spec(r.get("Deployment", name))["containers"][0])[var] == endpoint


def test_pods_keep_serving_until_load_balancers_have_dropped_them():
    from conftest import render
    shadow = {"modelService": {"shadow": {"enabled": True}}}
    r = render(shadow, tag="prestop")
    deployments = r.all("Deployment")
    assert len(deployments) == 4
    for d in deployments:
        spec = pod_spec(d)
        [c] = spec["containers"]
        assert c["lifecycle"]["preStop"] == {"sleep": {"seconds": 5}}, d["metadata"]["name"]
        assert spec["terminationGracePeriodSeconds"] == 30, d["metadata"]["name"]
    # the shadow compares itself with the serving version; texts stay out by default
    env = container_env(pod_spec(r.get("Deployment", "sms-app-model-shadow"))["containers"][0])
    assert (env["REFERENCE_VERSION"], env["DISAGREEMENT_TEXTS"]) == ("v1", "false")
    assert "REFERENCE_VERSION" not in container_env(pod_spec(r.get("Deployment", "sms-app-model"))["containers"][0])

    off = render({**shadow, "preStopSeconds": 0}, tag="prestop-off")
    for d in off.all("Deployment"):
        assert "lifecycle" not in pod_spec(d)["containers"][0]
        assert pod_spec(d)["terminationGracePeriodSeconds"] == 25


def test_the_model_serves_the_open_inference_protocol_on_its_own_http_port(scenario):
    """INFERENCE_HTTP_ADDR and MAX_BATCH_ROWS from the values, the container port named as
    the Services' targetPort; both tunable."""
    from conftest import parse_set, render

    for r, port, rows in ((scenario("defaults"), 8082, "64"),
                          (render(parse_set("modelService.inferenceHttpPort=9000,modelService.maxBatchRows=16"),
                                  tag="inference-port"), 9000, "16")):
        for d in (d for d in r.all("Deployment") if d["metadata"]["name"].startswith(MODEL)):
            container = pod_spec(d)["containers"][0]
            assert {"name": "http-inference", "containerPort": port, "protocol": "TCP"} in container["ports"]
            env = container_env(container)
            assert env["INFERENCE_HTTP_ADDR"] == f"0.0.0.0:{port}" and env["MAX_BATCH_ROWS"] == rows
        ports = {p["name"]: p for p in r.get("Service", MODEL)["spec"]["ports"]}
        assert ports["http-inference"]["port"] == port and ports["http-inference"]["targetPort"] == "http-inference"
