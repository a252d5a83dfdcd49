"""Shared helpers of the unit tests and bench/ (no fixtures: those stay in conftest.py): sample
cases, a minimal InferenceService body, an RFC 7386 merge, FakeKube (a Kube in memory), and a .tar.gz
built in memory."""

from __future__ import annotations

import copy
import io
import itertools
import pathlib
import tarfile
import uuid
from typing import Any, Optional

import yaml

from inference_operator import api, naming
from inference_operator.config import OperatorConfig
from inference_operator.controller.reconcile import reconcile
from inference_operator.kinds import DEPLOYMENT, PDB, SERVICE, Ref
from inference_operator.kube import ApiError
from inference_operator.observed import Observed
from inference_operator.problems import Event

HERE = pathlib.Path(__file__).parent
CASES = HERE / "cases"
CONFIG = OperatorConfig(default_image="tritonserver:test", cluster_domain="cluster.local")


def load_case(name: str) -> dict[str, Any]:
    return yaml.safe_load((CASES / f"{name}.yaml").read_text())


def isvc_body(**spec: Any) -> dict[str, Any]:
    """A minimal valid InferenceService body, with spec keys overridden."""
    body = {
        "apiVersion": api.API_VERSION,
        "kind": api.KIND,
        "metadata": {"name": "demo", "namespace": "ns", "uid": "uid-demo", "generation": 1},
        "spec": {"model": {"name": "m", "storageUri": "pvc://models/repo"}},
    }
    body["spec"].update(spec)
    return body


def merge(target: dict[str, Any], patch: dict[str, Any]) -> dict[str, Any]:
    """RFC 7386, as the API server applies a merge patch: objects merge recursively, null removes."""
    result = copy.deepcopy(target)
    for field, value in patch.items():
        if value is None:
            result.pop(field, None)
        elif isinstance(value, dict) and isinstance(result.get(field), dict):
            result[field] = merge(result[field], value)
        else:
            result[field] = copy.deepcopy(value)
    return result


