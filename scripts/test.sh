#!/usr/bin/env bash
# `make test`: the Rust workspace tests, then every area's suite under tests/<area>/run.sh
# (each installs its own tools when missing and exits non-zero on any failure).
# Usage: scripts/test.sh [area...]   (areas: rust, or a folder name under tests/)
source "$(dirname "$0")/lib.sh"
cd "$ROOT"

areas=("$@")
if [ ${#areas[@]} -eq 0 ]; then
  areas=(rust)
  for d in tests/*/run.sh; do areas+=("$(basename "$(dirname "$d")")"); done
fi

passed=0 failed=0 failed_names=()
for area in "${areas[@]}"; do
  log "test area: $area"
  if [ "$area" = rust ]; then
    cmd=(scripts/test-rust.sh)
  else
    cmd=("tests/$area/run.sh")
  fi
  if "${cmd[@]}"; then passed=$((passed + 1)); else failed=$((failed + 1)); failed_names+=("$area"); fi
done

echo
echo "test areas: ${passed} passed, ${failed} failed ${failed_names[*]:+(${failed_names[*]})}"
[ "$failed" -eq 0 ]
