"""Autoscaling (autoscaling.*): by default one autoscaling/v2 HorizontalPodAutoscaler on
CPU per Deployment, or with autoscaling.keda.enabled a KEDA ScaledObject on requests in
flight instead (validated against KEDA's own CRD, from its Go module, fetched by run.sh),
never both; each scales exactly the pods of the Deployment it names (the ScaledObjects'
queries evaluated by a real Prometheus engine, promtool, on the series those pods'
scrapes give); autoscaled Deployments set no replicas; Flagger's autoscalerRef; the
PodDisruptionBudgets stay below the replica floor; the refused combinations."""

from __future__ import annotations

import copy
import os
import shutil
import subprocess

import pytest
import yaml

from conftest import (CHART, SCENARIOS, container_env, crd_schemas, parse_set, pod_spec, render,
                      render_error, schema_errors)

APP, CANARY = "sms-app-app", "sms-app-app-canary"
MODEL, SHADOW = "sms-app-model", "sms-app-model-shadow"
PRIMARY = f"{APP}-primary"  # Flagger's copy of its target
TIERS = {APP: "app", CANARY: "appCanary", MODEL: "model", SHADOW: "modelShadow"}
DEFAULTS = yaml.safe_load((CHART / "values.yaml").read_text())


def autoscaled(name: str) -> bool:
    return "autoscaling.enabled=false" not in SCENARIOS[name]


def keda(name: str) -> bool:
    return "autoscaling.keda.enabled=true" in SCENARIOS[name]


def by_target(r, kind: str) -> dict[str, dict]:
    """The autoscalers of one kind, keyed by the Deployment they scale (one each)."""
    out = {}
    for d in r.all(kind):
        ref = d["spec"]["scaleTargetRef"]
        assert (ref["apiVersion"], ref["kind"]) == ("apps/v1", "Deployment"), ref
        assert ref["name"] not in out, f"two {kind}s scale {ref['name']}"
        out[ref["name"]] = d
    return out


def flagger_primary(deployment: dict) -> dict:
    """The primary Deployment Flagger derives from its target (makePrimaryLabels: the
    selector label `app` gets the suffix -primary, every other label is kept)."""
    primary = copy.deepcopy(deployment)
    primary["metadata"]["name"] += "-primary"
    labels = primary["spec"]["template"]["metadata"]["labels"]
    labels["app"] += "-primary"
    primary["spec"]["selector"]["matchLabels"] = {"app": labels["app"]}
    return primary


def workloads(r) -> list[dict]:
    """Every Deployment that runs pods: the chart's, and Flagger's primary when a Canary
    makes one."""
    deployments = r.all("Deployment")
    for canary in r.all("Canary"):
        target = next(d for d in deployments if d["metadata"]["name"] == canary["spec"]["targetRef"]["name"])
        deployments = [*deployments, flagger_primary(target)]
    return deployments


def selects(selector: dict, deployment: dict) -> bool:
    return selector.items() <= deployment["spec"]["template"]["metadata"]["labels"].items()


@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_each_deployment_has_exactly_one_autoscaler_or_its_own_replicas(scenario, name):
    r = scenario(name)
    deployments = r.names("Deployment")
    hpas, scaled = by_target(r, "HorizontalPodAutoscaler"), by_target(r, "ScaledObject")
    if not autoscaled(name):
        assert not hpas and not scaled
        assert all(isinstance(d["spec"]["replicas"], int) for d in r.all("Deployment"))
        return
    # KEDA makes an HPA of its own: a chart HPA beside a ScaledObject would fight it
    assert set(scaled if keda(name) else hpas) == deployments and not (hpas if keda(name) else scaled)
    for autoscaler in r.all("ScaledObject" if keda(name) else "HorizontalPodAutoscaler"):
        assert autoscaler["metadata"]["name"] == autoscaler["spec"]["scaleTargetRef"]["name"]
    # the autoscaler owns the count: an upgrade must not reset it
    assert not [d["metadata"]["name"] for d in r.all("Deployment") if "replicas" in d["spec"]]


def test_autoscaling_off_keeps_the_replicas_values():
    r = render(parse_set("autoscaling.enabled=false,appService.replicas=3,appService.canary.replicas=2,"
                         "modelService.replicas=4,modelService.shadow.enabled=true,modelService.shadow.replicas=2"),
               tag="autoscaling-off")
    assert {d["metadata"]["name"]: d["spec"]["replicas"] for d in r.all("Deployment")} == {
        APP: 3, CANARY: 2, MODEL: 4, SHADOW: 2}
    assert not r.all("HorizontalPodAutoscaler") and not r.all("ScaledObject")


