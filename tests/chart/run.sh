#!/usr/bin/env bash
# The chart's test suite (issue 5): renders helm/ with the real Helm engine and checks
# every scenario's objects, the refused values, helm lint, kubernetes-validate --strict,
# the kubernetes-models CRD schemas, checkov, and promtool on the alert rules as rendered
# under other release names. Installs its pinned tools when missing;
# a tool that cannot be found fails the suite.
source "$(dirname "$0")/../../scripts/lib.sh"
cd "$ROOT"

HERE=tests/chart
OUT="$ROOT/test-output/chart"

command -v node >/dev/null || die "node (20 or later) is required for the CRD validators"
command -v npm >/dev/null || die "npm is required for the CRD validators"
command -v kubectl >/dev/null || die "kubectl is required (kubectl kustomize renders istio/)"
[ -L helm/files/grafana ] || die "helm/files/grafana must be a link to ../../grafana"
[ -d grafana ] || die "grafana/ is missing: the chart's dashboards and rules link dangles"

apt_ensure prometheus   # promtool: the rendered alert rules under other release names
command -v promtool >/dev/null || die "promtool is missing after installing the prometheus package"
venv="$(venv_ensure chart "$HERE/requirements.txt")"
checkov_venv="$(venv_ensure chart-checkov "$HERE/requirements-checkov.txt")"
npm_ensure "$ROOT/$HERE"

export KUBERNETES_VALIDATE="$venv/bin/kubernetes-validate"
export CHECKOV="$checkov_venv/bin/checkov"
export CHART_TEST_OUT="$OUT"
for t in "$KUBERNETES_VALIDATE" "$CHECKOV" "$venv/bin/pytest"; do
  [ -x "$t" ] || die "missing tool after install: $t"
done

rm -rf "$OUT"
mkdir -p "$OUT"
log "chart tests (rendered manifests and reports in test-output/chart/)"
"$venv/bin/python" -m pytest "$HERE" -q -p no:cacheprovider \
  --junitxml="$OUT/junit.xml" "$@"
