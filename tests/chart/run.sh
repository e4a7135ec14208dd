#!/usr/bin/env bash
# The chart's test suite (issue 5): renders helm/ with the real Helm engine and checks
# every scenario's objects, the refused values, helm lint, kubernetes-validate --strict,
# the kubernetes-models CRD schemas, Flagger's CRD schemas (from its Go module), checkov,
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
# Flagger's CRDs (Canary, MetricTemplate) from Flagger's own Go module, the schema the
# chart's optional Flagger objects are validated against. Pinned: v1.36.1 is the newest
# version of github.com/fluxcd/flagger the Go module proxy serves. Cached in .cache/gomod.
FLAGGER_MODULE=github.com/fluxcd/flagger@v1.36.1
GO="$(command -v go || echo /usr/local/go/bin/go)"
if [ ! -x "$GO" ]; then
  apt_ensure golang-go
  GO="$(command -v go)" || die "go is required to fetch $FLAGGER_MODULE"
fi
mkdir -p "$ROOT/.cache/gomod"
flagger_dir="$(cd "$ROOT/.cache" && GOTOOLCHAIN=local GOWORK=off GOFLAGS=-modcacherw GOMODCACHE="$ROOT/.cache/gomod" \
  "$GO" mod download -json "$FLAGGER_MODULE" | python3 -c 'import json, sys; print(json.load(sys.stdin)["Dir"])')" \
  || die "could not fetch $FLAGGER_MODULE through the Go module proxy"
export FLAGGER_CRD="$flagger_dir/artifacts/flagger/crd.yaml" FLAGGER_MODULE
[ -f "$FLAGGER_CRD" ] || die "$FLAGGER_MODULE has no artifacts/flagger/crd.yaml"

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