# --- the CPU HorizontalPodAutoscalers, one test per Deployment


@pytest.mark.parametrize("name,deployment", [
    ("defaults", APP), ("defaults", CANARY), ("defaults", MODEL), ("shadow-25", SHADOW), ("flagger", APP)])
def test_hpa_scales_exactly_its_deployments_pods_on_cpu(scenario, name, deployment):
    r = scenario(name)
    hpa = by_target(r, "HorizontalPodAutoscaler")[deployment]
    tier = DEFAULTS["autoscaling"][TIERS[deployment]]
    assert hpa["apiVersion"] == "autoscaling/v2" and hpa["metadata"]["name"] == deployment
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (tier["minReplicas"], tier["maxReplicas"])
    assert hpa["spec"]["metrics"] == [{"type": "Resource", "resource": {"name": "cpu", "target": {
        "type": "Utilization", "averageUtilization": tier["targetCPUUtilizationPercentage"]}}}]
    # The HPA averages the CPU of the pods the Deployment's selector picks: its own pod
    # template's and no other Deployment's (Flagger's primary included).
    dep = r.get("Deployment", deployment)
    selector = dep["spec"]["selector"]["matchLabels"]
    for other in workloads(r):
        assert selects(selector, other) == (other["metadata"]["name"] == deployment), other["metadata"]["name"]
    # Utilisation is a share of the CPU request: every container of those pods has one.
    for container in pod_spec(dep)["containers"]:
        assert container["resources"]["requests"]["cpu"], container["name"]


def test_cpu_targets_sit_at_half_of_each_pods_cpu_limit():
    """docs/helm.md's reasoning: pods are added when they average half their CPU limit."""
    def millis(q) -> int:
        q = str(q)
        return int(q[:-1]) if q.endswith("m") else int(float(q) * 1000)

    for tier, svc in (("app", "appService"), ("appCanary", "appService"), ("model", "modelService"),
                      ("modelShadow", "modelService")):
        res = DEFAULTS[svc]["resources"]
        target = DEFAULTS["autoscaling"][tier]["targetCPUUtilizationPercentage"]
        assert millis(res["requests"]["cpu"]) * target // 100 == millis(res["limits"]["cpu"]) // 2, tier


def test_kubernetes_validate_refuses_a_broken_hpa(scenario, tmp_path):
    hpa = copy.deepcopy(scenario("defaults").get("HorizontalPodAutoscaler", APP))
    hpa["spec"]["targetCPUUtilizationPercentage"] = 70  # autoscaling/v1's field, not v2's
    bad = tmp_path / "bad-hpa.yaml"
    bad.write_text(yaml.safe_dump(hpa))
    proc = subprocess.run([os.environ["KUBERNETES_VALIDATE"], "-k", "1.32.0", "--strict", str(bad)],
                          capture_output=True, text=True)
    assert proc.returncode != 0 and "targetCPUUtilizationPercentage" in proc.stdout + proc.stderr


# --- KEDA ScaledObjects


@pytest.fixture(scope="session")
def keda_schemas():
    schemas = crd_schemas("KEDA_CRD", "KEDA_MODULE")
    assert ("keda.sh/v1alpha1", "ScaledObject") in schemas
    return schemas


@pytest.mark.parametrize("name,count", [("keda", 4), ("flagger-keda", 2)])
def test_scaled_objects_validate_against_kedas_crd(scenario, keda_schemas, name, count):
    docs = scenario(name).all("ScaledObject")
    assert len(docs) == count
    for doc in docs:
        assert schema_errors(keda_schemas, doc) == [], doc["metadata"]["name"]


@pytest.mark.parametrize("breakage,where", [
    (lambda s: s["spec"]["triggers"][0]["metadata"].update(threshold=32), "threshold"),  # strings only
    (lambda s: s["spec"]["triggers"][0].pop("metadata"), "metadata"),
    (lambda s: s["spec"].update(minReplicas=1), "minReplicas"),  # the HPA's word, not KEDA's
    (lambda s: s["spec"]["scaleTargetRef"].pop("name"), "name"),
])
def test_kedas_schema_refuses_a_broken_scaled_object(scenario, keda_schemas, breakage, where):
    broken = copy.deepcopy(scenario("keda").get("ScaledObject", APP))
    breakage(broken)
    errors = schema_errors(keda_schemas, broken)
    assert errors and where in " ".join(errors), errors


