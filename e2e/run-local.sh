#!/usr/bin/env bash
# Runs the e2e suite on a fresh local cluster (built binaries from the cache), then stops it.
#   e2e/run-local.sh [pytest args...]
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
BIN=$(bash e2e/build-binaries.sh)
KEDA_BIN=$(bash e2e/keda-build.sh)
STATE=$(mktemp -d "${TMPDIR:-/tmp}/inference-operator-e2e.XXXXXX")/cluster
cleanup() { "$PY" e2e/cluster.py down --state "$STATE"; rm -rf "$(dirname "$STATE")"; }
trap cleanup EXIT
t0=$(date +%s)
KUBECONFIG_PATH=$("$PY" e2e/cluster.py up --state "$STATE" --bin "$BIN")
echo "==> cluster started in $(( $(date +%s) - t0 ))s; running the e2e suite"
E2E_KUBECONFIG=$KUBECONFIG_PATH E2E_AUDIT_LOG=$STATE/audit.log E2E_KUBECTL=$BIN/kubectl E2E_BIN=$BIN E2E_KEDA_BIN=$KEDA_BIN PATH="$BIN:$PATH" "$PY" -m pytest e2e "$@"
