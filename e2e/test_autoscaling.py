"""spec.autoscaling on the local control plane, with the real HPA controller of
kube-controller-manager (sync period shortened by e2e/cluster.py):

- engine hpa: the HPA is accepted and targets the InferenceService's scale subresource; with no
  prometheus-adapter here the HPA says it cannot get the metric, and the Autoscaling condition says
  so while the model serves on; `kubectl scale infsvc` reaches the Deployment and is kept, a value
  outside the range is refused, and a Deployment scaled behind our back is put back.
- engine keda without KEDA: a condition, nothing else.
- engine keda with the real KEDA (operator and metrics API server, e2e/keda.py): load on the
  tritonservers that stand in for the pods raises their queue time in a real Prometheus, KEDA
  serves it to the HPA, the HPA raises spec.replicas, the operator the Deployment's; once the load
  stops, they come back down.
"""

from __future__ import annotations

import json
import math
import time
from typing import Any, Optional

import pytest

from inference_operator.desired import signals
from tests.prometheus import Prometheus, require_prometheus
from tests.triton import python_backend_dir, require_triton

from .helpers import RESYNC_SECONDS, Kubectl, Operator, condition, diff
from .helpers import manifest as e2e_manifest
from .helpers import reconciles, settled, wait_for
from .standins import GOOD, StandinKubelet, Traffic
from .viewers import DashboardPage, Plugin, defined, series, settled_points

NAME, MODEL = "scaled", "resnet50"
WAIT = 180  # seconds: a loaded 2-core machine; never asserted on
SCALEDOBJECT_CRD = "scaledobjects.keda.sh"


def apply(kubectl: Kubectl, ns: str, autoscaling: str, replicas: int = 1) -> None:
    kubectl.apply(e2e_manifest(NAME, ns, replicas=replicas, extra=autoscaling))


def isvc(kubectl: Kubectl, ns: str) -> dict:
    return kubectl.json("infsvc", NAME, "-n", ns)


def deployment_replicas(kubectl: Kubectl, ns: str) -> Optional[int]:
    dep = kubectl.maybe("deployment", f"{NAME}-predictor", "-n", ns)
    return None if dep is None else dep["spec"].get("replicas")


def wait_autoscaling(kubectl: Kubectl, ns: str, status: str, reason: Optional[str] = None,
                     timeout: float = WAIT) -> dict:
    def reached():
        obj = isvc(kubectl, ns)
        c = condition(obj, "Autoscaling")
        return obj if c.get("status") == status and (reason is None or c.get("reason") == reason) else None

    return wait_for(reached, f"Autoscaling {status} {reason or ''}", timeout=timeout)


HPA_SPEC = """\
    autoscaling:
      minReplicas: 1
      maxReplicas: 4
      targets: [{name: queueTime, value: 50ms}]
    """


def test_hpa_engine_targets_the_scale_subresource_and_spec_replicas_reaches_the_deployment(
        kubectl: Kubectl, namespace: str):
    ns = namespace
    apply(kubectl, ns, HPA_SPEC)
    kubectl("wait", "--for=condition=Ready", f"infsvc/{NAME}", "-n", ns, f"--timeout={WAIT}s", timeout=WAIT + 10)
    hpa = wait_for(lambda: kubectl.maybe("hpa", NAME, "-n", ns), "the HPA")
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "serving.inference-operator.io/v1alpha1",
                                             "kind": "InferenceService", "name": NAME}
    assert hpa["spec"]["metrics"][0]["pods"]["metric"]["name"] == "triton_queue_time_seconds"
    assert hpa["metadata"]["ownerReferences"][0]["kind"] == "InferenceService"
    # The HPA controller reads the scale subresource (it found the pods by status.selector) and
    # finds no custom metrics API here: the condition carries its reason; the model serves on.
    obj = wait_autoscaling(kubectl, ns, "False", "FailedGetPodsMetric")
    print("Autoscaling:", condition(obj, "Autoscaling"))
    assert condition(obj, "Ready")["status"] == "True" and condition(obj, "Degraded")["status"] == "False"
    # The scale subresource: a scale within the range reaches the Deployment, and stays.
    kubectl("scale", f"infsvc/{NAME}", "-n", ns, "--replicas=3")
    wait_for(lambda: deployment_replicas(kubectl, ns) == 3, "the Deployment at 3 replicas")
    # Kept: the operator does not put it back (this HPA cannot read its metric here, so it writes
    # nothing; test_load_raises_replicas... shows an autoscaler-written count kept).
    time.sleep(6)  # an HPA sync (5 s here) and any operator pass
    assert isvc(kubectl, ns)["spec"]["replicas"] == 3 and deployment_replicas(kubectl, ns) == 3
    # Outside the range the API server refuses, saying why.
    refused = kubectl("scale", f"infsvc/{NAME}", "-n", ns, "--replicas=9", check=False)
    assert refused.returncode != 0 and "autoscaler" in refused.stderr, refused.stderr
    # Nothing but the operator writes the Deployment's replicas: a scale behind its back is put back.
    kubectl("scale", f"deployment/{NAME}-predictor", "-n", ns, "--replicas=1")
    wait_for(lambda: deployment_replicas(kubectl, ns) == 3, "the Deployment put back at 3 replicas")
    # Lowering maxReplicas below what was scaled to is accepted (spec.replicas unchanged); the
    # Deployments run within the new range at once.
    kubectl("patch", f"infsvc/{NAME}", "-n", ns, "--type=merge", "-p", '{"spec": {"autoscaling": {"maxReplicas": 2}}}')
    wait_for(lambda: deployment_replicas(kubectl, ns) == 2, "the Deployment within the lowered range")
    assert wait_for(lambda: kubectl.maybe("hpa", NAME, "-n", ns)["spec"]["maxReplicas"] == 2, "the HPA's new range")
    # Autoscaling removed: the HPA goes, and the condition with it.
    kubectl("patch", f"infsvc/{NAME}", "-n", ns, "--type=json", "-p", '[{"op": "remove", "path": "/spec/autoscaling"}]')
    wait_for(lambda: kubectl.maybe("hpa", NAME, "-n", ns) is None, "the HPA deleted")
    wait_for(lambda: not condition(isvc(kubectl, ns), "Autoscaling"), "no Autoscaling condition")


