"""What one pass knows of the world: the InferenceService and everything of it the watches carry.

A pass decides from an ``Observed`` alone; it never asks the API server what it was already told.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping, Optional

from inference_operator.kinds import Ref


def condition(obj: Mapping[str, Any], ctype: str) -> Optional[Mapping[str, Any]]:
    """The status condition of type ``ctype`` of an observed object (pod, Deployment, HPA,
    ScaledObject), or None."""
    for c in (obj.get("status") or {}).get("conditions") or []:
        if c.get("type") == ctype:
            return c
    return None


@dataclasses.dataclass(frozen=True)
class Observed:
    """A consistent snapshot for one InferenceService, taken from the operator's cache."""

    isvc: Mapping[str, Any]
    # Children carrying this InferenceService's label, by (kind, name).
    children: Mapping[tuple[str, str], Mapping[str, Any]] = dataclasses.field(default_factory=dict)
    pods: tuple[Mapping[str, Any], ...] = ()
    # PersistentVolumeClaims that exist in the namespace.
    claims: frozenset[str] = frozenset()
    # The namespace is being deleted: its controller removes the children; nothing is re-created.
    namespace_terminating: bool = False
    # ReplicaSets carrying this InferenceService's label (a migration's orphans among them).
    replicasets: tuple[Mapping[str, Any], ...] = ()
    # Names of the CustomResourceDefinitions installed: a child kind whose CRD is absent is skipped.
    crds: frozenset[str] = frozenset()

    @property
    def namespace(self) -> str:
        return self.isvc["metadata"]["namespace"]

    @property
    def name(self) -> str:
        return self.isvc["metadata"]["name"]

    @property
    def deleting(self) -> bool:
        return bool(self.isvc["metadata"].get("deletionTimestamp"))

    def child(self, ref: Ref) -> Optional[Mapping[str, Any]]:
        return self.child_by_kind(ref.kind.kind, ref.name)

    def child_by_kind(self, kind: str, name: str) -> Optional[Mapping[str, Any]]:
        return self.children.get((kind, name))


def pod_ready(pod: Mapping[str, Any]) -> bool:
    c = condition(pod, "Ready")
    return bool(c and c.get("status") == "True")
