"""Step 3 of moving a Deployment made before tracks onto them (desired/migration.py): its orphaned
ReplicaSet gives way as the new Deployment's replicas serve."""

from __future__ import annotations

from typing import Any, Optional

from inference_operator import api, kinds, naming
from inference_operator.controller.writes import Writes
from inference_operator.desired import children, migration
from inference_operator.kinds import Ref
from inference_operator.observed import Observed

WHAT = "an orphaned ReplicaSet"


def shrink(isvc: api.InferenceService, observed: Observed, deployment: Optional[dict[str, Any]],
           writes: Writes) -> None:
    """Adopt the orphans (so garbage collection takes them with the InferenceService), scale them
    down as the new Deployment's pods become available, and delete each once it is empty."""
    orphaned = migration.orphans(observed.replicasets)
    if not orphaned:
        return
    new_available = 0
    if deployment is not None and naming.track_of(deployment) is not None:
        new_available = (deployment.get("status") or {}).get("availableReplicas", 0)
    step = migration.step(orphaned, desired_replicas=isvc.spec.target_replicas, new_available=new_available,
                          max_unavailable=isvc.spec.rollout.max_unavailable)
    by_name = {rs["metadata"]["name"]: rs for rs in orphaned}
    for name, rs in by_name.items():
        if name not in step.delete and not migration.adopted(rs, isvc.metadata.uid):
            owner = migration.owner_reference(children.owner_reference(isvc))
            writes.patch(_ref(isvc, name), {"metadata": {"ownerReferences": [owner]}}, what=WHAT)
    for name, replicas in step.scale.items():
        writes.patch(_ref(isvc, name), {"spec": {"replicas": replicas}}, what=WHAT)
    for name in step.delete:
        writes.delete(_ref(isvc, name), by_name[name]["metadata"]["uid"], said=f"ReplicaSet/{name} (moved onto tracks)",
                      what=WHAT)


def _ref(isvc: api.InferenceService, name: str) -> Ref:
    return Ref(kinds.REPLICASET, isvc.namespace, name)
