"""The failure side of the alert rules against what the real app emits: an app whose model
tier is unreachable answers 5xx and counts its model calls as not ok, and a real Prometheus
with the shipped rules turns that into pending ModelCallsFailing, AppHighErrorRatio and
ModelServiceDown alerts (pending: their `for:` is minutes; the unit tests cover firing)."""
from harness import NAMESPACE, RULES, Load, Prometheus, free_port, local, poll, scrape_config

EXPECTED_PENDING = {"ModelCallsFailing", "AppHighErrorRatio", "ModelServiceDown"}


def test_unreachable_model_tier_raises_the_operator_alerts(log_dir, tmp_path):
    group = local.Stack(log_dir)
    try:
        dead_grpc, dead_metrics = f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"
        addr = f"127.0.0.1:{free_port()}"
        group.up(local.app("app-v1-model-down", http=addr, model_host=f"http://{dead_grpc}",
                           wait_for_model=False, MODEL_TIMEOUT_MS="500", LOG_FORMAT="text", RUST_LOG="info"))
        config = scrape_config([
            {"job": "sms-app-app", "address": addr, "pod": "sms-app-app-5c7d9e8f6-down1",
             "endpoint": "http"},
            {"job": "sms-app-model", "address": dead_metrics, "pod": "sms-app-model-6d4f8b9c7-down2",
             "endpoint": "http-metrics"}])
        config["rule_files"] = [str(RULES)]
        prom = Prometheus(group, tmp_path / "prometheus", config, name="prometheus-model-down")

        import requests
        session = requests.Session()
        statuses = []

        def one():
            r = session.post(f"http://{addr}/sms/", json={"sms": "Are we still on for lunch?"}, timeout=5)
            statuses.append(r.status_code)

        def pending():
            alerts = prom.api("alerts")["alerts"]
            return {a["labels"]["alertname"] for a in alerts
                    if a["state"] in {"pending", "firing"} and a["labels"].get("namespace") == NAMESPACE}

        with Load(one, pause=0.1, max_seconds=60, max_calls=600) as load:
            poll(lambda: EXPECTED_PENDING <= pending(), 40, what=f"{EXPECTED_PENDING} pending")
        assert not load.errors, load.errors
        assert statuses and all(s == 503 for s in statuses), sorted(set(statuses))

        calls = prom.query('sum by (version, outcome) (sms_model_calls_total{namespace="sms-app"}) > 0')
        outcomes = {s["metric"]["outcome"] for s in calls}
        assert outcomes and "ok" not in outcomes, calls
        ratio = prom.query('round((sum by (version) (rate(sms_model_calls_total{outcome!="ok"}[5m])))'
                           ' / sum by (version) (rate(sms_model_calls_total[5m])), 0.01)')
        assert [(s["metric"]["version"], s["value"][1]) for s in ratio] == [("v1", "1")], ratio
    finally:
        group.stop_all()
