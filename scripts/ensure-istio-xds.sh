#!/usr/bin/env bash
# Builds Istio's control plane for the local mesh when missing or stale, and prints the
# directory holding the binaries: istio-xds (istio/local/xds: Istio's pilot config
# generator and ADS server, no Kubernetes) and istioctl (`istioctl analyze` offline), both
# from the module version pinned in istio/local/xds/go.mod. Go's own module and build
# caches are used (as cargo uses its registry), so every clone on a machine shares one
# build of Istio: the first compiles a large part of Istio and Kubernetes' client
# libraries (see docs/mesh.md for the time), later clones and rebuilds take seconds. The
# package count is printed as it goes.
source "$(dirname "$0")/lib.sh"

GO="${GO:-$(command -v go || echo /usr/local/go/bin/go)}"
[ -x "$GO" ] || die "Go is required to build Istio's control plane (istio/local/xds needs Go >= $(sed -n 's/^go //p' "$ROOT/istio/local/xds/go.mod"))"
export GOFLAGS="-mod=readonly" GOTOOLCHAIN=local

src="$ROOT/istio/local/xds"
out="$ROOT/.cache/istio-xds"
stamp="$out/.source.sha256"
want="$(cd "$src" && cat go.mod go.sum ./*.go | sha256sum | cut -d' ' -f1)"
if [ "$(cat "$stamp" 2>/dev/null)" = "$want" ] && [ -x "$out/istio-xds" ] && [ -x "$out/istioctl" ]; then
  echo "$out"
  exit 0
fi

mkdir -p "$out"
rm -f "$stamp" "$out/istio-xds" "$out/istioctl"
istio="$(cd "$src" && "$GO" list -m -f '{{.Version}}' istio.io/istio)"
log "building Istio's control plane (istio.io/istio $istio): istio-xds and istioctl into ${out#"$ROOT"/}/"
log "  (the first build compiles ~1,500 Go packages, several minutes; later builds take seconds)"
start=$SECONDS
# -v names each package as it is compiled: print a count every 100 so progress shows
progress() { awk -v what="$1" '{ n++ } n % 100 == 0 { printf "==>   %s: %d packages compiled\n", what, n > "/dev/stderr"; fflush() } END { if (n) printf "==>   %s: %d packages compiled\n", what, n > "/dev/stderr" }'; }
(cd "$src" && "$GO" build -v -o "$out/istio-xds" . 2>&1 >/dev/null | tee "$out/build.log" | progress istio-xds) \
  || true
[ -x "$out/istio-xds" ] || { tail -20 "$out/build.log" >&2; die "building istio-xds failed (log: ${out#"$ROOT"/}/build.log)"; }
(cd "$src" && "$GO" build -v -o "$out/istioctl" istio.io/istio/istioctl/cmd/istioctl 2>&1 >/dev/null | tee "$out/build-istioctl.log" | progress istioctl) \
  || true
[ -x "$out/istioctl" ] || { tail -20 "$out/build-istioctl.log" >&2; die "building istioctl failed (log: ${out#"$ROOT"/}/build-istioctl.log)"; }
echo "$want" >"$stamp"
log "Istio's control plane built in $((SECONDS - start)) s"
echo "$out"
