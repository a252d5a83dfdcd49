# The two commands of the README: `make up` and `make test`. Everything else supports them.
SHELL := bash
.SHELLFLAGS := -euo pipefail -c
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# The real tritonserver ships in this wheel; tests run it (its Python deps are not needed).
PYTRITON ?= nvidia-pytriton==0.7.0

.PHONY: venv prometheus chromium test unit e2e faults scale scale-smoke e2e-kind binaries cluster-up cluster-down crd manifests up down clean image

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

venv: $(PY)
	@echo "==> installing inference-operator and test dependencies into $(VENV)"
	$(PY) -m pip install --quiet -e '.[test]'
	$(PY) -m pip install --quiet --no-deps '$(PYTRITON)'

# Process tests run a real Prometheus; Debian's package puts it at /usr/bin/prometheus. Installed
# only when absent (e2e/debian-package.sh: sudo only when not root, apt-get update only when the
# plain install fails). The package ships an init script; its postinst may start a system
# prometheus: report one, never kill.
PROMETHEUS ?= /usr/bin/prometheus
prometheus:
	@if [ ! -x '$(PROMETHEUS)' ]; then \
		bash e2e/debian-package.sh '$(PROMETHEUS)' prometheus; \
		if pids="$$(ps -C prometheus -o pid= | xargs)" && [ -n "$$pids" ]; then \
			echo "==> note: prometheus processes running after the install (PIDs $$pids); not stopped by make"; \
		fi; \
	else \
		echo "==> prometheus present at $(PROMETHEUS)"; \
	fi

# The rollout view's test loads the page in a real headless Chromium: Debian's
# chromium-headless-shell (no display needed), with DejaVu fonts for the screenshot's text.
CHROMIUM ?= /usr/bin/chromium-headless-shell
chromium:
	@bash e2e/debian-package.sh '$(CHROMIUM)' chromium-headless-shell
	@bash e2e/debian-package.sh /usr/share/fonts/truetype/dejavu/DejaVuSans.ttf fonts-dejavu-core

# Everything: unit and process tests, the e2e suite on a fresh local control plane, then the scale
# benchmark's smoke variant (N = 50 on another fresh one; fails when a request count regresses).
test: unit e2e scale-smoke

# The import contracts first ([tool.importlinter] in pyproject.toml; tests/test_architecture.py breaks
# each on purpose): a layering or purity violation fails in a second, before the slower tests.
unit: venv prometheus
	@echo "==> import contracts (lint-imports, [tool.importlinter] in pyproject.toml)"
	$(VENV)/bin/lint-imports --no-cache --no-logo pyproject.toml
	@echo "==> unit and process tests (pytest tests/)"
	INFERENCE_OPERATOR_REQUIRE_TRITON=1 INFERENCE_OPERATOR_REQUIRE_PROMETHEUS=1 $(PY) -m pytest tests

# Builds kube-apiserver, kube-controller-manager, kube-scheduler, kubectl, etcd, kwok and helm from
# Go modules into ~/.cache/inference-operator (keyed by version; reused when present).
binaries:
	bash e2e/build-binaries.sh

# The canary tests run real tritonservers standing in for pods, scraped by a real Prometheus; the
# autoscaling tests also run the real KEDA (built from its Go module by e2e/keda-build.sh, cached).
e2e: venv prometheus chromium
	@echo "==> e2e suite on a fresh local cluster (e2e/run-local.sh); screenshots in artifacts/"
	INFERENCE_OPERATOR_REQUIRE_TRITON=1 INFERENCE_OPERATOR_REQUIRE_PROMETHEUS=1 INFERENCE_OPERATOR_REQUIRE_KEDA=1 \
		INFERENCE_OPERATOR_REQUIRE_CHROMIUM=1 INFERENCE_OPERATOR_CHROMIUM=$(CHROMIUM) PY=$(PY) bash e2e/run-local.sh

# The fault-injection tests at full size on a fresh local cluster: 72 seeded kill points rather
# than CI's 24, 600 fuzzed specs rather than 150, with the outage, failover, hostile-edit,
# conflict, exhaustion and security tests (about 20 minutes). E2E_FAULT_SEED picks other points.
FAULT_TESTS ?= test_kill or test_leader or test_hostile or hostile_edit or test_conflicts or test_exhaustion or test_outage or test_fuzz or test_security or test_parity
faults: venv prometheus
	@echo "==> fault-injection tests, full set (E2E_FAULTS=full, seed $${E2E_FAULT_SEED:-20261125})"
	E2E_FAULTS=full INFERENCE_OPERATOR_REQUIRE_TRITON=1 INFERENCE_OPERATOR_REQUIRE_PROMETHEUS=1 \
		PY=$(PY) bash e2e/run-local.sh -k "$(FAULT_TESTS)"

# The scale benchmark at N = 1000 (about 12 minutes): prints the table, writes scale.json.
scale: venv
	$(PY) bench/scale_bench.py --json scale.json

# bench/scale_bench.py at N = 50 with --check: exits 1 when a count is over its budget, never on a time.
scale-smoke: venv
	@echo "==> scale benchmark, smoke variant (bench/scale_bench.py --services 50 --check)"
	$(PY) bench/scale_bench.py --services 50 --idle-seconds 20 --resync-seconds 5 --flap-services 10 \
		--flap-seconds 5 --quiet-seconds 10 --churn-cycles 2 --churn-services 20 --check

# The operator's image (operator/Dockerfile), tagged with pyproject.toml's version; needs Docker; not run in CI.
VERSION ?= $(shell sed -n 's/^version = "\(.*\)"/\1/p' pyproject.toml)
IMAGE ?= inference-operator:$(VERSION)
image:
	docker build -f operator/Dockerfile --build-arg VERSION=$(VERSION) --build-arg REVISION=$$(git rev-parse HEAD) -t $(IMAGE) .

# The same suite on kind (needs Docker); not run in CI.
e2e-kind: venv
	PY=$(PY) bash e2e/kind/run.sh

cluster-up: venv
	$(PY) e2e/cluster.py up

cluster-down:
	$(PYTHON) e2e/cluster.py down

# After an API change: the CRD in crds/ and in the chart's crds/ (tests keep both identical to the code).
crd: venv
	$(VENV)/bin/inference-operator crd > crds/inferenceservices.serving.inference-operator.io.yaml
	cp crds/inferenceservices.serving.inference-operator.io.yaml charts/inference-operator/crds/

# After a chart or CRD change: manifests/install.yaml, the chart rendered with its default values.
manifests: crd
	$(PY) e2e/chart.py install-yaml > manifests/install.yaml

# A local cluster, the operator and a sample InferenceService; `make down` stops them all.
up: venv
	$(PY) e2e/cluster.py up --with-operator --sample manifests/samples/resnet.yaml

down: cluster-down

clean:
	rm -rf $(VENV) .pytest_cache