def test_during_a_canary_the_scale_is_divided_between_stable_and_canary(kubectl: Kubectl, namespace: str):
    """The canary holds at weight 50 (no Prometheus to judge it: it holds, never promotes, never
    rolls back); scaling the InferenceService moves both Deployments, by the weight."""
    ns = namespace
    rollout = """\
        autoscaling: {minReplicas: 1, maxReplicas: 6}
        rollout:
          canary:
            steps: [{weight: 50}, {pause: {}}]
            analysis: {prometheus: {address: "http://127.0.0.1:9"}, interval: 2s, initialDelay: 1s}
        """
    apply(kubectl, ns, rollout, replicas=2)
    kubectl("wait", "--for=condition=Ready", f"infsvc/{NAME}", "-n", ns, f"--timeout={WAIT}s", timeout=WAIT + 10)
    kubectl.apply(e2e_manifest(NAME, ns, replicas=2, storage="pvc://models/triton-v2", extra=rollout))

    def split() -> tuple[Optional[int], Optional[int]]:
        canary = kubectl.maybe("deployment", f"{NAME}-predictor-canary", "-n", ns)
        return deployment_replicas(kubectl, ns), None if canary is None else canary["spec"].get("replicas")

    wait_for(lambda: split() == (1, 1), "the canary at 50% of 2 replicas")
    kubectl("scale", f"infsvc/{NAME}", "-n", ns, "--replicas=4")
    wait_for(lambda: split() == (2, 2), "the canary at 50% of 4 replicas")
    kubectl("scale", f"infsvc/{NAME}", "-n", ns, "--replicas=6")
    wait_for(lambda: split() == (3, 3), "the canary at 50% of 6 replicas")
    state = isvc(kubectl, ns)["status"]["canary"]
    assert state["phase"] in ("Progressing", "Holding") and state["weight"] == 50, state


def test_keda_engine_without_keda_is_a_condition_and_nothing_else(kubectl: Kubectl, namespace: str):
    if kubectl("get", "crd", SCALEDOBJECT_CRD, check=False).returncode == 0:
        pytest.skip("KEDA's CRDs are installed in this cluster")
    ns = namespace
    apply(kubectl, ns, """\
        autoscaling:
          engine: keda
          maxReplicas: 3
          keda: {serverAddress: "http://127.0.0.1:9"}
        """, replicas=2)
    obj = wait_autoscaling(kubectl, ns, "False", "KEDANotInstalled")
    kubectl("wait", "--for=condition=Ready", f"infsvc/{NAME}", "-n", ns, f"--timeout={WAIT}s", timeout=WAIT + 10)
    assert deployment_replicas(kubectl, ns) == 2
    assert "is not installed" in condition(obj, "Autoscaling")["message"]


# ---- with KEDA running ------------------------------------------------------------------------------

CLIENTS = 4  # concurrent clients, each with one request in flight: a queue on one 30 ms replica


