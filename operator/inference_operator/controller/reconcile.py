"""One reconcile pass: desired children from the spec, the observed world, the writes in between,
and one status write at the end. Whatever event woke it, the pass is the same.
"""

from __future__ import annotations

import dataclasses
import datetime
import logging
import re
from typing import Any, Callable, Mapping, Optional

import pydantic

from inference_operator.controller import analyzer
from inference_operator import kinds
from inference_operator import api, naming
from inference_operator.desired import autoscaling, children, defaults, migration, render
from inference_operator.rollout import canary, plan as rollout
from inference_operator.status import conditions, events, patch
from inference_operator.controller import kube as kube_errors
from inference_operator.config import OperatorConfig
from inference_operator.controller.render_cache import RenderCache
from inference_operator.kinds import Ref
from inference_operator.controller.kube import ApiError, Kube
from inference_operator.observed import Observed
from inference_operator.problems import Event, Problem

log = logging.getLogger(__name__)

# Problems the user fixes in the spec: retrying before the spec changes cannot help.
PERMANENT = {"InvalidSpec", "ApplyRejected", "InvalidQuantity"}
# Problems outside the spec (another object, a missing claim, RBAC, quota, a webhook, an API server
# that keeps failing): the pass asks to run again after SLOW_RETRY_SECONDS, and writes nothing then
# unless something changed. A claim that appears also wakes its InferenceServices at once.
RETRYABLE = frozenset({"ChildConflict", "StorageNotFound", "Forbidden", "GatewayAPINotInstalled"})
SLOW_RETRY_SECONDS = 60.0
# A transient API error is retried quietly (with backoff) this many times in a row; then the pass
# reports it in status, so a person sees why nothing moves, and is still retried with backoff.
REPORT_AFTER_FAILURES = 5


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


def _check_storage(isvc: api.InferenceService, observed: Observed) -> Optional[Problem]:
    """A claim must exist before pods are made to wait on it. Remote stores are checked by the
    storage initializer, whose failure reaches status from the pod (a Secret it names, too:
    reading Secrets is a permission the operator does not take)."""
    source = render.storage_source(isvc.spec.model.storage_uri)
    if isinstance(source, render.PVCSource) and source.claim not in observed.claims:
        return Problem(
            "StorageNotFound",
            f"PersistentVolumeClaim {source.claim} (from spec.model.storageUri) does not exist "
            f"in namespace {isvc.namespace}",
        )
    return None


@dataclasses.dataclass(frozen=True)
class Desired:
    """What the InferenceService should have, decided from it and the snapshot alone."""

    children: list[dict[str, Any]] = dataclasses.field(default_factory=list)  # stamped, in apply order
    revision: Optional[str] = None  # the stable Deployment's pod template hash
    operator_defaults: Optional[dict[str, str]] = None  # what status records of the defaults used
    # A Deployment made before tracks, due for a rollout: it is moved onto tracks (migration.py).
    migrate_from: Optional[dict[str, Any]] = None
    # A Deployment made before tracks: no canary until it is moved onto tracks.
    legacy: bool = False
    config: Optional[OperatorConfig] = None  # what the children are rendered with
    # The HPA or ScaledObject of spec.autoscaling, stamped (built once a pass, whatever the tracks).
    autoscaler: list[dict[str, Any]] = dataclasses.field(default_factory=list)


def desire(
    isvc: api.InferenceService, observed: Observed, config: OperatorConfig, renders: RenderCache
) -> tuple[Desired, Optional[Problem]]:
    """The desired state, or the problem that keeps the spec from being served. Pure."""
    stable = rollout.stable_track(isvc)
    live = _own_deployment(isvc, observed, stable)
    try:
        render_config, pins = defaults.resolve(isvc, config, live)
        track: Optional[str] = stable
        migrate_from = None
        if migration.is_legacy(live):
            # Kept as it is (no rollout for an operator upgrade) until a rollout is due anyway.
            as_is = renders.get(isvc, render_config, None)
            if naming.revision_of(as_is[0]) == naming.revision_of(live):
                track = None
            else:
                migrate_from = live
        stamped = rendered(renders, isvc, render_config, track, observed)
    except render.SpecError as exc:
        return Desired(), Problem(exc.reason, exc.message)
    # Not in the render cache: it follows status.startupSeconds too.
    scaler = [children.stamp(c, isvc) for c in autoscaling.children(isvc, render_config, observed.crds)]
    desired = Desired(children=stamped, revision=naming.revision_of(stamped[0]), operator_defaults=pins,
                      migrate_from=migrate_from, legacy=track is None or migrate_from is not None,
                      config=render_config, autoscaler=scaler)
    return desired, _check_storage(isvc, observed)