def scrape_job(r, deployment: dict) -> str:
    """The `job` label Prometheus gives the deployment's pods: the name of the Service
    that selects them among those a ServiceMonitor selects (exactly one, or they would be
    scraped twice or not at all)."""
    jobs = []
    for monitor in r.all("ServiceMonitor"):
        for svc in r.all("Service"):
            if (monitor["spec"]["selector"]["matchLabels"].items() <= svc["metadata"]["labels"].items()
                    and selects(svc["spec"]["selector"], deployment)):
                jobs.append(svc["metadata"]["name"])
    assert len(jobs) == 1, (deployment["metadata"]["name"], jobs)
    return jobs[0]


def in_flight_series(r) -> tuple[list[dict], dict[str, int]]:
    """Two pods of every workload, each with the in-flight gauge its service exports
    (labels from its env, as the services set them) plus the scrape's namespace, job and
    pod; distinct values per workload, so a query that takes in any other pod gives a
    wrong sum. A copy in another namespace is a decoy. Returns the series and each
    workload's sum."""
    series, sums = [], {}
    for i, dep in enumerate(workloads(r)):
        name = dep["metadata"]["name"]
        env = container_env(pod_spec(dep)["containers"][0])
        if dep["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/component"] == "app":
            metric, own = "sms_active_requests", {"version": env["APP_VERSION"]}
        else:
            metric, own = "sms_model_inflight_requests", {"version": env["MODEL_VERSION"], "source": env["METRICS_SOURCE"]}
        job = scrape_job(r, dep)
        sums[name] = 0
        for j, pod in enumerate((f"{name}-7d9f8c6b5-a1b2c", f"{name}-7d9f8c6b5-x9y8z")):
            value = (j + 1) * 10 ** i
            sums[name] += value
            for ns, v in (("sms-app", value), ("elsewhere", 10 ** 7)):
                labels = {**own, "namespace": ns, "job": job, "service": job, "pod": pod}
                body = ",".join(f'{k}="{v_}"' for k, v_ in labels.items())
                series.append({"series": f"{metric}{{{body}}}", "values": f"{v}x20"})
    return series, sums


