"""Resource exhaustion (issue #12): what keeps pods from existing reaches the InferenceService's
status and Events with the real reason, and serving follows once it is lifted. (A GPU no node has:
e2e/test_e2e.py; a missing claim: the same file.) A missing image pull secret and a missing storage
Secret: the kubelet's reasons, through a stand-in kubelet that looks the Secrets up."""

from __future__ import annotations

import datetime
import json

import pytest

from .helpers import Kubectl, condition, manifest, wait_condition, wait_for, wait_ready


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


# ---- Secrets a pod needs and cannot have -------------------------------------------------------
# kwok's fake kubelets make every pod ready: they never pull an image or read a Secret. So these
# pods go to a node of their own that kwok does not manage, and this test plays its kubelet: it
# looks the pod's Secrets up in the API server and writes the status the kubelet writes when one
# is missing (the reasons and messages are the kubelet's), or a running, ready pod once all exist.

STANDIN_NODE = "standin-kubelet-0"
STANDIN_LABEL = "e2e.inference-operator.io/kubelet"


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


class SecretAwareKubelet:
    def __init__(self, kubectl: Kubectl) -> None:
        self.kubectl = kubectl
        self.written: list[tuple[str, str]] = []  # (pod, reason) of each status written

    def register(self) -> None:
        self.kubectl.apply(f"""
apiVersion: v1
kind: Node
metadata:
  name: {STANDIN_NODE}
  labels: {{kubernetes.io/hostname: {STANDIN_NODE}, kubernetes.io/os: linux, {STANDIN_LABEL}: stand-in}}
spec:
  # Only the pods of these tests, which tolerate it, land here: no other test's pod waits on a
  # kubelet that is not there.
  taints: [{{key: {STANDIN_LABEL}, value: stand-in, effect: NoSchedule}}]
""")
        self.heartbeat()

    def heartbeat(self) -> None:
        resources = {"cpu": "16", "memory": "64Gi", "pods": "110"}
        status = {"capacity": resources, "allocatable": resources, "conditions": [
            {"type": "Ready", "status": "True", "reason": "KubeletReady", "message": "stand-in kubelet",
             "lastHeartbeatTime": _now(), "lastTransitionTime": _now()}]}
        self.kubectl("patch", "node", STANDIN_NODE, "--subresource=status", "--type=merge",
                     "-p", json.dumps({"status": status}))
        self.kubectl.apply(f"""
apiVersion: coordination.k8s.io/v1
kind: Lease
metadata: {{name: {STANDIN_NODE}, namespace: kube-node-lease}}
spec: {{holderIdentity: {STANDIN_NODE}, leaseDurationSeconds: 40, renewTime: "{_now()[:-1]}.000000Z"}}
""")

    def unregister(self) -> None:
        self.kubectl("delete", "node", STANDIN_NODE, "--wait=false", check=False)
        self.kubectl("delete", "lease", STANDIN_NODE, "-n", "kube-node-lease", check=False)

    def _missing(self, ns: str, names: list[str]) -> list[str]:
        return [n for n in names if self.kubectl.maybe("secret", n, "-n", ns) is None]

    def sync(self, ns: str) -> None:
        """One pass over the node's pods in ns, as the kubelet's pod workers would."""
        self.heartbeat()
        for pod in self.kubectl.json("pods", "-n", ns, "--field-selector", f"spec.nodeName={STANDIN_NODE}")["items"]:
            if pod["metadata"].get("deletionTimestamp"):
                continue
            status, reason = self._status(ns, pod)
            if status != {k: (pod.get("status") or {}).get(k) for k in status}:
                self.kubectl("patch", "pod", pod["metadata"]["name"], "-n", ns, "--subresource=status",
                             "--type=merge", "-p", json.dumps({"status": status}))
                self.written.append((pod["metadata"]["name"], reason))

    def _status(self, ns: str, pod: dict) -> tuple[dict, str]:
        spec = pod["spec"]
        inits, mains = spec.get("initContainers") or [], spec["containers"]

        def referenced(container: dict) -> list[str]:
            names = [e["secretRef"]["name"] for e in container.get("envFrom") or [] if e.get("secretRef")]
            names += [e["valueFrom"]["secretKeyRef"]["name"] for e in container.get("env") or []
                      if (e.get("valueFrom") or {}).get("secretKeyRef")]
            return names

        def waiting(c: dict, reason: str, message: str = "") -> dict:
            state = {"waiting": {"reason": reason, **({"message": message} if message else {})}}
            return {"name": c["name"], "image": c["image"], "imageID": "", "ready": False, "restartCount": 0,
                    "started": False, "state": state}

        def done(c: dict) -> dict:
            return {"name": c["name"], "image": c["image"], "imageID": "", "ready": True, "restartCount": 0,
                    "started": False, "state": {"terminated": {"exitCode": 0, "reason": "Completed"}}}

        def running(c: dict) -> dict:
            return {"name": c["name"], "image": c["image"], "imageID": "", "ready": True, "restartCount": 0,
                    "started": True, "state": {"running": {"startedAt": _now()}}}

        def pending(init_statuses: list, main_statuses: list, initialized: bool, reason: str) -> tuple[dict, str]:
            conditions = [{"type": "PodScheduled", "status": "True"},
                          {"type": "Initialized", "status": "True" if initialized else "False"},
                          {"type": "ContainersReady", "status": "False", "reason": "ContainersNotReady"},
                          {"type": "Ready", "status": "False", "reason": "ContainersNotReady"}]
            return {"phase": "Pending", "conditions": conditions, "initContainerStatuses": init_statuses,
                    "containerStatuses": main_statuses}, reason

        # The kubelet runs the init containers first, one at a time; a Secret a container needs and
        # cannot find stops it at CreateContainerConfigError with this message.
        for i, c in enumerate(inits):
            gone = self._missing(ns, referenced(c))
            if gone:
                return pending([done(x) for x in inits[:i]] + [waiting(c, "CreateContainerConfigError",
                                                                       f'secret "{gone[0]}" not found')]
                               + [waiting(x, "PodInitializing") for x in inits[i + 1:]],
                               [waiting(x, "PodInitializing") for x in mains], False, "CreateContainerConfigError")
        # A missing pull secret: the kubelet pulls without it, and a private registry refuses.
        pull = [s["name"] for s in spec.get("imagePullSecrets") or []]
        if pull and len(self._missing(ns, pull)) == len(pull):
            image = mains[0]["image"]
            return pending([done(x) for x in inits], [waiting(c, "ImagePullBackOff", f'Back-off pulling image '
                                                                f'"{image}": ErrImagePull: pull access denied for '
                                                                f'{image.rsplit(":", 1)[0]}, repository does not exist '
                                                                f'or may require authorization') for c in mains],
                           True, "ImagePullBackOff")
        conditions = [{"type": t, "status": "True"} for t in ("PodScheduled", "Initialized", "ContainersReady", "Ready")]
        return {"phase": "Running", "conditions": conditions, "initContainerStatuses": [done(x) for x in inits],
                "containerStatuses": [running(c) for c in mains]}, "Ready"


