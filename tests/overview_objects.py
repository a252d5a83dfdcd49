"""An InferenceService during a canary, and its Deployments and pods, as the API server returns them:
what the overview, plugin and dashboard tests build their views from."""

from __future__ import annotations

NOW = 1_764_000_000.0  # 2025-11-24T16:00:00Z
REV_A, REV_B = "6ea0b804b6", "91c2d0e5aa"
ISVC_LABEL = "serving.inference-operator.io/inferenceservice"
REVISION_LABEL = "serving.inference-operator.io/revision"
TRACK_LABEL = "serving.inference-operator.io/track"


def isvc(canary: dict | None = None, autoscaling: dict | None = None, annotations: dict | None = None,
         autoscaler: dict | None = None) -> dict:
    spec = {"model": {"name": "resnet50", "storageUri": "pvc://models/triton"},
            "resources": {"gpu": {"count": 1}}, "replicas": 4,
            "rollout": {"canary": {"steps": [{"weight": 25}, {"pause": {}}, {"weight": 50}],
                                   "analysis": {"prometheus": {"address": "http://127.0.0.1:9090"},
                                                "checks": [{"name": "errorRate", "max": "1%"},
                                                           {"name": "requestLatency", "maxIncrease": "20%"}]}}}}
    if autoscaling:
        spec["autoscaling"] = autoscaling
        del spec["replicas"]
    status = {"revision": REV_A, "replicas": 4, "readyReplicas": 4, "url": "http://resnet.default.svc:8000",
              "observedGeneration": 2,
              "conditions": [{"type": "Ready", "status": "True", "reason": "CanaryInProgress", "message": "m",
                              "lastTransitionTime": "2025-11-24T15:00:00Z"},
                             {"type": "Progressing", "status": "True", "reason": "CanaryProgressing",
                              "lastTransitionTime": "2025-11-24T15:00:00Z"}]}
    if canary is not None:
        status["canary"] = canary
    if autoscaler is not None:
        status["autoscaler"] = autoscaler
    return {"apiVersion": "serving.inference-operator.io/v1alpha1", "kind": "InferenceService",
            "metadata": {"name": "resnet", "namespace": "default", "generation": 2,
                         "creationTimestamp": "2025-11-24T14:00:00Z", "annotations": annotations or {}},
            "spec": spec, "status": status}


CANARY = {"phase": "Progressing", "revision": REV_B, "stableRevision": REV_A, "stableTrack": "stable",
          "stepIndex": 0, "weight": 25, "effectiveWeight": 25, "checksPassed": 1, "consecutiveFailures": 0,
          "startedAt": "2025-11-24T15:50:00Z", "stepStartedAt": "2025-11-24T15:50:00Z",
          "lastAnalysisAt": "2025-11-24T15:59:30Z",
          "analysis": [{"name": "errorRate", "result": "Pass", "value": 0.002, "bound": "max 1%",
                        "message": "0.2% within max 1%"},
                       {"name": "requestLatency", "result": "Fail", "value": 0.009, "stable": 0.005,
                        "bound": "maxIncrease 20%", "message": "9ms > stable 5ms + 20%"}]}


def deployment(track: str, revision: str, replicas: int, ready: int) -> dict:
    name = "resnet-predictor" + ("-canary" if track == "canary" else "")
    # As the operator makes them: the track in the selector and the template, not in the labels.
    return {"metadata": {"name": name, "labels": {ISVC_LABEL: "resnet"}},
            "spec": {"replicas": replicas, "selector": {"matchLabels": {ISVC_LABEL: "resnet", TRACK_LABEL: track}},
                     "template": {"metadata": {"labels": {REVISION_LABEL: revision, TRACK_LABEL: track}}}},
            "status": {"readyReplicas": ready}}


def pod(name: str, track: str, revision: str, ready: bool = True, deleting: bool = False) -> dict:
    meta = {"name": name, "creationTimestamp": "2025-11-24T15:58:00Z",
            "labels": {ISVC_LABEL: "resnet", TRACK_LABEL: track, REVISION_LABEL: revision}}
    if deleting:
        meta["deletionTimestamp"] = "2025-11-24T15:59:59Z"
    return {"metadata": meta, "spec": {"nodeName": "gpu-0"},
            "status": {"phase": "Running", "conditions": [{"type": "Ready", "status": "True" if ready else "False"}],
                       "containerStatuses": [{"restartCount": 0}]}}


def canary_objects():
    deps = [deployment("stable", REV_A, 3, 3), deployment("canary", REV_B, 1, 1)]
    pods = [pod(f"resnet-predictor-{i}", "stable", REV_A) for i in range(3)]
    pods.append(pod("resnet-predictor-canary-0", "canary", REV_B))
    return deps, pods
