"""The chart rendered with the values the playbook passes it: valid, its images and
hosts as configured, alert e-mail through the Secret the playbook makes.
"""

import base64
import json

import yaml

from conftest import GROUP_VARS, HERE, PROV, ROOT, SMTP, explain, load_docs, run, tool


def render_chart(values):
    import helm_python as helm  # the Helm v4 engine (Go SDK), no helm binary needed

    with helm.Chart.load(str(ROOT / "helm")) as chart:
        manifests = chart.render(values, name=GROUP_VARS["sms_app_release"],
                                 namespace=GROUP_VARS["sms_app_namespace"])
    return [d for k, v in sorted(manifests.items()) if k.endswith(".yaml") for d in yaml.safe_load_all(v) if d]


def test_chart_sends_alert_email_with_the_values_the_playbook_passes_given_smtp(tmp_path, ansible_env):
    """The values template rendered by Ansible with SMTP settings, then the chart: an
    AlertmanagerConfig that takes the password from the Secret the playbook creates."""
    env = dict(ansible_env)
    env.pop("ANSIBLE_CONFIG")
    proc = run([tool("ansible-playbook"), "-i", HERE / "inventory.ini", HERE / "render.yml",
                "-e", f"out_dir={tmp_path}", *SMTP, "-e", "sms_app_alert_smtp_require_tls=false"],
               env={**env, "SMS_SMTP_PASSWORD": "x"})
    assert proc.returncode == 0, explain(proc)
    docs = render_chart(yaml.safe_load((tmp_path / "sms_app" / "sms-app-values.yaml").read_text()))
    (amc,) = [d for d in docs if d["kind"] == "AlertmanagerConfig"]
    (email,) = amc["spec"]["receivers"][0]["emailConfigs"]
    assert email["authPassword"] == {"name": GROUP_VARS["sms_app_alert_smtp_secret"], "key": "password"}
    assert (email["to"], email["smarthost"], email["requireTLS"]) == ("oncall@example.org", "smtp.example.org:587", False)
    assert not [d for d in docs if d["kind"] == "Secret"], "the chart must not make its own Secret"
    (secret,) = load_docs(tmp_path / "sms_app" / "sms-app-smtp-secret.yaml")
    assert secret["metadata"] == {"name": "sms-app-smtp", "namespace": "sms-app",
                                  "labels": {"app.kubernetes.io/part-of": "sms-app",
                                             "app.kubernetes.io/managed-by": "ansible"}}
    assert base64.b64decode(secret["data"]["password"]) == b"x"
    check = run([tool("kubernetes-validate"), "-k", "1.32.0", "--strict", tmp_path / "sms_app" / "sms-app-smtp-secret.yaml"])
    assert check.returncode == 0, explain(check)


def test_alertmanager_routes_each_config_only_its_namespaces_alerts(rendered):
    values = yaml.safe_load((rendered / "addons" / "kube-prometheus-stack-values.yaml").read_text())
    spec = values["alertmanager"]["alertmanagerSpec"]
    assert spec["alertmanagerConfigSelector"] == {}
    assert spec["alertmanagerConfigMatcherStrategy"] == {"type": "OnNamespace"}


def test_chart_renders_and_validates_with_the_values_the_playbook_passes(rendered, tmp_path):
    values = yaml.safe_load((rendered / "sms_app" / "sms-app-values.yaml").read_text())
    docs = render_chart(values)
    by_kind = {}
    for d in docs:
        by_kind.setdefault(d["kind"], {})[d["metadata"]["name"]] = d
    deployments = by_kind["Deployment"]
    assert set(deployments) == {"sms-app-app", "sms-app-app-canary", "sms-app-model", "sms-app-model-shadow"}
    app_version = yaml.safe_load((ROOT / "helm" / "Chart.yaml").read_text())["appVersion"]
    pod = deployments["sms-app-model"]["spec"]["template"]["spec"]
    (model,) = [c for c in pod["containers"] if c["name"] != "istio-proxy"]
    assert model["image"] == f"sms-app/model-service:{app_version}"
    assert [v["hostPath"]["path"] for v in pod["volumes"] if "hostPath" in v] == ["/mnt/shared/models"]
    assert by_kind["Ingress"]["sms-app-ingress"]["spec"]["rules"][0]["host"] == "sms-app.local"
    assert "sms-istio.local" in by_kind["Gateway"]["sms-app-gateway"]["spec"]["servers"][0]["hosts"]

    core = tmp_path / "core.yaml"
    core.write_text(yaml.safe_dump_all([d for d in docs if "." not in d["apiVersion"].split("/")[0]
                                        or d["apiVersion"].split("/")[0].endswith("k8s.io")]))
    proc = run([tool("kubernetes-validate"), "-k", "1.32.0", "--strict", core])
    assert proc.returncode == 0, explain(proc)


def test_image_registry_and_tag_reach_every_pod():
    """What SMS_IMAGE_REGISTRY / SMS_IMAGE_TAG become: the chart's image.registry and tags."""
    import jinja2  # Ansible's template engine, with the two filters the template uses

    env = jinja2.Environment(undefined=jinja2.StrictUndefined)
    env.filters["to_json"] = json.dumps
    env.filters["bool"] = lambda v: v is True or str(v).lower() in ("true", "yes", "1")
    template = env.from_string((PROV / "roles" / "sms_app" / "templates" / "sms-app-values.yaml.j2").read_text())
    text = template.render({**GROUP_VARS, "sms_app_image_registry": "registry.example:5000",
                            "sms_app_image_tag": "0.2.0", "sms_app_alerting_enabled": False})
    docs = render_chart(yaml.safe_load(text))
    images = {c["image"] for d in docs if d["kind"] == "Deployment"
              for c in d["spec"]["template"]["spec"]["containers"]}
    assert images == {"registry.example:5000/sms-app/app-service:0.2.0",
                      "registry.example:5000/sms-app/model-service:0.2.0"}
