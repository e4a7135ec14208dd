"""The playbooks run twice against fake helm and kubectl: a second run changes nothing,
a changed value upgrades only its release, and alert e-mail settings put the SMTP
password in a Secret only (a half-configured setting stops the run).
"""

import json
import os
import shutil

import pytest
import yaml

from conftest import GROUP_VARS, HERE, ROOT, SMTP, explain, run, tool


def changed_tasks(output):
    names, current = [], None
    for line in output.splitlines():
        if line.startswith("TASK ["):
            current = line[6:line.rindex("]")]
        elif line.startswith("changed: ") and current:
            names.append(current)
    return names


def fake_cluster_play(tmp_path, ansible_env):
    """idempotency.yml runs the sms_app role and every add-on Helm release and manifest
    step against fake helm/kubectl (tests/provisioning/fakes) on a snapshot of the
    repository's helm/, istio/ and models/. Returns play(*extra_args, env=..., ok=True)
    -> (changed task names, helm upgrades so far, the run)."""
    repo = tmp_path / "repo"
    for part in ("helm", "istio", "models", "provisioning"):
        shutil.copytree(ROOT / part, repo / part, symlinks=False,
                        ignore=shutil.ignore_patterns(".vagrant", "kubeconfig", "shared"))
    state = tmp_path / "state"
    state.mkdir()
    env = dict(ansible_env)
    env.pop("ANSIBLE_CONFIG")
    env.update({"FAKE_STATE": str(state), "PATH": f"{HERE / 'fakes'}:{os.environ['PATH']}",
                "ANSIBLE_ROLES_PATH": str(repo / "provisioning" / "roles"), "SMS_SMTP_PASSWORD": ""})

    def play(*extra, extra_env=None, ok=True):
        proc = run([tool("ansible-playbook"), "-i", HERE / "inventory.ini", HERE / "idempotency.yml",
                    "-e", f"repo_root={repo}", "-e", f"manifests_dir={tmp_path / 'etc'}",
                    "-e", f"models_dir={tmp_path / 'shared' / 'models'}", *extra], env={**env, **(extra_env or {})})
        if not ok:
            assert proc.returncode != 0, explain(proc)
            return [], [], proc
        assert proc.returncode == 0, explain(proc)
        log = (state / "helm.log").read_text().splitlines()
        return changed_tasks(proc.stdout), [l.split()[2] for l in log if l.startswith("upgrade")], proc

    return play


def test_a_second_run_changes_nothing_and_a_changed_value_upgrades_only_its_release(tmp_path, ansible_env):
    state = tmp_path / "state"
    full_play = fake_cluster_play(tmp_path, ansible_env)

    def play(*extra):
        return full_play(*extra)[:2]

    changed, upgrades = play()
    assert changed, "the first run changed nothing"
    assert sorted(upgrades) == sorted(["sms-app", "flannel", "metallb", "kube-prometheus-stack",
                                       "ingress-nginx", "kubernetes-dashboard"]), upgrades
    releases = {r["name"]: r["chart"] for r in json.loads((state / "helm.json").read_text())}
    for key, chart in GROUP_VARS["charts"].items():
        assert releases[chart["chart"]] == f"{chart['chart']}-{chart['version']}", key
    assert (tmp_path / "shared" / "models" / "v1" / "model.onnx").is_file()

    changed, upgrades_again = play()
    assert changed == [], f"the second run changed: {changed}"
    assert upgrades_again == upgrades, "the second run called helm upgrade"

    changed, upgrades_third = play("-e", "sms_app_image_tag=0.2.0")
    assert upgrades_third[len(upgrades):] == ["sms-app"], upgrades_third
    assert 'tag: "0.2.0"' in (tmp_path / "etc" / "sms-app-values.yaml").read_text()


STORE_SECRET = "sms_app : Store the SMTP password in the Secret sms-app-smtp"


def test_smtp_settings_turn_alert_email_on_with_the_password_only_in_a_secret(tmp_path, ansible_env):
    """Given a server, a recipient and SMS_SMTP_PASSWORD: the Secret is applied from
    kubectl's standard input, the chart gets alerting on with existingSecret, and the
    password is in no file, command line, log or Ansible output; a second run changes
    nothing; a changed password updates the Secret without a Helm upgrade."""
    play = fake_cluster_play(tmp_path, ansible_env)
    state, etc = tmp_path / "state", tmp_path / "etc"
    password = "pw-" + os.urandom(8).hex()
    changed, upgrades_on, proc = play(*SMTP, extra_env={"SMS_SMTP_PASSWORD": password})
    assert STORE_SECRET in changed, changed
    assert upgrades_on == ["sms-app"], upgrades_on
    values = yaml.safe_load((etc / "sms-app-values.yaml").read_text())
    assert values["alerting"] == {
        "enabled": True,
        "email": {"to": "oncall@example.org", "from": "alertmanager@sms-app.local",
                  "smarthost": "smtp.example.org:587", "authUsername": "alertmanager@sms-app.local",
                  "requireTLS": True},
        "smtp": {"existingSecret": "sms-app-smtp", "passwordKey": "password"},
    }
    assert "apply -f -" in (state / "kubectl.log").read_text()
    assert "secret/sms-app-smtp" in json.loads((state / "kubectl.json").read_text())
    leaks = [p for p in tmp_path.rglob("*") if p.is_file() and password in p.read_text(errors="ignore")]
    assert not leaks, leaks
    assert password not in proc.stdout + proc.stderr

    changed, upgrades_again, _ = play(*SMTP, extra_env={"SMS_SMTP_PASSWORD": password})
    assert changed == [] and upgrades_again == upgrades_on, changed

    changed, upgrades_new_pw, _ = play(*SMTP, extra_env={"SMS_SMTP_PASSWORD": password + "-rotated"})
    assert changed == [STORE_SECRET], changed
    assert upgrades_new_pw == upgrades_on  # the chart only names the Secret


@pytest.mark.parametrize("extra,message", [
    (SMTP, "SMS_SMTP_PASSWORD"),                                   # no password
    (("-e", "sms_app_alert_smarthost=smtp.example.org:587"), "together"),  # no recipient
])
def test_half_configured_alert_email_stops_the_run(tmp_path, ansible_env, extra, message):
    play = fake_cluster_play(tmp_path, ansible_env)
    _, _, proc = play(*extra, ok=False)
    assert message in proc.stdout, explain(proc)
