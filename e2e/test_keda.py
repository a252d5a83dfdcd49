"""Smoke test of the real KEDA on the local cluster: a ScaledObject with a prometheus trigger on a
real Prometheus, KEDA's HPA, the external metrics API served by keda-adapter through kube-apiserver's
aggregation layer, and the HPA controller of kube-controller-manager scaling the Deployment."""

from __future__ import annotations

import json
import uuid
from decimal import Decimal

from tests.prometheus import Prometheus

from .helpers import Kubectl, wait_for

NAME = "smoke"
VALUE, THRESHOLD, MIN_REPLICAS, MAX_REPLICAS = 5, 1, 1, 4  # ceil(5 / 1) = 5, bounded by 4
WAIT = 120  # seconds; polled, never asserted on

_SUFFIXES = {"n": Decimal("1e-9"), "u": Decimal("1e-6"), "m": Decimal("1e-3"), "": Decimal(1),
             "k": Decimal("1e3"), "M": Decimal("1e6"), "G": Decimal("1e9")}


def quantity(text: str) -> Decimal:
    """A Kubernetes quantity as the external metrics API writes a value ("5", "5000m", "5k")."""
    number = text.rstrip("numkMG")
    return Decimal(number) * _SUFFIXES[text[len(number):]]


def manifests(namespace: str, prometheus_url: str) -> str:
    return json.dumps({"apiVersion": "v1", "kind": "List", "items": [
        {"apiVersion": "apps/v1", "kind": "Deployment",
         "metadata": {"name": NAME, "namespace": namespace},
         "spec": {"replicas": MIN_REPLICAS, "selector": {"matchLabels": {"app": NAME}},
                  "template": {"metadata": {"labels": {"app": NAME}},
                               "spec": {"containers": [{"name": "app", "image": "pause"}]}}}},
        {"apiVersion": "keda.sh/v1alpha1", "kind": "ScaledObject",
         "metadata": {"name": NAME, "namespace": namespace},
         "spec": {
             "scaleTargetRef": {"name": NAME},
             "pollingInterval": 5,
             "minReplicaCount": MIN_REPLICAS, "maxReplicaCount": MAX_REPLICAS,
             "advanced": {"horizontalPodAutoscalerConfig": {"behavior": {
                 "scaleUp": {"stabilizationWindowSeconds": 0,
                             "policies": [{"type": "Pods", "value": MAX_REPLICAS, "periodSeconds": 5}]}}}},
             "triggers": [{"type": "prometheus", "metricType": "AverageValue", "metadata": {
                 "serverAddress": prometheus_url, "query": f"vector({VALUE})", "threshold": str(THRESHOLD)}}],
         }},
    ]})


def condition(obj: dict, kind: str) -> dict:
    return next((c for c in (obj.get("status") or {}).get("conditions") or [] if c["type"] == kind), {})


def test_keda_scales_a_deployment_on_a_prometheus_query(kubectl: Kubectl, keda) -> None:
    namespace = f"e2e-keda-{uuid.uuid4().hex[:8]}"
    with Prometheus([]) as prom:
        assert Decimal(prom.query(f"vector({VALUE})")[0]["value"][1]) == VALUE
        kubectl("create", "namespace", namespace)
        try:
            kubectl.apply(manifests(namespace, prom.url))

            def ready() -> dict | None:
                so = kubectl.json("scaledobject", NAME, "-n", namespace)
                return so if condition(so, "Ready").get("status") == "True" else None

            so = wait_for(ready, "the ScaledObject to be Ready", WAIT)
            hpa_name = so["status"]["hpaName"]
            hpa = wait_for(lambda: kubectl.maybe("hpa", hpa_name, "-n", namespace), f"KEDA's HPA {hpa_name}", WAIT)
            assert hpa["spec"]["scaleTargetRef"]["name"] == NAME
            assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (MIN_REPLICAS, MAX_REPLICAS)
            metric = hpa["spec"]["metrics"][0]["external"]["metric"]["name"]
            assert metric in so["status"]["externalMetricNames"]

            # What the HPA controller reads: kube-apiserver proxies to keda-adapter, which asks the
            # operator over gRPC, which asks Prometheus.
            path = (f"/apis/external.metrics.k8s.io/v1beta1/namespaces/{namespace}/{metric}"
                    f"?labelSelector=scaledobject.keda.sh%2Fname%3D{NAME}")
            items = json.loads(kubectl("get", "--raw", path).stdout)["items"]
            assert [quantity(i["value"]) for i in items] == [VALUE], items

            wait_for(lambda: kubectl.json("deployment", NAME, "-n", namespace)["spec"]["replicas"] == MAX_REPLICAS,
                     f"the HPA to scale the Deployment to {MAX_REPLICAS}", WAIT)
            hpa = kubectl.json("hpa", hpa_name, "-n", namespace)
            assert hpa["status"]["desiredReplicas"] == MAX_REPLICAS
            assert condition(hpa, "ScalingActive").get("status") == "True", hpa["status"]
        except BaseException:
            print(kubectl("get", "all,hpa,scaledobject,events", "-n", namespace, check=False).stdout)
            print(kubectl("get", "apiservice", "v1beta1.external.metrics.k8s.io", "-o", "yaml", check=False).stdout)
            print("--- keda ---\n" + keda.log("keda") + "\n--- keda-adapter ---\n" + keda.log("keda-adapter"))
            raise
        finally:
            # KEDA removes its finalizer and the HPA while it still runs; then the namespace goes.
            kubectl("delete", "scaledobject", NAME, "-n", namespace, "--ignore-not-found", "--timeout=60s",
                    check=False)
            kubectl("delete", "namespace", namespace, "--wait=false", check=False)
