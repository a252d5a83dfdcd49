"""traffic: gatewayAPI against the real Gateway API CRDs (from the sigs.k8s.io/gateway-api module):
the HTTPRoute's weights at each step, walked by hand while analysis cannot reach Prometheus."""

from __future__ import annotations

import pathlib
import subprocess
import time

import pytest

from .helpers import (
    Kubectl,
    condition,
    manifest,
    mark_foreign,
    marked_foreign,
    merge_patch,
    pods_of,
    wait_for,
    wait_ready,
)
from .viewers import Plugin

REPO = pathlib.Path(__file__).resolve().parents[1]
CRDS = ("gatewayclasses", "gateways", "httproutes", "referencegrants")
PREFIX = "serving.inference-operator.io"


@pytest.fixture(scope="module")
def gateway_api(kubectl: Kubectl) -> None:
    """The standard Gateway API CRDs, installed once (left installed: the operator watches routes
    wherever they exist, and no other test renders one)."""
    directory = subprocess.run(["bash", str(REPO / "e2e" / "gateway-api-crds.sh")], capture_output=True,
                               text=True, check=True).stdout.strip()
    files = [arg for name in CRDS for arg in ("-f", f"{directory}/gateway.networking.k8s.io_{name}.yaml")]
    kubectl("apply", "--server-side", *files)
    kubectl("wait", "--for=condition=Established", "crd/httproutes.gateway.networking.k8s.io", "--timeout=60s")


def weights(kubectl: Kubectl, ns: str) -> list:
    route = kubectl.json("httproute", "resnet", "-n", ns)
    return [(b["name"], b["weight"]) for b in route["spec"]["rules"][0]["backendRefs"]]


def test_the_route_weights_follow_the_steps_and_promotion_keeps_the_pods(kubectl, namespace, gateway_api):
    ns = namespace
    rollout = """\
        rollout:
          maxSurge: 1
          maxUnavailable: 0
          canary:
            traffic: gatewayAPI
            gatewayAPI: {parentRefs: [{name: edge}], hostnames: [resnet.example.com]}
            steps: [{weight: 20}, {weight: 60}]
            analysis:
              prometheus: {address: "http://127.0.0.1:9"}
              interval: 2s
              initialDelay: 1s
        """
    kubectl.apply(manifest("resnet", ns, replicas=4, extra=rollout))
    isvc = wait_ready(kubectl, ns, "resnet")
    stable = isvc["status"]["revision"]
    assert "canary" not in isvc["status"]
    wait_for(lambda: weights(kubectl, ns) == [("resnet-stable", 100), ("resnet-canary", 0)], "the route at 100/0")
    selector = kubectl.json("service", "resnet-stable", "-n", ns)["spec"]["selector"]
    assert selector[f"{PREFIX}/track"] == "stable"

    kubectl.apply(manifest("resnet", ns, replicas=4, storage="pvc://models/triton-v2", extra=rollout))
    # No Prometheus answers: the canary holds, and says why; it neither promotes nor fails.
    isvc = wait_for(lambda: (i := kubectl.json("infsvc", "resnet", "-n", ns))["status"].get("canary", {})
                    .get("phase") == "Holding" and i, "the canary to hold", timeout=180)
    assert "cannot connect to http://127.0.0.1:9" in condition(isvc, "Progressing")["message"]
    assert condition(isvc, "Progressing")["reason"] == "CanaryHolding"
    assert condition(isvc, "Ready")["reason"] == "CanaryInProgress" and stable in condition(isvc, "Ready")["message"]
    wait_for(lambda: weights(kubectl, ns) == [("resnet-stable", 80), ("resnet-canary", 20)], "the route at 80/20")
    time.sleep(3)
    assert kubectl.json("infsvc", "resnet", "-n", ns)["status"]["canary"]["stepIndex"] == 0

    kubectl("annotate", "--overwrite", "infsvc/resnet", "-n", ns, f"{PREFIX}/promote=step-1")
    wait_for(lambda: weights(kubectl, ns) == [("resnet-stable", 40), ("resnet-canary", 60)], "the route at 40/60",
             timeout=180)
    # kubectl inference get shows what the route sends.
    view = Plugin(kubectl).json("resnet", "-n", ns)
    assert {r["role"]: r["weight"] for r in view["revisions"]} == {"stable": 40, "canary": 60}, view["revisions"]
    canary_pods = wait_for(lambda: (p := {x["metadata"]["uid"] for x in pods_of(kubectl, ns, "resnet")
                                          if x["metadata"]["labels"].get(f"{PREFIX}/track") == "canary"
                                          and not x["metadata"].get("deletionTimestamp")}) and len(p) == 3 and p,
                           "three canary pods (60% of 4, rounded up)", timeout=180)

    kubectl("annotate", "--overwrite", "infsvc/resnet", "-n", ns, f"{PREFIX}/promote=step-2")
    isvc = wait_for(lambda: (i := kubectl.json("infsvc", "resnet", "-n", ns))["status"].get("canary", {})
                    .get("phase") == "Promoted" and condition(i, "Ready").get("status") == "True" and i,
                    "the promotion", timeout=240)
    assert isvc["status"]["revision"] == isvc["status"]["canary"]["revision"] != stable
    assert isvc["status"]["canary"]["stableTrack"] == "canary"
    wait_for(lambda: weights(kubectl, ns) == [("resnet-stable", 100), ("resnet-canary", 0)], "the route back at 100/0")
    assert kubectl.json("service", "resnet-stable", "-n", ns)["spec"]["selector"][f"{PREFIX}/track"] == "canary"
    serving = {p["metadata"]["uid"] for p in pods_of(kubectl, ns, "resnet") if not p["metadata"].get("deletionTimestamp")}
    assert canary_pods <= serving, "the promotion restarted pods that were analysed"
    wait_for(lambda: kubectl("get", "deployment", "resnet-predictor", "-n", ns, check=False).returncode != 0,
             "the old stable Deployment to go")


