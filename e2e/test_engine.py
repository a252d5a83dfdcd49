"""The reconcile engine against a real API server: finalizers, permissions, scale, requests sent."""

from __future__ import annotations

import collections
import json
import time

import yaml

from .helpers import (
    ISVC_LABEL,
    OPERATOR_MANIFEST,
    RESYNC_SECONDS,
    SLOW_RETRY_SECONDS,
    Kubectl,
    Operator,
    condition,
    diff,
    manifest,
    reconciles,
    settled,
    wait_condition,
    wait_for,
    wait_ready,
)

KOPF_FINALIZER = "kopf.zalando.org/KopfFinalizerMarker"


def total(requests: dict[str, float], verb: str | None = None, code: str | None = None) -> float:
    return sum(v for k, v in requests.items()
               if (verb is None or k.split()[0] == verb) and (code is None or k.split()[2] == code))


def test_delete_while_the_operator_is_down_does_not_hang(kubectl: Kubectl, namespace: str, operator: Operator):
    ns = namespace
    kubectl.apply(manifest("resnet", ns))
    isvc = wait_ready(kubectl, ns, "resnet")
    assert not isvc["metadata"].get("finalizers"), isvc["metadata"].get("finalizers")
    operator.stop()
    try:
        kubectl("delete", "infsvc", "resnet", "-n", ns, "--wait=true", "--timeout=30s", timeout=40)
    finally:
        operator.start()


def test_a_finalizer_an_older_version_left_is_removed(kubectl: Kubectl, namespace: str, operator: Operator):
    ns = namespace
    body = yaml.safe_load(manifest("resnet", ns))
    body["metadata"]["finalizers"] = [KOPF_FINALIZER]
    kubectl.apply(json.dumps(body))
    wait_for(lambda: not kubectl.json("infsvc", "resnet", "-n", ns)["metadata"].get("finalizers"),
             "kopf to drop its finalizer", timeout=30)
    kubectl("delete", "infsvc", "resnet", "-n", ns, "--wait=true", "--timeout=30s", timeout=40)


def test_a_scale_is_not_a_rollout(kubectl: Kubectl, namespace: str):
    ns = namespace
    kubectl.apply(manifest("resnet", ns, replicas=2))
    wait_ready(kubectl, ns, "resnet")
    before = kubectl.json("infsvc", "resnet", "-n", ns)
    revision = before["status"]["revision"]

    def rollout_events() -> int:
        events = kubectl.json("events", "-n", ns, "--field-selector", "involvedObject.kind=InferenceService")
        return sum(1 for e in events["items"] if e.get("reason") == "RollingOut")

    rolling = rollout_events()
    seen = []
    for replicas in (4, 1, 3):
        kubectl("scale", "infsvc/resnet", "-n", ns, f"--replicas={replicas}")

        def scaled():
            isvc = kubectl.json("infsvc", "resnet", "-n", ns)
            seen.append((condition(isvc, "Ready").get("status"), condition(isvc, "Progressing").get("status")))
            return isvc if isvc["status"].get("readyReplicas") == replicas and \
                len([p for p in kubectl.json("pods", "-n", ns, "-l", f"{ISVC_LABEL}=resnet")["items"]
                     if not p["metadata"].get("deletionTimestamp")]) == replicas else None

        isvc = wait_for(scaled, f"{replicas} replicas", timeout=60, interval=0.2)
        assert isvc["status"]["revision"] == revision
    assert all(s == ("True", "False") for s in seen), seen
    assert rollout_events() == rolling


