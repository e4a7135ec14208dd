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
cd "$ROOT"
[ "$(id -u)" -eq 0 ] || die "make cluster needs root: it creates network namespaces, veth pairs and a bridge"
command -v ip >/dev/null || apt_ensure iproute2
command -v openssl >/dev/null || apt_ensure openssl
command -v nft >/dev/null || apt_ensure nftables  # kube-proxy programs Services with nft
scripts/ensure-cluster-tools.sh >/dev/null
exec python3 cluster/supervise.py run "$@"
