"""One table of InferenceService specs, valid and not: checked offline against `render` (unit tests)
and against the API server's server-side dry run (e2e/test_parity.py), so both refuse the same.

Each case: an id, a change to a minimal valid manifest, and what the API server says (None: accepts).
"""

from __future__ import annotations

import copy
from typing import Any, Callable, Optional

BASE: dict[str, Any] = {
    "apiVersion": "serving.inference-operator.io/v1alpha1",
    "kind": "InferenceService",
    "metadata": {"name": "parity"},
    "spec": {"model": {"name": "resnet50", "storageUri": "pvc://models/triton"},
             "resources": {"gpu": {"count": 1}, "requests": {"cpu": "500m", "memory": "1Gi"}}},
}


def spec(**changes: Any) -> Callable[[dict], None]:
    def change(body: dict) -> None:
        body["spec"].update(copy.deepcopy(changes))
    return change


def model(**changes: Any) -> Callable[[dict], None]:
    def change(body: dict) -> None:
        body["spec"]["model"].update(changes)
    return change


def canary(**fields: Any) -> Callable[[dict], None]:
    def change(body: dict) -> None:
        body["spec"]["rollout"] = {"canary": copy.deepcopy(fields)}
    return change


def autoscaling(**fields: Any) -> Callable[[dict], None]:
    def change(body: dict) -> None:
        body["spec"]["autoscaling"] = copy.deepcopy(fields)
    return change


def name(value: str) -> Callable[[dict], None]:
    def change(body: dict) -> None:
        body["metadata"]["name"] = value
    return change


