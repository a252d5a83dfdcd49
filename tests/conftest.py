"""Shared helpers: sample InferenceServices and an in-memory Kube that records every write."""

from __future__ import annotations

import copy
import itertools
import pathlib
import uuid
from typing import Any, Optional

import pytest
import yaml

from inference_operator import api
from inference_operator.children import Ref
from inference_operator.config import OperatorConfig
from inference_operator.kube import ApiError
from inference_operator.status import Event

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

    # reads
    def get(self, ref: Ref) -> Optional[dict[str, Any]]:
        obj = self.objects.get(ref)
        return copy.deepcopy(obj) if obj else None

    def list_pods(self, namespace: str, selector: str) -> list[dict[str, Any]]:
        return copy.deepcopy(self.pods)

    def get_pvc(self, namespace: str, name: str) -> Optional[dict[str, Any]]:
        return {"metadata": {"name": name}} if name in self.pvcs else None

    def get_isvc(self, namespace: str, name: str) -> Optional[dict[str, Any]]:
        return copy.deepcopy(self.isvcs.get((namespace, name)))

    # writes
    def apply(self, obj: dict[str, Any]) -> dict[str, Any]:
        from inference_operator.children import ref_of

        if obj["kind"] in self.reject:
            raise self.reject[obj["kind"]]
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

    def delete(self, ref: Ref, uid: str) -> None:
        self.writes.append(("delete", str(ref)))
        if ref in self.objects and self.objects[ref]["metadata"]["uid"] == uid:
            del self.objects[ref]

    def patch_status(self, namespace: str, name: str, patch: dict[str, Any]) -> None:
        """A JSON merge patch of status, applied as the API server does: null removes a key."""
        key = (namespace, name)
        self.writes.append(("status", f"{namespace}/{name}"))
        self.status_patches.append(copy.deepcopy(patch))
        merged = dict(self.statuses.get(key) or (self.isvcs.get(key) or {}).get("status") or {})
        for field, value in patch.items():
            if value is None:
                merged.pop(field, None)
            else:
                merged[field] = copy.deepcopy(value)
        self.statuses[key] = merged
        self.last_status = copy.deepcopy(merged)
        if key in self.isvcs:
            self.isvcs[key]["status"] = copy.deepcopy(merged)

    def event(self, isvc: api.InferenceService, event: Event) -> None:
        self.events.append(event)


@pytest.fixture
def fake_kube() -> FakeKube:
    return FakeKube()
