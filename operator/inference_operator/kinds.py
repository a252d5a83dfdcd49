"""The kinds of object the operator reads and writes, and a reference to one object of a kind."""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping


@dataclasses.dataclass(frozen=True)
class Kind:
    """A kind of child the operator manages, and where the API server keeps it."""

    api_version: str
    kind: str
    plural: str

    @property
    def path_prefix(self) -> str:
        return ("/api/" if "/" not in self.api_version else "/apis/") + self.api_version

    @property
    def group(self) -> str:
        return self.api_version.rpartition("/")[0]

    @property
    def version(self) -> str:
        return self.api_version.rpartition("/")[2]


DEPLOYMENT = Kind("apps/v1", "Deployment", "deployments")
SERVICE = Kind("v1", "Service", "services")
PDB = Kind("policy/v1", "PodDisruptionBudget", "poddisruptionbudgets")
HTTPROUTE = Kind("gateway.networking.k8s.io/v1", "HTTPRoute", "httproutes")
HPA = Kind("autoscaling/v2", "HorizontalPodAutoscaler", "horizontalpodautoscalers")
SCALEDOBJECT = Kind("keda.sh/v1alpha1", "ScaledObject", "scaledobjects")
POD = Kind("v1", "Pod", "pods")  # observed, never written
# Observed; written only to move a Deployment made before tracks (migration.py).
REPLICASET = Kind("apps/v1", "ReplicaSet", "replicasets")
SECRET = Kind("v1", "Secret", "secrets")


@dataclasses.dataclass(frozen=True)
class Ref:
    kind: Kind
    namespace: str
    name: str

    def __str__(self) -> str:
        return f"{self.kind.kind}/{self.name}"


BY_NAME = {k.kind: k for k in (DEPLOYMENT, SERVICE, PDB, HTTPROUTE, HPA, SCALEDOBJECT, POD, REPLICASET, SECRET)}


def ref_of(obj: Mapping[str, Any]) -> Ref:
    meta = obj["metadata"]
    return Ref(BY_NAME[obj["kind"]], meta["namespace"], meta["name"])