@pytest.fixture
def prometheus(tmp_path):
    require_prometheus()
    prom = Prometheus([], workdir=tmp_path / "prometheus", file_sd=True)
    prom.start()
    try:
        yield prom
    finally:
        prom.stop()  # by PID


def keda_spec(prometheus_url: str) -> str:
    return f"""\
        autoscaling:
          engine: keda
          minReplicas: 1
          maxReplicas: 3
          window: 5s
          targets: [{{name: queueTime, value: 20ms}}]
          behavior:
            scaleUp: {{stabilizationWindowSeconds: 0}}
            scaleDown:
              stabilizationWindowSeconds: 10
              policies: [{{type: Percent, value: 100, periodSeconds: 5}}]
          keda: {{serverAddress: "{prometheus_url}", pollingInterval: 2, cooldownPeriod: 5}}
        """


def test_load_raises_replicas_through_keda_and_the_hpa_and_they_come_back_down(
        kubectl: Kubectl, namespace: str, keda: Any, prometheus: Prometheus, tmp_path):
    ns = namespace
    home = require_triton()
    backends = python_backend_dir(tmp_path / "triton", home)
    kubelet = StandinKubelet(kubectl.kubeconfig, ns, NAME, MODEL, prometheus, home, backends, tmp_path / "pods",
                             default=GOOD)
    clients: list[Traffic] = []
    timeline: dict[str, Any] = {}
    page: Optional[DashboardPage] = None
    try:
        kubelet.start()
        apply(kubectl, ns, keda_spec(prometheus.url))
        page = DashboardPage(Plugin(kubectl), ns, NAME, refresh=1.0).start()
        so = wait_for(lambda: kubectl.maybe("scaledobject", NAME, "-n", ns), "the ScaledObject")
        assert so["spec"]["scaleTargetRef"]["kind"] == "InferenceService"
        obj = wait_autoscaling(kubectl, ns, "True")
        print("Autoscaling:", condition(obj, "Autoscaling"))
        wait_for(lambda: len(kubelet.serving()) == 1, "one tritonserver serving", timeout=WAIT)
        wait_for(lambda: prometheus.query(f'nv_inference_request_success{{namespace="{ns}",'
                                          f'inferenceservice="{NAME}"}}'), "the stand-in scraped", timeout=60)
        assert isvc(kubectl, ns)["spec"]["replicas"] == 1

        start = time.monotonic()
        clients = [Traffic(kubelet.endpoints, MODEL, rate=500, limit=30_000).start() for _ in range(CLIENTS)]
        peak = {"replicas": 1}

        def raised():
            replicas = isvc(kubectl, ns)["spec"]["replicas"]
            peak["replicas"] = max(peak["replicas"], replicas)
            kubelet.check()
            if replicas > 1 and "spec.replicas raised" not in timeline:
                timeline["spec.replicas raised"] = round(time.monotonic() - start, 1)
            return replicas > 1

        kubelet.check()
        wait_for(raised, "the HPA to raise spec.replicas under load", timeout=WAIT)
        wait_for(lambda: (deployment_replicas(kubectl, ns) or 0) > 1, "the Deployment to follow", timeout=60)
        timeline["Deployment raised"] = round(time.monotonic() - start, 1)
        wait_for(lambda: len(kubelet.serving()) > 1, "a second replica serving", timeout=WAIT)
        timeline["new replica serving"] = round(time.monotonic() - start, 1)
        timeline["rollout view"] = check_the_view(page, prometheus, ns)
        queue = prometheus.query(so["spec"]["triggers"][0]["metadata"]["query"])
        timeline["queueTime under load (s)"] = float(queue[0]["value"][1])
        timeline["autoscaler"] = isvc(kubectl, ns)["status"].get("autoscaler")
        # The operator follows what the autoscaler wrote, and never writes spec.replicas back.
        wait_for(lambda: deployment_replicas(kubectl, ns) == isvc(kubectl, ns)["spec"]["replicas"] > 1,
                 "the Deployment at the autoscaler's count", timeout=60)
        managers = kubectl.json("infsvc", NAME, "-n", ns, "--show-managed-fields")["metadata"]["managedFields"]
        timeline["spec.replicas written by"] = sorted({m["manager"] for m in managers
                                                       if "f:replicas" in (m.get("fieldsV1") or {}).get("f:spec", {})})
        assert not [m for m in managers if m["manager"] == "inference-operator" and m.get("subresource") != "status"]
        for client in clients:
            client.stop()
        stopped = time.monotonic()
        kubelet.check()
        wait_for(lambda: isvc(kubectl, ns)["spec"]["replicas"] == 1, "spec.replicas back to 1 without load",
                 timeout=WAIT)
        timeline["back to 1 after the load stopped"] = round(time.monotonic() - stopped, 1)
        wait_for(lambda: deployment_replicas(kubectl, ns) == 1, "the Deployment back to 1", timeout=60)
        timeline["peak replicas"] = peak["replicas"]
        timeline["requests"] = {"sent": sum(c.sent for c in clients), "ok": sum(c.ok for c in clients),
                                "failed": sum(c.failed for c in clients)}
        assert timeline["requests"]["failed"] == 0
        kubelet.check()
    finally:
        for client in clients:
            client.stop()
        if page is not None:
            page.stop()  # the dashboard and Chromium, by PID
        kubelet.stop()  # every tritonserver, by PID
        print("autoscaling loop:", json.dumps(timeline, indent=1))


