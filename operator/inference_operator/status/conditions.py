"""The status an InferenceService should have, from what one pass saw: the situation it is in,
the conditions that say so, and the rest of status."""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Optional, Protocol

from inference_operator import api, naming
from inference_operator.config import OperatorConfig
from inference_operator.problems import Problem
from inference_operator.status import startup
from inference_operator.status.deployment import Rollout, rollout_of
from inference_operator.status.messages import short
from inference_operator.status.pods import PodCounts, pod_counts, pod_problem

# Five conditions, each with observedGeneration. Reconciling and Stalled follow kstatus
# (Reconciling mirrors a Progressing rollout; Stalled is a problem a person must fix). The others:
# - Ready: the desired revision is fully rolled out and every replica is available.
# - Progressing: a rollout of the desired revision is under way (False once complete or stuck).
# - Degraded: something needs a human: a spec the operator cannot serve, pods that cannot be
#   scheduled, crash or cannot pull their image, pods the ReplicaSet cannot create, a stuck rollout.
READY, PROGRESSING, DEGRADED = "Ready", "Progressing", "Degraded"
# kstatus's pair (Flux, kpt, cli-utils): Reconciling = in progress, Stalled = failed.
RECONCILING, STALLED = "Reconciling", "Stalled"
CONDITION_TYPES = (READY, PROGRESSING, DEGRADED, RECONCILING, STALLED)
# With spec.autoscaling only: whether the autoscaler exists and can scale (autoscaling.py).
AUTOSCALING = "Autoscaling"

Condition = tuple[str, str, str]  # status, reason, message
# What a situation says: Ready, Progressing, and the problem Degraded names (None: as expected).
Verdict = tuple[Condition, Condition, Optional[Problem]]

AS_EXPECTED: Condition = ("False", "AsExpected", "")
SCALED_TO_ZERO: Condition = ("False", "ScaledToZero", "spec.replicas is 0: no replica is serving.")


class CanaryDecision(Protocol):
    """What status reads of a canary's decision (rollout/canary.py's Decision, which status does not
    import): the next status.canary, whether a canary runs, is held off after a rollback, goes
    away, or was promoted this pass, and the reason and message it gives."""

    @property
    def state(self) -> Optional[dict[str, Any]]: ...
    @property
    def active(self) -> bool: ...
    @property
    def failed(self) -> bool: ...
    @property
    def draining(self) -> bool: ...
    @property
    def promoted(self) -> bool: ...
    @property
    def reason(self) -> Optional[str]: ...
    @property
    def message(self) -> Optional[str]: ...


@dataclasses.dataclass(frozen=True)
class CanaryView:
    """A canary as status sees it: the rollout's decision as it is, the revision it replaces, and
    the canary's Deployment while it runs (its replicas count in status.replicas)."""

    decision: CanaryDecision
    stable_revision: Optional[str] = None
    deployment: Optional[dict[str, Any]] = None

    @property
    def revision(self) -> Optional[str]:
        """The revision under test, or rolled back."""
        return (self.decision.state or {}).get("revision")


@dataclasses.dataclass(frozen=True)
class Seen:
    """What one pass saw of an InferenceService and its children, and what it decided of them.
    ``autoscaling`` is the Autoscaling condition (status, reason, message), ``autoscaler`` what
    status.autoscaler says (both None without spec.autoscaling)."""

    isvc: api.InferenceService
    _: dataclasses.KW_ONLY
    deployment: Optional[dict[str, Any]]
    pods: list[dict[str, Any]]
    desired_revision: Optional[str]
    problem: Optional[Problem]
    config: OperatorConfig
    now: str
    children_changed: bool = False
    operator_defaults: Optional[dict[str, str]] = None
    canary: Optional[CanaryView] = None
    autoscaling: Optional[Condition] = None
    autoscaler: Optional[dict[str, Any]] = None


@dataclasses.dataclass(frozen=True)
class Facts:
    """What the observations amount to, the same for every situation."""

    rollout: Optional[Rollout]  # None: no Deployment yet
    counts: PodCounts
    degraded: Optional[Problem]
    max_unavailable: int


Situation = Callable[[Seen, Facts], Verdict]


