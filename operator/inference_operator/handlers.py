"""The kopf layer: parse the trigger, delegate to ``reconcile``, translate the outcome. Nothing else.

Handlers are plain ``def``s: kopf runs them in a thread pool, so the blocking client is safe here.
"""

from __future__ import annotations

import logging
import threading
from collections import defaultdict
from typing import Any, Optional

import kopf

from . import api, metrics, render
from .config import OperatorConfig
from .kube import ApiError, RestKube
from .reconcile import Outcome, reconcile

log = logging.getLogger(__name__)

TRANSIENT_RETRY_SECONDS = 10
CHILD_LABELS = {"app.kubernetes.io/managed-by": render.MANAGED_BY}

_config = OperatorConfig.from_env()
_kube: RestKube | None = None
# Two triggers for one InferenceService (its own event and a child's) must not interleave.
_locks: defaultdict[tuple[str, str], threading.Lock] = defaultdict(threading.Lock)
_locks_guard = threading.Lock()


def _lock(key: tuple[str, str]) -> threading.Lock:
    with _locks_guard:
        return _locks[key]


def kube() -> RestKube:
    global _kube
    if _kube is None:
        _kube = RestKube()
    return _kube


@kopf.on.startup()
def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
    # Kopf's bookkeeping goes to our own annotations; status stays ours and schema-strict.
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=api.GROUP)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=api.GROUP, key="last-handled-configuration"
    )
    # Explicit watch timeouts: a silently stalled watch is kopf's most reported failure.
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330
    settings.watching.connect_timeout = 10
    # Events are ours alone (on transitions); kopf would post one per handler run.
    settings.posting.enabled = False
    settings.execution.max_workers = 8
    kubernetes_login()


def kubernetes_login() -> None:
    import kubernetes

    try:
        kubernetes.config.load_incluster_config()
    except kubernetes.config.ConfigException:
        kubernetes.config.load_kube_config()


def run_pass(namespace: str, name: str, trigger: str) -> Optional[Outcome]:
    """One reconcile pass, serialized per InferenceService.

    The body is read under the lock: a trigger that waited for it must see the status the
    previous pass wrote, or it would write that status (and its Events) again.
    """
    with _lock((namespace, name)), metrics.RECONCILE_SECONDS.labels(trigger).time():
        try:
            body = kube().get_isvc(namespace, name)
            if body is None or body["metadata"].get("deletionTimestamp"):
                return None  # gone, or going: garbage collection takes the children
            outcome = reconcile(body, kube(), _config)
        except ApiError as exc:
            metrics.RECONCILES.labels(trigger, "error").inc()
            log.warning("reconcile of %s/%s failed: %s", namespace, name, exc)
            raise
        metrics.RECONCILES.labels(trigger, "problem" if outcome.problem else "ok").inc()
        metrics.WRITES.inc(outcome.writes)
        return outcome


@kopf.on.resume(api.GROUP, api.VERSION, api.PLURAL)
@kopf.on.create(api.GROUP, api.VERSION, api.PLURAL)
@kopf.on.update(api.GROUP, api.VERSION, api.PLURAL)
def reconcile_inferenceservice(namespace: str, name: str, reason: str, **_: Any) -> None:
    try:
        outcome = run_pass(namespace, name, str(reason))
    except ApiError as exc:
        raise kopf.TemporaryError(str(exc), delay=TRANSIENT_RETRY_SECONDS) from exc
    if outcome is None:
        return
    if outcome.permanent:
        raise kopf.PermanentError(outcome.problem.message)
    if outcome.retry_after:
        raise kopf.TemporaryError(outcome.problem.message, delay=outcome.retry_after)
    # Returning None keeps kopf from writing a handler result into status.


@kopf.on.event("apps", "v1", "deployments", labels=CHILD_LABELS)
@kopf.on.event("", "v1", "pods", labels=CHILD_LABELS)
@kopf.on.event("", "v1", "services", labels=CHILD_LABELS)
@kopf.on.event("policy", "v1", "poddisruptionbudgets", labels=CHILD_LABELS)
def child_changed(body: kopf.Body, namespace: str, **_: Any) -> None:
    """A child moved: recompute its InferenceService (status, or a re-create if it was deleted)."""
    owner = (body.get("metadata", {}).get("labels") or {}).get(render.ISVC_LABEL)
    if not owner:
        return
    try:
        run_pass(namespace, owner, "child")
    except ApiError as exc:
        # The InferenceService's own handler retries; a child event is only a nudge.
        log.warning("child event for %s/%s: %s", namespace, owner, exc)
