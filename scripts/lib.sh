#!/usr/bin/env bash
# Shared helpers for the task runner and test scripts: each installs a tool only
# when it is missing, so a second `make test` is quick and a fresh machine works.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export ROOT

log() { printf '==> %s\n' "$*" >&2; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

# apt_ensure PKG... : install Debian packages that are not installed yet.
apt_ensure() {
  local missing=()
  for pkg in "$@"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed' || missing+=("$pkg")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  log "apt-get install ${missing[*]}"
  local sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  # Refresh the package lists once per hour, not once per test area.
  local stamp="$ROOT/.cache/apt-lists-updated"
  if [ -z "$(find "$stamp" -mmin -60 2>/dev/null)" ]; then
    $sudo apt-get update -qq >/dev/null
    mkdir -p "$ROOT/.cache" && touch "$stamp"
  fi
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

# venv_ensure NAME REQUIREMENTS_FILE : a virtualenv at .venv/NAME with the pinned
# requirements; re-installs only when the requirements file changes. Prints its path.
venv_ensure() {
  local name="$1" req="$2" dir="$ROOT/.venv/$1"
  local stamp="$dir/.requirements.sha256"
  # the tooling's packaging is part of what a virtualenv holds (its code is linked, editable)
  local want; want="$(cat "$req" "$ROOT/tooling/pyproject.toml" | sha256sum | cut -d' ' -f1)"
  if [ ! -x "$dir/bin/python" ]; then
    log "creating virtualenv .venv/$name"
    python3 -m venv "$dir" >&2
  fi
  if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
    log "pip install -r ${req#"$ROOT"/} and the project's tooling (editable) into .venv/$name"
    "$dir/bin/pip" install -q --disable-pip-version-check -r "$req" >&2
    "$dir/bin/pip" install -q --disable-pip-version-check --no-deps -e "$ROOT/tooling" >&2
    echo "$want" >"$stamp"
  fi
  echo "$dir"
}

# npm_ensure DIR : npm ci (or install) in DIR when node_modules is missing or stale.
npm_ensure() {
  local dir="$1"
  local stamp="$dir/node_modules/.package-lock.sha256"
  local want; want="$(cat "$dir/package.json" "$dir/package-lock.json" 2>/dev/null | sha256sum | cut -d' ' -f1)"
  if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
    log "npm install in ${dir#"$ROOT"/}"
    if [ -f "$dir/package-lock.json" ]; then
      (cd "$dir" && npm ci --silent --no-audit --no-fund >&2)
    else
      (cd "$dir" && npm install --silent --no-audit --no-fund >&2)
    fi
    echo "$want" >"$stamp"
  fi
}

# services_ensure : the debug binaries the test suites start through tooling/smsdev/stack.py, and
# ORT_DYLIB_PATH exported for the model service.
services_ensure() {
  (cd "$ROOT" && cargo build --locked -q -p model-service -p app-service) || die "cargo build failed"
  ORT_DYLIB_PATH="$("$ROOT/scripts/ensure-ort.sh")" || die "scripts/ensure-ort.sh failed"
  export ORT_DYLIB_PATH
}

# grpcurl 1.9 (asks reflection v1), a Go module built from the module proxy into .cache
# (pinned release); prints the binary's path. A static binary: pods of the local cluster
# can run it too (the Python package's wrapper needs an interpreter they may not reach).
GRPCURL_V1_VERSION=v1.9.3
grpcurl_v1_ensure() {
  local bin="$ROOT/.cache/grpcurl-$GRPCURL_V1_VERSION/grpcurl"
  if [ ! -x "$bin" ]; then
    command -v go >/dev/null || die "go is needed to build grpcurl $GRPCURL_V1_VERSION"
    log "building grpcurl $GRPCURL_V1_VERSION"
    GOBIN="$(dirname "$bin")" GOTOOLCHAIN=local go install "github.com/fullstorydev/grpcurl/cmd/grpcurl@$GRPCURL_V1_VERSION" >&2 \
      || die "go install grpcurl failed"
  fi
  echo "$bin"
}