CASES: list[tuple[str, Callable[[dict], None], Optional[str]]] = [
    ("minimal", lambda b: None, None),
    # Kubernetes' own rules for what the pod carries (found by the fuzzer: e2e/test_fuzz.py).
    ("service-account", spec(serviceAccountName="Reader"), "RFC 1123 subdomain"),
    ("service-account-ok", spec(serviceAccountName="model-reader.v2"), None),
    # A reference is a name in the InferenceService's namespace, never namespace/name (issue #12).
    ("storage-secret-other-namespace", model(storageUri="s3://bucket-1/m", storage={"secretName": "kube-system/creds"}),
     "storage.secretName must be a lowercase RFC 1123 subdomain"),
    ("storage-secret-ok", model(storageUri="s3://bucket-1/m", storage={"secretName": "s3-creds"}), None),
    ("prometheus-secret-other-namespace", canary(steps=[{"weight": 10}], analysis={
        "prometheus": {"secretName": "monitoring/prom-token"}}), "analysis.prometheus.secretName must be"),
    ("keda-auth-other-namespace", autoscaling(engine="keda", maxReplicas=3, keda={
        "authenticationRef": "keda/cluster-auth"}), "autoscaling.keda.authenticationRef must be"),
    ("pull-secret-other-namespace", spec(imagePullSecrets=[{"name": "registry/creds"}]),
     "imagePullSecrets[].name must be a lowercase RFC 1123 subdomain"),
    ("pull-secret-twice", spec(imagePullSecrets=[{"name": "regcred"}, {"name": "regcred"}]), "Duplicate value"),
    # A null item is a wrong type, and keeps the CEL rules from running (found by e2e/test_fuzz.py).
    ("null-item", spec(runtime={"args": [None]}, serviceAccountName="Not A Name"), "must be of type string"),
    ("pull-secret-thrice", spec(imagePullSecrets=[{"name": "a"}, {"name": "a"}, {"name": "a"}]), "Duplicate value"),
    ("topology-spread-empty", spec(scheduling={"topologySpreadConstraints": [{"topologyKey": "zone"}]}),
     "Required value"),
    ("topology-spread-ok", spec(scheduling={"topologySpreadConstraints": [
        {"maxSkew": 1, "topologyKey": "kubernetes.io/hostname", "whenUnsatisfiable": "ScheduleAnyway"}]}), None),
    # No duplicate reported beside an item that is not an object (found by e2e/test_fuzz.py).
    ("pull-secret-not-object", spec(imagePullSecrets=[{"name": "a"}, 7, {"name": "a"}]), "must be of type object"),
    ("pull-secret-ok", spec(imagePullSecrets=[{"name": "regcred"}, {"name": "mirror.creds"}]), None),
    ("priority-class", spec(scheduling={"priorityClassName": "High Priority"}), "RFC 1123 subdomain"),
    ("env-name", spec(runtime={"env": [{"name": "A=B", "value": "x"}]}), "printable ASCII characters other than '='"),
    ("env-value-from-empty", spec(runtime={"env": [{"name": "A", "valueFrom": {}}]}), "exactly one of fieldRef"),
    ("env-value-from-two", spec(runtime={"env": [{"name": "A", "valueFrom": {
        "fieldRef": {"fieldPath": "metadata.name"}, "secretKeyRef": {"name": "s", "key": "k"}}}]}), "exactly one of"),
    ("env-value-and-from", spec(runtime={"env": [{"name": "A", "value": "x", "valueFrom": {
        "fieldRef": {"fieldPath": "metadata.name"}}}]}), "are exclusive"),
    ("env-from-field", spec(runtime={"env": [{"name": "POD", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}]}),
     None),
    ("toleration-no-key", spec(scheduling={"tolerations": [{"operator": "Equal", "value": "x"}]}), "must be Exists"),
    ("toleration-all", spec(scheduling={"tolerations": [{"operator": "Exists"}]}), None),
    ("toleration-exists-value", spec(scheduling={"tolerations": [{"key": "k", "operator": "Exists", "value": "v"}]}),
     "must be empty when operator is Exists"),
    ("toleration-seconds", spec(scheduling={"tolerations": [{"key": "k", "effect": "NoSchedule",
                                                             "tolerationSeconds": 5}]}), "NoExecute only"),
    ("toleration-key", spec(scheduling={"tolerations": [{"key": "a b", "operator": "Exists"}]}), "must be a label key"),
    ("node-selector", spec(scheduling={"nodeSelector": {"zone": "eu west"}}), "must be label values"),
    ("node-selector-ok", spec(scheduling={"nodeSelector": {"nvidia.com/gpu.product": "NVIDIA-A100-SXM4-80GB"}}), None),
    ("s3", model(storageUri="s3://bucket-1/models", storage={"endpoint": "http://minio:9000", "region": "r"}), None),
    ("scheme", model(storageUri="ftp://host/model"), "must start with pvc://"),
    ("claim-name", model(storageUri="pvc://Models/x"), "pvc://<claim-name>"),
    ("dotdot", model(storageUri="pvc://models/../etc"), "'..'"),
    ("model-name", model(name="_hidden"), "must start with a letter or digit"),
    ("managed-flag", spec(runtime={"args": ["--model-repos=/x"]}), "flags the operator manages"),
    ("extra-flags", spec(runtime={"args": ["--log-verbose=1"]}), None),
    ("product-without-gpu", spec(resources={"gpu": {"count": 0, "product": "NVIDIA-A100"}}), "needs gpu.count > 0"),
    ("resource-name", spec(resources={"gpu": {"resourceName": "amd.com/gpu"}}), "must be nvidia.com/gpu"),
    ("mig", spec(resources={"gpu": {"resourceName": "nvidia.com/mig-1g.10gb"}}), None),
    ("shm-milli", spec(resources={"sharedMemorySize": "100m"}), "positive byte quantity"),
    ("cpu-bytes", spec(resources={"requests": {"cpu": "1Gi"}}), "positive CPU quantity"),
    ("cpu-limit-below-request", spec(resources={"requests": {"cpu": "2"}, "limits": {"cpu": "1500m"}}),
     "limits.cpu must be >= resources.requests.cpu"),
    ("memory-limit-below-request", spec(resources={"requests": {"memory": "2Gi"}, "limits": {"memory": "2000Mi"}}),
     "limits.memory must be >= resources.requests.memory"),
    ("memory-limit-equal", spec(resources={"requests": {"memory": "1024Mi"}, "limits": {"memory": "1Gi"}}), None),
    ("checksum", model(checksum="md5:abc", storageUri="https://h/m.tgz"), "sha256: followed by 64 hex digits"),
    ("checksum-on-claim", model(checksum="sha256:" + "a" * 64), "not to pvc://"),
    ("endpoint-not-s3", model(storageUri="gs://b/m", storage={"endpoint": "http://x"}), "s3:// only"),
    ("rollout-zero", spec(rollout={"maxSurge": 0, "maxUnavailable": 0}), "cannot both be 0"),
    ("rollout-in-place", spec(rollout={"maxSurge": 0, "maxUnavailable": 1}), None),
    ("batching", spec(runtime={"modelConfig": {"dynamicBatching": {"preferredBatchSizes": [4]}}}),
     "needs maxBatchSize > 0"),
    ("batch-sizes", spec(runtime={"modelConfig": {"maxBatchSize": 8,
                                                  "dynamicBatching": {"preferredBatchSizes": [4, 16]}}}),
     "<= maxBatchSize"),
    ("product-contradiction", spec(resources={"gpu": {"product": "A"}},
                                   scheduling={"nodeSelector": {"nvidia.com/gpu.product": "B"}}), "contradicts"),
    ("name-too-long", name("x" * 54), "at most 53"),
    ("name-digit", name("9lives"), "DNS-1035"),
    ("replicas-max", spec(replicas=2000), "less than or equal to 1000"),
    ("replicas-negative", spec(replicas=-1), "greater than or equal to 0"),
    ("replicas-type", spec(replicas="two"), "must be of type integer"),
    ("format-enum", model(format="caffe"), "Unsupported value"),
    ("startup-min", spec(runtime={"startupTimeoutSeconds": 10}), "greater than or equal to 60"),
    ("gpu-count-max", spec(resources={"gpu": {"count": 17}}), "less than or equal to 16"),
    ("too-many-args", spec(runtime={"args": ["--log-verbose=1"] * 65}), "must have at most 64 items"),
    ("unknown-field", spec(replica=2), 'unknown field "spec.replica"'),
    ("missing-model", lambda b: b["spec"].pop("model"), "Required value"),
    ("model-name-long", model(name="m" * 129), "Too long"),
    ("storage-uri-missing", lambda b: b["spec"]["model"].pop("storageUri"), "Required value"),
    ("endpoint", model(storageUri="s3://bucket-1/m", storage={"endpoint": "minio:9000"}), "http:// or https:// URL"),
    ("product-label", spec(resources={"gpu": {"product": "not a label"}}), "valid label value"),
    ("toleration-operator", spec(scheduling={"tolerations": [{"key": "k", "operator": "In"}]}), "Unsupported value"),
    ("env-name-empty", spec(runtime={"env": [{"name": "", "value": "1"}]}), "at least 1 chars long"),
    ("node-selector-ok", spec(scheduling={"nodeSelector": {"zone": "a"}}), None),
    ("args-item-long", spec(runtime={"args": ["--x=" + "a" * 1100]}), "Too long"),
    ("cpu-not-a-quantity", spec(resources={"requests": {"cpu": "abc"}, "limits": {"cpu": "1"}}),
     "evaluating rule"),
    ("replicas-null", spec(replicas=None), None),
    ("replicas-integral-float", spec(replicas=2.0), None),
    ("replicas-float", spec(replicas=2.5), "must be of type integer"),
    ("label-value", lambda b: b["metadata"].update(labels={"team": "not valid!"}), "a valid label must be"),
    ("label-ok", lambda b: b["metadata"].update(labels={"example.com/team": "ml-platform"}), None),
    ("duplicate-env", spec(runtime={"env": [{"name": "A", "value": "1"}, {"name": "A", "value": "2"}]}),
     "Duplicate value"),
    ("canary", canary(steps=[{"weight": 10}, {"pause": {}}, {"weight": 50, "duration": "2m"}],
                      analysis={"interval": "15s", "checks": [
                          {"name": "errorRate", "max": "1%"}, {"name": "queueTime", "max": "50ms", "maxIncrease": "20%"},
                          {"name": "latencyQuantile", "quantile": 0.99, "max": "1.5s"},
                          {"name": "gpuUtil", "query": "avg(nv_gpu_utilization{ {{selector}} })", "max": "0.9"}]}),
     None),
    ("canary-descending", canary(steps=[{"weight": 50}, {"weight": 10}]), "must increase from one step"),
    ("canary-repeated", canary(steps=[{"weight": 10}, {"pause": {}}, {"weight": 10}]), "must increase from one step"),
    ("canary-step-both", canary(steps=[{"weight": 10, "pause": {}}]), "exactly one of weight and pause"),
    ("canary-step-neither", canary(steps=[{"duration": "1m"}]), "exactly one of weight and pause"),
    ("canary-no-steps", canary(steps=[]), "should have at least 1 items"),
    ("canary-weight", canary(steps=[{"weight": 0}]), "greater than or equal to 1"),
    ("canary-duration", canary(steps=[{"weight": 10, "duration": "ten minutes"}]), "must be a duration"),
    ("canary-gateway", canary(steps=[{"weight": 10}], traffic="gatewayAPI"), "needs canary.gatewayAPI.parentRefs"),
    ("canary-gateway-ok", canary(steps=[{"weight": 10}], traffic="gatewayAPI",
                                 gatewayAPI={"parentRefs": [{"name": "gw", "namespace": "infra"}]}), None),
    ("canary-traffic", canary(steps=[{"weight": 10}], traffic="istio"), "Unsupported value"),
    ("check-no-bound", canary(steps=[{"weight": 10}], analysis={"checks": [{"name": "errorRate"}]}),
     "needs max, maxIncrease or both"),
    ("check-error-rate-unit", canary(steps=[{"weight": 10}], analysis={"checks": [{"name": "errorRate", "max": "0.01"}]}),
     "percentage such as 1%"),
    ("check-time-unit", canary(steps=[{"weight": 10}], analysis={"checks": [{"name": "queueTime", "max": "5"}]}),
     "a time such as 50ms"),
    ("check-unknown", canary(steps=[{"weight": 10}], analysis={"checks": [{"name": "latency", "max": "5"}]}),
     "or has a query, not both"),
    ("check-query-selector", canary(steps=[{"weight": 10}], analysis={"checks": [
        {"name": "mine", "query": "sum(up)", "max": "1"}]}), "must contain {{selector}}"),
    ("check-quantile", canary(steps=[{"weight": 10}], analysis={"checks": [{"name": "latencyQuantile", "max": "1s"}]}),
     "quantile is set for latencyQuantile"),
    ("check-increase", canary(steps=[{"weight": 10}], analysis={"checks": [{"name": "queueTime", "maxIncrease": "20"}]}),
     "maxIncrease is a percentage"),
    ("check-duplicate", canary(steps=[{"weight": 10}], analysis={"checks": [
        {"name": "errorRate", "max": "1%"}, {"name": "errorRate", "max": "2%"}]}), "Duplicate value"),
    ("prometheus-address", canary(steps=[{"weight": 10}], analysis={"prometheus": {"address": "prom:9090"}}),
     "http:// or https:// URL"),
    ("autoscaling-default", autoscaling(maxReplicas=4), None),
    ("autoscaling-every-signal", autoscaling(minReplicas=2, maxReplicas=8, targets=[
        {"name": "queueTime", "value": "50ms"}, {"name": "queueToComputeRatio", "value": "1.5"},
        {"name": "pendingRequests", "value": "4"}, {"name": "requestLatency", "value": "0.5s"},
        {"name": "gpuUtilization", "value": "80%"},
        {"name": "tokens", "query": "sum by (pod) (rate(my_tokens{ {{selector}} }[1m]))", "value": "100"}],
        behavior={"scaleUp": {"stabilizationWindowSeconds": 0}, "scaleDown": {"policies": [
            {"type": "Pods", "value": 1, "periodSeconds": 60}]}}), None),
    ("autoscaling-keda-zero", autoscaling(engine="keda", minReplicas=0, maxReplicas=3, targets=[
        {"name": "queueTime", "value": "50ms"},
        {"name": "gatewayRequests", "query": 'sum(rate(gateway_requests_total{ {{selector}} }[1m]))', "value": "1"}],
        keda={"serverAddress": "http://prometheus.monitoring:9090"}), None),
    ("autoscaling-keda-zero-no-waker", autoscaling(engine="keda", minReplicas=0, maxReplicas=3),
     "needs a target with a query"),
    ("autoscaling-zero-value", autoscaling(maxReplicas=3, targets=[{"name": "queueTime", "value": "0ms"}]),
     "must be above 0"),
    ("autoscaling-zero-number", autoscaling(maxReplicas=3, targets=[{"name": "pendingRequests", "value": "0.0"}]),
     "must be above 0"),
    ("autoscaling-replicas-over-max", lambda b: b["spec"].update(replicas=9, autoscaling={"maxReplicas": 4}),
     "spec.replicas is the autoscaler's"),
    ("autoscaling-replicas-default-under-min", autoscaling(minReplicas=2, maxReplicas=4), None),
    ("autoscaling-replicas-in-range", lambda b: b["spec"].update(replicas=3, autoscaling={"maxReplicas": 4}), None),
    ("autoscaling-min-over-max", autoscaling(minReplicas=5, maxReplicas=2), "must not exceed autoscaling.maxReplicas"),
    ("autoscaling-max-zero", autoscaling(maxReplicas=0), "greater than or equal to 1"),
    ("autoscaling-no-max", autoscaling(minReplicas=1), "Required value"),
    ("autoscaling-hpa-zero", autoscaling(minReplicas=0, maxReplicas=3), "needs engine: keda"),
    ("autoscaling-no-value", autoscaling(maxReplicas=3, targets=[{"name": "queueTime"}]), "needs a value"),
    ("autoscaling-time-unit", autoscaling(maxReplicas=3, targets=[{"name": "queueTime", "value": "5"}]),
     "a time such as 50ms"),
    ("autoscaling-gpu-unit", autoscaling(maxReplicas=3, targets=[{"name": "gpuUtilization", "value": "0.8"}]),
     "a percentage such as 80%"),
    ("autoscaling-number", autoscaling(maxReplicas=3, targets=[{"name": "pendingRequests", "value": "4 requests"}]),
     "a number such as 0.5 or 4"),
    ("autoscaling-unknown", autoscaling(maxReplicas=3, targets=[{"name": "latency", "value": "1"}]),
     "or has a query, not both"),
    ("autoscaling-query-without-selector", autoscaling(maxReplicas=3, targets=[
        {"name": "mine", "query": "sum(up)", "value": "1"}]), None),
    ("autoscaling-duplicate", autoscaling(maxReplicas=3, targets=[
        {"name": "queueTime", "value": "50ms"}, {"name": "queueTime", "value": "80ms"}]), "Duplicate value"),
    ("autoscaling-engine", autoscaling(engine="vpa", maxReplicas=3), "Unsupported value"),
    ("autoscaling-address", autoscaling(engine="keda", maxReplicas=3, keda={"serverAddress": "prom:9090"}),
     "http:// or https:// URL"),
    ("autoscaling-policy", autoscaling(maxReplicas=3, behavior={"scaleUp": {"policies": [{"type": "Pods", "value": 0,
                                                                                          "periodSeconds": 60}]}}),
     "greater than or equal to 1"),
]


def case_body(change: Callable[[dict], None]) -> dict:
    body = copy.deepcopy(BASE)
    change(body)
    return body