def test_a_hostile_edit_of_the_route_is_undone_and_foreign_marks_kept(kubectl, namespace, gateway_api):
    """Hostile edits (issue #12) of the HTTPRoute on the real CRDs: its weights, hostnames and
    parents changed by someone else are put back; another tool's label and annotation stay; a route
    deleted by hand is made again."""
    ns = namespace
    rollout = """\
        rollout:
          canary:
            traffic: gatewayAPI
            gatewayAPI: {parentRefs: [{name: edge}], hostnames: [resnet.example.com]}
            steps: [{weight: 20}]
            analysis: {prometheus: {address: "http://127.0.0.1:9"}}
        """
    kubectl.apply(manifest("resnet", ns, replicas=2, extra=rollout))
    wait_ready(kubectl, ns, "resnet")
    wait_for(lambda: weights(kubectl, ns) == [("resnet-stable", 100), ("resnet-canary", 0)], "the route at 100/0")
    want = kubectl.json("httproute", "resnet", "-n", ns)["spec"]
    mark_foreign(kubectl, "httproute", "resnet", ns)
    rules = [dict(want["rules"][0], backendRefs=[dict(b, weight=50) for b in want["rules"][0]["backendRefs"]])]
    merge_patch(kubectl, "httproute", "resnet", ns, {"spec": {"rules": rules, "hostnames": ["evil.example.com"],
                                                              "parentRefs": [{"name": "someone-elses"}]}})
    assert weights(kubectl, ns) == [("resnet-stable", 50), ("resnet-canary", 50)]
    wait_for(lambda: (r := kubectl.json("httproute", "resnet", "-n", ns))["spec"] == want and marked_foreign(r),
             "the route's spec restored, the foreign label and annotation kept")

    uid = kubectl.json("httproute", "resnet", "-n", ns)["metadata"]["uid"]
    kubectl("delete", "httproute", "resnet", "-n", ns, "--wait=true")
    wait_for(lambda: (r := kubectl.maybe("httproute", "resnet", "-n", ns)) and r["metadata"]["uid"] != uid
             and r["spec"] == want, "the route made again")
    wait_ready(kubectl, ns, "resnet")