def test_a_missing_permission_is_reported_naming_the_verb_and_the_resource(
        kubectl: Kubectl, namespace: str, operator: Operator):
    ns = namespace
    role = next(d for d in yaml.safe_load_all(OPERATOR_MANIFEST.read_text()) if d and d["kind"] == "ClusterRole")
    crippled = dict(role, rules=[r for r in role["rules"] if "poddisruptionbudgets" not in r["resources"]])
    kubectl.apply(json.dumps(crippled))
    try:
        kubectl.apply(manifest("resnet", ns, replicas=2))
        isvc = wait_condition(kubectl, ns, "resnet", "Degraded", "Forbidden", timeout=60)
        message = condition(isvc, "Degraded")["message"]
        # The refused verb is the create (a server-side apply), by its name.
        assert "refused to apply poddisruptionbudgets" in message, message
        events = kubectl("get", "events", "-n", ns, "--field-selector", "involvedObject.kind=InferenceService").stdout
        assert "Forbidden" in events
        # Looked at again (every SLOW_RETRY_SECONDS here), and while nothing changes, nothing is written.
        version = isvc["metadata"]["resourceVersion"]
        passes = reconciles(operator)
        time.sleep(SLOW_RETRY_SECONDS * 4)
        assert reconciles(operator) >= passes + 2
        assert kubectl.json("infsvc", "resnet", "-n", ns)["metadata"]["resourceVersion"] == version
    finally:
        kubectl.apply(json.dumps(role))
    kubectl("annotate", "infsvc/resnet", "-n", ns, "e2e/wake=1")  # any event: no need to wait the retry out
    wait_ready(kubectl, ns, "resnet", timeout=60)
    assert kubectl.maybe("pdb", "resnet-predictor", "-n", ns) is not None


def test_restarts_and_resyncs_send_no_request(kubectl: Kubectl, namespace: str, operator: Operator, audit):
    ns = namespace
    for i in range(3):
        kubectl.apply(manifest(f"model-{i}", ns, replicas=1 + i % 2))
    for i in range(3):
        wait_ready(kubectl, ns, f"model-{i}")

    def versions():
        items = kubectl.json("infsvc,deploy,svc,pdb", "-n", ns)["items"]
        return sorted((o["kind"], o["metadata"]["name"], o["metadata"]["resourceVersion"]) for o in items)

    before = settled(versions)
    requests = operator.requests()
    assert total(requests, "apply") >= 3, requests  # the operator counts what it sends
    offset = audit.offset() if audit else 0
    passes = reconciles(operator)
    time.sleep(RESYNC_SECONDS * 2)  # two resync periods: every InferenceService reconciled twice
    assert reconciles(operator) >= passes + 3  # the resyncs did run
    assert diff(operator.requests(), requests) == {}
    if audit:
        # The watch streams themselves aside (a watch that times out is re-listed), nothing.
        sent = [r for r in audit.since(offset) if r[0] not in ("watch", "list")]
        assert sent == [], sent
        offset = audit.offset()
    operator.restart()
    wait_for(lambda: reconciles(operator) >= 3, "the operator to reconcile after its restart")
    time.sleep(RESYNC_SECONDS * 2)
    assert operator.requests() == {}, operator.requests()
    if audit:
        sent = [r for r in audit.since(offset) if r[0] != "watch"]
        # Kopf's start: API discovery (no object named) and one list per watched kind. No object is
        # read or written, whatever the number of InferenceServices.
        assert [r for r in sent if r[0] != "list" and r[2]] == [], sent
        lists = collections.Counter(r[1] for r in sent if r[0] == "list")
        # One list per watched kind; kopf's own discovery watches CRDs beside our cache of them.
        assert all(n <= (2 if kind == "customresourcedefinitions" else 1) for kind, n in lists.items()), lists
    assert settled(versions) == before


def test_a_new_inferenceservice_costs_its_creates_its_transitions_and_no_read(
        kubectl: Kubectl, namespace: str, operator: Operator):
    ns = namespace
    before = operator.requests()
    kubectl.apply(manifest("resnet", ns, replicas=2))
    wait_ready(kubectl, ns, "resnet")
    time.sleep(2)
    spent = diff(operator.requests(), before)
    children = 3  # Deployment, Service, PDB
    assert total(spent, "get") == 0, spent  # created create-only: no look first
    assert total(spent, "list") == 0, spent
    assert total(spent, "apply") == children, spent
    # Status: created, then each change of readyReplicas (0, 1, 2 of 2, the last one Ready).
    assert total(spent, "patch") <= 2 + 2, spent
    assert total(spent, "create") <= 2, spent  # Events: RollingOut (naming the children), Ready
    assert total(spent) == total(spent, "get") + total(spent, "apply") + total(spent, "patch") + \
        total(spent, "create"), spent


