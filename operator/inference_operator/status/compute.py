"""Status, computed from the InferenceService and what is observed of its children. Pure.

Five conditions, each with observedGeneration. Reconciling and Stalled follow kstatus
(Reconciling mirrors a Progressing rollout; Stalled is a problem a person must fix). The others:
- Ready: the desired revision is fully rolled out and every replica is available.
- Progressing: a rollout of the desired revision is under way (False once complete or stuck).
- Degraded: something needs a human: a spec the operator cannot serve, pods that cannot be
  scheduled, crash or cannot pull their image, pods the ReplicaSet cannot create, a stuck rollout.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any, Optional

from inference_operator import api, naming
from inference_operator.status import startup
from inference_operator.observed import condition as _cond, pod_ready
from inference_operator.problems import Event, Problem
from inference_operator.config import OperatorConfig

READY, PROGRESSING, DEGRADED = "Ready", "Progressing", "Degraded"
# kstatus's pair (Flux, kpt, cli-utils): Reconciling = in progress, Stalled = failed.
RECONCILING, STALLED = "Reconciling", "Stalled"
CONDITION_TYPES = (READY, PROGRESSING, DEGRADED, RECONCILING, STALLED)
# With spec.autoscaling only: whether the autoscaler exists and can scale (autoscaling.py).
AUTOSCALING = "Autoscaling"

# Container waiting reasons that do not resolve by waiting.
FAILING_WAIT_REASONS = {
    "CrashLoopBackOff",
    "ImagePullBackOff",
    "ErrImagePull",
    "InvalidImageName",
    "CreateContainerConfigError",
    "CreateContainerError",
    "RunContainerError",
}
MAX_MESSAGE = 1024


def _short(message: str) -> str:
    message = " ".join(message.split())
    return message if len(message) <= MAX_MESSAGE else message[: MAX_MESSAGE - 3] + "..."


_REASON_LINE = re.compile(r"^([A-Z][A-Za-z]+): (.+)$")


def fetch_failure(text: str) -> tuple[str, str]:
    """(reason, message) from the storage initializer's termination message: its one line, or,
    when Kubernetes fell back to the log, the last 'fetch-model failed:' line of it."""
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    marked = [line.split("fetch-model failed: ", 1)[1] for line in lines if "fetch-model failed: " in line]
    line = marked[-1] if marked else (lines[-1] if lines else "")
    m = _REASON_LINE.match(line)
    return (m.group(1), m.group(2)) if m else ("ModelFetchFailed", line or "the storage initializer failed")


def _storage_initializer_failure(pod: dict[str, Any]) -> Optional[Problem]:
    for cs in (pod.get("status") or {}).get("initContainerStatuses") or []:
        if cs.get("name") != naming.STORAGE_INITIALIZER:
            continue
        term = (cs.get("state") or {}).get("terminated") or (cs.get("lastState") or {}).get("terminated")
        if term and term.get("exitCode", 0) != 0:
            reason, message = fetch_failure(term.get("message") or term.get("reason") or "")
            return Problem(reason, _short(f"pod {pod['metadata']['name']}: the model could not be fetched: {message}"))
    return None


def pod_problem(pods: list[dict[str, Any]]) -> Optional[Problem]:
    """The first reason a pod cannot serve that waiting will not fix, in a stable order."""
    # A rollout without surge frees a GPU only when the old pod is gone: until then the new pod
    # is Unschedulable by design, not in trouble.
    freeing = any(p["metadata"].get("deletionTimestamp") for p in pods)
    for pod in sorted(pods, key=lambda p: p["metadata"]["name"]):
        meta, st = pod["metadata"], pod.get("status") or {}
        if meta.get("deletionTimestamp"):
            continue
        sched = _cond(pod, "PodScheduled")
        if sched and sched.get("status") == "False" and sched.get("reason") == "Unschedulable" and not freeing:
            return Problem(
                "Unschedulable", _short(f"pod {meta['name']} cannot be scheduled: {sched.get('message', '')}")
            )
        fetch = _storage_initializer_failure(pod)
        if fetch:
            return fetch
        statuses = (st.get("initContainerStatuses") or []) + (st.get("containerStatuses") or [])
        for cs in statuses:
            waiting = (cs.get("state") or {}).get("waiting") or {}
            if waiting.get("reason") in FAILING_WAIT_REASONS:
                return Problem(
                    waiting["reason"],
                    _short(
                        f"pod {meta['name']} container {cs.get('name')}: {waiting['reason']}: "
                        f"{waiting.get('message', '')}".rstrip(": ")
                    ),
                )
    return None


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
    progressing = _cond(deployment, "Progressing") or {}
    failure = _cond(deployment, "ReplicaFailure")
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
            _short(progressing.get("message", ""))
            if progressing.get("status") == "False"
            and progressing.get("reason") == "ProgressDeadlineExceeded"
            else None
        ),
        replica_failure=(
            _short(failure.get("message", "")) if failure and failure.get("status") == "True" else None
        ),
    )


@dataclasses.dataclass(frozen=True)
class PodCounts:
    desired_ready: int  # ready pods of the desired revision
    other_ready: int  # ready pods of any other revision: the previous one, still serving
    other_revisions: int  # pods (ready or not) of other revisions
    lost: int  # pods of the desired revision that served (or started) and are no longer ready


@dataclasses.dataclass(frozen=True)
class CanaryView:
    """What status says of a canary (canary.py decides it): running, or a rolled-back revision the
    spec still names (held off: the stable revision serves), and status.canary itself."""

    state: Optional[dict[str, Any]]
    active: bool = False
    held: bool = False
    reason: Optional[str] = None
    message: Optional[str] = None
    revision: Optional[str] = None  # under test, or rolled back
    stable_revision: Optional[str] = None
    # The canary's Deployment while it runs: its replicas count in status.replicas.
    deployment: Optional[dict[str, Any]] = None
    promoted: bool = False  # this pass finished a promotion: the desired revision is rolled out
    draining: bool = False  # a canary goes away (a revert, its spec removed) as the stable comes back


def _was_ready(pod: dict[str, Any]) -> bool:
    """A replica that served and no longer does (capacity lost), as opposed to one still starting
    (scheduling, pulling, loading its model: capacity on its way).

    A pod's Ready condition turns False when it starts, before its containers run; it turns False
    again later only if it had been True. So a Ready=False transition after the containers started
    means it was ready once. A restarted container counts as lost too.
    """
    statuses = (pod.get("status") or {}).get("containerStatuses") or []
    if any(cs.get("restartCount", 0) > 0 for cs in statuses):
        return True
    ready = _cond(pod, "Ready") or {}
    since = ready.get("lastTransitionTime")
    started = [((cs.get("state") or {}).get("running") or {}).get("startedAt") for cs in statuses]
    started = [t for t in started if t]
    # RFC 3339 UTC timestamps of the same form compare as strings.
    return bool(since and started and since > max(started))


def _pod_counts(pods: list[dict[str, Any]], desired_revision: Optional[str]) -> PodCounts:
    desired_ready = other_ready = other = lost = 0
    for pod in pods:
        meta = pod.get("metadata") or {}
        if meta.get("deletionTimestamp"):
            continue
        mine = (meta.get("labels") or {}).get(naming.REVISION_LABEL) == desired_revision is not None
        if pod_ready(pod):
            desired_ready += mine
            other_ready += not mine
            continue
        other += not mine
        if mine and _was_ready(pod):
            lost += 1
    return PodCounts(desired_ready, other_ready, other + other_ready, lost)


def _max_unavailable(isvc: api.InferenceService) -> int:
    try:
        return isvc.spec.rollout.max_unavailable
    except AttributeError:  # a spec that did not parse
        return 0


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


def compute(
    isvc: api.InferenceService,
    *,
    deployment: Optional[dict[str, Any]],
    pods: list[dict[str, Any]],
    desired_revision: Optional[str],
    problem: Optional[Problem],
    config: OperatorConfig,
    now: str,
    children_changed: bool = False,
    operator_defaults: Optional[dict[str, str]] = None,
    canary: Optional[CanaryView] = None,
    autoscaling: Optional[tuple[str, str, str]] = None,
    autoscaler: Optional[dict[str, Any]] = None,
) -> dict[str, Any]:
    """The status the InferenceService should have, as the JSON the API server stores.
    ``autoscaling`` is the Autoscaling condition (status, reason, message), ``autoscaler`` what
    status.autoscaler says (both None without spec.autoscaling)."""
    generation = isvc.metadata.generation
    previous = isvc.status
    rollout = rollout_of(deployment, desired_revision) if deployment is not None else None
    degraded = _degraded(problem, rollout, pods)
    rev = desired_revision or "?"

    counts = _pod_counts(pods, desired_revision)
    # A revision already fully rolled out that only changes its replica count is scaling, not
    # rolling out: no RollingOut, no Progressing, and Ready stays True while new replicas start.
    scaling = (
        rollout is not None and desired_revision is not None and previous.revision == desired_revision
        and rollout.on_desired_revision and counts.other_revisions == 0
        # Every pod is of the Deployment's newest ReplicaSet: nobody's template change is rolling
        # (a `kubectl set image` keeps our revision label; this tells its pods apart).
        and rollout.updated == rollout.replicas
    )
    max_unavailable = _max_unavailable(isvc)
    if canary is not None and (canary.active or canary.held or canary.promoted or canary.draining) and not problem:
        ready, progressing, degraded = _canary_conditions(canary, counts, degraded, isvc.spec.target_replicas,
                                                          max_unavailable)
    elif problem:
        serving = counts.other_ready or (rollout.available if rollout and not children_changed else 0)
        keep = f" The previous revision keeps serving ({serving} ready)." if serving else ""
        ready = ("False", problem.reason, problem.message + keep)
        progressing = ("False", problem.reason, "The spec cannot be rolled out: " + problem.message)
    elif rollout is None:
        ready = ("False", "Pending", "The predictor Deployment does not exist yet.")
        progressing = ("True", "Creating", f"Creating revision {rev}.")
    elif scaling:
        r = rollout.desired_replicas
        if r == 0:
            ready = ("False", "ScaledToZero", "spec.replicas is 0: no replica is serving.")
        elif (rollout.available >= 1 and counts.lost <= max_unavailable
              and (degraded is None or degraded.reason == "Unschedulable")):
            # Replicas an autoscaler asked for that find no free GPU leave the serving ones
            # serving: Degraded says Unschedulable, Ready does not flap when load is high.
            ready = ("True", "Available", f"Revision {rev}: {rollout.ready}/{r} replicas ready.")
        elif degraded:
            # A crash loop, an image that cannot be pulled: not capacity on its way.
            ready = ("False", degraded.reason, degraded.message)
        else:
            ready = ("False", "ReplicasUnavailable", f"Revision {rev}: {rollout.available}/{r} available.")
        if rollout.stuck:
            progressing = ("False", "ProgressDeadlineExceeded", rollout.stuck)
        else:
            progressing = ("False", "RolloutComplete", f"Revision {rev} is rolled out.")
    else:
        r = rollout.desired_replicas
        summary = f"{rollout.updated}/{r} updated, {rollout.available}/{r} available"
        threshold = max(1, r - max_unavailable)
        # Replicas of the newest ReplicaSet that are available, at least: the Deployment counts
        # every ReplicaSet's available pods together, so assume every older pod is among them.
        new_available = (max(0, rollout.available - (rollout.replicas - rollout.updated))
                         if rollout.observed and rollout.on_desired_revision else 0)
        if r == 0:
            ready = ("False", "ScaledToZero", "spec.replicas is 0: no replica is serving.")
        elif rollout.complete or (new_available >= threshold and not degraded):
            ready = ("True", "Available", f"Revision {rev}: {new_available or rollout.ready}/{r} replicas ready.")
        elif degraded:
            keep = (f" The previous revision keeps serving ({counts.other_ready} ready)."
                    if counts.other_ready else "")
            ready = ("False", degraded.reason, degraded.message + keep)
        elif rollout.finished:
            # Rolled out, but short of replicas for now: a pod being replaced.
            ready = ("False", "ReplicasUnavailable", f"Revision {rev}: {summary}.")
        else:
            ready = ("False", "RolloutInProgress", f"Revision {rev}: {summary}.")
        if rollout.finished:
            progressing = ("False", "RolloutComplete", f"Revision {rev} is rolled out.")
        elif rollout.stuck:
            progressing = ("False", "ProgressDeadlineExceeded", rollout.stuck)
        elif degraded and degraded.reason == "Unschedulable" and counts.other_ready:
            # The deadlock other operators hit silently: the new pod waits for a GPU that only
            # frees when it is ready. The old revision serves meanwhile; say what is waited for.
            progressing = ("True", "WaitingForCapacity",
                           f"Revision {rev} waits for capacity ({summary}); the previous revision keeps "
                           f"serving ({counts.other_ready} ready). {degraded.message}")
        else:
            progressing = ("True", "RollingOut", f"Revision {rev}: {summary}.")
    degraded_cond = (
        ("True", degraded.reason, degraded.message) if degraded else ("False", "AsExpected", "")
    )
    reconciling = progressing if progressing[0] == "True" else ("False", "Reconciled", "")
    stalled_by = problem or (
        Problem("ProgressDeadlineExceeded", rollout.stuck) if rollout is not None and rollout.stuck else None
    )
    if canary is not None and canary.held and not problem:
        stalled_by = degraded
    stalled = ("True", stalled_by.reason, stalled_by.message) if stalled_by else ("False", "AsExpected", "")

    old = {c.type: c for c in previous.conditions}
    conditions = []
    values = (ready, progressing, degraded_cond, reconciling, stalled)
    types = CONDITION_TYPES
    if autoscaling is not None:
        types, values = types + (AUTOSCALING,), values + (autoscaling,)
    for ctype, (status, reason, message) in zip(types, values):
        before = old.get(ctype)
        since = before.last_transition_time if before and before.status.value == status else now
        conditions.append(
            {
                "type": ctype,
                "status": status,
                "reason": reason,
                "message": _short(message),
                "lastTransitionTime": since,
                "observedGeneration": generation,
            }
        )

    revision = previous.revision
    if (rollout is not None and rollout.complete or canary is not None and canary.promoted) and not problem:
        revision = desired_revision
    replicas, ready_replicas = (rollout.replicas, rollout.ready) if rollout else (0, 0)
    if canary is not None and canary.deployment is not None:
        extra = rollout_of(canary.deployment, desired_revision)
        replicas, ready_replicas = replicas + extra.replicas, ready_replicas + extra.ready
    result: dict[str, Any] = {
        "observedGeneration": generation,
        "conditions": conditions,
        "selector": naming.selector_string(isvc.name),
        "replicas": replicas,
        "readyReplicas": ready_replicas,
    }
    if deployment is not None:
        result["url"] = naming.url(isvc, config)
    if revision:
        result["revision"] = revision
    # The defaults the desired revision was rendered with; while the spec cannot be rendered, the
    # ones recorded before stand.
    if operator_defaults is not None:
        result["operatorDefaults"] = dict(operator_defaults)
    elif previous.operator_defaults is not None:
        result["operatorDefaults"] = previous.operator_defaults.model_dump(by_alias=True, exclude_none=True)
    measured = startup.measure(dict(previous.startup_seconds), pods, keep=(revision, desired_revision))
    if measured:
        result["startupSeconds"] = measured
    if autoscaler:
        result["autoscaler"] = autoscaler
    if canary is not None and canary.state is not None:
        result["canary"] = canary.state
    elif canary is None and previous.canary is not None:
        result["canary"] = previous.canary.model_dump(by_alias=True, exclude_none=True, mode="json")
    return result


def _canary_conditions(view: CanaryView, counts: PodCounts, degraded: Optional[Problem], replicas: int,
                       max_unavailable: int) -> tuple:
    """Ready, Progressing and Degraded while a canary runs, in the pass that promotes it, or while
    a rolled-back revision is held off. Ready describes what serves: True while enough pods of
    either revision are ready (the stable revision keeps serving, and the message says so)."""
    floor = max(1, replicas - max_unavailable) if replicas else 0
    serving = counts.desired_ready + counts.other_ready
    if view.promoted:
        ok = counts.desired_ready >= floor
        ready = ("True" if ok else "False", "Available" if ok else "ReplicasUnavailable",
                 f"Revision {view.revision}: promoted; {counts.desired_ready}/{replicas} replicas ready.")
        return ready, ("False", "RolloutComplete", f"Revision {view.revision} is rolled out (promoted)."), degraded
    keeps = f"The stable revision {view.stable_revision} keeps serving ({counts.other_ready} ready)"
    if view.draining:
        text = (f"{counts.desired_ready + counts.other_ready} ready while the canary of revision {view.revision} "
                "goes.")
        ready = ("True", "CanaryDraining", text) if serving >= floor else ("False", "ReplicasUnavailable", text)
        return ready, ("True", "CanaryDraining", view.message or ""), degraded
    if view.active:
        text = f"{keeps}; revision {view.revision} is a canary ({counts.desired_ready} ready)."
        ready = ("True", "CanaryInProgress", text) if serving >= floor else ("False", "ReplicasUnavailable", text)
        progressing = ("True", view.reason or "CanaryProgressing", view.message or "")
        return ready, progressing, degraded
    why = view.message or view.reason or ""
    reason = view.reason or "RolledBack"
    text = f"{keeps}; revision {view.revision} was rolled back: {why}"
    ready = ("True", "StableServing", text) if serving >= floor else ("False", reason, text)
    problem = Problem(reason, f"Revision {view.revision} was rolled back and is not rolled out again until the "
                              f"spec names another revision: {why}")
    return ready, ("False", reason, why), problem


def comparable(status: dict[str, Any]) -> dict[str, Any]:
    """A status as the API server would store it, for 'did anything change' checks."""
    return api.InferenceServiceStatus.model_validate(status or {}).model_dump(
        by_alias=True, exclude_none=True, mode="json"
    )


def merge_patch(old: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    """The JSON merge patch (RFC 7386) from old to new status. The API server merges objects
    recursively, so a key that is gone, at any depth (a canary's readyAt, its failedRevision),
    must be sent as null, or it stays (and a pass would act on it, or write again forever)."""
    patch: dict[str, Any] = {}
    for key, value in new.items():
        before = old.get(key)
        if isinstance(value, dict) and isinstance(before, dict):
            patch[key] = merge_patch(before, value)
        else:
            patch[key] = value
    for key in old:
        if key not in new:
            patch[key] = None
    return patch


def events(old: dict[str, Any], new: dict[str, Any]) -> list[Event]:
    """Events for condition transitions; an unchanged condition emits nothing."""

    def by_type(s: dict[str, Any]) -> dict[str, dict[str, Any]]:
        return {c["type"]: c for c in (s or {}).get("conditions") or []}

    before, after = by_type(old), by_type(new)
    result = []
    for ctype in CONDITION_TYPES + (AUTOSCALING,):
        a, b = after.get(ctype), before.get(ctype)
        if a is None or (b and (b["status"], b["reason"]) == (a["status"], a["reason"])):
            continue
        if ctype == READY and a["status"] == "True":
            if not b or b["status"] != "True":  # becoming ready; not a new reason to stay so
                result.append(Event("Normal", "Ready", a["message"]))
        elif ctype == DEGRADED and a["status"] == "True":
            result.append(Event("Warning", a["reason"], a["message"]))
        elif ctype == PROGRESSING and a["status"] == "True" and a["reason"] == "RollingOut":
            result.append(Event("Normal", "RollingOut", a["message"]))
        elif ctype == AUTOSCALING and a["status"] == "False":
            result.append(Event("Warning", a["reason"], a["message"]))
    return result