def rendered(renders: RenderCache, isvc: api.InferenceService, config: OperatorConfig, track: Optional[str],
             observed: Observed) -> list[dict[str, Any]]:
    """The stamped children with ``track``'s Deployment, of the kinds this cluster has."""
    return [c for c in renders.get(isvc, config, track) if children.installable(c["kind"], observed.crds)]


def _own_deployment(isvc: api.InferenceService, observed: Observed, track: str) -> Optional[dict[str, Any]]:
    live = observed.child_by_kind(kinds.DEPLOYMENT.kind, naming.predictor(isvc.name, track))
    if live is not None and children.controller_uid(dict(live)) == isvc.metadata.uid:
        return dict(live)
    return None


def _shrink_orphans(
    isvc: api.InferenceService, observed: Observed, deployment: Optional[dict[str, Any]], kube: Kube,
    deleted: list[str],
) -> None:
    """Step 3 of a migration: the orphaned ReplicaSet gives way as the new Deployment's replicas serve."""
    orphaned = migration.orphans(observed.replicasets)
    if not orphaned:
        return
    new_available = 0
    if deployment is not None and naming.track_of(deployment) is not None:
        new_available = (deployment.get("status") or {}).get("availableReplicas", 0)
    step = migration.step(orphaned, desired_replicas=isvc.spec.target_replicas, new_available=new_available,
                          max_unavailable=isvc.spec.rollout.max_unavailable)
    by_name = {rs["metadata"]["name"]: rs for rs in orphaned}
    for name, rs in by_name.items():
        if name not in step.delete and not migration.adopted(rs, isvc.metadata.uid):
            owner = migration.owner_reference(children.owner_reference(isvc))
            kube.patch(Ref(kinds.REPLICASET, isvc.namespace, name), {"metadata": {"ownerReferences": [owner]}})
    for name, replicas in step.scale.items():
        kube.patch(Ref(kinds.REPLICASET, isvc.namespace, name), {"spec": {"replicas": replicas}})
    for name in step.delete:
        kube.delete(Ref(kinds.REPLICASET, isvc.namespace, name), by_name[name]["metadata"]["uid"])
        deleted.append(f"ReplicaSet/{name} (moved onto tracks)")


class _Skip(Exception):
    """The namespace is being deleted under the pass: nothing to write, nothing to report."""


def _write_problem(exc: ApiError, what: str, failures: int) -> Problem:
    """The Problem a failed write becomes, by the error's class; raises what the runner retries."""
    kind = exc.kind
    if kind == kube_errors.TERMINATING:
        raise _Skip()
    if kind == kube_errors.INVALID:
        # Refused as built from the spec (e.g. a malformed affinity): fix the spec.
        return Problem("ApplyRejected", f"{what} was rejected: {exc.message}")
    if kind == kube_errors.REFUSED:
        # RBAC, quota or an admission webhook: say which verb on which resource was refused.
        return Problem(
            "Forbidden",
            f"the API server refused to {exc.verb or 'write'} {exc.resource or what} ({what}): {exc.message}",
        )
    if failures + 1 >= REPORT_AFTER_FAILURES:
        # Worded the same on every attempt (no count, no object address), so that reporting it
        # again writes nothing.
        detail = re.sub(r" at 0x[0-9a-fA-F]+", "", f"{exc.status} {exc.reason}: {exc.message}")
        return Problem("TransientError", f"writing {what} keeps failing, retried with backoff: {detail}")
    raise exc


