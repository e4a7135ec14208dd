"""The Vagrantfile: `vagrant validate` for any worker count, and what it asks of
VirtualBox and Ansible read through a probe (machines, network, shared folder, one
Ansible run, SMTP settings without the password), its defaults, its box and addresses
from group_vars.
"""

import json
import os
import re
import subprocess

import pytest

from conftest import GROUP_VARS, HERE, PROV, explain, run, tool


@pytest.fixture(scope="session")
def vagrant_env(tmp_path_factory):
    base = tmp_path_factory.mktemp("vagrant")
    return {"VAGRANT_HOME": str(base / "home"), "VAGRANT_DOTFILE_PATH": str(base / "dot"),
            "SHARED_DIR": str(base / "shared"), "VAGRANT_CHECKPOINT_DISABLE": "1"}


@pytest.mark.parametrize("workers", ["0", "2", "3"])
def test_vagrant_validate(vagrant_env, workers):
    env = dict(vagrant_env, WORKERS=workers)
    proc = run([tool("vagrant"), "validate", "--ignore-provider"], cwd=PROV, env=env, timeout=300)
    assert proc.returncode == 0, explain(proc)
    assert "Vagrantfile validated successfully" in proc.stdout
    machines = re.findall(r"==> (\S+): Ignoring provider config", proc.stdout)
    assert machines == ["ctrl"] + [f"node-{i}" for i in range(1, int(workers) + 1)], proc.stdout


def test_vagrant_refuses_a_nonsense_worker_count(vagrant_env):
    env = dict(vagrant_env, WORKERS="12")
    proc = run([tool("vagrant"), "validate", "--ignore-provider"], cwd=PROV, env=env, timeout=300)
    assert proc.returncode != 0
    assert "WORKERS must be between 0 and 9" in proc.stdout + proc.stderr


