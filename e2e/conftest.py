"""E2E fixtures. The suite needs only a kubeconfig (E2E_KUBECONFIG, else KUBECONFIG) and a kubectl
(E2E_KUBECTL, else the one on PATH): the local cluster, kind, or any cluster with fake GPU nodes.

The operator runs as a separate process of this checkout, stopped by PID at the end.
"""

from __future__ import annotations

import os
import pathlib
import sys
import uuid
from typing import Optional

import pytest

from .helpers import (
    CRD,
    Audit,
    Kubectl,
    Operator,
    drop_namespace,
    granted,
    make_namespace,
    operator_kubeconfig,
    wait_for,
)


def _kubeconfig() -> str:
    path = os.environ.get("E2E_KUBECONFIG") or os.environ.get("KUBECONFIG")
    if not path:
        pytest.exit("e2e needs E2E_KUBECONFIG (or KUBECONFIG); `make e2e` provides a local cluster", returncode=2)
    return path


@pytest.fixture(scope="session")
def audit() -> Optional[Audit]:
    path = os.environ.get("E2E_AUDIT_LOG")
    return Audit(pathlib.Path(path)) if path else None


@pytest.fixture(scope="session")
def kubectl() -> Kubectl:
    return Kubectl(_kubeconfig(), os.environ.get("E2E_KUBECTL", "kubectl"))


@pytest.fixture(scope="session")
def crd(kubectl: Kubectl) -> None:
    kubectl("apply", "--server-side", "--force-conflicts", "-f", str(CRD))
    # Not `kubectl wait`: a CRD read before its controller wrote any condition fails it at once.
    wait_for(lambda: any(c["type"] == "Established" and c["status"] == "True" for c in
                         (kubectl.json("crd", "inferenceservices.serving.inference-operator.io").get("status") or {})
                         .get("conditions") or []), "the CRD to be established", timeout=60)


@pytest.fixture(scope="session")
def operator(kubectl: Kubectl, crd: None, tmp_path_factory: pytest.TempPathFactory):
    directory = tmp_path_factory.mktemp("operator")
    op = Operator(operator_kubeconfig(kubectl, directory), directory)
    op.start()
    yield op
    op.stop()


@pytest.fixture
def namespace(kubectl: Kubectl, operator: Operator, request: pytest.FixtureRequest):
    """A fresh namespace holding a bound PVC named `models` (a static hostPath PV)."""
    name = make_namespace(kubectl, f"e2e-{uuid.uuid4().hex[:8]}")
    yield name
    report = getattr(request.node, "rep_call", None)
    if report is not None and report.failed:
        print(kubectl("get", "all,infsvc,events", "-n", name, check=False).stdout)
        print(operator.log()[-5000:])
    drop_namespace(kubectl, name)


def pytest_configure(config):
    # A SIGTERM (a CI timeout, a person's kill) runs the fixtures' teardown, so the operator
    # process the session started is stopped by its PID, not orphaned.
    import signal

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    report = yield
    setattr(item, f"rep_{report.when}", report)
    return report


# ---- KEDA (e2e/keda.py): the real operator and metrics adapter, for tests that autoscale -------


@pytest.fixture(scope="session")
def keda(kubectl: Kubectl, tmp_path_factory: pytest.TempPathFactory):
    """KEDA from E2E_KEDA_BIN (bash e2e/keda-build.sh prints it), started once per session and
    stopped by PID at the end. Without it the test skips, or fails with INFERENCE_OPERATOR_REQUIRE_KEDA=1."""
    bin_dir = os.environ.get("E2E_KEDA_BIN")
    if not bin_dir:
        message = "KEDA is not available: set E2E_KEDA_BIN to the directory e2e/keda-build.sh prints"
        if os.environ.get("INFERENCE_OPERATOR_REQUIRE_KEDA") == "1":
            pytest.fail(message)
        pytest.skip(message)
    from . import keda as harness

    started = harness.start(kubectl.kubeconfig, tmp_path_factory.mktemp("keda"), bin_dir, kubectl.binary)
    yield started
    started.stop()


def pytest_terminal_summary(terminalreporter):
    """From the audit log (the operator's ServiceAccount only): its requests by verb and resource,
    and what the chart grants that this run never used (e2e/test_zz_permissions.py asserts on it
    after a full run)."""
    path = os.environ.get("E2E_AUDIT_LOG")
    if not path or not os.path.exists(path):
        return
    used, refused = Audit(pathlib.Path(path)).usage()
    write = terminalreporter.write_line
    terminalreporter.section("the operator's API requests (audit log)")
    for (verb, group, resource), n in sorted(used.items(), key=lambda kv: (kv[0][1], kv[0][2], kv[0][0])):
        write(f"{group or 'core'} {resource} {verb}: {n}" + (f" ({refused[(verb, group, resource)]} refused)"
                                                             if refused[(verb, group, resource)] else ""))
    unused = sorted(granted() - set(used))
    write("granted by the chart, not used in this run: " + (", ".join(f"{v} {g or 'core'}/{r}" for v, g, r in unused)
                                                            or "none"))
