"""The playbooks' structure read from their files: every command idempotent by
construction, Helm releases installed only when needed, versions pinned in group_vars
only, the roles in cluster order, the node set up as kubeadm needs.
"""

import re

import yaml

from conftest import GROUP_VARS, PROV


def all_task_files():
    files = sorted(PROV.glob("roles/*/tasks/*.yml")) + sorted(PROV.glob("roles/*/handlers/*.yml"))
    return files + sorted(PROV.glob("tasks/*.yml"))


def test_every_command_is_idempotent_by_construction():
    """command/shell tasks either have `creates`, a `when` guard with changed_when, or
    report changed only from what they observed."""
    offenders = []
    for path in all_task_files():
        for task in yaml.safe_load(path.read_text()) or []:
            module = next((k for k in task if k in ("ansible.builtin.command", "ansible.builtin.shell")), None)
            if not module:
                continue
            args = task.get("args", {})
            if "creates" in args:
                continue
            changed_when = task.get("changed_when")
            if changed_when is False or isinstance(changed_when, str):
                continue
            if changed_when is True and ("when" in task or "handlers" in path.parts):
                continue
            offenders.append(f"{path.relative_to(PROV)}: {task['name']}")
    assert not offenders, offenders


def test_helm_installs_only_when_missing_outdated_or_changed():
    for path in [PROV / "tasks" / "helm_release.yml", PROV / "roles" / "sms_app" / "tasks" / "main.yml"]:
        tasks = yaml.safe_load(path.read_text())
        installs = [t for t in tasks if "helm upgrade --install" in str(t.get("ansible.builtin.command", ""))]
        assert installs, path
        for task in installs:
            assert "when" in task and "deployed" in task["when"], task["name"]
            assert "--wait" in task["ansible.builtin.command"]


def test_versions_are_pinned_in_group_vars_only():
    version = re.compile(r"(?<![\d.])v?\d+\.\d+\.\d+(?:-\d+)?(?![\d.])")
    offenders = []
    for path in [PROV / "site.yml", PROV / "Vagrantfile", *all_task_files(), *PROV.glob("roles/*/templates/*.j2")]:
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if line.lstrip().startswith("#"):
                continue
            if version.search(line):
                offenders.append(f"{path.relative_to(PROV)}:{number}: {line.strip()}")
    assert not offenders, offenders
    for key in ("kubernetes_version", "containerd_version", "helm_version", "istio_version", "vagrant_box_version"):
        assert re.fullmatch(r"v?\d+\.\d+\.\d+(-\d+)?", str(GROUP_VARS[key])), key
    for name, chart in GROUP_VARS["charts"].items():
        assert re.fullmatch(r"v?\d+\.\d+\.\d+", chart["version"]), name
        assert chart["repo"].startswith("https://") and chart["namespace"], name
    assert GROUP_VARS["kubernetes_version"].startswith(GROUP_VARS["kubernetes_minor"] + ".")


def test_site_runs_the_roles_in_cluster_order():
    plays = yaml.safe_load((PROV / "site.yml").read_text())
    assert [(p["hosts"], p["roles"]) for p in plays] == [
        ("all", ["common"]),
        ("control", ["control_plane"]),
        ("workers", ["workers"]),
        ("control", ["addons", "sms_app"]),
    ]


def test_node_setup_covers_what_kubeadm_needs():
    text = (PROV / "roles" / "common" / "tasks" / "main.yml").read_text()
    for needle in ("swapoff -a", "overlay", "br_netfilter", "net.bridge.bridge-nf-call-iptables",
                   "net.ipv4.ip_forward", "SystemdCgroup = true", "/etc/hosts", "selection: hold",
                   "kubelet={{ kubernetes_version }}", "kubeadm={{ kubernetes_version }}",
                   "kubectl={{ kubernetes_version }}", "--node-ip={{ node_ip }}"):
        assert needle in text, needle
    control = (PROV / "roles" / "control_plane" / "tasks" / "main.yml").read_text()
    for needle in ("kubeadm init", "--apiserver-advertise-address={{ node_ip }}", "--pod-network-cidr",
                   "creates: /etc/kubernetes/admin.conf", "ansible.builtin.fetch", "kubeconfig_host_path"):
        assert needle in control, needle
    assert "node-role.kubernetes.io/control-plane:NoSchedule-" in control  # WORKERS=0
    workers = (PROV / "roles" / "workers" / "tasks" / "main.yml").read_text()
    assert "kubeadm token create --print-join-command" in workers
    assert "creates: /etc/kubernetes/kubelet.conf" in workers
