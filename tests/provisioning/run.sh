#!/usr/bin/env bash
# Provisioning and image checks: yamllint, ansible-playbook --syntax-check and
# ansible-lint --offline on provisioning/, vagrant validate, the manifests the playbooks
# apply rendered (Ansible templates, kustomize for istio/) and validated
# (kubernetes-validate, Istio CRD schema), hadolint and structural checks of the
# Dockerfile. Installs what is missing first.
source "$(dirname "$0")/../../scripts/lib.sh"
HERE="$ROOT/tests/provisioning"

apt_ensure vagrant
venv="$(venv_ensure provisioning "$HERE/requirements.txt")"
npm_ensure "$ROOT/tests/tools/crds"

for t in vagrant ruby node kubectl "$venv/bin/ansible-playbook" "$venv/bin/ansible-lint" "$venv/bin/yamllint" \
  "$venv/bin/kubernetes-validate" "$venv/bin/hadolint"; do
  command -v "$t" >/dev/null || die "required tool missing: $t"
done

export PROV_VENV_BIN="$venv/bin"
export PATH="$venv/bin:$PATH"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
export ANSIBLE_HOME="$tmp/ansible-home" ANSIBLE_LOCAL_TEMP="$tmp/ansible-tmp"
cd "$HERE"
"$venv/bin/python" -m pytest -q -p no:cacheprovider --basetemp="$tmp/pytest" "$@" "$HERE"