def test_deleting_a_namespace_re_creates_nothing(kubectl: Kubectl, operator: Operator, crd: None, audit):
    ns = f"e2e-gone-{int(time.time())}"
    kubectl("create", "namespace", ns)
    from .helpers import bound_claim

    bound_claim(kubectl, ns, "models")
    for i in range(3):
        kubectl.apply(manifest(f"model-{i}", ns, replicas=2))
    for i in range(3):
        wait_ready(kubectl, ns, f"model-{i}")
    before = operator.requests()
    assert total(before, "apply") >= 9, before  # the operator counts what it sends
    offset = audit.offset() if audit else 0
    kubectl("delete", "namespace", ns, "--wait=true", "--timeout=120s", timeout=130)
    kubectl("delete", "pv", "-l", f"e2e-namespace={ns}", "--wait=false", check=False)
    spent = diff(operator.requests(), before)
    assert total(spent, "apply") == 0 and total(spent, code="403") == 0, spent
    if audit:
        sent = [r for r in audit.since(offset) if r[0] not in ("watch", "list")]
        assert [r for r in sent if r[0] in ("create", "patch", "update") and r[1] != "events"] == [], sent
        assert [r for r in sent if r[3] == 403] == [], sent


UPGRADED_IMAGE = "registry.example/tritonserver:99.99-py3"


def triton_image(kubectl: Kubectl, ns: str, name: str) -> str:
    dep = kubectl.json("deployment", f"{name}-predictor", "-n", ns)
    return dep["spec"]["template"]["spec"]["containers"][0]["image"]


def test_an_operator_upgrade_that_changes_a_default_rolls_nothing(
        kubectl: Kubectl, namespace: str, operator: Operator):
    ns = namespace
    kubectl.apply(manifest("running", ns))
    wait_ready(kubectl, ns, "running")
    before = kubectl.json("deployment", "running-predictor", "-n", ns)
    operator.restart(env={"INFERENCE_OPERATOR_TRITON_IMAGE": UPGRADED_IMAGE})
    try:
        kubectl.apply(manifest("created-after", ns))
        wait_ready(kubectl, ns, "created-after")
        assert triton_image(kubectl, ns, "created-after") == UPGRADED_IMAGE
        kubectl("scale", "infsvc/running", "-n", ns, "--replicas=2")  # an autoscaler's change: no rollout
        wait_for(lambda: kubectl.json("infsvc", "running", "-n", ns)["status"].get("readyReplicas") == 2, "2 ready")
        after = kubectl.json("deployment", "running-predictor", "-n", ns)
        assert after["spec"]["template"] == before["spec"]["template"]
        # Its own spec changes: that rollout takes the operator's current defaults.
        kubectl.apply(manifest("running", ns, replicas=2, extra="runtime: {args: [--log-verbose=1]}\n"))
        wait_for(lambda: triton_image(kubectl, ns, "running") == UPGRADED_IMAGE, "the new default on a spec change")
    finally:
        operator.restart()


