#!/usr/bin/env bash
# The chart on a real Kubernetes on this machine (`make cluster`): the control plane and
# helm built from their Go modules, the project's node running the pods as processes in
# network namespaces; helm install/upgrade/rollback, the API server's own validation, pods
# recreated, and nothing left behind when the cluster is stopped or killed. Needs root
# (network namespaces). `make mesh` is this cluster: its upgrade and `make mesh-traffic` are
# tested here too. Extra arguments go to pytest.
source "$(dirname "$0")/../../scripts/lib.sh"
cd "$ROOT"
[ "$(id -u)" -eq 0 ] || die "the cluster tests need root: the cluster makes network namespaces and veth pairs"
apt_ensure iproute2 openssl nftables iptables curl
scripts/ensure-cluster-tools.sh >/dev/null || die "building the cluster's tools failed"
scripts/ensure-cluster-tools.sh istioctl >/dev/null || die "building istioctl failed"  # istioctl analyze
services_ensure  # the pods run the debug builds (CLUSTER_PROFILE=debug)
GRPCURL_V1="$(grpcurl_v1_ensure)"  # run inside a pod, as a mesh client
export GRPCURL_V1
# The node's own tests first: real network namespaces, processes and a pod lifecycle.
log "go test ./... in cluster/node"
(cd cluster/node && GOTOOLCHAIN=local GOFLAGS=-mod=readonly go test -count=1 ./...) || die "cluster/node's tests failed"
venv="$(venv_ensure cluster "$ROOT/tests/cluster/requirements.txt")"
mkdir -p test-output/cluster
exec "$venv/bin/python" -m pytest -p no:cacheprovider -q -rA --junitxml=test-output/cluster/junit.xml tests/cluster "$@"
