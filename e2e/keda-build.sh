#!/usr/bin/env bash
# Builds KEDA's operator (`keda`) and metrics API server (`keda-adapter`) from its Go module into a
# cache outside the repository, keyed by version, and reuses them when present. Beside them go the
# manifests e2e/keda.py applies: KEDA's CRDs (*.yaml) and its RBAC (rbac/), from the module's config/. Prints the
# directory holding them, last; progress goes to stderr.
#
#   e2e/keda-build.sh                    # build what is missing, print the directory
#   KEDA_VERSION=2.21.0 e2e/keda-build.sh
set -euo pipefail

KEDA_VERSION=${KEDA_VERSION:-2.21.0}
KEDA_VERSION=${KEDA_VERSION#v}
CACHE=${INFERENCE_OPERATOR_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/inference-operator}
BIN="$CACHE/bin/keda-v$KEDA_VERSION"
WORK="$CACHE/build/keda-v$KEDA_VERSION"
MODULE=github.com/kedacore/keda/v2
export GOFLAGS=-mod=mod
export CGO_ENABLED=0

say() { printf '==> %s %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }

# What e2e/keda.py applies, relative to the module's config/ directory.
CRDS=(keda.sh_scaledobjects.yaml keda.sh_scaledjobs.yaml keda.sh_triggerauthentications.yaml
  keda.sh_clustertriggerauthentications.yaml eventing.keda.sh_cloudeventsources.yaml
  eventing.keda.sh_clustercloudeventsources.yaml)
RBAC=(service_account/service_account.yaml rbac/role.yaml rbac/role_binding.yaml
  metrics-server/role.yaml metrics-server/role_binding.yaml)

have_binaries() { [ -x "$BIN/keda" ] && [ -x "$BIN/keda-adapter" ]; }
have_manifests() {
  local f
  for f in "${CRDS[@]}"; do [ -s "$BIN/$f" ] || return 1; done
  for f in "${RBAC[@]}"; do [ -s "$BIN/rbac/${f//\//_}" ] || return 1; done
}

if have_binaries && have_manifests; then
  say "KEDA v$KEDA_VERSION ready in $BIN"
  echo "$BIN"
  exit 0
fi

mkdir -p "$BIN" "$WORK"

module_dir() { # the module's source in the module cache (downloaded when missing)
  go mod download -json "$MODULE@v$KEDA_VERSION" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",\{0,1\}$/\1/p'
}

build_binaries() {
  have_binaries && return
  say "building KEDA v$KEDA_VERSION (operator and metrics adapter); a cold build takes 5-12 minutes"
  (
    cd "$WORK"
    # `go install pkg@version` refuses a module with replace directives, so a wrapper module
    # requires KEDA and repeats KEDA's own replace lines (read from its go.mod).
    go mod download -json "$MODULE@v$KEDA_VERSION" >/dev/null
    local gomod
    gomod=$(go env GOMODCACHE)/cache/download/$MODULE/@v/v$KEDA_VERSION.mod
    if [ ! -s go.mod ] || ! grep -q "^require $MODULE v$KEDA_VERSION\$" go.mod; then
      {
        echo "module inference-operator.local/keda-build"
        echo
        grep -E '^go ' "$gomod"
        echo
        echo "require $MODULE v$KEDA_VERSION"
        echo
        grep -E '^replace [^(]' "$gomod" || true
      } >go.mod
      rm -f go.sum
    fi
    go get "$MODULE/cmd/operator@v$KEDA_VERSION" "$MODULE/cmd/adapter@v$KEDA_VERSION"
    local cmd out
    for cmd in operator adapter; do
      out=keda
      [ "$cmd" = adapter ] && out=keda-adapter
      say "go build $MODULE/cmd/$cmd -> $out"
      go build -trimpath -ldflags "-s -w -X $MODULE/version.Version=$KEDA_VERSION" \
        -o "$BIN/$out.tmp" "$MODULE/cmd/$cmd"
      mv "$BIN/$out.tmp" "$BIN/$out"
    done
  )
}

copy_manifests() {
  have_manifests && return
  local dir f
  dir=$(module_dir)
  [ -d "$dir/config" ] || { say "KEDA's module source not found (got '$dir')"; exit 1; }
  say "copying KEDA's CRDs and RBAC from $dir/config"
  mkdir -p "$BIN/rbac"
  for f in "${CRDS[@]}"; do install -m 0644 "$dir/config/crd/bases/$f" "$BIN/$f"; done
  for f in "${RBAC[@]}"; do install -m 0644 "$dir/config/$f" "$BIN/rbac/${f//\//_}"; done
}

build_binaries
copy_manifests
say "KEDA v$KEDA_VERSION ready in $BIN"
echo "$BIN"
