#!/usr/bin/env bash
# `make mesh`: the canary and shadow experiment on one machine. It is `make cluster` (a
# real Kubernetes, istiod, the chart installed by the real helm with the local values:
# shadow on, Host sms.localhost), under the name and at the addresses the experiment has
# always had: the ingress gateway at http://127.0.0.1:8000 (Host sms.localhost), the
# cluster's Prometheus at http://127.0.0.1:9090 (what `make experiment` reads by
# default). Needs root (network namespaces). See docs/mesh.md and docs/local-cluster.md.
#
#   scripts/mesh.sh [--set KEY=VALUE]... [-f values.yaml]...          start (one at a time)
#   scripts/mesh.sh upgrade [--set KEY=VALUE]... [-f values.yaml]...  change the running one
#   e.g. scripts/mesh.sh upgrade --set istio.canary.weights.stable=80,istio.canary.weights.canary=20
#   make mesh ARGS='--set istio.canary.weights.canary=20 --set istio.canary.weights.stable=80'
#
# `upgrade` is the real `helm upgrade --reuse-values` of the release on the running cluster
# (its kubeconfig and helm from .cache/cluster; `helm rollback sms-app -n sms-app` undoes
# it). Ctrl-C, SIGTERM or SIGHUP (the terminal closed) stop everything it started.
# Addresses and state from the environment: CLUSTER_GATEWAY_PORT (8000),
# CLUSTER_PROMETHEUS_PORT (9090), CLUSTER_API_PORT (6443), CLUSTER_DIR (.cache/cluster).
# Traffic: `make mesh-traffic` (scripts/mesh-traffic.sh).
source "$(dirname "$0")/lib.sh"

case "${1:-}" in -h | --help) sed -n '2,19p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;; esac
if [ "${1:-}" != upgrade ]; then
  exec "$ROOT/scripts/cluster.sh" "$@"
fi
shift
# Run from the user's directory: a `-f values.yaml` is relative to it.
state="${CLUSTER_DIR:-$ROOT/.cache/cluster}"
[ -f "$state/access.json" ] || die "no running cluster in ${state#"$ROOT"/} (start it with make mesh, or make cluster)"
bin="${CLUSTER_BIN:-$ROOT/.cache/cluster/bin}"
exec "$bin/helm" --kubeconfig "$state/kubeconfig" upgrade sms-app "$ROOT/helm" -n sms-app --reuse-values --wait --timeout 5m "$@"
