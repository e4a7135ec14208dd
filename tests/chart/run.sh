#!/usr/bin/env bash
# The chart's test suite: renders helm/ with the real Helm engine and checks
# every scenario's objects, the refused values, helm lint, kubernetes-validate --strict,
# the kubernetes-models CRD schemas, Flagger's and KEDA's CRD schemas (from their Go modules), checkov,
# and promtool on the alert rules as rendered under other release names. Installs its pinned tools when missing;
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
# CRDs the chart's optional objects are validated against, from the projects' own Go
# modules (their source trees carry the CRD files), cached in .cache/gomod.
GO="$(command -v go || echo /usr/local/go/bin/go)"
if [ ! -x "$GO" ]; then
  apt_ensure golang-go
  GO="$(command -v go)" || die "go is required to fetch the CRDs' Go modules"
fi
mkdir -p "$ROOT/.cache/gomod"
# go_module_dir MODULE@VERSION: the module's source directory, downloaded when missing.
go_module_dir() {
  (cd "$ROOT/.cache" && flock /tmp/sms-go-build.lock env GOTOOLCHAIN=local GOWORK=off GOFLAGS=-modcacherw \
    GOMODCACHE="$ROOT/.cache/gomod" "$GO" mod download -json "$1" \
    | python3 -c 'import json, sys; print(json.load(sys.stdin)["Dir"])') \
    || die "could not fetch $1 through the Go module proxy"
}
# Flagger's (Canary, MetricTemplate). Pinned: v1.36.1 is the newest version of
# github.com/fluxcd/flagger the Go module proxy serves.
FLAGGER_MODULE=github.com/fluxcd/flagger@v1.36.1
export FLAGGER_CRD="$(go_module_dir "$FLAGGER_MODULE")/artifacts/flagger/crd.yaml" FLAGGER_MODULE
[ -f "$FLAGGER_CRD" ] || die "$FLAGGER_MODULE has no artifacts/flagger/crd.yaml"
# KEDA's ScaledObject (autoscaling.keda). Pinned: v2.20.2 is the newest version whose
# go.mod the Go toolchain here accepts (v2.21 needs a newer Go).
KEDA_MODULE=github.com/kedacore/keda/v2@v2.20.2
export KEDA_CRD="$(go_module_dir "$KEDA_MODULE")/config/crd/bases/keda.sh_scaledobjects.yaml" KEDA_MODULE
[ -f "$KEDA_CRD" ] || die "$KEDA_MODULE has no config/crd/bases/keda.sh_scaledobjects.yaml"

venv="$(venv_ensure chart "$HERE/requirements.txt")"
checkov_venv="$(venv_ensure chart-checkov "$HERE/requirements-checkov.txt")"
npm_ensure "$ROOT/tests/tools/crds"

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
