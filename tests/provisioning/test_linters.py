"""The linters on provisioning/: yamllint, ansible-playbook --syntax-check and
ansible-lint's production profile, and a proof that ansible-lint really lints the roles.
"""

import shutil

from conftest import HERE, PROV, explain, run, tool


def test_yamllint_passes_on_everything_under_provisioning():
    proc = run([tool("yamllint"), "--strict", "-c", PROV / ".yamllint", PROV, *HERE.glob("*.yml")])
    assert proc.returncode == 0, explain(proc)


def test_ansible_playbook_syntax_check(ansible_env):
    proc = run(
        [tool("ansible-playbook"), "--syntax-check", "-i", HERE / "inventory.ini", "site.yml"],
        cwd=PROV,
        env=ansible_env,
    )
    assert proc.returncode == 0, explain(proc)
    assert "playbook: site.yml" in proc.stdout


def test_ansible_lint_offline_production_profile(ansible_env):
    proc = run([tool("ansible-lint"), "--offline", "--nocolor"], cwd=PROV, env=ansible_env)
    assert proc.returncode == 0, explain(proc)
    assert "Profile 'production' was required, and it passed" in proc.stdout + proc.stderr, explain(proc)


def test_ansible_lint_really_lints_the_roles(ansible_env, tmp_path):
    """A task without changed_when must fail ansible-lint: the pass above means something."""
    copy = tmp_path / "provisioning"
    shutil.copytree(PROV, copy, ignore=shutil.ignore_patterns(".vagrant", "shared", "kubeconfig"))
    tasks = copy / "roles" / "common" / "tasks" / "main.yml"
    tasks.write_text(tasks.read_text() + "\n- name: Not idempotent\n  ansible.builtin.command: touch /tmp/x\n")
    proc = run([tool("ansible-lint"), "--offline", "--nocolor"], cwd=copy, env=ansible_env)
    assert proc.returncode != 0, explain(proc)
    assert "no-changed-when" in proc.stdout + proc.stderr
