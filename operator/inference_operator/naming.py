"""Names, labels, selectors and the URL of an InferenceService's children, in one place.

Rendering, planning, status and the cache all read these; none of them builds a name of its own.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from typing import Any

from inference_operator import api
from inference_operator.config import OperatorConfig

LABEL_PREFIX = api.GROUP
ISVC_LABEL = f"{LABEL_PREFIX}/inferenceservice"
REVISION_LABEL = f"{LABEL_PREFIX}/revision"
SPEC_HASH_ANNOTATION = f"{LABEL_PREFIX}/spec-hash"
# Which workload a pod belongs to when two revisions run side by side (stable, and a canary later).
# In the Deployment's selector, which is immutable: Deployments made before tracks existed keep
# their selector and carry no track label; their pods count as stable.
TRACK_LABEL = f"{LABEL_PREFIX}/track"
STABLE = "stable"
# The second track, where a canary runs. After a promotion its Deployment runs the stable revision
# (status.canary.stableTrack says which track does) and the next canary runs in the other.
CANARY = "canary"
MANAGED_BY = "inference-operator"
COMPONENT = "predictor"
# The init container that fetches the model; status reads its termination message.
STORAGE_INITIALIZER = "storage-initializer"

PORTS = {"http": 8000, "grpc": 8001, "metrics": 8002}


@dataclasses.dataclass(frozen=True)
class Names:
    instance: str  # the InferenceService's own name
    predictor: str  # the Deployment of the stable track
    predictor_canary: str  # the Deployment of the canary track
    service: str
    pdb: str
    # traffic: gatewayAPI: a Service per role (selecting the track that plays it) and the route.
    stable_service: str
    canary_service: str
    route: str
    autoscaler: str  # the HPA or ScaledObject (spec.autoscaling)


def names(name: str) -> Names:
    return Names(instance=name, predictor=f"{name}-predictor", predictor_canary=f"{name}-predictor-canary",
                 service=name, pdb=f"{name}-predictor", stable_service=f"{name}-stable",
                 canary_service=f"{name}-canary", route=name, autoscaler=name)


def predictor(name: str, track: str | None) -> str:
    """The Deployment of a track (None: one made before tracks, named as the stable one)."""
    n = names(name)
    return n.predictor_canary if track == CANARY else n.predictor


def selector(name: str) -> dict[str, str]:
    return {ISVC_LABEL: name, "app.kubernetes.io/component": COMPONENT}


def workload_selector(name: str, track: str | None) -> dict[str, str]:
    """A Deployment's selector: the InferenceService's pods of one track."""
    result = selector(name)
    if track is not None:
        result[TRACK_LABEL] = track
    return result


def track_of(deployment: dict[str, Any]) -> str | None:
    """The track a live Deployment selects; None for one made before tracks existed."""
    match = ((deployment.get("spec") or {}).get("selector") or {}).get("matchLabels") or {}
    return match.get(TRACK_LABEL)


def selector_string(name: str) -> str:
    return ",".join(f"{k}={v}" for k, v in sorted(selector(name).items()))


def labels(name: str) -> dict[str, str]:
    return {
        "app.kubernetes.io/name": "triton-inference-server",
        "app.kubernetes.io/instance": name,
        "app.kubernetes.io/component": COMPONENT,
        "app.kubernetes.io/managed-by": MANAGED_BY,
        ISVC_LABEL: name,
    }


def url(isvc: api.InferenceService, config: OperatorConfig) -> str:
    return (
        f"http://{names(isvc.name).service}.{isvc.namespace}.svc.{config.cluster_domain}"
        f":{PORTS['http']}"
    )


def revision_of(deployment: dict[str, Any]) -> str | None:
    return (
        deployment.get("spec", {})
        .get("template", {})
        .get("metadata", {})
        .get("labels", {})
        .get(REVISION_LABEL)
    )


def content_hash(obj: Any, length: int = 10) -> str:
    canonical = json.dumps(obj, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:length]
