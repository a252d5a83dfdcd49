"""The kopf layer: parse the trigger, delegate to ``reconcile``, translate the outcome. Nothing else.

Handlers are plain ``def``s: kopf runs them in a thread pool, so the blocking client is safe here.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
from typing import Any, Optional

import kopf

from . import api, metrics, render
from .config import OperatorConfig
from .kube import ApiError, RestKube
from .reconcile import RETRYABLE, Outcome, reconcile

log = logging.getLogger(__name__)

TRANSIENT_RETRY_SECONDS = 10
# Problems outside the spec (a missing claim, a name taken, RBAC) are looked at again this often.
# A timer does it, not kopf's TemporaryError: each of those retries writes kopf's progress
# annotations, and an unchanged InferenceService must see no writes.
RETRY_CHECK_SECONDS = 30
# A full pass now and then, in case a watch event was missed or a child pass failed.
RESYNC_SECONDS = 600
CHILD_LABELS = {"app.kubernetes.io/managed-by": render.MANAGED_BY}
CHILD_RESOURCES = (("apps", "v1", "deployments"), ("", "v1", "pods"), ("", "v1", "services"),
                   ("policy", "v1", "poddisruptionbudgets"))

_config = OperatorConfig.from_env()
_kube: RestKube | None = None


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
    # Only our children are streamed from the API server, not every pod of the cluster.
    selector = ",".join(f"{k}={v}" for k, v in CHILD_LABELS.items())
    for resource in CHILD_RESOURCES:
        settings.watching.label_selectors[resource] = selector
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


# ---- one pass at a time per InferenceService, triggers coalesced ------------------------------


@dataclasses.dataclass
class _Key:
    running: bool = False
    pending: bool = False
    waiters: int = 0


_keys: dict[tuple[str, str], _Key] = {}
_cond = threading.Condition()


def run_pass(namespace: str, name: str, trigger: str, wait: bool = True) -> Optional[Outcome]:
    """Reconcile one InferenceService; passes for the same object never overlap.

    A trigger that finds a pass running either waits for it (``wait``: the InferenceService's
    own handlers, which need the outcome) or asks it to go round once more and returns at once
    (child events and timers): a burst of pod events costs one or two passes, not one each, and
    no worker thread sits blocked.
    """
    key = (namespace, name)
    with _cond:
        state = _keys.setdefault(key, _Key())
        if state.running:
            if not wait:
                state.pending = True
                return None
            state.waiters += 1
            while state.running:
                _cond.wait()
            state.waiters -= 1
        state.running = True
    try:
        while True:
            with _cond:
                state.pending = False
            outcome = _one_pass(namespace, name, trigger)
            with _cond:
                if not state.pending:
                    return outcome
    finally:
        with _cond:
            state.running = False
            if not state.pending and not state.waiters:
                _keys.pop(key, None)
            _cond.notify_all()


def _one_pass(namespace: str, name: str, trigger: str) -> Optional[Outcome]:
    with metrics.RECONCILE_SECONDS.labels(trigger).time():
        try:
            # Read here, inside the pass: a trigger that waited must see the status the previous
            # pass wrote, or it would write that status (and its Events) again.
            body = kube().get_isvc(namespace, name)
            if body is None or body["metadata"].get("deletionTimestamp"):
                return None  # gone, or going: garbage collection takes the children
            outcome = reconcile(body, kube(), _config)
        except ApiError as exc:
            metrics.RECONCILES.labels(trigger, "error").inc()
            log.warning("reconcile of %s/%s failed: %s", namespace, name, exc)
            raise
        metrics.RECONCILES.labels(trigger, "problem" if outcome.problem else "ok").inc()
        metrics.WRITES.labels(namespace).inc(outcome.writes)
        return outcome


# ---- triggers -------------------------------------------------------------------------------


@kopf.on.resume(api.GROUP, api.VERSION, api.PLURAL)
@kopf.on.create(api.GROUP, api.VERSION, api.PLURAL)
@kopf.on.update(api.GROUP, api.VERSION, api.PLURAL)
def reconcile_inferenceservice(namespace: str, name: str, reason: str, **_: Any) -> None:
    try:
        outcome = run_pass(namespace, name, str(reason))
    except ApiError as exc:
        raise kopf.TemporaryError(str(exc), delay=TRANSIENT_RETRY_SECONDS) from exc
    if outcome is not None and outcome.permanent:
        # Status and a Warning Event already say why; kopf stops until the spec changes.
        raise kopf.PermanentError(outcome.problem.message)
    # Returning None keeps kopf from writing a handler result into status.


def _retryable(status: Any) -> bool:
    for condition in (status or {}).get("conditions") or []:
        if condition.get("type") == "Ready" and condition.get("reason") in RETRYABLE:
            return True
    return False


@kopf.timer(api.GROUP, api.VERSION, api.PLURAL, interval=RETRY_CHECK_SECONDS)
def recheck_external_problem(namespace: str, name: str, status: Any, **_: Any) -> None:
    """A missing claim may be created, a conflicting object deleted: look again, quietly."""
    if _retryable(status):
        _nudge(namespace, name, "retry")


@kopf.timer(api.GROUP, api.VERSION, api.PLURAL, interval=RESYNC_SECONDS, initial_delay=RESYNC_SECONDS)
def resync(namespace: str, name: str, **_: Any) -> None:
    _nudge(namespace, name, "resync")


@kopf.on.event("apps", "v1", "deployments", labels=CHILD_LABELS)
@kopf.on.event("", "v1", "pods", labels=CHILD_LABELS)
@kopf.on.event("", "v1", "services", labels=CHILD_LABELS)
@kopf.on.event("policy", "v1", "poddisruptionbudgets", labels=CHILD_LABELS)
def child_changed(body: kopf.Body, namespace: str, **_: Any) -> None:
    """A child moved: recompute its InferenceService (status, or a re-create if it was deleted)."""
    owner = (body.get("metadata", {}).get("labels") or {}).get(render.ISVC_LABEL)
    if owner:
        _nudge(namespace, owner, "child")


def _nudge(namespace: str, name: str, trigger: str) -> None:
    try:
        run_pass(namespace, name, trigger, wait=False)
    except ApiError as exc:
        # Timers and the next event look again; a nudge never fails its handler.
        log.warning("%s pass for %s/%s: %s", trigger, namespace, name, exc)
