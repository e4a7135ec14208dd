#!/usr/bin/env bash
# Prints the path of the ONNX Runtime shared library the model service loads
# (ort's `load-dynamic`). It is taken from the pinned onnxruntime wheel on PyPI,
# because ort's own binary download points at a CDN this project cannot rely on.
# The one place that names the version: the Dockerfile runs this script too.
# ORT_DIR chooses the folder (default .cache/onnxruntime-<version>).
source "$(dirname "$0")/lib.sh"

ORT_VERSION="1.31.1"
dest="${ORT_DIR:-$ROOT/.cache/onnxruntime-$ORT_VERSION}"
lib="$dest/libonnxruntime.so.$ORT_VERSION"
if [ ! -f "$lib" ]; then
  log "fetching the onnxruntime $ORT_VERSION wheel for its shared library"
  tmp="$(mktemp -d)"
  trap 'rm -rf "$tmp"' EXIT
  python3 -m pip download -q --disable-pip-version-check --no-deps --only-binary=:all: \
    -d "$tmp" "onnxruntime==$ORT_VERSION" >&2
  mkdir -p "$dest"
  python3 - "$tmp"/onnxruntime-*.whl "$dest" "$ORT_VERSION" <<'PY'
import sys, zipfile
wheel, dest, ver = sys.argv[1:4]
name = f"onnxruntime/capi/libonnxruntime.so.{ver}"
with zipfile.ZipFile(wheel) as z, open(f"{dest}/libonnxruntime.so.{ver}", "wb") as out:
    out.write(z.read(name))
PY
fi
echo "$lib"
