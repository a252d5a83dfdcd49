"""Moving a Deployment made before tracks existed onto the track label scheme. Pure decisions.

Such a Deployment selects pods without a track label, and a selector is immutable. It is kept
as it is while nothing else changes (an operator upgrade rolls nothing). When its spec next
changes, a rollout is due anyway, and that rollout moves it:

1. the old Deployment is deleted with ``propagationPolicy: Orphan``: its ReplicaSet and pods
   stay, and keep serving through the Service, which selects every track;
2. the new Deployment (``track: stable`` in its selector and on its pods) is created at the new
   revision;
3. each pass scales the orphaned ReplicaSet down as the new Deployment's replicas become
   available, by the rollout's own rule (never fewer than ``replicas - maxUnavailable``
   serving), and deletes it once it is at zero.

Everything a pass needs is observed (the orphaned ReplicaSets carry our labels and no
controller), so an operator restart in the middle resumes where it was.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping, Optional, Sequence

from inference_operator import naming
from inference_operator.desired import children


def is_legacy(deployment: Optional[Mapping[str, Any]]) -> bool:
    return deployment is not None and naming.track_of(dict(deployment)) is None


def _revision(rs: Mapping[str, Any]) -> tuple[int, str]:
    """The deployment controller's revision number of a ReplicaSet (newer is higher)."""
    meta = rs.get("metadata") or {}
    try:
        number = int((meta.get("annotations") or {}).get("deployment.kubernetes.io/revision", "0"))
    except ValueError:
        number = 0
    return number, meta.get("creationTimestamp") or ""


def orphans(replicasets: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """ReplicaSets of a Deployment made before tracks that no Deployment controls any more: what
    step 1 left. One with a track in its selector is never one (a Deployment of ours may adopt it)."""
    found = [rs for rs in replicasets
             if children.controller_uid(dict(rs)) is None
             and not (rs.get("metadata") or {}).get("deletionTimestamp")
             and naming.TRACK_LABEL not in (((rs.get("spec") or {}).get("selector") or {}).get("matchLabels") or {})]
    return sorted(found, key=_revision)


@dataclasses.dataclass(frozen=True)
class Step:
    """The writes of one pass: ReplicaSets to scale (name -> replicas) and to delete (names)."""

    scale: dict[str, int]
    delete: list[str]

    @property
    def empty(self) -> bool:
        return not self.scale and not self.delete


def step(
    orphaned: Sequence[Mapping[str, Any]], *, desired_replicas: int, new_available: int, max_unavailable: int
) -> Step:
    """How far to shrink the orphaned ReplicaSets now that ``new_available`` replicas of the new
    Deployment serve: together they keep at least ``desired - maxUnavailable`` serving.

    Only available replicas count: a ReplicaSet scaled down removes its not-ready pods first, so
    a target of at least its available count never takes a serving pod; the ReplicaSets that
    serve most are kept first (the newest among equals), and one that serves nothing goes.
    """
    needed = max(0, desired_replicas - new_available - max_unavailable)
    scale: dict[str, int] = {}
    delete: list[str] = []
    ranked = sorted(orphaned, key=lambda rs: ((rs.get("status") or {}).get("availableReplicas", 0), _revision(rs)),
                    reverse=True)
    for rs in ranked:
        name = rs["metadata"]["name"]
        current = (rs.get("spec") or {}).get("replicas", 0)
        available = min(current, (rs.get("status") or {}).get("availableReplicas", 0))
        target = min(available, needed)
        needed -= target
        if target == 0:
            delete.append(name)
        elif target != current:
            scale[name] = target
    return Step(scale=scale, delete=sorted(delete))


def owner_reference(isvc_ref: Mapping[str, Any]) -> dict[str, Any]:
    """Not a controller reference: it only lets garbage collection take an orphan with the
    InferenceService, if that is deleted in the middle of a move."""
    return {**isvc_ref, "controller": False, "blockOwnerDeletion": False}


def adopted(rs: Mapping[str, Any], uid: Optional[str]) -> bool:
    return any(ref.get("uid") == uid for ref in (rs.get("metadata") or {}).get("ownerReferences") or [])
