# The two commands of the README: `make up` and `make test`. Everything else supports them.
SHELL := bash
.SHELLFLAGS := -euo pipefail -c
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# The real tritonserver ships in this wheel; tests run it (its Python deps are not needed).
PYTRITON ?= nvidia-pytriton==0.7.0

.PHONY: venv test unit e2e e2e-kind binaries cluster-up cluster-down crd up down clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

venv: $(PY)
	@echo "==> installing inference-operator and test dependencies into $(VENV)"
	$(PY) -m pip install --quiet -e '.[test]'
	$(PY) -m pip install --quiet --no-deps '$(PYTRITON)'

# Everything: unit and process tests, then the e2e suite on a fresh local control plane.
test: unit e2e

unit: venv
	@echo "==> unit and process tests (pytest tests/)"
	INFERENCE_OPERATOR_REQUIRE_TRITON=1 $(PY) -m pytest tests

# Builds kube-apiserver, kube-controller-manager, kube-scheduler, kubectl, etcd, kwok and helm from
# Go modules into ~/.cache/inference-operator (keyed by version; reused when present).
binaries:
	bash e2e/build-binaries.sh

e2e: venv
	@echo "==> e2e suite on a fresh local cluster (e2e/run-local.sh)"
	PY=$(PY) bash e2e/run-local.sh

# The same suite on kind (needs Docker); not run in CI.
e2e-kind: venv
	PY=$(PY) bash e2e/kind/run.sh

cluster-up: venv
	$(PY) e2e/cluster.py up

cluster-down:
	$(PYTHON) e2e/cluster.py down

crd: venv
	$(VENV)/bin/inference-operator crd > crds/inferenceservices.serving.inference-operator.io.yaml

# A local cluster, the operator and a sample InferenceService; `make down` stops them all.
up: venv
	$(PY) e2e/cluster.py up --with-operator --sample manifests/samples/resnet.yaml

down: cluster-down

clean:
	rm -rf $(VENV) .pytest_cache
