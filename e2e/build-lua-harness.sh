#!/usr/bin/env bash
# Builds e2e/lua-harness (Argo CD's Lua interpreter, gopher-lua, running a health check) into a
# cache outside the repository, keyed by the gopher-lua version and the harness's source; prints
# the binary's path last (progress on stderr).
set -euo pipefail
cd "$(dirname "$0")/.."
GOPHER_LUA_VERSION=${GOPHER_LUA_VERSION:-v1.1.1}
CACHE=${INFERENCE_OPERATOR_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/inference-operator}
SUM=$(sha256sum e2e/lua-harness/main.go | cut -c1-12)
BIN="$CACHE/bin/lua-harness-gopher-lua-$GOPHER_LUA_VERSION-$SUM/lua-harness"
if [ -x "$BIN" ]; then
  echo "$BIN"
  exit 0
fi
WORK="$CACHE/build/lua-harness-$GOPHER_LUA_VERSION"
mkdir -p "$WORK" "$(dirname "$BIN")"
cp e2e/lua-harness/main.go "$WORK/main.go"
printf 'module inference-operator.local/lua-harness\n\ngo 1.22\n\nrequire github.com/yuin/gopher-lua %s\n' \
  "$GOPHER_LUA_VERSION" > "$WORK/go.mod"
echo "==> building the Lua harness (github.com/yuin/gopher-lua $GOPHER_LUA_VERSION)" >&2
(cd "$WORK" && GOFLAGS=-mod=mod CGO_ENABLED=0 go build -o "$BIN.tmp" . && mv "$BIN.tmp" "$BIN")
echo "$BIN"