def test_a_deployment_made_before_tracks_is_kept_without_a_rollout(
        kubectl: Kubectl, namespace: str, operator: Operator):
    from inference_operator import api, naming
    from inference_operator.config import OperatorConfig
    from inference_operator.desired import children, render

    ns = namespace
    operator.stop()
    try:
        kubectl.apply(manifest("legacy", ns))
        isvc = api.parse(kubectl.json("infsvc", "legacy", "-n", ns))
        # What an operator without tracks made: no track label in the selector or on the pods.
        old = children.stamp(render.render(isvc, OperatorConfig.from_env(), track=None)[0], isvc)
        kubectl("apply", "--server-side", "--field-manager=inference-operator", "-f", "-", stdin=json.dumps(old))
        wait_for(lambda: kubectl.json("deployment", "legacy-predictor", "-n", ns)["status"].get("availableReplicas"),
                 "the legacy Deployment to be available")
    finally:
        operator.start()
    wait_ready(kubectl, ns, "legacy")
    dep = kubectl.json("deployment", "legacy-predictor", "-n", ns)
    assert dep["metadata"]["generation"] == 1  # never changed: no rollout, no refused selector change
    assert "serving.inference-operator.io/track" not in dep["spec"]["selector"]["matchLabels"]

    # Its next rollout moves it onto tracks, and a replica serves throughout.
    kubectl.apply(manifest("legacy", ns, replicas=2, storage="pvc://models/v2"))
    serving = []

    def moved():
        pods = kubectl.json("pods", "-n", ns, "-l", f"{ISVC_LABEL}=legacy")["items"]
        serving.append(sum(1 for p in pods if not p["metadata"].get("deletionTimestamp") and any(
            c["type"] == "Ready" and c["status"] == "True" for c in p["status"].get("conditions", []))))
        dep = kubectl.maybe("deployment", "legacy-predictor", "-n", ns)
        sets = kubectl.json("replicasets", "-n", ns, "-l", f"{ISVC_LABEL}=legacy")["items"]
        isvc = kubectl.json("infsvc", "legacy", "-n", ns)
        return (dep and dep["spec"]["selector"]["matchLabels"].get("serving.inference-operator.io/track") == "stable"
                and all(any(o.get("controller") for o in s["metadata"].get("ownerReferences", [])) for s in sets)
                and condition(isvc, "Ready").get("status") == "True"
                and isvc["status"].get("revision") == naming.revision_of(dep))

    wait_for(moved, "the Deployment to move onto tracks", timeout=120, interval=0.2)
    assert min(serving) >= 1, serving


def test_status_is_written_under_our_field_manager_and_a_stale_write_is_refused(
        kubectl: Kubectl, namespace: str):
    import kubernetes

    from inference_operator.kube import ApiError, RestKube

    ns = namespace
    kubectl.apply(manifest("resnet", ns))
    wait_ready(kubectl, ns, "resnet")
    stale_version = kubectl.json("infsvc", "resnet", "-n", ns)["metadata"]["resourceVersion"]
    kubectl("annotate", "infsvc/resnet", "-n", ns, "e2e/touched=1")  # the object moves on
    isvc = json.loads(kubectl("get", "infsvc", "resnet", "-n", ns, "-o", "json", "--show-managed-fields").stdout)
    managers = {(m["manager"], m.get("subresource", "")) for m in isvc["metadata"]["managedFields"]}
    assert ("inference-operator", "status") in managers, managers
    # The precondition the operator's status writes carry, as the real API server enforces it.
    client = kubernetes.config.new_client_from_config(config_file=kubectl.kubeconfig)
    try:
        RestKube(client).patch_status(ns, "resnet", {"observedGeneration": 0}, stale_version)
        raise AssertionError("a status write with a stale resourceVersion was accepted")
    except ApiError as exc:
        assert exc.kind == "conflict", exc
    assert kubectl.json("infsvc", "resnet", "-n", ns)["status"]["observedGeneration"] == 1


def test_a_name_someone_else_holds_is_never_touched_and_is_served_once_free(kubectl: Kubectl, namespace: str):
    """The cache shows only labelled objects: the create-only apply is what finds a foreign
    Service, which is left exactly as it was, and no pod is scheduled while the name is taken."""
    ns = namespace
    kubectl("create", "service", "clusterip", "resnet", "--tcp=80:80", "-n", ns)
    theirs = kubectl.json("service", "resnet", "-n", ns)
    kubectl.apply(manifest("resnet", ns))
    isvc = wait_condition(kubectl, ns, "resnet", "Degraded", "ChildConflict", timeout=60)
    assert "Service/resnet already exists" in condition(isvc, "Degraded")["message"]
    assert kubectl.json("service", "resnet", "-n", ns)["metadata"]["resourceVersion"] == \
        theirs["metadata"]["resourceVersion"]
    assert kubectl.maybe("deployment", "resnet-predictor", "-n", ns) is None
    kubectl("delete", "service", "resnet", "-n", ns)
    kubectl("annotate", "infsvc/resnet", "-n", ns, "e2e/wake=1")  # no need to wait the slow retry out
    wait_ready(kubectl, ns, "resnet", timeout=60)