def probe_vagrantfile(tmp_path, **env):
    """What the Vagrantfile configures, recorded by vagrantfile_probe.rb (a stand-in for
    Vagrant's configuration object), with the given environment variables."""
    env = {"SHARED_DIR": str(tmp_path / "shared"), **env}
    for key in ("WORKERS", "CTRL_CPUS", "CTRL_MEMORY", "WORKER_CPUS", "WORKER_MEMORY",
                "SMS_IMAGE_REGISTRY", "SMS_IMAGE_TAG", "SMS_SMTP_SMARTHOST", "SMS_ALERT_EMAIL_TO",
                "SMS_ALERT_EMAIL_FROM", "SMS_SMTP_USERNAME", "SMS_SMTP_PASSWORD"):
        env.setdefault(key, "")
    clean = {k: v for k, v in env.items() if v != ""}
    full = {k: v for k, v in os.environ.items() if k not in env}
    full.update(clean)
    proc = subprocess.run([tool("ruby"), HERE / "vagrantfile_probe.rb", PROV / "Vagrantfile"], cwd=PROV,
                          env=full, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, explain(proc)
    return json.loads(proc.stdout)


def settings(block):
    return {c["set"]: c["value"] for c in block.get("calls", []) if "set" in c}


def calls(block, name):
    return [c for c in block.get("calls", []) if c.get("call") == name]


@pytest.mark.parametrize("workers", [0, 1, 3])
def test_vagrantfile_machines_network_folder_and_one_ansible_run(tmp_path, workers):
    conf = probe_vagrantfile(tmp_path, WORKERS=str(workers), WORKER_CPUS="3", WORKER_MEMORY="5000",
                             CTRL_CPUS="4", CTRL_MEMORY="3000", SMS_IMAGE_REGISTRY="registry.example:5000")
    vm = conf["vm"]
    assert settings(vm)["box"] == GROUP_VARS["vagrant_box"]
    assert settings(vm)["box_version"] == GROUP_VARS["vagrant_box_version"]
    folders = {c["args"][1]: c for c in calls(vm, "synced_folder")}
    assert folders["/mnt/shared"]["args"][0] == str(tmp_path / "shared")
    assert folders["/vagrant"]["kwargs"] == {"disabled": True}

    machines = calls(vm, "define")
    names = [m["args"][0] for m in machines]
    assert names == ["ctrl"] + [f"node-{i}" for i in range(1, workers + 1)]
    provisioners = []
    for index, machine in enumerate(machines):
        inner = machine["block"]["vm"]
        (net,) = calls(inner, "network")
        assert net["args"] == ["private_network"]
        assert net["kwargs"]["ip"] == ("192.168.56.100" if index == 0 else f"192.168.56.{100 + index}")
        (provider,) = calls(inner, "provider")
        assert provider["args"] == ["virtualbox"]
        size = settings(provider["block"])
        assert (size["cpus"], size["memory"]) == ((4, 3000) if index == 0 else (3, 5000))
        provisioners += [(machine["args"][0], p) for p in calls(inner, "provision")]

    # one Ansible run, from the last machine Vagrant brings up, over every node
    (owner, ansible), = provisioners
    assert owner == names[-1] and ansible["args"] == ["ansible"]
    opts = settings(ansible["block"])
    assert opts["playbook"] == "site.yml" and opts["limit"] == "all"
    assert opts["groups"] == {"control": ["ctrl"], "workers": names[1:]}
    assert opts["host_vars"] == {
        n: {"node_ip": "192.168.56.100" if i == 0 else f"192.168.56.{100 + i}"} for i, n in enumerate(names)}
    assert opts["extra_vars"] == {"sms_app_image_registry": "registry.example:5000"}


def test_vagrantfile_passes_the_smtp_settings_but_never_the_password(tmp_path):
    conf = probe_vagrantfile(tmp_path, SMS_SMTP_SMARTHOST="smtp.example.org:587",
                             SMS_ALERT_EMAIL_TO="oncall@example.org", SMS_SMTP_PASSWORD="s3cret-not-on-argv")
    (machine,) = [m for m in calls(conf["vm"], "define") if calls(m["block"]["vm"], "provision")]
    (ansible,) = calls(machine["block"]["vm"], "provision")
    extra = settings(ansible["block"])["extra_vars"]
    assert extra == {"sms_app_alert_smarthost": "smtp.example.org:587", "sms_app_alert_email_to": "oncall@example.org"}
    # Ansible reads the password from its own environment (inherited from `vagrant up`).
    assert "s3cret-not-on-argv" not in json.dumps(conf)
    assert GROUP_VARS["sms_app_alert_smtp_password"] == "{{ lookup('ansible.builtin.env', 'SMS_SMTP_PASSWORD') }}"


def test_vagrantfile_defaults(tmp_path):
    conf = probe_vagrantfile(tmp_path)
    machines = calls(conf["vm"], "define")
    assert [m["args"][0] for m in machines] == ["ctrl", "node-1", "node-2"]
    sizes = [settings(calls(m["block"]["vm"], "provider")[0]["block"]) for m in machines]
    assert [(s["cpus"], s["memory"]) for s in sizes] == [(2, 4096), (2, 6144), (2, 6144)]


def test_vagrantfile_takes_box_and_addresses_from_group_vars():
    text = (PROV / "Vagrantfile").read_text()
    code = "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#"))
    assert not re.search(r"\d+\.\d+\.\d+\.\d+", code), "IP addresses belong in group_vars/all.yml"
    assert "bento/" not in code and "vagrant_box_version" in code
    for needle in ('"private_network"', "/vagrant", '"ansible"', 'ansible.limit = "all"', "synced_folder SHARED_DIR"):
        assert needle in code, needle
    assert GROUP_VARS["shared_mount"] == "/mnt/shared"
    assert GROUP_VARS["models_dir"] == "/mnt/shared/models"
    assert GROUP_VARS["control_ip"] == "192.168.56.100"
    assert GROUP_VARS["worker_ip_start"] == 101
