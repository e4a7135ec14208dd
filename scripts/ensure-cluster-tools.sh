#!/usr/bin/env bash
# Builds what `make cluster` runs, when missing or stale, and prints the directory that
# holds the binaries: etcd, kube-apiserver, kube-controller-manager, kube-scheduler,
# kube-proxy and kubectl (k8s.io/kubernetes), helm, CoreDNS, and the project's own node
# (cluster/node: a virtual-kubelet whose pods are processes in network namespaces), and
# Istio's pilot-discovery (istiod) and pilot-agent (and istioctl, on request), from the Istio
# version cluster/build/istio pins, Prometheus (with Kubernetes service discovery), the
# Prometheus Operator with its config reloader, and Flagger.
# Each comes from the wrapper module under cluster/build/ (or its own folder) that pins
# its version; Go's module and build caches are shared by every clone on the machine, so
# only the first build is long (the API server alone ~10 min on 2 cores). One Go build at
# a time; the package count shows progress.
#
#   scripts/ensure-cluster-tools.sh [tool...]    (default: what make cluster runs)
source "$(dirname "$0")/lib.sh"

GO="${GO:-$(command -v go || echo /usr/local/go/bin/go)}"
[ -x "$GO" ] || die "Go is required to build the local cluster (see cluster/build/*/go.mod for the versions)"
export GOFLAGS="-mod=readonly" GOTOOLCHAIN=local

out="$ROOT/.cache/cluster/bin"
mkdir -p "$out"

K8S_VERSION=v1.36.1 HELM_VERSION=v4.3.2 PROMETHEUS_VERSION=3.16.0  # module v0.316.0
k8s_ldflags() {
  local minor="${K8S_VERSION#v1.}"; minor="${minor%%.*}"
  local x="" pkg
  for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    x+=" -X $pkg.gitVersion=$K8S_VERSION -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor -X $pkg.gitTreeState=clean"
  done
  echo "-s -w$x"
}

# tool name -> "module folder|package|ldflags"
declare -A TOOLS=(
  [etcd]="cluster/build/etcd|go.etcd.io/etcd/server/v3|-s -w"
  [kube-apiserver]="cluster/build/kubernetes|k8s.io/kubernetes/cmd/kube-apiserver|$(k8s_ldflags)"
  [kube-controller-manager]="cluster/build/kubernetes|k8s.io/kubernetes/cmd/kube-controller-manager|$(k8s_ldflags)"
  [kube-scheduler]="cluster/build/kubernetes|k8s.io/kubernetes/cmd/kube-scheduler|$(k8s_ldflags)"
  [kube-proxy]="cluster/build/kubernetes|k8s.io/kubernetes/cmd/kube-proxy|$(k8s_ldflags)"
  [kubectl]="cluster/build/kubernetes|k8s.io/kubernetes/cmd/kubectl|$(k8s_ldflags)"
  [helm]="cluster/build/helm|helm.sh/helm/v4/cmd/helm|-s -w -X helm.sh/helm/v4/internal/version.version=$HELM_VERSION"
  [coredns]="cluster/build/coredns|github.com/coredns/coredns|-s -w"
  [pilot-discovery]="cluster/build/istio|istio.io/istio/pilot/cmd/pilot-discovery|-s -w"
  [pilot-agent]="cluster/build/istio|istio.io/istio/pilot/cmd/pilot-agent|-s -w"
  [istioctl]="cluster/build/istio|istio.io/istio/istioctl/cmd/istioctl|-s -w"
  [sms-node]="cluster/node|.|-s -w"
  [prometheus-operator]="cluster/build/prometheus-operator|github.com/prometheus-operator/prometheus-operator/cmd/operator|-s -w"
  [flagger]="cluster/build/flagger|github.com/fluxcd/flagger/cmd/flagger|-s -w"
  [prometheus]="cluster/build/prometheus|github.com/prometheus/prometheus/cmd/prometheus|-s -w -X github.com/prometheus/common/version.Version=$PROMETHEUS_VERSION"
  [prometheus-config-reloader]="cluster/build/prometheus-operator|github.com/prometheus-operator/prometheus-operator/cmd/prometheus-config-reloader|-s -w"
)
# What `make cluster` runs (istioctl is built on request: the cluster tests' `istioctl analyze`).
ORDER=(etcd helm kube-apiserver kube-controller-manager kube-scheduler kube-proxy kubectl coredns sms-node
       pilot-discovery pilot-agent prometheus prometheus-operator prometheus-config-reloader flagger)

# -v names each package as it is compiled: print a count every 100 so progress shows
progress() { awk -v what="$1" '{ n++ } n % 100 == 0 { printf "==>   %s: %d packages compiled\n", what, n > "/dev/stderr"; fflush() } END { if (n) printf "==>   %s: %d packages compiled\n", what, n > "/dev/stderr" }'; }

build() {
  local name="$1" spec="${TOOLS[$1]:-}"
  [ -n "$spec" ] || die "unknown cluster tool: $name (one of: ${ORDER[*]})"
  local dir pkg ldflags
  IFS='|' read -r dir pkg ldflags <<<"$spec"
  # Rebuilt when the module's pins, its own sources or the flags change.
  local want
  want="$(cd "$ROOT/$dir" && { cat go.mod go.sum; find . -name '*.go' | sort | xargs -r cat; echo "$pkg $ldflags"; } | sha256sum | cut -d' ' -f1)"
  local stamp="$out/.$name.sha256"
  if [ -x "$out/$name" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$want" ]; then
    return 0
  fi
  rm -f "$stamp" "$out/$name"
  log "building $name ($pkg, pinned in $dir/go.mod)"
  local start=$SECONDS
  (cd "$ROOT/$dir" && "$GO" build -v -trimpath -ldflags "$ldflags" -o "$out/$name" "$pkg" 2>&1 >/dev/null \
    | tee "$out/$name.build.log" | progress "$name") || true
  [ -x "$out/$name" ] || { tail -20 "$out/$name.build.log" >&2; die "building $name failed (log: ${out#"$ROOT"/}/$name.build.log)"; }
  echo "$want" >"$stamp"
  log "$name built in $((SECONDS - start)) s"
}

tools=("$@")
[ ${#tools[@]} -gt 0 ] || tools=("${ORDER[@]}")
for t in "${tools[@]}"; do build "$t"; done
echo "$out"
