"""The operator against a real API server, through kubectl, as users drive it."""

from __future__ import annotations

import json
import time

import pytest

from .helpers import (
    ISVC_LABEL,
    Operator,
    bound_claim,
    condition,
    manifest,
    pods_of,
    settled,
    wait_condition,
    wait_for,
    wait_ready,
)

REVISION_LABEL = "serving.inference-operator.io/revision"


@pytest.mark.parametrize(
    "gpu,nodes",
    [
        ("count: 1, product: NVIDIA-A100-SXM4-80GB", {"gpu-a100-0", "gpu-a100-1"}),
        ("count: 2, product: NVIDIA-H100-80GB-HBM3", {"gpu-h100-0"}),
        ("count: 1, resourceName: nvidia.com/mig-1g.10gb", {"gpu-mig-0"}),
        ("count: 0", {"cpu-0", "cpu-1"}),
    ],
    ids=["a100", "h100", "mig", "cpu"],
)
def test_inferenceservice_becomes_ready_on_the_right_nodes(kubectl, namespace, gpu, nodes):
    ns = namespace
    kubectl.apply(manifest("resnet", ns, replicas=2, gpu=gpu))
    isvc = wait_ready(kubectl, ns, "resnet")
    uid = isvc["metadata"]["uid"]

    for kind, name in (("deployment", "resnet-predictor"), ("service", "resnet"), ("pdb", "resnet-predictor")):
        child = kubectl.json(kind, name, "-n", ns)
        (owner,) = child["metadata"]["ownerReferences"]
        assert (owner["uid"], owner["controller"], owner["kind"]) == (uid, True, "InferenceService"), kind

    pods = pods_of(kubectl, ns, "resnet")
    assert len(pods) == 2
    assert {p["spec"]["nodeName"] for p in pods} <= nodes

    status = isvc["status"]
    assert status["readyReplicas"] == 2 and status["observedGeneration"] == isvc["metadata"]["generation"]
    assert status["url"] == f"http://resnet.{ns}.svc.cluster.local:8000"
    assert {p["metadata"]["labels"][REVISION_LABEL] for p in pods} == {status["revision"]}
    assert condition(isvc, "Progressing")["reason"] == "RolloutComplete"
    assert condition(isvc, "Degraded")["status"] == "False"

    printed = kubectl("get", "infsvc", "resnet", "-n", ns).stdout
    assert "True" in printed and status["revision"] in printed

    # One transition, one Event: passes woken by several child events must not repeat it.
    time.sleep(3)
    events = kubectl.json("events", "-n", ns, "--field-selector", "involvedObject.name=resnet,reason=Ready")
    assert len(events["items"]) == 1, [e.get("message") for e in events["items"]]


@pytest.mark.parametrize(
    "change,message",
    [
        ({"storage": "ftp://host/model"}, "must start with pvc://, s3://, gs://, https:// or http://"),
        ({"extra": "runtime: {args: [--model-repository=/tmp]}"}, "flags the operator manages"),
        ({"gpu": "count: 0, product: NVIDIA-A100-SXM4-80GB"}, "gpu.product needs gpu.count > 0"),
        ({"gpu": "count: 1, resourceName: amd.com/gpu"}, "gpu.resourceName must be nvidia.com/gpu"),
        ({"extra": "rollout: {maxSurge: 0, maxUnavailable: 0}"}, "cannot both be 0"),
        ({"replicas": -1}, "spec.replicas"),
    ],
    ids=["scheme", "managed-flag", "product-without-gpu", "resource-name", "rollout", "replicas"],
)
def test_invalid_manifest_is_rejected_and_nothing_is_created(kubectl, namespace, change, message):
    ns = namespace
    result = kubectl.apply(manifest("bad", ns, **change), check=False)
    assert result.returncode != 0
    assert message in result.stderr, result.stderr
    assert kubectl.json("infsvc", "-n", ns)["items"] == []
    assert kubectl.json("deployments", "-n", ns)["items"] == []


@pytest.mark.parametrize(
    "resources,message",
    [
        ("requests: {cpu: 500m, memory: 4Gi}\n    limits: {memory: 1Gi}", "limits.memory must be >= resources.requests.memory"),
        ("requests: {cpu: '2', memory: 1Gi}\n    limits: {cpu: 1500m}", "limits.cpu must be >= resources.requests.cpu"),
    ],
    ids=["memory", "cpu"],
)
def test_limits_below_requests_are_rejected_by_the_quantity_rules(kubectl, namespace, resources, message):
    """These rules use the Kubernetes CEL quantity library, which only a real API server has."""
    text = manifest("bad", namespace).replace("requests: {cpu: 500m, memory: 1Gi}", resources)
    result = kubectl.apply(text, check=False)
    assert result.returncode != 0 and message in result.stderr, result.stderr


def test_name_too_long_is_rejected(kubectl, namespace):
    result = kubectl.apply(manifest("x" * 54, namespace), check=False)
    assert result.returncode != 0 and "at most 53 characters" in result.stderr


