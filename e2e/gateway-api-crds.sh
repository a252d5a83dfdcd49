#!/usr/bin/env bash
# Fetches the Gateway API module (its CRDs ship in config/crd/standard/) into the Go module cache,
# keyed by version, and prints the directory of the standard CRDs.
#
#   e2e/gateway-api-crds.sh        # GATEWAY_API_VERSION=v1.6.3 by default
set -euo pipefail
GATEWAY_API_VERSION=${GATEWAY_API_VERSION:-v1.6.3}
dir=$(go mod download -json "sigs.k8s.io/gateway-api@$GATEWAY_API_VERSION" |
  sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')
[ -d "$dir/config/crd/standard" ] || { echo "no config/crd/standard in $dir" >&2; exit 1; }
echo "$dir/config/crd/standard"