class FakeKube:
    """Kube in memory: applies store the object, and each write is counted by verb."""

    def __init__(self, pvcs: tuple[str, ...] = ("models",)) -> None:
        self.objects: dict[Ref, dict[str, Any]] = {}
        self.pvcs = set(pvcs)
        self.pods: list[dict[str, Any]] = []
        self.isvcs: dict[tuple[str, str], dict[str, Any]] = {}
        self.writes: list[tuple[str, str]] = []
        self.events: list[Event] = []
        self.reject: dict[str, ApiError] = {}
        self.status_patches: list[dict[str, Any]] = []
        self.statuses: dict[tuple[str, str], dict[str, Any]] = {}
        self._rv = itertools.count(1)
        self.reads: list[str] = []
        self.apply_attempts = 0
        self.stale: bool = False  # patch_status answers 409, as for a stale resourceVersion
        self.crds: frozenset[str] = frozenset()  # CRDs installed (optional child kinds)

    # reads
    def get(self, ref: Ref) -> Optional[dict[str, Any]]:
        self.reads.append(str(ref))
        obj = self.objects.get(ref)
        return copy.deepcopy(obj) if obj else None

    def observe(self, body: dict[str, Any], terminating: bool = False) -> Observed:
        """What the operator's cache would hold: only children carrying this InferenceService's label."""
        name = body["metadata"]["name"]
        mine = {ref: obj for ref, obj in self.objects.items()
                if ((obj.get("metadata") or {}).get("labels") or {}).get(naming.ISVC_LABEL) == name}
        children = {(ref.kind.kind, ref.name): copy.deepcopy(obj) for ref, obj in mine.items()
                    if ref.kind.kind != "ReplicaSet"}
        sets = tuple(copy.deepcopy(obj) for ref, obj in sorted(mine.items(), key=lambda i: i[0].name)
                     if ref.kind.kind == "ReplicaSet")
        return Observed(isvc=copy.deepcopy(body), children=children, pods=tuple(copy.deepcopy(self.pods)),
                        claims=frozenset(self.pvcs), namespace_terminating=terminating, replicasets=sets,
                        crds=self.crds)

    # writes
    def apply(self, obj: dict[str, Any]) -> dict[str, Any]:
        from inference_operator.kinds import ref_of

        self.apply_attempts += 1
        if obj["kind"] in self.reject:
            raise self.reject[obj["kind"]]
        obj = copy.deepcopy(obj)
        ref = ref_of(obj)
        self.writes.append(("apply", str(ref)))
        previous = self.objects.get(ref)
        stored = copy.deepcopy(obj)
        meta = stored["metadata"]
        meta["uid"] = previous["metadata"]["uid"] if previous else str(uuid.uuid4())
        meta["resourceVersion"] = str(next(self._rv))
        gen = previous["metadata"].get("generation", 0) if previous else 0
        meta["generation"] = gen + (1 if previous is None or previous.get("spec") != obj.get("spec") else 0)
        if previous and "status" in previous:
            stored["status"] = previous["status"]
        self.objects[ref] = stored
        return copy.deepcopy(stored)

    def create(self, obj: dict[str, Any]) -> dict[str, Any]:
        """Create-only, as RestKube.create: a taken name answers 409 and is left as it was."""
        from inference_operator.kinds import ref_of

        if ref_of(obj) in self.objects:
            self.apply_attempts += 1
            raise ApiError(409, "Conflict", "the object has been modified", "apply", obj["kind"].lower() + "s")
        return self.apply(obj)

    def delete(self, ref: Ref, uid: str, propagation: str = "Background") -> None:
        self.writes.append(("delete", str(ref)) if propagation == "Background" else ("delete", f"{ref} {propagation}"))
        if ref in self.objects and self.objects[ref]["metadata"]["uid"] == uid:
            del self.objects[ref]

    def patch(self, ref: Ref, body: dict[str, Any]) -> dict[str, Any]:
        """A merge patch of an orphaned ReplicaSet: spec.replicas or metadata.ownerReferences."""
        self.writes.append(("patch", str(ref)))
        obj = self.objects[ref]
        if "replicas" in body.get("spec", {}):
            obj["spec"]["replicas"] = body["spec"]["replicas"]
            obj.setdefault("status", {})["availableReplicas"] = min(
                obj.get("status", {}).get("availableReplicas", 0), body["spec"]["replicas"])
        if "ownerReferences" in body.get("metadata", {}):
            obj["metadata"]["ownerReferences"] = body["metadata"]["ownerReferences"]
        return copy.deepcopy(obj)

    def patch_status(self, namespace: str, name: str, patch: dict[str, Any], resource_version: str) -> dict:
        """A JSON merge patch of status, applied as the API server does: null removes a key."""
        key = (namespace, name)
        if self.stale:
            raise ApiError(409, "Conflict", "the object has been modified", "patch", "inferenceservices/status")
        self.writes.append(("status", f"{namespace}/{name}"))
        self.status_patches.append(copy.deepcopy(patch))
        merged = merge(dict(self.statuses.get(key) or (self.isvcs.get(key) or {}).get("status") or {}), patch)
        self.statuses[key] = merged
        self.last_status = copy.deepcopy(merged)
        if key in self.isvcs:
            # What the API server answers: the whole object, status merged, a new resourceVersion.
            self.isvcs[key]["status"] = copy.deepcopy(merged)
            self.isvcs[key]["metadata"]["resourceVersion"] = str(next(self._rv))
            return copy.deepcopy(self.isvcs[key])
        return {"kind": api.KIND, "metadata": {"namespace": namespace, "name": name,
                                               "resourceVersion": str(next(self._rv))},
                "status": copy.deepcopy(merged)}

    def event(self, isvc: api.InferenceService, event: Event) -> None:
        self.events.append(event)


# ---- passes over FakeKube, as the reconcile tests drive them ---------------------------------------

DEP = Ref(DEPLOYMENT, "ns", "demo-predictor")


SVC = Ref(SERVICE, "ns", "demo")


PDB_REF = Ref(PDB, "ns", "demo-predictor")


def clock():
    return "2026-11-23T10:00:00Z"


def run(kube, body):
    """One pass; the body's status is updated as the API server would after our patch."""
    outcome = reconcile(kube.observe(body), kube, CONFIG, now=clock)
    if outcome.status_written:
        body["status"] = copy.deepcopy(kube.last_status)
    return outcome


def finish_rollout(kube, ready=None):
    """What the deployment controller and kubelet would do: every replica up on the new revision."""
    dep = kube.objects[DEP]
    r = dep["spec"]["replicas"]
    ready = r if ready is None else ready
    dep["status"] = {
        "observedGeneration": dep["metadata"]["generation"], "replicas": r, "updatedReplicas": r,
        "readyReplicas": ready, "availableReplicas": ready,
        "conditions": [{"type": "Progressing", "status": "True", "reason": "NewReplicaSetAvailable"}],
    }


def cond(body, ctype):
    return next(c for c in body["status"]["conditions"] if c["type"] == ctype)


# ---- archives ----------------------------------------------------------------------------------


def tar_gz(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as t:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            t.addfile(info, io.BytesIO(data))
    return buf.getvalue()
