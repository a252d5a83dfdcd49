"""One reconcile pass, as a checklist over one context: desire, plan the rollout, carry out the
writes, compute status, write status, post Events, and say when to come back. Whatever event woke
it, the pass is the same.
"""

from __future__ import annotations

import dataclasses
import datetime
from typing import Any, Callable, Optional

from inference_operator import api
from inference_operator.config import OperatorConfig
from inference_operator.controller import analyzer, orphans, report
from inference_operator.controller.desire import Desired, desire, parse, rendered
from inference_operator.controller.render_cache import RenderCache
from inference_operator.controller.writes import Live, Skip, Writes
from inference_operator.desired import children
from inference_operator.kinds import Ref
from inference_operator.kube import Kube
from inference_operator.observed import Observed
from inference_operator.problems import Problem
from inference_operator.rollout import canary, plan
from inference_operator.status.conditions import Seen, compute
from inference_operator.status.patch import comparable

# Problems the user fixes in the spec: retrying before the spec changes cannot help.
PERMANENT = {"InvalidSpec", "ApplyRejected", "InvalidQuantity"}
# Problems outside the spec (another object, a missing claim, RBAC, quota, a webhook, an API server
# that keeps failing): the pass asks to run again after SLOW_RETRY_SECONDS, and writes nothing then
# unless something changed. A claim that appears also wakes its InferenceServices at once.
RETRYABLE = frozenset({"ChildConflict", "StorageNotFound", "Forbidden", "GatewayAPINotInstalled"})
SLOW_RETRY_SECONDS = 60.0


@dataclasses.dataclass(frozen=True)
class Outcome:
    applied: list[str]
    deleted: list[str]
    status_written: bool
    problem: Optional[Problem]
    requeue_after: Optional[float] = None
    skipped: bool = False

    @property
    def writes(self) -> int:
        return len(self.applied) + len(self.deleted) + int(self.status_written)

    @property
    def permanent(self) -> bool:
        return self.problem is not None and self.problem.reason in PERMANENT

    @property
    def retryable(self) -> bool:
        return self.problem is not None and self.problem.reason in RETRYABLE

    @property
    def backoff(self) -> bool:
        """The pass reported a transient failure: the runner keeps backing off."""
        return self.problem is not None and self.problem.reason == "TransientError"


def skipped() -> Outcome:
    return Outcome(applied=[], deleted=[], status_written=False, problem=None, skipped=True)


def utcnow() -> str:
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclasses.dataclass
class Pass:
    """What one pass knows and has decided so far: each step reads it and adds its part."""

    observed: Observed
    config: OperatorConfig
    renders: RenderCache
    at: str  # the pass's one "now"
    isvc: api.InferenceService
    refs: list[Ref]  # every child this InferenceService can have; the first, the track-less Deployment
    parsed: bool  # False: ``isvc`` is a shell of metadata and status around a spec that did not parse
    writes: Writes  # its problem is the pass's: found before any write, or by a write
    want: Desired = dataclasses.field(default_factory=Desired)
    desired: list[dict[str, Any]] = dataclasses.field(default_factory=list)  # children and autoscaler
    rolling: Optional[plan.Plan] = None  # None on the plain path (and while migrating)
    live: Live = dataclasses.field(default_factory=dict)  # the children, as each write leaves them
    moving: Optional[dict[str, Any]] = None  # a Deployment made before tracks, let go this pass

    @property
    def problem(self) -> Optional[Problem]:
        return self.writes.problem


def reconcile(
    observed: Observed,
    kube: Kube,
    config: OperatorConfig,
    now: Callable[[], str] = utcnow,
    failures: int = 0,
    slow_retry_seconds: float = SLOW_RETRY_SECONDS,
    analyze: Optional[plan.Analyze] = None,
    renders: Optional[RenderCache] = None,
) -> Outcome:
    """Bring the children and status of one InferenceService in line with its spec.

    Reads only ``observed`` (plus a GET where a create finds the name taken).
    Raises ApiError for failures the runner retries with backoff (transient, a stale
    resourceVersion); every problem with the spec or its surroundings ends in status and an Event
    instead, with serving children untouched. ``renders`` is the operator's render cache, kept
    across passes; without one, each call renders afresh (tests).
    """
    if observed.namespace_terminating or observed.deleting:
        # Garbage collection and the namespace controller take the children; re-creating them
        # would only be refused.
        return skipped()
    if analyze is None:
        analyze = analyzer.analyzer(config, analyzer.secret_credentials(kube))
    isvc, problem = parse(observed.isvc)
    p = Pass(observed=observed, config=config, renders=renders if renders is not None else RenderCache(),
             at=now(), isvc=isvc, refs=children.possible_refs(isvc), parsed=problem is None,
             writes=Writes(kube, failures, problem))
    try:
        want_children(p)
        plan_rollout(p, analyze)
        write_children(p)
        shrink_orphans(p)
        old = comparable(observed.isvc.get("status") or {})
        new = compute(see(p))
        written = report.write_status(kube, isvc, observed.isvc, old, new)
    except Skip:
        return skipped()
    except report.Gone:  # deleted meanwhile: nothing left to report on, nothing to come back for
        return Outcome(p.writes.applied, p.writes.deleted, False, p.problem)
    report.post(kube, isvc, report.events(old, new, written is not None, p.rolling, p.writes))
    return Outcome(applied=p.writes.applied, deleted=p.writes.deleted, status_written=written is not None,
                   problem=p.problem, requeue_after=come_back(p, slow_retry_seconds))