def test_model_name_is_immutable(kubectl, namespace):
    kubectl.apply(manifest("resnet", namespace))
    result = kubectl.apply(manifest("resnet", namespace).replace("name: resnet50", "name: bert"), check=False)
    assert result.returncode != 0 and "spec.model.name is immutable" in result.stderr


def test_changing_the_model_rolls_out_a_new_revision(kubectl, namespace):
    ns = namespace
    kubectl.apply(manifest("resnet", ns, replicas=2))
    first = wait_ready(kubectl, ns, "resnet")["status"]["revision"]

    kubectl.apply(manifest("resnet", ns, replicas=2, storage="pvc://models/triton-v2"))
    deployment = wait_for(
        lambda: (d := kubectl.json("deployment", "resnet-predictor", "-n", ns))
        ["spec"]["template"]["metadata"]["labels"][REVISION_LABEL] != first and d,
        "the Deployment to get the new revision")
    second = deployment["spec"]["template"]["metadata"]["labels"][REVISION_LABEL]
    isvc = wait_for(
        lambda: (i := kubectl.json("infsvc", "resnet", "-n", ns))["status"].get("revision") == second
        and condition(i, "Ready").get("status") == "True" and i,
        "status to follow the new revision")
    assert isvc["status"]["observedGeneration"] == isvc["metadata"]["generation"] == 2
    assert condition(isvc, "Ready")["observedGeneration"] == 2
    wait_for(lambda: {p["metadata"]["labels"][REVISION_LABEL] for p in pods_of(kubectl, ns, "resnet")
                      if not p["metadata"].get("deletionTimestamp")} == {second},
             "only new-revision pods")
    events = kubectl("get", "events", "-n", ns, "--field-selector", "involvedObject.kind=InferenceService").stdout
    assert "RollingOut" in events


def test_deleting_the_inferenceservice_garbage_collects_every_child(kubectl, namespace):
    ns = namespace
    kubectl.apply(manifest("resnet", ns, replicas=2))
    wait_ready(kubectl, ns, "resnet")
    kubectl("delete", "infsvc", "resnet", "-n", ns, "--wait=true", "--timeout=60s")
    for kind in ("deployments", "services", "pdb", "replicasets", "pods"):
        wait_for(lambda: [o for o in kubectl.json(kind, "-n", ns, "-l", f"{ISVC_LABEL}=resnet")["items"]] == [],
                 f"{kind} to be garbage-collected", timeout=90)


def test_restarting_the_operator_changes_nothing(kubectl, namespace, operator: Operator):
    ns = namespace
    kubectl.apply(manifest("resnet", ns, replicas=2))
    wait_ready(kubectl, ns, "resnet")

    def snapshot():
        objs = {
            "infsvc": kubectl.json("infsvc", "resnet", "-n", ns),
            "deployment": kubectl.json("deployment", "resnet-predictor", "-n", ns),
            "service": kubectl.json("service", "resnet", "-n", ns),
            "pdb": kubectl.json("pdb", "resnet-predictor", "-n", ns),
        }
        versions = {k: v["metadata"]["resourceVersion"] for k, v in objs.items()}
        pods = sorted(p["metadata"]["uid"] for p in pods_of(kubectl, ns, "resnet"))
        return versions, pods

    before = settled(snapshot)
    operator.restart()
    # The resume pass and the child watches' initial events all reconcile this InferenceService.
    writes = f'inference_operator_writes_total{{namespace="{ns}"}}'
    wait_for(lambda: writes in operator.metrics(), "the operator to reconcile the InferenceService")
    assert settled(snapshot) == before
    # Other tests' namespaces may still be going away (and written to); this one must see no write.
    assert operator.metrics()[writes] == 0


def test_unschedulable_pod_is_reported_in_status(kubectl, namespace):
    ns = namespace
    kubectl.apply(manifest("resnet", ns, gpu="count: 1, product: NVIDIA-B200"))
    isvc = wait_condition(kubectl, ns, "resnet", "Degraded", "Unschedulable")
    assert condition(isvc, "Degraded")["status"] == "True"
    ready = condition(isvc, "Ready")
    assert ready["status"] == "False" and ready["reason"] == "Unschedulable"
    assert "node affinity/selector" in ready["message"] or "didn't match" in ready["message"], ready["message"]
    events = kubectl("get", "events", "-n", ns, "--field-selector", "involvedObject.kind=InferenceService").stdout
    assert "Unschedulable" in events


def test_more_gpus_than_any_node_has_is_reported_with_the_schedulers_words(kubectl, namespace):
    """The product exists; no node has 9 of it (8 per A100 node): the scheduler's 'Insufficient'."""
    ns = namespace
    kubectl.apply(manifest("resnet", ns, gpu="count: 9, product: NVIDIA-A100-SXM4-80GB"))
    isvc = wait_condition(kubectl, ns, "resnet", "Degraded", "Unschedulable")
    ready = condition(isvc, "Ready")
    assert ready["status"] == "False" and "Insufficient nvidia.com/gpu" in ready["message"], ready["message"]