def check_the_view(page: DashboardPage, prometheus: Prometheus, ns: str) -> dict:
    """The rollout view in a real browser, under load: replicas against queueTime and its target.
    The points are read back from the page's chart and held against Prometheus and the kubelet."""
    def drawn():
        chart = page.charts().get("autoscaling-queueTime")
        return chart if chart and (defined(series(chart, "pods reporting")) or [0])[-1] > 1 else None

    chart = wait_for(drawn, "the page to draw the second replica", timeout=60)
    xs = chart["data"][0]
    reporting, signal = series(chart, "pods reporting"), series(chart, "queueTime")
    assert set(defined(series(chart, "target 20ms"))) == {0.02}
    assert max(defined(signal)) > 0.02, "the page never drew queueTime above its target"
    assert max(defined(series(chart, "desired"))) > 1
    x, v = settled_points(xs, reporting)[-1]
    answer = prometheus.query(f'count(count by (pod) (nv_inference_request_success{{namespace="{ns}",'
                              f'inferenceservice="{NAME}"}}))', at=x)
    assert float(answer[0]["value"][1]) == v
    # The signal drawn is the ScaledObject's query (without its `or vector(0)`) at each instant.
    query = signals.keda_query("queueTime", ns, NAME, "5s", empty_is_zero=False)
    drawn = settled_points(xs, signal)[-3:]
    assert drawn
    for x, v in drawn:
        assert math.isclose(prometheus.query_at(query, x), v, rel_tol=1e-9), (x, v)
    shot = page.screenshot("dashboard-autoscaling.png")
    return {"points": len(xs), "peak queueTime drawn (s)": max(defined(signal)), "screenshot": str(shot)}


def test_idle_autoscaled_inferenceservices_send_no_request(
        kubectl: Kubectl, namespace: str, operator: Operator, keda: Any, prometheus: Prometheus):
    """An HPA and a ScaledObject with every option set (fallback, policies, authentication aside)
    read back as sent: resyncs, and the HPA controller's and KEDA's own status writes, which wake
    passes, make the operator send nothing."""
    ns = namespace
    kubectl.apply(e2e_manifest("hpa", ns, extra="""\
        autoscaling:
          maxReplicas: 3
          targets: [{name: queueTime, value: 50ms}, {name: pendingRequests, value: "4"}]
          behavior: {scaleDown: {stabilizationWindowSeconds: 60, policies: [{type: Percent, value: 50, periodSeconds: 30}]}}
        """))
    kubectl.apply(e2e_manifest("keda", ns, extra=f"""\
        autoscaling:
          engine: keda
          maxReplicas: 3
          targets: [{{name: requestLatency, value: 500ms}}, {{name: gpuUtilization, value: 80%}}]
          keda: {{serverAddress: "{prometheus.url}", fallbackReplicas: 2, pollingInterval: 2}}
        """))
    wait_autoscaling_of = {"hpa": "False", "keda": "True"}  # no adapter here; KEDA reads 0 from Prometheus
    for name, status in wait_autoscaling_of.items():
        wait_for(lambda: condition(kubectl.json("infsvc", name, "-n", ns), "Autoscaling").get("status") == status,
                 f"{name}: Autoscaling {status}", timeout=WAIT)

    def versions():
        items = kubectl.json("infsvc,deploy,svc,hpa,scaledobject", "-n", ns)["items"]
        return sorted((o["kind"], o["metadata"]["name"], o["metadata"].get("generation")) for o in items)

    settled(versions, quiet=RESYNC_SECONDS)
    requests = operator.requests()
    passes = reconciles(operator)
    time.sleep(RESYNC_SECONDS * 2)
    assert reconciles(operator) >= passes + 2  # the resyncs (and the autoscalers' status) did wake passes
    assert diff(operator.requests(), requests) == {}