def test_a_create_only_apply_creates_refuses_a_taken_name_and_owns_what_it_sent(kubectl: Kubectl, namespace: str):
    """RestKube.create against the real API server: fields it sent are the apply manager's, so a
    label a later apply leaves out is removed (a plain POST would leave it behind for good)."""
    import kubernetes

    from inference_operator.kube import ApiError, RestKube

    kube = RestKube(kubernetes.config.new_client_from_config(config_file=kubectl.kubeconfig))
    svc = {"apiVersion": "v1", "kind": "Service",
           "metadata": {"name": "probe", "namespace": namespace, "labels": {"a": "1", "b": "2"}},
           "spec": {"ports": [{"port": 80}]}}
    created = kube.create(svc)
    assert created["metadata"]["labels"] == {"a": "1", "b": "2"}
    try:
        kube.create(dict(svc, metadata=dict(svc["metadata"], labels={"c": "3"})))
        raise AssertionError("a create-only apply overwrote an existing object")
    except ApiError as exc:
        assert exc.kind == "conflict", exc
    live = kubectl.json("service", "probe", "-n", namespace)
    assert live["metadata"]["resourceVersion"] == created["metadata"]["resourceVersion"]
    kube.apply(dict(svc, metadata=dict(svc["metadata"], labels={"a": "1"})))
    assert kubectl.json("service", "probe", "-n", namespace)["metadata"]["labels"] == {"a": "1"}


def test_a_minimal_manifest_gets_rollout_defaults_that_keep_a_replica_serving(kubectl: Kubectl, namespace: str):
    ns = namespace
    kubectl.apply(manifest("resnet", ns))
    assert kubectl.json("infsvc", "resnet", "-n", ns)["spec"]["rollout"] == {"maxSurge": 1, "maxUnavailable": 0}
    wait_ready(kubectl, ns, "resnet")
    strategy = kubectl.json("deployment", "resnet-predictor", "-n", ns)["spec"]["strategy"]["rollingUpdate"]
    assert strategy == {"maxSurge": 1, "maxUnavailable": 0}


def test_a_rollout_waiting_for_a_gpu_keeps_the_old_revision_serving(kubectl: Kubectl, namespace: str):
    ns = namespace
    # Every GPU of the one H100 node: the new revision's pod has nowhere to go until the old one goes.
    kubectl.apply(manifest("big", ns, gpu="count: 8, product: NVIDIA-H100-80GB-HBM3"))
    before = wait_ready(kubectl, ns, "big", timeout=180)
    kubectl.apply(manifest("big", ns, gpu="count: 8, product: NVIDIA-H100-80GB-HBM3", storage="pvc://models/v2"))
    isvc = wait_condition(kubectl, ns, "big", "Progressing", "WaitingForCapacity", timeout=60)
    ready = condition(isvc, "Ready")
    assert ready["status"] == "False" and ready["reason"] == "Unschedulable", ready
    assert "previous revision keeps serving (1 ready)" in ready["message"], ready["message"]
    assert "Insufficient nvidia.com/gpu" in condition(isvc, "Progressing")["message"]
    assert isvc["status"]["revision"] == before["status"]["revision"]
    serving = [p for p in kubectl.json("pods", "-n", ns, "-l", f"{ISVC_LABEL}=big")["items"]
               if any(c["type"] == "Ready" and c["status"] == "True" for c in p["status"].get("conditions", []))]
    assert len(serving) == 1
    kubectl("delete", "infsvc", "big", "-n", ns, "--wait=true", "--timeout=60s")