def compute(seen: Seen) -> dict[str, Any]:
    """The status the InferenceService should have, as the JSON the API server stores."""
    facts = _facts(seen)
    verdict = _situation(seen, facts)(seen, facts)
    revision = _revision(seen, facts.rollout)
    replicas, ready_replicas = _replicas(seen, facts.rollout)
    status: dict[str, Any] = {
        "observedGeneration": seen.isvc.metadata.generation,
        "conditions": _conditions(seen, facts.rollout, verdict),
        "selector": naming.selector_string(seen.isvc.name),
        "replicas": replicas,
        "readyReplicas": ready_replicas,
    }
    optional = {
        "url": naming.url(seen.isvc, seen.config) if seen.deployment is not None else None,
        "revision": revision or None,
        "operatorDefaults": _operator_defaults(seen),
        "startupSeconds": _startup_seconds(seen, revision) or None,
        "autoscaler": seen.autoscaler or None,
        "canary": _canary_state(seen),
    }
    status.update((key, value) for key, value in optional.items() if value is not None)
    return status


def _situation(seen: Seen, facts: Facts) -> Situation:
    """The situation the InferenceService is in: the first below that applies."""
    canary = seen.canary
    if canary is not None and not seen.problem:
        if canary.decision.promoted:
            return _canary_promoted
        if canary.decision.draining:
            return _canary_draining
        if canary.decision.active:
            return _canary_running
        if canary.decision.failed:
            return _canary_held
    if seen.problem:
        return _problem
    if facts.rollout is None:
        return _no_deployment_yet
    if _only_scaling(seen, facts.rollout, facts.counts):
        return _scaling
    return _rolling_out


def _facts(seen: Seen) -> Facts:
    rollout = rollout_of(seen.deployment, seen.desired_revision) if seen.deployment is not None else None
    return Facts(
        rollout=rollout,
        counts=pod_counts(seen.pods, seen.desired_revision),
        degraded=_degraded(seen.problem, rollout, seen.pods),
        max_unavailable=_max_unavailable(seen.isvc),
    )


def _degraded(problem: Optional[Problem], rollout: Optional[Rollout], pods: list[dict]) -> Optional[Problem]:
    if problem:
        return problem
    if rollout is None:
        return None
    if rollout.replica_failure:
        return Problem("ReplicaFailure", rollout.replica_failure)
    found = pod_problem(pods)
    if found:
        return found
    if rollout.stuck:
        return Problem("ProgressDeadlineExceeded", rollout.stuck)
    return None


def _max_unavailable(isvc: api.InferenceService) -> int:
    try:
        return isvc.spec.rollout.max_unavailable
    except AttributeError:  # a spec that did not parse
        return 0


def _only_scaling(seen: Seen, rollout: Rollout, counts: PodCounts) -> bool:
    # A revision already fully rolled out that only changes its replica count is scaling, not
    # rolling out: no RollingOut, no Progressing, and Ready stays True while new replicas start.
    return (
        seen.desired_revision is not None and seen.isvc.status.revision == seen.desired_revision
        and rollout.on_desired_revision and counts.other_revisions == 0
        # Every pod is of the Deployment's newest ReplicaSet: nobody's template change is rolling
        # (a `kubectl set image` keeps our revision label; this tells its pods apart).
        and rollout.updated == rollout.replicas
    )


def _rev(seen: Seen) -> str:
    return seen.desired_revision or "?"


def _rolled_out(rev: str) -> Condition:
    return ("False", "RolloutComplete", f"Revision {rev} is rolled out.")


# The situations, each saying (Ready, Progressing, Degraded's problem).


def _canary_floor(seen: Seen, facts: Facts) -> int:
    """Ready pods, of either revision, that keep Ready True while a canary is about."""
    replicas = seen.isvc.spec.target_replicas
    return max(1, replicas - facts.max_unavailable) if replicas else 0


def _canary_serving(seen: Seen, facts: Facts) -> bool:
    return facts.counts.desired_ready + facts.counts.other_ready >= _canary_floor(seen, facts)


def _stable_keeps_serving(view: CanaryView, counts: PodCounts) -> str:
    return f"The stable revision {view.stable_revision} keeps serving ({counts.other_ready} ready)"


def _canary_promoted(seen: Seen, facts: Facts) -> Verdict:
    """The pass that promotes a canary: its revision is the rolled-out one."""
    view, counts = seen.canary, facts.counts
    ok = counts.desired_ready >= _canary_floor(seen, facts)
    ready = ("True" if ok else "False", "Available" if ok else "ReplicasUnavailable",
             f"Revision {view.revision}: promoted; {counts.desired_ready}/{seen.isvc.spec.target_replicas} "
             "replicas ready.")
    return ready, ("False", "RolloutComplete", f"Revision {view.revision} is rolled out (promoted)."), facts.degraded


def _canary_draining(seen: Seen, facts: Facts) -> Verdict:
    """A canary goes away (a revert, its spec removed) as the stable revision comes back."""
    view, counts = seen.canary, facts.counts
    text = f"{counts.desired_ready + counts.other_ready} ready while the canary of revision {view.revision} goes."
    serving = _canary_serving(seen, facts)
    ready = ("True", "CanaryDraining", text) if serving else ("False", "ReplicasUnavailable", text)
    return ready, ("True", "CanaryDraining", view.decision.message or ""), facts.degraded


