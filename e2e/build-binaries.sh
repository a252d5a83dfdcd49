#!/usr/bin/env bash
# Builds the control-plane binaries from Go modules into a cache outside the repository,
# keyed by version, and reuses them when present. Prints the directory holding them, last.
#
#   e2e/build-binaries.sh            # build what is missing, print the bin directory
#   K8S_VERSION=v1.37.2 e2e/build-binaries.sh
set -euo pipefail

K8S_VERSION=${K8S_VERSION:-v1.36.3}
ETCD_VERSION=${ETCD_VERSION:-v3.6.8}
KWOK_VERSION=${KWOK_VERSION:-v0.8.0}
HELM_VERSION=${HELM_VERSION:-v3.22.0}
CACHE=${INFERENCE_OPERATOR_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/inference-operator}
BIN="$CACHE/bin/k8s-$K8S_VERSION-etcd-$ETCD_VERSION-kwok-$KWOK_VERSION-helm-$HELM_VERSION"
WORK="$CACHE/build"
export GOFLAGS=-mod=mod
export CGO_ENABLED=0

say() { printf '==> %s %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }

have() { for b in "$@"; do [ -x "$BIN/$b" ] || return 1; done; }

mkdir -p "$BIN" "$WORK"

build_kubernetes() {
  have kube-apiserver kube-controller-manager kube-scheduler kubectl && return
  local minor=${K8S_VERSION#v1.} dir="$WORK/kubernetes-$K8S_VERSION"
  say "building Kubernetes $K8S_VERSION (kube-apiserver, kube-controller-manager, kube-scheduler, kubectl); a cold build takes many minutes"
  mkdir -p "$dir"
  (
    cd "$dir"
    # k8s.io/kubernetes replaces its staging modules with local paths; a wrapper module replaces
    # each with its published version (k8s.io/NAME v0.MINOR.PATCH), read from the real go.mod.
    go mod download -json "k8s.io/kubernetes@$K8S_VERSION" >/dev/null
    local gomod
    gomod=$(go env GOMODCACHE)/cache/download/k8s.io/kubernetes/@v/$K8S_VERSION.mod
    {
      echo "module inference-operator.local/k8s-build"
      echo
      grep -E '^go ' "$gomod"
      echo
      echo "require k8s.io/kubernetes $K8S_VERSION"
      echo
      echo "replace ("
      grep -oE '^\s+k8s\.io/[a-z0-9-]+ => \./staging/src/k8s\.io/[a-z0-9-]+' "$gomod" |
        awk -v v="v0.$minor" '{print "\t" $1 " => " $1 " " v}'
      echo ")"
    } >go.mod
    go get "k8s.io/kubernetes/cmd/kube-apiserver@$K8S_VERSION" \
      "k8s.io/kubernetes/cmd/kube-controller-manager@$K8S_VERSION" \
      "k8s.io/kubernetes/cmd/kube-scheduler@$K8S_VERSION" \
      "k8s.io/kubernetes/cmd/kubectl@$K8S_VERSION"
    local ldflags="" pkg
    # Without these, /version says v0.0.0 and Helm's kubeVersion checks fail.
    for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
      ldflags+=" -X $pkg.gitVersion=$K8S_VERSION -X $pkg.gitMajor=1 -X $pkg.gitMinor=${minor%%.*}"
      ldflags+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=1970-01-01T00:00:00Z"
    done
    for cmd in kube-apiserver kube-controller-manager kube-scheduler kubectl; do
      say "go build $cmd"
      go build -trimpath -ldflags "-s -w $ldflags" -o "$BIN/$cmd.tmp" "k8s.io/kubernetes/cmd/$cmd"
      mv "$BIN/$cmd.tmp" "$BIN/$cmd"
    done
  )
}

build_etcd() {
  have etcd && return
  local dir="$WORK/etcd-$ETCD_VERSION"
  say "building etcd $ETCD_VERSION"
  mkdir -p "$dir"
  (
    cd "$dir"
    cat >go.mod <<EOF
module inference-operator.local/etcd-build

go 1.24

require go.etcd.io/etcd/server/v3 $ETCD_VERSION
EOF
    cat >main.go <<'EOF'
// The etcd server, from its Go module (etcdmain is what etcd's own binary runs).
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() { etcdmain.Main(os.Args) }
EOF
    go mod tidy
    go build -trimpath -ldflags "-s -w" -o "$BIN/etcd.tmp" .
    mv "$BIN/etcd.tmp" "$BIN/etcd"
  )
}

build_tool() { # name, package@version, extra ldflags
  have "$1" && return
  say "building $1 from $2"
  GOBIN="$WORK/gobin-$1" go install -trimpath -ldflags "-s -w ${3:-}" "$2"
  mv "$WORK/gobin-$1/$1" "$BIN/$1"
}

build_kubernetes
build_etcd
build_tool kwok "sigs.k8s.io/kwok/cmd/kwok@$KWOK_VERSION"
build_tool helm "helm.sh/helm/v3/cmd/helm@$HELM_VERSION" "-X helm.sh/helm/v3/internal/version.version=$HELM_VERSION"
say "binaries ready in $BIN"
echo "$BIN"
