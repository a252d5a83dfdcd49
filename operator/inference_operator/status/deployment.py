"""What a Deployment says of its rollout: how far it got, whether it finished, and why it is stuck."""

from __future__ import annotations

import dataclasses
from typing import Any, Optional

from inference_operator import naming
from inference_operator.observed import condition
from inference_operator.status.messages import short


@dataclasses.dataclass(frozen=True)
class Rollout:
    desired_replicas: int
    replicas: int
    updated: int
    ready: int
    available: int
    on_desired_revision: bool
    observed: bool
    new_replicaset_available: bool
    stuck: Optional[str]
    replica_failure: Optional[str]

    @property
    def finished(self) -> bool:
        """The desired revision replaced every old pod and became available at least once."""
        r = self.desired_replicas
        return (
            self.on_desired_revision
            and self.observed
            and self.new_replicaset_available
            and self.updated == r
            and self.replicas == r
        )

    @property
    def complete(self) -> bool:
        return self.finished and self.available == self.desired_replicas


def rollout_of(deployment: dict[str, Any], desired_revision: Optional[str]) -> Rollout:
    st = deployment.get("status") or {}
    progressing = condition(deployment, "Progressing") or {}
    failure = condition(deployment, "ReplicaFailure")
    return Rollout(
        desired_replicas=(deployment.get("spec") or {}).get("replicas", 1),
        replicas=st.get("replicas", 0),
        updated=st.get("updatedReplicas", 0),
        ready=st.get("readyReplicas", 0),
        available=st.get("availableReplicas", 0),
        on_desired_revision=naming.revision_of(deployment) == desired_revision,
        observed=st.get("observedGeneration", 0) >= deployment["metadata"].get("generation", 0),
        # The deployment controller's own word that the newest ReplicaSet finished rolling out.
        new_replicaset_available=progressing.get("reason") == "NewReplicaSetAvailable",
        stuck=(
            short(progressing.get("message", ""))
            if progressing.get("status") == "False"
            and progressing.get("reason") == "ProgressDeadlineExceeded"
            else None
        ),
        replica_failure=(
            short(failure.get("message", "")) if failure and failure.get("status") == "True" else None
        ),
    )
