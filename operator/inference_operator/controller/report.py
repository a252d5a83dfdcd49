"""A pass's last steps: what status is told of the canary and the autoscaler, the one status write,
and the Events that say what changed."""

from __future__ import annotations

import dataclasses
import logging
from typing import Any, Mapping, Optional

from inference_operator import api, kinds, naming
from inference_operator.config import OperatorConfig
from inference_operator.controller.writes import Live, Writes
from inference_operator.desired import autoscaling, children
from inference_operator.kinds import Ref
from inference_operator.kube import GONE, ApiError, Kube
from inference_operator.observed import Observed
from inference_operator.problems import Event
from inference_operator.rollout.plan import Plan
from inference_operator.status.conditions import CanaryView
from inference_operator.status.events import events as transitions_of
from inference_operator.status.patch import comparable, merge_patch

log = logging.getLogger(__name__)


def canary_view(isvc: api.InferenceService, rolling: Optional[Plan], live: Live) -> Optional[CanaryView]:
    """What status says of the canary: the rollout's decision, with the revision it replaces and
    the canary's Deployment; None on the plain path."""
    if rolling is None:
        return None
    deployment = live.get(rolling.canary) if rolling.canary is not None else None
    return CanaryView(rolling.decision, stable_revision=isvc.status.revision, deployment=deployment)


def autoscaling_status(isvc: api.InferenceService, observed: Observed, config: OperatorConfig, live: Live,
                       refused: dict[Ref, str], desired: list[dict[str, Any]]) -> dict[str, Any]:
    """The Autoscaling condition and the status.autoscaler summary (as status.Seen's fields), from
    the autoscaler this pass wrote (or saw) and the HPA that does its scaling (KEDA's own for a
    ScaledObject). Nothing without spec.autoscaling."""
    spec = isvc.spec.autoscaling
    if spec is None:
        return {}
    kind = kinds.HPA if spec.engine == "hpa" else kinds.SCALEDOBJECT
    name = naming.names(isvc.name).autoscaler
    ref = Ref(kind, isvc.namespace, name)
    scaler = live.get(ref)
    if scaler is not None and children.controller_uid(scaler) != isvc.metadata.uid:
        scaler = None
    hpa = scaler if kind == kinds.HPA else observed.child_by_kind(kinds.HPA.kind, autoscaling.keda_hpa_name(name))
    seen = autoscaling.Observation(autoscaler=scaler, hpa=hpa, rejected=refused.get(ref))
    current, wanted = autoscaling.replicas_of(hpa)
    summary = {"kind": kind.kind, "name": name, "currentReplicas": current, "desiredReplicas": wanted}
    if ref in refused:
        sent = next((o for o in desired if kinds.ref_of(o) == ref), None)
        summary.update(refusedHash=children.spec_hash(sent) if sent else None, refusedMessage=refused[ref])
    return {"autoscaling": autoscaling.condition(isvc, config, observed.crds, seen),
            "autoscaler": {k: v for k, v in summary.items() if v is not None}}


class Gone(Exception):
    """The InferenceService was deleted before its status could be written."""


def write_status(kube: Kube, isvc: api.InferenceService, body: Mapping[str, Any], old: dict[str, Any],
                 new: dict[str, Any]) -> Optional[dict[str, Any]]:
    """The pass's one status write, only if status changed: a merge patch with a resourceVersion
    precondition, so a pass that read a stale InferenceService runs again instead of writing over
    newer status (the 409 goes to the runner). None when nothing needed writing."""
    if comparable(new) == old:
        return None
    try:
        return kube.patch_status(isvc.namespace, isvc.name, merge_patch(old, new),
                                 body["metadata"].get("resourceVersion", ""))
    except ApiError as exc:
        if exc.kind == GONE:
            raise Gone() from exc
        raise


def events(old: dict[str, Any], new: dict[str, Any], written: bool, rolling: Optional[Plan],
           writes: Writes) -> list[Event]:
    """The Events of a pass: its condition transitions and the canary's own steps (only when it
    wrote status: they are what changed there), and what it wrote to the children."""
    said = transitions_of(old, new) if written else []
    if rolling is None:
        return with_children(said, writes.applied, writes.deleted)
    if written:
        # The canary's own Warning (naming the checks) says what Degraded's would say again.
        own = {(e.type, e.reason) for e in rolling.decision.events}
        said = list(rolling.decision.events) + [e for e in said if (e.type, e.reason) not in own]
    if rolling.decision.hold or rolling.decision.promoted:
        return said  # the canary's own Events tell its steps; its writes need no second word
    return with_children(said, writes.applied, writes.deleted)


def with_children(transitions: list[Event], applied: list[str], deleted: list[str]) -> list[Event]:
    """What the pass wrote to the children, said within the RollingOut event when the pass starts a
    rollout (one Event for a new InferenceService's children, not two), in a ChildrenUpdated event
    otherwise (drift put right, a child re-made)."""
    if not (applied or deleted):
        return transitions
    what = ", ".join([f"applied {a}" for a in applied] + [f"deleted {d}" for d in deleted])
    for i, event in enumerate(transitions):
        if event.reason == "RollingOut":
            return transitions[:i] + [dataclasses.replace(event, message=f"{event.message} ({what})")] \
                + transitions[i + 1:]
    return [Event("Normal", "ChildrenUpdated", what)] + transitions


def post(kube: Kube, isvc: api.InferenceService, said: list[Event]) -> None:
    for event in said:
        try:
            kube.event(isvc, event)
        except ApiError as exc:  # an Event is a courtesy; it never fails the pass
            log.warning("could not post event %s for %s/%s: %s", event.reason, isvc.namespace, isvc.name, exc)