def _canary_running(seen: Seen, facts: Facts) -> Verdict:
    """A canary takes part of the traffic; Ready says what serves, the stable revision included."""
    view, counts = seen.canary, facts.counts
    keeps = _stable_keeps_serving(view, counts)
    text = f"{keeps}; revision {view.revision} is a canary ({counts.desired_ready} ready)."
    serving = _canary_serving(seen, facts)
    ready = ("True", "CanaryInProgress", text) if serving else ("False", "ReplicasUnavailable", text)
    progressing = ("True", view.decision.reason or "CanaryProgressing", view.decision.message or "")
    return ready, progressing, facts.degraded


def _canary_held(seen: Seen, facts: Facts) -> Verdict:
    """A rolled-back revision the spec still names: held off while the stable revision serves."""
    view = seen.canary
    why = view.decision.message or view.decision.reason or ""
    reason = view.decision.reason or "RolledBack"
    text = f"{_stable_keeps_serving(view, facts.counts)}; revision {view.revision} was rolled back: {why}"
    ready = ("True", "StableServing", text) if _canary_serving(seen, facts) else ("False", reason, text)
    problem = Problem(reason, f"Revision {view.revision} was rolled back and is not rolled out again until the "
                              f"spec names another revision: {why}")
    return ready, ("False", reason, why), problem


def _problem(seen: Seen, facts: Facts) -> Verdict:
    """The spec cannot be rolled out; what served before keeps serving."""
    problem, rollout = seen.problem, facts.rollout
    serving = facts.counts.other_ready or (rollout.available if rollout and not seen.children_changed else 0)
    keep = f" The previous revision keeps serving ({serving} ready)." if serving else ""
    ready = ("False", problem.reason, problem.message + keep)
    progressing = ("False", problem.reason, "The spec cannot be rolled out: " + problem.message)
    return ready, progressing, facts.degraded


def _no_deployment_yet(seen: Seen, facts: Facts) -> Verdict:
    ready = ("False", "Pending", "The predictor Deployment does not exist yet.")
    return ready, ("True", "Creating", f"Creating revision {_rev(seen)}."), facts.degraded


def _scaling(seen: Seen, facts: Facts) -> Verdict:
    """The rolled-out revision only changes its replica count."""
    rollout = facts.rollout
    if rollout.stuck:
        progressing = ("False", "ProgressDeadlineExceeded", rollout.stuck)
    else:
        progressing = _rolled_out(_rev(seen))
    return _scaling_ready(seen, facts), progressing, facts.degraded


def _scaling_ready(seen: Seen, facts: Facts) -> Condition:
    rollout, degraded, rev = facts.rollout, facts.degraded, _rev(seen)
    r = rollout.desired_replicas
    if r == 0:
        return SCALED_TO_ZERO
    if (rollout.available >= 1 and facts.counts.lost <= facts.max_unavailable
            and (degraded is None or degraded.reason == "Unschedulable")):
        # Replicas an autoscaler asked for that find no free GPU leave the serving ones
        # serving: Degraded says Unschedulable, Ready does not flap when load is high.
        return ("True", "Available", f"Revision {rev}: {rollout.ready}/{r} replicas ready.")
    if degraded:
        # A crash loop, an image that cannot be pulled: not capacity on its way.
        return ("False", degraded.reason, degraded.message)
    return ("False", "ReplicasUnavailable", f"Revision {rev}: {rollout.available}/{r} available.")


def _rolling_out(seen: Seen, facts: Facts) -> Verdict:
    """A revision rolls out, or rolled out and a replica of it is being replaced."""
    return _rolling_out_ready(seen, facts), _rolling_out_progressing(seen, facts), facts.degraded


def _summary(rollout: Rollout) -> str:
    r = rollout.desired_replicas
    return f"{rollout.updated}/{r} updated, {rollout.available}/{r} available"


def _rolling_out_ready(seen: Seen, facts: Facts) -> Condition:
    rollout, degraded, rev = facts.rollout, facts.degraded, _rev(seen)
    r = rollout.desired_replicas
    threshold = max(1, r - facts.max_unavailable)
    # Replicas of the newest ReplicaSet that are available, at least: the Deployment counts
    # every ReplicaSet's available pods together, so assume every older pod is among them.
    new_available = (max(0, rollout.available - (rollout.replicas - rollout.updated))
                     if rollout.observed and rollout.on_desired_revision else 0)
    if r == 0:
        return SCALED_TO_ZERO
    if rollout.complete or (new_available >= threshold and not degraded):
        return ("True", "Available", f"Revision {rev}: {new_available or rollout.ready}/{r} replicas ready.")
    if degraded:
        keep = (f" The previous revision keeps serving ({facts.counts.other_ready} ready)."
                if facts.counts.other_ready else "")
        return ("False", degraded.reason, degraded.message + keep)
    if rollout.finished:
        # Rolled out, but short of replicas for now: a pod being replaced.
        return ("False", "ReplicasUnavailable", f"Revision {rev}: {_summary(rollout)}.")
    return ("False", "RolloutInProgress", f"Revision {rev}: {_summary(rollout)}.")


