#!/usr/bin/env bash
# Builds Sloth (the SLO rule generator `make slo` and the observability tests run) when
# missing or stale and prints the binary's path. The version is pinned by the wrapper
# module grafana/slos/build/go.mod (its `tool` line); Go's module and build caches are
# shared by every clone on the machine, so only the first build is long (~2 min on 2 cores).
#
#   scripts/ensure-sloth.sh
source "$(dirname "$0")/lib.sh"

GO="${GO:-$(command -v go || echo /usr/local/go/bin/go)}"
[ -x "$GO" ] || die "Go is required to build Sloth (see grafana/slos/build/go.mod for the version)"
export GOFLAGS="-mod=readonly -modcacherw" GOTOOLCHAIN=local

module="$ROOT/grafana/slos/build"
out="$ROOT/.cache/sloth/bin"
bin="$out/sloth"
pkg=github.com/slok/sloth/cmd/sloth
version="$(awk '$1 == "github.com/slok/sloth" { print $2 }' "$module/go.mod")"
[ -n "$version" ] || die "grafana/slos/build/go.mod does not require github.com/slok/sloth"
# Sloth writes its version into every generated file; built as a dependency it cannot
# read it from the build info, so it is set here.
ldflags="-s -w -X github.com/slok/sloth/internal/info.Version=$version"

want="$(cd "$module" && { cat go.mod go.sum; echo "$pkg $ldflags"; } | sha256sum | cut -d' ' -f1)"
stamp="$out/.sloth.sha256"
if [ -x "$bin" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$want" ]; then
  echo "$bin"
  exit 0
fi
mkdir -p "$out"
rm -f "$stamp" "$bin"
log "building sloth $version (pinned in grafana/slos/build/go.mod)"
start=$SECONDS
# One Go build at a time on this machine: the lock is shared with the other Go builds.
(cd "$module" && flock /tmp/sms-go-build.lock "$GO" build -trimpath -ldflags "$ldflags" -o "$bin" "$pkg") \
  >"$out/sloth.build.log" 2>&1 || true
[ -x "$bin" ] || { tail -20 "$out/sloth.build.log" >&2; die "building sloth failed (log: .cache/sloth/bin/sloth.build.log)"; }
echo "$want" >"$stamp"
log "sloth built in $((SECONDS - start)) s"
echo "$bin"
