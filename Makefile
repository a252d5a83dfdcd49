# The two commands of the README: `make up` and `make test`. Everything else supports them.
SHELL := bash
.SHELLFLAGS := -euo pipefail -c
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# The real tritonserver ships in this wheel; tests run it (its Python deps are not needed).
PYTRITON ?= nvidia-pytriton==0.7.0

.PHONY: venv test crd up clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

venv: $(PY)
	@echo "==> installing inference-operator and test dependencies into $(VENV)"
	$(PY) -m pip install --quiet -e '.[test]'
	$(PY) -m pip install --quiet --no-deps '$(PYTRITON)'

test: venv
	@echo "==> unit and process tests (pytest)"
	INFERENCE_OPERATOR_REQUIRE_TRITON=1 $(PY) -m pytest

crd: venv
	$(VENV)/bin/inference-operator crd > crds/inferenceservices.serving.inference-operator.io.yaml

# Until the local cluster exists (e2e work), `up` uses whatever cluster the current kubeconfig names.
up: venv
	@echo "==> installing the CRD and a sample InferenceService into $$(kubectl config current-context)"
	kubectl apply -f crds/
	kubectl apply -f manifests/samples/
	@echo "==> running the operator in the foreground (Ctrl-C stops it); in another shell:"
	@echo "    kubectl get infsvc -A    kubectl describe infsvc resnet"
	$(VENV)/bin/inference-operator run --metrics-port 8080 --liveness-port 8081 --bind-address 127.0.0.1

clean:
	rm -rf $(VENV) .pytest_cache
