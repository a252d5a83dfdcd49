"""Which Deployments run, at what scale, while a revision rolls out: the canary's decision
(canary.py) applied to the rendered children. Pure, but for the analysis, which is handed in.

Without ``spec.rollout.canary`` (or for an InferenceService's first revision) this is the plain
path: the stable track's Deployment rolls as the spec says. With one, a new revision runs in the
other track's Deployment while the stable one is held at its revision and only scaled; a promotion
keeps the canary's Deployment as the stable one, and the other Deployment is deleted.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Optional

from inference_operator import api, kinds, naming
from inference_operator.desired import children, migration, render, traffic
from inference_operator.kinds import Ref
from inference_operator.observed import Observed, pod_ready
from inference_operator.problems import Problem
from inference_operator.rollout import analysis, canary

Analyze = Callable[[api.InferenceService, canary.Inputs], analysis.Verdict]


@dataclasses.dataclass(frozen=True)
class Plan:
    children: list[dict[str, Any]]  # stamped, in apply order
    hold: frozenset[Ref]  # never written by the plan: the stable Deployment while held
    scale: dict[Ref, int]  # replica counts to set on held Deployments
    decision: canary.Decision
    stable: Ref  # the Deployment running the stable revision (after this pass)
    canary: Optional[Ref]  # the canary's, while one runs


def stable_track(isvc: api.InferenceService) -> str:
    state = isvc.status.canary
    return state.stable_track if state is not None and state.stable_track else naming.STABLE


def _ref(isvc: api.InferenceService, track: str) -> Ref:
    return Ref(kinds.DEPLOYMENT, isvc.namespace, naming.predictor(isvc.name, track))


def inputs(isvc: api.InferenceService, observed: Observed, desired_revision: Optional[str], now: float) -> canary.Inputs:
    spec = isvc.spec
    track = stable_track(isvc)
    # No canary is due (none in the spec, or the spec is the stable revision): whatever runs in
    # the canary's track is a canary to drain.
    due = spec.rollout.canary is not None and isvc.status.revision not in (None, desired_revision)
    pods, other = canary.pods_by_track(list(observed.pods), track, desired_revision if due else None, pod_ready)
    return canary.Inputs(
        canary=spec.rollout.canary, replicas=spec.target_replicas, max_surge=spec.rollout.max_surge,
        max_unavailable=spec.rollout.max_unavailable,
        startup_timeout_seconds=spec.runtime.startup_timeout_seconds, desired_revision=desired_revision,
        stable_revision=isvc.status.revision, state=isvc.status.canary, pods=pods, other=other,
        actions=canary.actions_of(dict(isvc.metadata.annotations)), now=now,
        startup_seconds=isvc.status.startup_seconds.get(desired_revision or ""),
    )


def plan(
    isvc: api.InferenceService,
    observed: Observed,
    rendered: Callable[[str], list[dict[str, Any]]],
    desired_revision: Optional[str],
    now: float,
    analyze: Analyze,
) -> Plan:
    """The children to apply, hold and scale. ``rendered(track)`` gives the stamped children with
    that track's Deployment. No canary (the plain path) while a Deployment made before tracks is
    still being moved onto them (reconcile does not call this for the Deployment itself; its
    orphaned ReplicaSets are seen here), or while the stable track has no Deployment to hold
    (deleted behind our back: it is made again from the spec)."""
    spec_inputs = inputs(isvc, observed, desired_revision, now)
    stable_missing = observed.child(_ref(isvc, stable_track(isvc))) is None
    if stable_missing or migration.orphans(observed.replicasets):
        spec_inputs = dataclasses.replace(spec_inputs, canary=None)
    verdict = analyze(isvc, spec_inputs) if canary.analysis_due(spec_inputs) else None
    decision = canary.decide(spec_inputs, verdict)
    if stable_missing and decision.hold:
        decision = dataclasses.replace(decision, hold=False, draining=False, failed=False, split=None)
    stable = decision.stable_track
    desired = rendered(stable) + _routing(isvc, observed, decision)
    stable_ref = _ref(isvc, stable)
    if not decision.hold:
        return Plan(children=desired, hold=frozenset(), scale={}, decision=decision, stable=stable_ref, canary=None)
    assert decision.split is not None
    scale = _rescale(observed, stable_ref, decision.split.stable)
    canary_ref = None
    hold = {stable_ref}
    if decision.active:
        canary_ref = _ref(isvc, decision.canary_track)
        deployment = render.as_canary(rendered(decision.canary_track)[0], decision.split.canary)
        desired = desired + [children.stamp(deployment, isvc)]
    elif decision.draining:
        # The canary's Deployment stays, held at its revision, and shrinks as the stable's pods
        # are ready (its rendered stand-in only keeps the plan from deleting it).
        canary_ref = _ref(isvc, decision.canary_track)
        hold.add(canary_ref)
        desired = desired + [rendered(decision.canary_track)[0]]
        scale.update(_rescale(observed, canary_ref, decision.split.canary))
    return Plan(children=desired, hold=frozenset(hold), scale=scale, decision=decision, stable=stable_ref,
                canary=canary_ref)


def _rescale(observed: Observed, ref: Ref, replicas: int) -> dict[Ref, int]:
    """The replica count to patch onto a held Deployment: none when it has it, or is not there."""
    live = observed.child(ref)
    return {ref: replicas} if live is not None and (live.get("spec") or {}).get("replicas") != replicas else {}


ROUTE_CRD = "httproutes.gateway.networking.k8s.io"


def problem(isvc: api.InferenceService, observed: Observed) -> Optional[Problem]:
    """What keeps the canary's spec from being carried out here: traffic: gatewayAPI on a cluster
    without the Gateway API. Nothing is written then (the stable revision serves on); installing
    the CRDs wakes every InferenceService."""
    cfg = isvc.spec.rollout.canary
    if cfg is not None and cfg.traffic == "gatewayAPI" and ROUTE_CRD not in observed.crds:
        return Problem("GatewayAPINotInstalled", f"spec.rollout.canary.traffic is gatewayAPI, but the CRD {ROUTE_CRD} "
                                                 "is not installed in this cluster")
    return None


def _routing(isvc: api.InferenceService, observed: Observed, decision: canary.Decision) -> list[dict[str, Any]]:
    """traffic: gatewayAPI: the role Services and the route, at the decision's weight (0 when no
    canary runs), stamped; the route only where its CRD is installed."""
    cfg = isvc.spec.rollout.canary
    if cfg is None or cfg.traffic != "gatewayAPI":
        return []
    weight = decision.route_weight if decision.active else 0
    built = traffic.children(isvc, decision.stable_track, decision.canary_track, weight)
    return [children.stamp(c, isvc) for c in built if children.installable(c["kind"], observed.crds)]