@pytest.fixture
def secret_aware_kubelet(kubectl: Kubectl):
    kubelet = SecretAwareKubelet(kubectl)
    try:
        kubelet.register()
        wait_for(lambda: not [t for t in kubectl.json("node", STANDIN_NODE)["spec"].get("taints") or []
                              if t["key"] != STANDIN_LABEL], "the stand-in node schedulable")
        yield kubelet
    finally:
        kubelet.unregister()


PLACED = (f"scheduling:\n  nodeSelector: {{{STANDIN_LABEL}: stand-in}}\n"
          f"  tolerations: [{{key: {STANDIN_LABEL}, operator: Equal, value: stand-in, effect: NoSchedule}}]\n")

def _until(kubelet: SecretAwareKubelet, ns: str, predicate, what: str):
    def step():
        kubelet.sync(ns)
        return predicate()
    return wait_for(step, what, timeout=120, interval=1)


@pytest.mark.parametrize("case", ["pull-secret", "storage-secret"])
def test_a_missing_secret_is_reported_with_the_kubelets_reason_then_served_once_made(
        kubectl: Kubectl, namespace: str, secret_aware_kubelet: SecretAwareKubelet, case: str):
    ns, kubelet = namespace, secret_aware_kubelet
    if case == "pull-secret":
        extra = PLACED + ('runtime: {image: "registry.example.com/private/tritonserver:24.08-py3"}\n'
                          "imagePullSecrets: [{name: regcred}]\n")
        kubectl.apply(manifest("resnet", ns, gpu="count: 0", extra=extra))
        reason, words, secret = "ImagePullBackOff", "may require authorization", "regcred"
    else:
        uri = "    storageUri: s3://models/resnet50\n"
        kubectl.apply(manifest("resnet", ns, gpu="count: 0", storage="s3://models/resnet50", extra=PLACED).replace(
            uri, uri + "    storage: {secretName: s3-creds, endpoint: 'http://127.0.0.1:9000'}\n"))
        reason, words, secret = "CreateContainerConfigError", 'secret "s3-creds" not found', "s3-creds"

    def degraded():
        isvc = kubectl.json("infsvc", "resnet", "-n", ns)
        return isvc if condition(isvc, "Degraded").get("reason") == reason else None

    isvc = _until(kubelet, ns, degraded, f"Degraded with reason {reason}")
    message = condition(isvc, "Degraded")["message"]
    assert words in message, message
    assert condition(isvc, "Ready")["status"] == "False" and condition(isvc, "Ready")["reason"] == reason
    wait_for(lambda: reason in kubectl("get", "events", "-n", ns, "--field-selector",
                                       "involvedObject.kind=InferenceService").stdout, f"a {reason} Event")

    # Made: the stand-in kubelet finds it, the pod starts, the InferenceService serves.
    kind = ("docker-registry", secret, "--docker-server=registry.example.com", "--docker-username=u",
            "--docker-password=p") if case == "pull-secret" else ("generic", secret, "--from-literal=AWS_ACCESS_KEY_ID=a",
                                                                  "--from-literal=AWS_SECRET_ACCESS_KEY=b")
    kubectl("create", "secret", *kind, "-n", ns)
    _until(kubelet, ns, lambda: condition(kubectl.json("infsvc", "resnet", "-n", ns), "Ready").get("status") == "True",
           "Ready once the Secret exists")
    assert (any(r == reason for _, r in kubelet.written) and kubelet.written[-1][1] == "Ready"), kubelet.written
