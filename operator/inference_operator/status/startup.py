"""How long a revision's pods take to serve: from scheduling to Ready (the image pull and, on GPUs,
minutes of model load), measured from the pods and kept in status.startupSeconds. Pure.

A pod counts once it is Ready, if it never restarted (a restart's Ready time says nothing of a
load). The time runs from its PodScheduled transition (a pod waiting for a free GPU is not
loading), or from its creation when that is missing. A revision is measured once, by the first
pass that sees pods of it Ready (the longest of them): later, a pod's Ready time may be that of
a readiness flap under load, hours after its load, which must not pin the autoscaler's scale-up
window at its maximum. Only the revisions that still matter are kept (those with pods, the
rolled-out one, the desired one), so the map stays small.
"""

from __future__ import annotations

import datetime
from typing import Any, Iterable, Mapping, Optional

from inference_operator import naming
from inference_operator.observed import condition


def _time(text: Optional[str]) -> Optional[float]:
    if not text:
        return None
    try:
        return datetime.datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ").replace(
            tzinfo=datetime.timezone.utc).timestamp()
    except ValueError:
        return None


def pod_startup(pod: Mapping[str, Any]) -> Optional[int]:
    """Seconds from this pod's scheduling (else creation) to Ready; None until it is Ready, or when
    a container restarted."""
    meta = pod.get("metadata") or {}
    if meta.get("deletionTimestamp"):
        return None
    ready = condition(pod, "Ready") or {}
    if ready.get("status") != "True":
        return None
    statuses = (pod.get("status") or {}).get("containerStatuses") or []
    if any(cs.get("restartCount", 0) > 0 for cs in statuses):
        return None
    scheduled = condition(pod, "PodScheduled") or {}
    start = _time(scheduled.get("lastTransitionTime") if scheduled.get("status") == "True" else None)
    start = start if start is not None else _time(meta.get("creationTimestamp"))
    end = _time(ready.get("lastTransitionTime"))
    if start is None or end is None or end < start:
        return None
    return int(round(end - start))


def measure(previous: Mapping[str, int], pods: Iterable[Mapping[str, Any]],
            keep: Iterable[Optional[str]]) -> dict[str, int]:
    """status.startupSeconds after this pass: per revision, what ``previous`` says, else the longest
    startup of its Ready pods now; of the revisions that run pods or are named in ``keep``."""
    measured: dict[str, int] = {}
    present: set[str] = set()
    for pod in pods:
        revision = ((pod.get("metadata") or {}).get("labels") or {}).get(naming.REVISION_LABEL)
        if not revision:
            continue
        present.add(revision)
        seconds = pod_startup(pod)
        if seconds is not None:
            measured[revision] = max(seconds, measured.get(revision, 0))
    wanted = present | {r for r in keep if r}
    result = {}
    for revision in sorted(wanted):
        value = previous.get(revision, measured.get(revision))
        if value is not None:
            result[revision] = value
    return result
