"""Resource exhaustion (issue #12): what keeps pods from existing reaches the InferenceService's
status and Events with the real reason, and serving follows once it is lifted. (A GPU no node has:
e2e/test_e2e.py; a missing claim: the same file.)"""

from __future__ import annotations

from .conftest import Kubectl
from .test_e2e import condition, manifest, wait_condition, wait_ready


def test_a_resource_quota_that_blocks_pods_is_reported_then_served_once_lifted(kubectl: Kubectl, namespace: str):
    ns = namespace
    kubectl.apply(f"""
apiVersion: v1
kind: ResourceQuota
metadata: {{name: no-gpus, namespace: {ns}}}
spec:
  hard: {{requests.nvidia.com/gpu: "0"}}
""")
    kubectl.apply(manifest("resnet", ns, replicas=1))
    isvc = wait_condition(kubectl, ns, "resnet", "Degraded", "ReplicaFailure")
    degraded = condition(isvc, "Degraded")
    assert degraded["status"] == "True" and "exceeded quota" in degraded["message"], degraded
    assert condition(isvc, "Ready")["status"] == "False"
    events = kubectl("get", "events", "-n", ns, "--field-selector", "involvedObject.kind=InferenceService").stdout
    assert "ReplicaFailure" in events, events

    kubectl("delete", "resourcequota", "no-gpus", "-n", ns)
    isvc = wait_ready(kubectl, ns, "resnet", timeout=180)
    assert condition(isvc, "Degraded").get("status") != "True"
