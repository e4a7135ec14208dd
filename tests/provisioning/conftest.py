"""Shared by the checks of the cluster provisioning (provisioning/) and the container
images: the tools, running them, Ansible's environment and its rendering of every role
template.

Every check runs a real tool (yamllint, ansible-playbook, ansible-lint, vagrant,
kubernetes-validate, hadolint, Node with the Istio CRD models) or parses the real
files; a missing tool is a failure, never a skip.
"""

import os
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
PROV = ROOT / "provisioning"
VENV_BIN = Path(os.environ.get("PROV_VENV_BIN", ROOT / ".venv" / "provisioning" / "bin"))
GROUP_VARS = yaml.safe_load((PROV / "group_vars" / "all.yml").read_text())


def tool(name):
    """Path of a tool: the test virtualenv first, then PATH. Missing = failure."""
    candidate = VENV_BIN / name
    if candidate.exists():
        return str(candidate)
    found = shutil.which(name)
    assert found, f"{name} is not installed (tests/provisioning/run.sh installs it)"
    return found


def run(cmd, cwd=ROOT, env=None, timeout=600):
    full_env = dict(os.environ)
    full_env.update(env or {})
    return subprocess.run(
        [str(c) for c in cmd], cwd=cwd, env=full_env, capture_output=True, text=True, timeout=timeout
    )


def explain(proc):
    return f"exit {proc.returncode}\n--- stdout\n{proc.stdout[-6000:]}\n--- stderr\n{proc.stderr[-6000:]}"


@pytest.fixture(scope="session")
def ansible_env(tmp_path_factory):
    base = tmp_path_factory.mktemp("ansible")
    (base / "home").mkdir()
    (base / "tmp").mkdir()
    return {
        "ANSIBLE_HOME": str(base / "home"),
        "ANSIBLE_LOCAL_TEMP": str(base / "tmp"),
        "ANSIBLE_NOCOLOR": "1",
        "NO_COLOR": "1",
        "ANSIBLE_CONFIG": str(PROV / "ansible.cfg"),
    }


@pytest.fixture(scope="session")
def rendered(tmp_path_factory, ansible_env):
    """Every role template rendered by Ansible itself with group_vars/all.yml."""
    out = tmp_path_factory.mktemp("rendered")
    env = dict(ansible_env)
    env.pop("ANSIBLE_CONFIG")
    proc = run(
        [tool("ansible-playbook"), "-i", HERE / "inventory.ini", HERE / "render.yml", "-e", f"out_dir={out}"],
        env=env,
    )
    assert proc.returncode == 0, explain(proc)
    return out


def load_docs(path):
    return [d for d in yaml.safe_load_all(Path(path).read_text()) if d]


def dotted_keys(tree, prefix=""):
    """Leaf paths of a values tree: {'a': {'b': 1}} -> {'a.b'}."""
    keys = set()
    for key, value in tree.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            keys |= dotted_keys(value, path + ".")
        else:
            keys.add(path)
    return keys


SMTP = ("-e", "sms_app_alert_smarthost=smtp.example.org:587", "-e", "sms_app_alert_email_to=oncall@example.org",
        "--skip-tags", "addons")  # the application role alone