def _rolling_out_progressing(seen: Seen, facts: Facts) -> Condition:
    rollout, degraded, rev = facts.rollout, facts.degraded, _rev(seen)
    if rollout.finished:
        return _rolled_out(rev)
    if rollout.stuck:
        return ("False", "ProgressDeadlineExceeded", rollout.stuck)
    if degraded and degraded.reason == "Unschedulable" and facts.counts.other_ready:
        # The deadlock other operators hit silently: the new pod waits for a GPU that only
        # frees when it is ready. The old revision serves meanwhile; say what is waited for.
        return ("True", "WaitingForCapacity",
                f"Revision {rev} waits for capacity ({_summary(rollout)}); the previous revision keeps "
                f"serving ({facts.counts.other_ready} ready). {degraded.message}")
    return ("True", "RollingOut", f"Revision {rev}: {_summary(rollout)}.")


# The rest of status.


def _conditions(seen: Seen, rollout: Optional[Rollout], verdict: Verdict) -> list[dict[str, Any]]:
    """Every condition; each keeps its lastTransitionTime while its status stays."""
    ready, progressing, degraded = verdict
    values = (
        ready,
        progressing,
        ("True", degraded.reason, degraded.message) if degraded else AS_EXPECTED,
        progressing if progressing[0] == "True" else ("False", "Reconciled", ""),
        _stalled(seen, rollout, degraded),
    )
    types = CONDITION_TYPES
    if seen.autoscaling is not None:
        types, values = types + (AUTOSCALING,), values + (seen.autoscaling,)
    old = {c.type: c for c in seen.isvc.status.conditions}
    conditions = []
    for ctype, (status, reason, message) in zip(types, values):
        before = old.get(ctype)
        since = before.last_transition_time if before and before.status.value == status else seen.now
        conditions.append({
            "type": ctype,
            "status": status,
            "reason": reason,
            "message": short(message),
            "lastTransitionTime": since,
            "observedGeneration": seen.isvc.metadata.generation,
        })
    return conditions


def _stalled(seen: Seen, rollout: Optional[Rollout], degraded: Optional[Problem]) -> Condition:
    if seen.canary is not None and seen.canary.decision.failed and not seen.problem:
        by = degraded
    else:
        by = seen.problem or (
            Problem("ProgressDeadlineExceeded", rollout.stuck) if rollout is not None and rollout.stuck else None
        )
    return ("True", by.reason, by.message) if by else AS_EXPECTED


def _revision(seen: Seen, rollout: Optional[Rollout]) -> Optional[str]:
    done = rollout is not None and rollout.complete or seen.canary is not None and seen.canary.decision.promoted
    return seen.desired_revision if done and not seen.problem else seen.isvc.status.revision


def _replicas(seen: Seen, rollout: Optional[Rollout]) -> tuple[int, int]:
    replicas, ready = (rollout.replicas, rollout.ready) if rollout else (0, 0)
    if seen.canary is not None and seen.canary.deployment is not None:
        extra = rollout_of(seen.canary.deployment, seen.desired_revision)
        replicas, ready = replicas + extra.replicas, ready + extra.ready
    return replicas, ready


def _operator_defaults(seen: Seen) -> Optional[dict[str, Any]]:
    # The defaults the desired revision was rendered with; while the spec cannot be rendered, the
    # ones recorded before stand.
    if seen.operator_defaults is not None:
        return dict(seen.operator_defaults)
    previous = seen.isvc.status.operator_defaults
    return previous.model_dump(by_alias=True, exclude_none=True) if previous is not None else None


def _startup_seconds(seen: Seen, revision: Optional[str]) -> dict[str, Any]:
    previous = dict(seen.isvc.status.startup_seconds)
    return startup.measure(previous, seen.pods, keep=(revision, seen.desired_revision))


def _canary_state(seen: Seen) -> Optional[dict[str, Any]]:
    if seen.canary is not None:
        return seen.canary.decision.state
    previous = seen.isvc.status.canary
    return previous.model_dump(by_alias=True, exclude_none=True, mode="json") if previous is not None else None