def _write_children(
    isvc: api.InferenceService, desired: list[dict[str, Any]], live: dict[Ref, Optional[dict[str, Any]]],
    hold: frozenset[Ref], kube: Kube, failures: int, applied: list[str], refused: dict[Ref, str],
) -> tuple[children.Plan, Optional[Problem]]:
    """Carry out the plan's applies (``live`` and ``applied`` follow each write). A create that finds
    the name taken (by an object the cache cannot show: someone else's, or one of ours whose labels
    were taken off) reads that object, once, and the plan is decided again with it: a foreign one
    is a ChildConflict and stays untouched. The only read a pass sends, and only on that path.
    An autoscaler the API server refuses (an HPA this cluster does not allow) goes to ``refused``
    and the pass goes on: the pods serve without it, and the Autoscaling condition says why."""
    looked_up: set[Ref] = set()
    while True:
        plan = children.plan(isvc, desired, live, looked_up=frozenset(looked_up), hold=hold)
        if plan.conflicts:
            return plan, Problem("ChildConflict", "; ".join(c.message for c in plan.conflicts))
        for obj in plan.apply:
            ref = children.ref_of(obj)
            try:
                live[ref] = kube.create(obj) if ref in plan.creates else kube.apply(obj)
            except ApiError as exc:
                if ref.kind in children.AUTOSCALERS and exc.kind in (kube_errors.INVALID, kube_errors.REFUSED):
                    refused[ref] = exc.message
                    continue
                if ref not in plan.creates or exc.kind != kube_errors.CONFLICT:
                    return plan, _write_problem(exc, str(ref), failures)
                try:
                    found = kube.get(ref)
                except ApiError as read_exc:
                    return plan, _write_problem(read_exc, str(ref), failures)
                if found is None:  # gone again meanwhile: the next pass creates it
                    return plan, _write_problem(exc, str(ref), failures)
                live[ref] = found
                looked_up.add(ref)
                break
            looked_up.discard(ref)
            applied.append(str(ref))
        else:
            return plan, None


def _with_children(transitions: list[Event], applied: list[str], deleted: list[str]) -> list[Event]:
    """The Events of a pass: its transitions, and what it wrote to the children, said within the
    RollingOut event when the pass starts a rollout (one Event for a new InferenceService's
    children, not two), in a ChildrenUpdated event otherwise (drift put right, a child re-made)."""
    if not (applied or deleted):
        return transitions
    what = ", ".join([f"applied {a}" for a in applied] + [f"deleted {d}" for d in deleted])
    for i, event in enumerate(transitions):
        if event.reason == "RollingOut":
            return transitions[:i] + [dataclasses.replace(event, message=f"{event.message} ({what})")] \
                + transitions[i + 1:]
    return [Event("Normal", "ChildrenUpdated", what)] + transitions


def _refused_before(isvc: api.InferenceService, desired: list[dict[str, Any]],
                    live: dict[Ref, Optional[dict[str, Any]]], refused: dict[Ref, str]) -> frozenset[Ref]:
    """The autoscaler the API server refused last time, unchanged since (status.autoscaler keeps
    its hash and the reason): not sent again, so a pass that changes nothing writes nothing."""
    before = isvc.status.autoscaler
    if before is None or before.refused_hash is None:
        return frozenset()
    for obj in desired:
        ref = children.ref_of(obj)
        if ref.kind in children.AUTOSCALERS and live.get(ref) is None and children.spec_hash(obj) == before.refused_hash:
            refused[ref] = before.refused_message or ""
            return frozenset({ref})
    return frozenset()


