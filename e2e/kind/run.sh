#!/usr/bin/env bash
# The e2e suite on kind (needs kind, kubectl and a Docker engine). Not run in our CI, which has no Docker.
# kind nodes have real kubelets, so fake GPU capacity is patched into node status and the same
# node names and labels as the local cluster's are used where the suite relies on them.
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=${PY:-.venv/bin/python}
CLUSTER=inference-operator-e2e
kind get clusters | grep -qx "$CLUSTER" || kind create cluster --config e2e/kind/cluster.yaml
KUBECONFIG_PATH=$(mktemp)
trap 'rm -f "$KUBECONFIG_PATH"' EXIT
kind get kubeconfig --name "$CLUSTER" >"$KUBECONFIG_PATH"
export KUBECONFIG=$KUBECONFIG_PATH
# Apply the local cluster's fake nodes (kwok is installed in-cluster by its own manifests).
kubectl apply -f https://github.com/kubernetes-sigs/kwok/releases/download/v0.8.0/kwok.yaml
kubectl apply -f https://github.com/kubernetes-sigs/kwok/releases/download/v0.8.0/stage-fast.yaml
kubectl -n kube-system rollout status deployment/kwok-controller --timeout=180s
# Workloads go to the fake nodes only: a real kubelet would pull a multi-GB Triton image.
kubectl cordon --selector='type!=kwok'
kubectl apply -f e2e/nodes.yaml
kubectl wait --for=condition=Ready node --selector=type=kwok --timeout=180s
E2E_KUBECONFIG=$KUBECONFIG_PATH "$PY" -m pytest e2e "$@"
