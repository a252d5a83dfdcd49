"""Hostile edits (issue #12): another actor changes a field the operator manages in each child, adds
labels and annotations of its own, or deletes a child. The operator puts its fields back and
leaves the others' alone (the replicas an autoscaler set among them), and a child deleted by hand,
the Deployment too, is made again. (A name someone else holds is
never taken over: e2e/test_engine.py. A route's weights changed behind its back: tests/test_rollout.py.)"""

from __future__ import annotations

import time

from .helpers import (
    RESYNC_SECONDS,
    Kubectl,
    Operator,
    manifest,
    mark_foreign,
    marked_foreign,
    merge_patch,
    wait_for,
    wait_ready,
)

CHILDREN = ("deployments", "services", "poddisruptionbudgets", "horizontalpodautoscalers")


def writes(op: Operator) -> dict[str, float]:
    """The operator's writes of children (status and Events follow what the HPA controller reports)."""
    return {k: v for k, v in op.requests().items()
            if k.split()[0] in ("apply", "create", "patch", "delete") and k.split()[1] in CHILDREN}


def test_each_childs_managed_fields_are_restored_and_foreign_ones_kept(kubectl: Kubectl, namespace: str,
                                                                        operator: Operator):
    ns = namespace
    kubectl.apply(manifest("resnet", ns, replicas=2, extra="""\
        autoscaling: {minReplicas: 2, maxReplicas: 4}
        """))
    wait_ready(kubectl, ns, "resnet")
    # The autoscaler's move, through the scale subresource as the HPA controller makes it: from
    # here spec.replicas is the autoscaler's (3), and nothing below may put it back to 2.
    kubectl("scale", "infsvc/resnet", "-n", ns, "--replicas=3")
    wait_for(lambda: kubectl.json("deployment", "resnet-predictor", "-n", ns)["spec"]["replicas"] == 3,
             "the Deployment at the autoscaler's 3")
    wait_ready(kubectl, ns, "resnet")
    want = {
        "deployment": kubectl.json("deployment", "resnet-predictor", "-n", ns),
        "service": kubectl.json("service", "resnet", "-n", ns),
        "pdb": kubectl.json("pdb", "resnet-predictor", "-n", ns),
        "hpa": kubectl.json("hpa", "resnet", "-n", ns),
    }
    names = {"deployment": "resnet-predictor", "service": "resnet", "pdb": "resnet-predictor", "hpa": "resnet"}
    for kind, name in names.items():
        mark_foreign(kubectl, kind, name, ns)

    # A managed field of each, changed by someone else.
    kubectl("set", "image", "deployment/resnet-predictor", "-n", ns, "triton=someone/else:1")
    selector = want["service"]["spec"]["selector"]
    key = sorted(selector)[0]
    # One selector key changed, one added: the Service would select other pods, or none.
    merge_patch(kubectl, "service", "resnet", ns, {"spec": {"selector": {key: "someone-else", "app": "other"}}})
    merge_patch(kubectl, "pdb", "resnet-predictor", ns, {"spec": {"maxUnavailable": 5}})
    merge_patch(kubectl, "hpa", "resnet", ns, {"spec": {"maxReplicas": 40}})

    def restored(kind: str) -> bool:
        live = kubectl.json(kind, names[kind], "-n", ns)
        before = want[kind]
        if kind == "deployment":
            same = live["spec"]["template"]["spec"]["containers"] == before["spec"]["template"]["spec"]["containers"]
        else:
            same = live["spec"].get("selector") == before["spec"].get("selector") and \
                live["spec"].get("maxUnavailable") == before["spec"].get("maxUnavailable") and \
                live["spec"].get("maxReplicas") == before["spec"].get("maxReplicas")
        return same and marked_foreign(live)

    for kind in names:
        wait_for(lambda: restored(kind), f"the {kind}'s managed field restored, the foreign label and annotation kept")
    wait_ready(kubectl, ns, "resnet")

    # Deleted by hand: made again (a new object), the InferenceService Ready after.
    for kind in ("service", "pdb", "hpa", "deployment"):
        uid = kubectl.json(kind, names[kind], "-n", ns)["metadata"]["uid"]
        kubectl("delete", kind, names[kind], "-n", ns, "--wait=true")
        wait_for(lambda: (obj := kubectl.maybe(kind, names[kind], "-n", ns)) and obj["metadata"]["uid"] != uid,
                 f"the {kind} made again")
    wait_ready(kubectl, ns, "resnet")
    # The autoscaler owns the InferenceService's spec.replicas: the operator never wrote it back,
    # and the Deployment made again runs the autoscaler's count, not the manifest's.
    isvc = kubectl.json("infsvc", "resnet", "-n", ns)
    assert isvc["spec"]["replicas"] == 3
    assert kubectl.json("deployment", "resnet-predictor", "-n", ns)["spec"]["replicas"] == 3
    # And no write loop: once all is restored, resyncs and the others' additions cost no child write.
    settled = writes(operator)
    time.sleep(RESYNC_SECONDS * 2)
    assert writes(operator) == settled