def _autoscaling_status(
    isvc: api.InferenceService, observed: Observed, config: OperatorConfig, live: dict[Ref, Optional[dict[str, Any]]],
    refused: dict[Ref, str], parsed: bool, desired: list[dict[str, Any]],
) -> dict[str, Any]:
    """status.Seen's ``autoscaling`` condition and ``autoscaler`` summary, from the autoscaler
    this pass wrote (or saw) and the HPA that does its scaling (KEDA's own for a ScaledObject)."""
    spec = isvc.spec.autoscaling if parsed else None
    if spec is None:
        return {}
    kind = kinds.HPA if spec.engine == "hpa" else kinds.SCALEDOBJECT
    name = naming.names(isvc.name).autoscaler
    ref = Ref(kind, isvc.namespace, name)
    scaler = live.get(ref)
    if scaler is not None and children.controller_uid(scaler) != isvc.metadata.uid:
        scaler = None
    hpa = scaler if kind == kinds.HPA else observed.child_by_kind(
        kinds.HPA.kind, autoscaling.keda_hpa_name(name))
    seen = autoscaling.Observation(autoscaler=scaler, hpa=hpa, rejected=refused.get(ref))
    current, wanted = autoscaling.replicas_of(hpa)
    summary = {"kind": kind.kind, "name": name, "currentReplicas": current, "desiredReplicas": wanted}
    if ref in refused:
        sent = next((o for o in desired if children.ref_of(o) == ref), None)
        summary.update(refusedHash=children.spec_hash(sent) if sent else None, refusedMessage=refused[ref])
    return {"autoscaling": autoscaling.condition(isvc, config, observed.crds, seen),
            "autoscaler": {k: v for k, v in summary.items() if v is not None}}


def reconcile(
    observed: Observed,
    kube: Kube,
    config: OperatorConfig,
    now: Callable[[], str] = utcnow,
    failures: int = 0,
    slow_retry_seconds: float = SLOW_RETRY_SECONDS,
    analyze: Optional[rollout.Analyze] = None,
    renders: Optional[RenderCache] = None,
) -> Outcome:
    """Bring the children and status of one InferenceService in line with its spec.

    Reads only ``observed`` (plus a GET where a create finds the name taken).
    Raises ApiError for failures the runner retries with backoff (transient, a stale
    resourceVersion); every problem with the spec or its surroundings ends in status and an Event
    instead, with serving children untouched.
    """
    if observed.namespace_terminating or observed.deleting:
        # Garbage collection and the namespace controller take the children; re-creating them
        # would only be refused.
        return Outcome(applied=[], deleted=[], status_written=False, problem=None, skipped=True)
    if analyze is None:
        analyze = analyzer.analyzer(config, analyzer.secret_credentials(kube))
    try:
        return _reconcile(observed, kube, config, now, failures, slow_retry_seconds, analyze,
                          renders if renders is not None else RenderCache())
    except _Skip:
        return Outcome(applied=[], deleted=[], status_written=False, problem=None, skipped=True)


