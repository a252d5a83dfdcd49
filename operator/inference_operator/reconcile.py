"""One reconcile pass: desired children from the spec, the observed world, the writes in between,
and one status write at the end. Whatever event woke it, the pass is the same.
"""

from __future__ import annotations

import dataclasses
import datetime
import logging
from typing import Any, Callable, Mapping, Optional

import pydantic

from . import api, children, render, status
from .config import OperatorConfig
from .kube import ApiError, Kube
from .status import Event, Problem

log = logging.getLogger(__name__)

# Problems the user fixes in the spec: retrying before the spec changes cannot help.
PERMANENT = {"InvalidSpec", "ApplyRejected", "InvalidQuantity"}
# Problems outside the spec (another object, a missing claim, RBAC, quota, a webhook): looked at
# again after a while (the handlers' retry timer).
RETRYABLE = frozenset({"ChildConflict", "StorageNotFound", "ApplyFailed"})
# What the API server says about an object that can never be valid as built from this spec.
INVALID = {400, 422}


@dataclasses.dataclass(frozen=True)
class Outcome:
    applied: list[str]
    deleted: list[str]
    status_written: bool
    problem: Optional[Problem]

    @property
    def writes(self) -> int:
        return len(self.applied) + len(self.deleted) + int(self.status_written)

    @property
    def permanent(self) -> bool:
        return self.problem is not None and self.problem.reason in PERMANENT

    @property
    def retryable(self) -> bool:
        return self.problem is not None and self.problem.reason in RETRYABLE


def utcnow() -> str:
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _parse(body: Mapping[str, Any]) -> tuple[api.InferenceService, Optional[Problem]]:
    try:
        return api.parse(body), None
    except pydantic.ValidationError as exc:
        # The API server's schema normally stops this; we get here if it was bypassed or is stale.
        errors = "; ".join(
            f"spec.{'.'.join(str(p) for p in e['loc'][1:])}: {e['msg']}" if e["loc"][:1] == ("spec",)
            else f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}"
            for e in exc.errors()[:5]
        )
        shell = api.InferenceService.model_construct(
            metadata=api.ObjectMeta.model_validate(body["metadata"]),
            status=api.InferenceServiceStatus.model_validate(body.get("status") or {}),
        )
        return shell, Problem("InvalidSpec", f"the spec is invalid: {errors}")


def _check_storage(isvc: api.InferenceService, kube: Kube) -> Optional[Problem]:
    """A claim must exist before pods are made to wait on it. Remote stores are checked by the
    storage initializer, whose failure reaches status from the pod (a Secret it names, too:
    reading Secrets is a permission the operator does not take)."""
    source = render.storage_source(isvc.spec.model.storage_uri)
    if isinstance(source, render.PVCSource) and kube.get_pvc(isvc.namespace, source.claim) is None:
        return Problem(
            "StorageNotFound",
            f"PersistentVolumeClaim {source.claim} (from spec.model.storageUri) does not exist "
            f"in namespace {isvc.namespace}",
        )
    return None


def reconcile(
    body: Mapping[str, Any],
    kube: Kube,
    config: OperatorConfig,
    now: Callable[[], str] = utcnow,
) -> Outcome:
    """Bring the children and status of one InferenceService in line with its spec.

    Raises ApiError for transient API failures (the caller retries); every problem with the
    spec or its surroundings ends in status and an Event instead, with serving children untouched.
    """
    isvc, problem = _parse(body)
    desired: list[dict[str, Any]] = []
    if problem is None:
        try:
            desired = [children.stamp(c, isvc) for c in render.render(isvc, config)]
            problem = _check_storage(isvc, kube)
        except render.SpecError as exc:
            problem = Problem(exc.reason, exc.message)

    refs = children.possible_refs(isvc)
    live = {ref: kube.get(ref) for ref in refs}
    applied: list[str] = []
    deleted: list[str] = []
    if problem is None:
        plan = children.plan(isvc, desired, live)
        if plan.conflicts:
            problem = Problem("ChildConflict", "; ".join(c.message for c in plan.conflicts))
        else:
            for obj in plan.apply:
                ref = children.ref_of(obj)
                try:
                    live[ref] = kube.apply(obj)
                except ApiError as exc:
                    if exc.transient:
                        raise
                    if exc.status in INVALID:
                        # Refused as built from the spec (e.g. a malformed affinity): fix the spec.
                        problem = Problem("ApplyRejected", f"{ref} was rejected: {exc.message}")
                    else:
                        # Forbidden (RBAC, a webhook, quota), a namespace being deleted, ...
                        problem = Problem(
                            "ApplyFailed", f"{ref} could not be applied ({exc.status} {exc.reason}): {exc.message}"
                        )
                    break
                applied.append(str(ref))
            if problem is None:
                for ref in plan.delete:
                    kube.delete(ref, live[ref]["metadata"]["uid"])
                    live[ref] = None
                    deleted.append(str(ref))

    deployment_ref = refs[0]
    deployment = live.get(deployment_ref)
    if deployment is not None and children.controller_uid(deployment) != isvc.metadata.uid:
        deployment = None
    pods = kube.list_pods(isvc.namespace, render.selector_string(isvc.name)) if deployment else []
    desired_revision = render.revision_of(desired[0]) if desired and problem is None else None

    old_status = status.comparable(body.get("status") or {})
    new_status = status.compute(
        isvc,
        deployment=deployment,
        pods=pods,
        desired_revision=desired_revision,
        problem=problem,
        config=config,
        now=now(),
        children_changed=bool(applied or deleted),
    )
    written = False
    if status.comparable(new_status) != old_status:
        try:
            kube.patch_status(isvc.namespace, isvc.name, status.merge_patch(old_status, new_status))
            written = True
        except ApiError as exc:
            if exc.status != 404:  # deleted meanwhile: nothing left to report on
                raise

    emitted: list[Event] = []
    if applied or deleted:
        what = ", ".join([f"applied {a}" for a in applied] + [f"deleted {d}" for d in deleted])
        emitted.append(Event("Normal", "ChildrenUpdated", what))
    if written:
        emitted.extend(status.events(old_status, new_status))
    for event in emitted:
        try:
            kube.event(isvc, event)
        except ApiError as exc:  # an Event is a courtesy; it never fails the pass
            log.warning("could not post event %s for %s/%s: %s", event.reason, isvc.namespace, isvc.name, exc)

    return Outcome(applied=applied, deleted=deleted, status_written=written, problem=problem)
