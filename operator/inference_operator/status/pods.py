"""What the pods say: a problem waiting will not fix, and how many of them serve which revision."""

from __future__ import annotations

import dataclasses
import re
from typing import Any, Optional

from inference_operator import naming
from inference_operator.observed import condition, pod_ready
from inference_operator.problems import Problem
from inference_operator.status.messages import short

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
            return Problem(reason, short(f"pod {pod['metadata']['name']}: the model could not be fetched: {message}"))
    return None


def _unschedulable(pod: dict[str, Any]) -> Optional[Problem]:
    sched = condition(pod, "PodScheduled")
    if sched and sched.get("status") == "False" and sched.get("reason") == "Unschedulable":
        return Problem(
            "Unschedulable", short(f"pod {pod['metadata']['name']} cannot be scheduled: {sched.get('message', '')}")
        )
    return None


def _failing_container(pod: dict[str, Any]) -> Optional[Problem]:
    st = pod.get("status") or {}
    statuses = (st.get("initContainerStatuses") or []) + (st.get("containerStatuses") or [])
    for cs in statuses:
        waiting = (cs.get("state") or {}).get("waiting") or {}
        if waiting.get("reason") in FAILING_WAIT_REASONS:
            return Problem(
                waiting["reason"],
                short(
                    f"pod {pod['metadata']['name']} container {cs.get('name')}: {waiting['reason']}: "
                    f"{waiting.get('message', '')}".rstrip(": ")
                ),
            )
    return None


def pod_problem(pods: list[dict[str, Any]]) -> Optional[Problem]:
    """The first reason a pod cannot serve that waiting will not fix, in a stable order."""
    # A rollout without surge frees a GPU only when the old pod is gone: until then the new pod
    # is Unschedulable by design, not in trouble.
    freeing = any(p["metadata"].get("deletionTimestamp") for p in pods)
    for pod in sorted(pods, key=lambda p: p["metadata"]["name"]):
        if pod["metadata"].get("deletionTimestamp"):
            continue
        unschedulable = None if freeing else _unschedulable(pod)
        found = unschedulable or _storage_initializer_failure(pod) or _failing_container(pod)
        if found:
            return found
    return None


@dataclasses.dataclass(frozen=True)
class PodCounts:
    desired_ready: int  # ready pods of the desired revision
    other_ready: int  # ready pods of any other revision: the previous one, still serving
    other_revisions: int  # pods (ready or not) of other revisions
    lost: int  # pods of the desired revision that served (or started) and are no longer ready


def was_ready(pod: dict[str, Any]) -> bool:
    """A replica that served and no longer does (capacity lost), as opposed to one still starting
    (scheduling, pulling, loading its model: capacity on its way).

    A pod's Ready condition turns False when it starts, before its containers run; it turns False
    again later only if it had been True. So a Ready=False transition after the containers started
    means it was ready once. A restarted container counts as lost too.
    """
    statuses = (pod.get("status") or {}).get("containerStatuses") or []
    if any(cs.get("restartCount", 0) > 0 for cs in statuses):
        return True
    ready = condition(pod, "Ready") or {}
    since = ready.get("lastTransitionTime")
    started = [((cs.get("state") or {}).get("running") or {}).get("startedAt") for cs in statuses]
    started = [t for t in started if t]
    # RFC 3339 UTC timestamps of the same form compare as strings.
    return bool(since and started and since > max(started))


def pod_counts(pods: list[dict[str, Any]], desired_revision: Optional[str]) -> PodCounts:
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
        if mine and was_ready(pod):
            lost += 1
    return PodCounts(desired_ready, other_ready, other + other_ready, lost)