def _reconcile(
    observed: Observed, kube: Kube, config: OperatorConfig, now: Callable[[], str], failures: int,
    slow_retry_seconds: float, analyze: rollout.Analyze, renders: RenderCache,
) -> Outcome:
    body = observed.isvc
    isvc, problem = _parse(body)
    parsed = problem is None
    want = Desired()
    if problem is None:
        want, problem = desire(isvc, observed, config, renders)
    if problem is None:
        problem = rollout.problem(isvc, observed)
    desired = want.children + want.autoscaler
    at = now()
    rolling: Optional[rollout.Plan] = None
    if problem is None and not want.legacy:
        assert want.config is not None
        rolling = rollout.plan(isvc, observed, lambda track: rendered(renders, isvc, want.config, track, observed),
                            want.revision, canary.parse_time(at) or 0.0, analyze)
        desired = rolling.children + want.autoscaler

    refs = children.possible_refs(isvc)
    live: dict[Ref, Optional[dict[str, Any]]] = {ref: observed.child(ref) for ref in refs}
    applied: list[str] = []
    deleted: list[str] = []
    refused: dict[Ref, str] = {}
    status_deployment: Optional[dict[str, Any]] = None
    if problem is None:
        # A legacy Deployment being moved onto tracks is deleted first; its successor comes later.
        hold = frozenset({refs[0]}) if want.migrate_from is not None else frozenset()
        if rolling is not None:
            hold |= rolling.hold
        hold |= _refused_before(isvc, desired, live, refused)
        if want.migrate_from is not None:
            legacy_ref = refs[0]
            status_deployment = want.migrate_from
            try:
                kube.delete(legacy_ref, want.migrate_from["metadata"]["uid"], propagation="Orphan")
                deleted.append(f"{legacy_ref} (its pods keep serving while it moves onto tracks)")
            except ApiError as exc:
                problem = _write_problem(exc, str(legacy_ref), failures)
        if problem is None:
            plan, problem = _write_children(isvc, desired, live, hold, kube, failures, applied, refused)
            if problem is None:
                for ref in plan.delete:
                    try:
                        kube.delete(ref, live[ref]["metadata"]["uid"])
                    except ApiError as exc:
                        problem = _write_problem(exc, str(ref), failures)
                        break
                    live[ref] = None
                    deleted.append(str(ref))
        if problem is None and rolling is not None:
            for ref, replicas in rolling.scale.items():
                try:
                    live[ref] = kube.patch(ref, {"spec": {"replicas": replicas}})
                except ApiError as exc:
                    problem = _write_problem(exc, str(ref), failures)
                    break
                applied.append(f"{ref} (replicas {replicas})")

    deployment_ref = rolling.stable if rolling is not None else refs[0]
    deployment = status_deployment or live.get(deployment_ref)
    if deployment is not None and children.controller_uid(deployment) != isvc.metadata.uid:
        deployment = None
    if problem is None:
        try:
            _shrink_orphans(isvc, observed, deployment, kube, deleted)
        except ApiError as exc:
            problem = _write_problem(exc, "an orphaned ReplicaSet", failures)
    pods = list(observed.pods) if deployment else []
    desired_revision = want.revision if problem is None else None

    old_status = patch.comparable(body.get("status") or {})
    view = None
    if rolling is not None:
        d = rolling.decision
        view = conditions.CanaryView(
            state=d.state, active=d.active, held=d.failed, reason=d.reason, message=d.message,
            revision=(d.state or {}).get("revision"), stable_revision=isvc.status.revision,
            deployment=live.get(rolling.canary) if rolling.canary is not None else None, promoted=d.promoted,
            draining=d.draining)
    new_status = conditions.compute(conditions.Seen(
        isvc,
        deployment=deployment,
        pods=pods,
        desired_revision=desired_revision,
        problem=problem,
        config=config,
        now=at,
        children_changed=bool(applied or deleted),
        operator_defaults=want.operator_defaults if problem is None else None,
        canary=view,
        **_autoscaling_status(isvc, observed, config, live, refused, parsed, desired),
    ))
    written_isvc: Optional[dict[str, Any]] = None
    if patch.comparable(new_status) != old_status:
        try:
            written_isvc = kube.patch_status(
                isvc.namespace, isvc.name, patch.merge_patch(old_status, new_status),
                body["metadata"].get("resourceVersion", ""),
            )
        except ApiError as exc:
            if exc.kind == kube_errors.GONE:  # deleted meanwhile: nothing left to report on
                return Outcome(applied, deleted, False, problem)
            raise  # 409: the InferenceService moved on; the runner runs the pass again

    transitions = events.events(old_status, new_status) if written_isvc is not None else []
    if written_isvc is not None and rolling is not None:
        # The canary's own Warning (naming the checks) says what Degraded's would say again.
        said = {(e.type, e.reason) for e in rolling.decision.events}
        transitions = list(rolling.decision.events) + [e for e in transitions if (e.type, e.reason) not in said]
    # The canary's own Events tell its steps; its writes need no second word (ChildrenUpdated).
    quiet = rolling is not None and (rolling.decision.hold or rolling.decision.promoted)
    for event in _with_children(transitions, [] if quiet else applied, [] if quiet else deleted):
        try:
            kube.event(isvc, event)
        except ApiError as exc:  # an Event is a courtesy; it never fails the pass
            log.warning("could not post event %s for %s/%s: %s", event.reason, isvc.namespace, isvc.name, exc)

    waits = [slow_retry_seconds] if problem is not None and problem.reason in RETRYABLE else []
    if problem is None and rolling is not None and rolling.decision.requeue_after is not None:
        waits.append(rolling.decision.requeue_after)
    requeue = min(waits) if waits else None
    return Outcome(
        applied=applied, deleted=deleted, status_written=written_isvc is not None, problem=problem,
        requeue_after=requeue,
    )