def want_children(p: Pass) -> None:
    """What the spec asks for (nothing when it did not parse), and the rollout's own objection
    (a route on a cluster without the Gateway API)."""
    if p.problem is None:
        p.want, problem = desire(p.isvc, p.observed, p.config, p.renders)
        p.writes.stop(problem)
    if p.problem is None:
        p.writes.stop(plan.problem(p.isvc, p.observed))
    p.desired = p.want.children + p.want.autoscaler
    p.live = {ref: p.observed.child(ref) for ref in p.refs}


def plan_rollout(p: Pass, analyze: plan.Analyze) -> None:
    """Which Deployments run, at what scale: the canary's decision (none while a Deployment made
    before tracks moves onto them)."""
    if p.problem is not None or p.want.legacy:
        return
    config = p.want.config
    assert config is not None

    def with_track(track: str) -> list[dict[str, Any]]:
        return rendered(p.renders, p.isvc, config, track, p.observed)

    p.rolling = plan.plan(p.isvc, p.observed, with_track, p.want.revision, canary.parse_time(p.at) or 0.0,
                          analyze)
    p.desired = p.rolling.children + p.want.autoscaler


def write_children(p: Pass) -> None:
    """A Deployment made before tracks is let go first (its pods keep serving; its successor comes
    in a later pass), then the plan's applies, creations and deletions, then the replica counts a
    canary sets on the Deployments it holds."""
    if p.problem is not None:
        return
    legacy = p.refs[0]
    hold = p.rolling.hold if p.rolling is not None else frozenset()
    if p.want.migrate_from is not None:
        hold |= {legacy}
    hold |= p.writes.refused_before(p.isvc, p.desired, p.live)
    if p.want.migrate_from is not None:
        p.moving = p.want.migrate_from
        p.writes.delete(legacy, p.moving["metadata"]["uid"], propagation="Orphan",
                        said=f"{legacy} (its pods keep serving while it moves onto tracks)")
    p.writes.children(p.isvc, p.desired, p.live, hold)
    for ref, replicas in (p.rolling.scale if p.rolling is not None else {}).items():
        scaled = p.writes.patch(ref, {"spec": {"replicas": replicas}}, said=f"{ref} (replicas {replicas})")
        if scaled is not None:
            p.live[ref] = scaled


def shrink_orphans(p: Pass) -> None:
    if p.problem is None:
        orphans.shrink(p.isvc, p.observed, stable_deployment(p), p.writes)


def stable_deployment(p: Pass) -> Optional[dict[str, Any]]:
    """The Deployment of the stable revision, as status reads it: the one being moved onto tracks,
    or the stable track's after this pass's writes; only if it is this InferenceService's."""
    ref = p.rolling.stable if p.rolling is not None else p.refs[0]
    deployment = p.moving or p.live.get(ref)
    if deployment is not None and children.controller_uid(deployment) != p.isvc.metadata.uid:
        return None
    return deployment


def see(p: Pass) -> Seen:
    """Everything status is computed from."""
    deployment = stable_deployment(p)
    ok = p.problem is None
    scaling = report.autoscaling_status(p.isvc, p.observed, p.config, p.live, p.writes.refused, p.desired) \
        if p.parsed else {}
    return Seen(isvc=p.isvc, deployment=deployment, pods=list(p.observed.pods) if deployment else [],
                desired_revision=p.want.revision if ok else None, problem=p.problem, config=p.config, now=p.at,
                children_changed=bool(p.writes.applied or p.writes.deleted),
                operator_defaults=p.want.operator_defaults if ok else None,
                canary=report.canary_view(p.isvc, p.rolling, p.live), **scaling)


def come_back(p: Pass, slow_retry_seconds: float) -> Optional[float]:
    """When the pass wants to run again: a problem outside the spec is looked at again slowly; a
    canary asks for its next step or analysis."""
    waits = [slow_retry_seconds] if p.problem is not None and p.problem.reason in RETRYABLE else []
    if p.problem is None and p.rolling is not None and p.rolling.decision.requeue_after is not None:
        waits.append(p.rolling.decision.requeue_after)
    return min(waits) if waits else None