def test_missing_claim_is_reported_then_served_once_it_exists(kubectl, namespace, operator: Operator):
    ns = namespace
    # A slow retry far beyond the test: only the claim's own watch event can wake the InferenceService.
    operator.restart(args=("--slow-retry-seconds", "600"))
    try:
        kubectl.apply(manifest("resnet", ns, storage="pvc://no-such-claim/triton"))
        isvc = wait_condition(kubectl, ns, "resnet", "Ready", "StorageNotFound")
        assert "no-such-claim" in condition(isvc, "Ready")["message"]
        assert kubectl.json("deployments", "-n", ns)["items"] == []
        waiting_version = isvc["metadata"]["resourceVersion"]

        # While it waits, nothing is written to the InferenceService.
        time.sleep(5)
        assert kubectl.json("infsvc", "resnet", "-n", ns)["metadata"]["resourceVersion"] == waiting_version

        bound_claim(kubectl, ns, "no-such-claim")
        wait_ready(kubectl, ns, "resnet", timeout=60)
    finally:
        operator.restart()


def test_changes_made_behind_the_operators_back_are_undone(kubectl, namespace):
    ns = namespace
    kubectl.apply(manifest("resnet", ns, replicas=2))
    wait_ready(kubectl, ns, "resnet")
    image = kubectl.json("deployment", "resnet-predictor", "-n", ns)["spec"]["template"]["spec"]["containers"][0]["image"]

    kubectl("scale", "deployment/resnet-predictor", "-n", ns, "--replicas=0")
    kubectl("set", "image", "deployment/resnet-predictor", "-n", ns, "triton=someone/else:1")
    restored = wait_for(
        lambda: (d := kubectl.json("deployment", "resnet-predictor", "-n", ns))["spec"]["replicas"] == 2
        and d["spec"]["template"]["spec"]["containers"][0]["image"] == image and d,
        "the operator to restore replicas and image")
    assert restored
    wait_ready(kubectl, ns, "resnet")
    # A surge pod may still be going away once Ready is back (maxSurge 1 by default).
    wait_for(lambda: kubectl.json("infsvc", "resnet", "-n", ns)["status"]["readyReplicas"] == 2, "2 ready replicas")


def test_a_model_in_s3_is_fetched_by_an_init_container(kubectl, namespace):
    ns = namespace
    kubectl("create", "secret", "generic", "s3-credentials", "-n", ns,
            "--from-literal=AWS_ACCESS_KEY_ID=id", "--from-literal=AWS_SECRET_ACCESS_KEY=secret")
    kubectl.apply(manifest("bert", ns, storage="s3://models/nlp/bert.tar.gz", extra="""\
        runtime:
          modelConfig: {maxBatchSize: 8}
        """).replace("    storageUri: s3://models/nlp/bert.tar.gz", """    storageUri: s3://models/nlp/bert.tar.gz
    format: onnx
    storage: {secretName: s3-credentials, endpoint: 'http://minio.storage:9000'}"""))
    wait_ready(kubectl, ns, "bert")
    pod_spec = kubectl.json("deployment", "bert-predictor", "-n", ns)["spec"]["template"]["spec"]
    (init,) = pod_spec["initContainers"]
    assert init["name"] == "storage-initializer" and init["envFrom"] == [{"secretRef": {"name": "s3-credentials"}}]
    assert "--uri=s3://models/nlp/bert.tar.gz" in init["args"]
    assert any(a.startswith("--config-overrides=max_batch_size: 8") for a in init["args"])

    # The kubelet reports the fetch failed (kwok plays the kubelet here, so we speak for it).
    pod = pods_of(kubectl, ns, "bert")[0]["metadata"]["name"]
    failed = {"status": {
        "conditions": [{"type": "Ready", "status": "False", "reason": "ContainersNotReady"}],
        "initContainerStatuses": [{
            "name": "storage-initializer", "image": "inference-operator:0.1.0", "imageID": "", "ready": False,
            "restartCount": 3, "state": {"waiting": {"reason": "CrashLoopBackOff"}},
            "lastState": {"terminated": {"exitCode": 1, "reason": "Error",
                                         "message": "NoSuchBucket: bucket models does not exist"}}}]}}
    kubectl("patch", "pod", pod, "-n", ns, "--subresource=status", "--type=strategic", "-p", json.dumps(failed))
    isvc = wait_condition(kubectl, ns, "bert", "Degraded", "NoSuchBucket")
    assert "bucket models does not exist" in condition(isvc, "Degraded")["message"]
    events = kubectl("get", "events", "-n", ns, "--field-selector", "involvedObject.kind=InferenceService").stdout
    assert "NoSuchBucket" in events


def test_a_claim_with_model_settings_is_linked_by_the_init_container(kubectl, namespace):
    ns = namespace
    kubectl.apply(manifest("resnet", ns, extra="""\
        runtime:
          modelConfig: {maxBatchSize: 8, instanceCount: 2}
        """))
    wait_ready(kubectl, ns, "resnet")
    pod_spec = kubectl.json("deployment", "resnet-predictor", "-n", ns)["spec"]["template"]["spec"]
    (init,) = pod_spec["initContainers"]
    assert "--uri=file:///mnt/source" in init["args"]
    volumes = {v["name"]: v for v in pod_spec["volumes"]}
    assert volumes["model-source"]["persistentVolumeClaim"]["claimName"] == "models"