def promql_equals(tmp_path, series: list[dict], query: str, want: float) -> None:
    promtool = os.environ.get("PROMTOOL") or shutil.which("promtool")
    assert promtool, "promtool is not installed (tests/chart/run.sh installs the prometheus package)"
    tests = {"rule_files": ["empty.rules.yml"], "evaluation_interval": "15s", "tests": [
        {"interval": "15s", "input_series": series, "promql_expr_test": [
            {"expr": query, "eval_time": "2m", "exp_samples": [{"labels": "{}", "value": want}]}]}]}
    (tmp_path / "empty.rules.yml").write_text("groups: []\n")
    (tmp_path / "query.test.yml").write_text(yaml.safe_dump(tests, width=10_000))
    proc = subprocess.run([promtool, "test", "rules", "query.test.yml"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and "SUCCESS" in proc.stdout, query + "\n" + proc.stdout + proc.stderr


@pytest.mark.parametrize("name,deployment", [
    ("keda", APP), ("keda", CANARY), ("keda", MODEL), ("keda", SHADOW), ("flagger-keda", APP), ("flagger-keda", PRIMARY)])
def test_scaled_object_query_sums_exactly_its_deployments_pods(scenario, tmp_path, name, deployment):
    r = scenario(name)
    series, sums = in_flight_series(r)
    if deployment == PRIMARY:
        # The ScaledObject Flagger makes for its primary: the target's with the query
        # given per trigger name in the Canary's autoscalerRef.primaryScalerQueries.
        ref = r.get("Canary", APP)["spec"]["autoscalerRef"]
        (trigger,) = r.get("ScaledObject", ref["name"])["spec"]["triggers"]
        query = ref["primaryScalerQueries"][trigger["name"]]
    else:
        so = by_target(r, "ScaledObject")[deployment]
        (trigger,) = so["spec"]["triggers"]
        assert trigger["type"] == "prometheus" and trigger["metricType"] == "AverageValue"
        assert trigger["metadata"]["serverAddress"] == DEFAULTS["autoscaling"]["keda"]["serverAddress"]
        tier = DEFAULTS["autoscaling"][TIERS[deployment]]
        assert (so["spec"]["minReplicaCount"], so["spec"]["maxReplicaCount"]) == (tier["minReplicas"], tier["maxReplicas"])
        query = trigger["metadata"]["query"]
    promql_equals(tmp_path, series, query, sums[deployment])


def overload_bounds(r) -> dict[str, int]:
    """Each workload's requests-in-flight bound per pod, from what the pods are given: the
    app's MAX_CONCURRENT_REQUESTS (its ConfigMap), the model's inference workers (the
    service's default: half the whole CPUs of its limit, rounded up) x QUEUE_PER_WORKER."""
    bounds = {}
    for dep in r.all("Deployment"):
        (c,) = pod_spec(dep)["containers"]
        env = container_env(c)
        if c["name"] == "app":
            bounds[dep["metadata"]["name"]] = int(r.get("ConfigMap", APP)["data"]["MAX_CONCURRENT_REQUESTS"])
        else:
            limit = str(c["resources"]["limits"]["cpu"])
            cpus = max(1, (int(limit[:-1]) if limit.endswith("m") else int(float(limit) * 1000)) // 1000)
            workers = int(env.get("INFERENCE_WORKERS") or (cpus + 1) // 2)
            bounds[dep["metadata"]["name"]] = workers * int(env["QUEUE_PER_WORKER"])
    return bounds


@pytest.mark.parametrize("sets,percent,want", [
    ("", 50, {APP: 32, CANARY: 32, MODEL: 32, SHADOW: 32}),
    ("appService.maxConcurrentRequests=100,modelService.queuePerWorker=10,modelService.inferenceWorkers=3,"
     "autoscaling.keda.targetPercentOfOverloadBound=25", 25, {APP: 25, CANARY: 25, MODEL: 7, SHADOW: 7}),
    ("modelService.resources.limits.cpu=4", 50, {APP: 32, CANARY: 32, MODEL: 64, SHADOW: 64}),
    ("modelService.resources.limits.cpu=2500m,appService.maxConcurrentRequests=1", 50,
     {APP: 1, CANARY: 1, MODEL: 32, SHADOW: 32}),
])
def test_keda_threshold_is_a_share_of_the_overload_bound_the_pods_get(sets, percent, want):
    r = render(parse_set(",".join(filter(None, ["autoscaling.keda.enabled=true,modelService.shadow.enabled=true", sets]))),
               tag="keda-threshold")
    bounds = overload_bounds(r)
    got = {name: int(so["spec"]["triggers"][0]["metadata"]["threshold"]) for name, so in by_target(r, "ScaledObject").items()}
    assert got == want
    assert got == {name: max(1, bound * percent // 100) for name, bound in bounds.items()}


# --- Flagger's autoscalerRef


def test_flagger_scales_its_target_through_the_charts_hpa(scenario):
    r = scenario("flagger")
    canary = r.get("Canary", APP)
    ref = canary["spec"]["autoscalerRef"]
    assert ref == {"apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler", "name": APP}
    hpa = r.get("HorizontalPodAutoscaler", ref["name"])
    assert hpa["apiVersion"] == ref["apiVersion"]
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment",
                                             "name": canary["spec"]["targetRef"]["name"]}
    # Flagger makes <name>-primary for the primary: no chart object may hold that name
    assert not r.find("HorizontalPodAutoscaler", f"{APP}-primary") and not r.find("Deployment", PRIMARY)


def test_flagger_scales_its_target_through_the_charts_scaled_object(scenario):
    r = scenario("flagger-keda")
    canary = r.get("Canary", APP)
    ref = canary["spec"]["autoscalerRef"]
    assert (ref["apiVersion"], ref["kind"], ref["name"]) == ("keda.sh/v1alpha1", "ScaledObject", APP)
    so = r.get("ScaledObject", ref["name"])
    assert so["spec"]["scaleTargetRef"]["name"] == canary["spec"]["targetRef"]["name"]
    # Flagger needs named triggers to apply primaryScalerQueries; one query per trigger
    assert set(ref["primaryScalerQueries"]) == {t["name"] for t in so["spec"]["triggers"]}
    assert not r.all("HorizontalPodAutoscaler")
    flagger = crd_schemas("FLAGGER_CRD", "FLAGGER_MODULE")
    assert schema_errors(flagger, canary) == []


def test_flagger_without_autoscaling_has_no_autoscaler_ref():
    r = render(parse_set("flagger.enabled=true,autoscaling.enabled=false"), tag="flagger-fixed")
    assert "autoscalerRef" not in r.get("Canary", APP)["spec"]
    assert r.get("Deployment", APP)["spec"]["replicas"] == DEFAULTS["appService"]["replicas"]


# --- PodDisruptionBudgets and the replica floor


@pytest.mark.parametrize("sets,floor", [
    ("", {APP: 2, MODEL: 2}),
    ("autoscaling.app.minReplicas=4,appService.pdb.minAvailable=3,autoscaling.model.minReplicas=3,"
     "autoscaling.model.maxReplicas=3,modelService.pdb.minAvailable=2", {APP: 4, MODEL: 3}),
    # one pod (a one-node cluster): no PDB, it would block every drain
    ("autoscaling.app.minReplicas=1,autoscaling.model.minReplicas=1", {APP: 1, MODEL: 1}),
    ("autoscaling.enabled=false,appService.replicas=3,modelService.replicas=1", {APP: 3, MODEL: 1}),
])
def test_pdbs_keep_pods_below_the_replica_floor(sets, floor):
    r = render(parse_set(sets), tag="pdb-floor")
    for name, n in floor.items():
        pdb = r.find("PodDisruptionBudget", name)
        if n == 1:
            assert pdb is None, name
            continue
        values = DEFAULTS["appService" if name == APP else "modelService"]["pdb"] | parse_set(sets).get(
            "appService" if name == APP else "modelService", {}).get("pdb", {})
        assert pdb["spec"]["minAvailable"] == values["minAvailable"] < n
        dep = r.get("Deployment", name)
        assert pdb["spec"]["selector"]["matchLabels"] == dep["spec"]["selector"]["matchLabels"]
        autoscaler = r.find("HorizontalPodAutoscaler", name)
        assert (autoscaler["spec"]["minReplicas"] if autoscaler else dep["spec"]["replicas"]) == n


@pytest.mark.parametrize("sets,needle", [
    ("appService.pdb.minAvailable=2",
     "appService.pdb.minAvailable (2) must be below autoscaling.app.minReplicas (2)"),
    ("autoscaling.model.minReplicas=3,modelService.pdb.minAvailable=4",
     "modelService.pdb.minAvailable (4) must be below autoscaling.model.minReplicas (3)"),
    ("autoscaling.enabled=false,appService.replicas=2,appService.pdb.minAvailable=2",
     "appService.pdb.minAvailable (2) must be below appService.replicas (2)"),
    ("flagger.enabled=true,autoscaling.keda.enabled=true,appService.pdb.minAvailable=3",
     "appService.pdb.minAvailable (3) must be below autoscaling.app.minReplicas (2)"),
])
def test_a_pdb_that_would_block_every_drain_is_refused(sets, needle):
    message = render_error(parse_set(sets))
    assert needle in message and "drains" in message, message


# --- values the schema or the template checks refuse


@pytest.mark.parametrize("values,needles", [
    ({"autoscaling": {"app": {"maxReplicas": 1}}},
     ["autoscaling.app.maxReplicas (1) must be at least autoscaling.app.minReplicas (2)"]),
    ({"autoscaling": {"modelShadow": {"minReplicas": 3}}},
     ["autoscaling.modelShadow.maxReplicas (2) must be at least autoscaling.modelShadow.minReplicas (3)"]),
    ({"autoscaling": {"model": {"minReplicas": 0}}}, ["/autoscaling/model/minReplicas", "minimum"]),
    ({"autoscaling": {"appCanary": {"targetCPUUtilizationPercentage": "70%"}}},
     ["/autoscaling/appCanary/targetCPUUtilizationPercentage"]),
    ({"autoscaling": {"app": {"minReplica": 2}}}, ["additional properties 'minReplica'"]),
    ({"autoscaling": {"keda": {"targetPercentOfOverloadBound": 150}}},
     ["/autoscaling/keda/targetPercentOfOverloadBound", "maximum"]),
    ({"autoscaling": {"keda": {"serverAddress": "prometheus:9090"}}}, ["/autoscaling/keda/serverAddress"]),
    ({"appService": {"maxConcurrentRequests": 0}}, ["/appService/maxConcurrentRequests", "minimum"]),
    ({"modelService": {"pdb": {"minAvailable": 0}}}, ["/modelService/pdb/minAvailable", "minimum"]),
    ({"appService": {"resources": {"requests": {"cpu": None}}}},
     ["autoscaling.enabled scales on CPU utilisation", "appService.resources.requests.cpu"]),
    ({"autoscaling": {"keda": {"enabled": True}}, "monitoring": {"enabled": False}},
     ["autoscaling.keda.enabled needs monitoring.enabled"]),
    ({"autoscaling": {"keda": {"enabled": True}}, "modelService": {"resources": {"limits": {"cpu": None}}}},
     ["modelService.inferenceWorkers or modelService.resources.limits.cpu"]),
])
def test_nonsense_autoscaling_values_are_refused(values, needles):
    message = render_error(values)
    for needle in needles:
        assert needle in message, message


def test_without_a_cpu_request_keda_still_scales():
    """KEDA scales on requests in flight: the CPU request check is the HPAs' alone."""
    r = render({"autoscaling": {"keda": {"enabled": True}}, "appService": {"resources": {"requests": {"cpu": None}}}},
               tag="keda-no-cpu-request")
    assert APP in by_target(r, "ScaledObject")
