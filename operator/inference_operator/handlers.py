"""The kopf layer: parse the trigger, delegate to ``reconcile``, translate the outcome. Nothing else.

Handlers are plain ``def``s: kopf runs them in a thread pool, so the blocking client is safe here.
"""

from __future__ import annotations

import copy
import logging
import threading
from collections import defaultdict
from typing import Any

import kopf

from . import api, metrics, render
from .config import OperatorConfig
from .kube import ApiError, RestKube
from .reconcile import reconcile

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


def run_pass(body: dict[str, Any], trigger: str) -> Any:
    key = (body["metadata"].get("namespace", "default"), body["metadata"]["name"])
    with _lock(key), metrics.RECONCILE_SECONDS.labels(trigger).time():
        try:
            outcome = reconcile(body, kube(), _config)
        except ApiError as exc:
            metrics.RECONCILES.labels(trigger, "error").inc()
            log.warning("reconcile of %s/%s failed: %s", *key, exc)
            raise
        metrics.RECONCILES.labels(trigger, "problem" if outcome.problem else "ok").inc()
        metrics.WRITES.inc(outcome.writes)
        return outcome


@kopf.on.resume(api.GROUP, api.VERSION, api.PLURAL)
@kopf.on.create(api.GROUP, api.VERSION, api.PLURAL)
@kopf.on.update(api.GROUP, api.VERSION, api.PLURAL)
def reconcile_inferenceservice(body: kopf.Body, reason: str, **_: Any) -> None:
    try:
        outcome = run_pass(copy.deepcopy(dict(body)), str(reason))
    except ApiError as exc:
        raise kopf.TemporaryError(str(exc), delay=TRANSIENT_RETRY_SECONDS) from exc
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
        parent = kube().get_isvc(namespace, owner)
        if parent is None or parent["metadata"].get("deletionTimestamp"):
            return
        run_pass(parent, "child")
    except ApiError as exc:
        # The InferenceService's own handler retries; a child event is only a nudge.
        log.warning("child event for %s/%s: %s", namespace, owner, exc)
