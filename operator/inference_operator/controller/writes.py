"""A pass's writes to the children: one object that carries them out in order, stops at the first
failure, and turns an API error into a Problem in one place (``problem_of``)."""

from __future__ import annotations

import re
from typing import Any, Optional

from inference_operator import api, kinds
from inference_operator.desired import children
from inference_operator.kinds import Ref
from inference_operator.kube import CONFLICT, INVALID, REFUSED, TERMINATING, ApiError, Kube
from inference_operator.problems import Problem

# A transient API error is retried quietly (with backoff) this many times in a row; then the pass
# reports it in status, so a person sees why nothing moves, and is still retried with backoff.
REPORT_AFTER_FAILURES = 5

Live = dict[Ref, Optional[dict[str, Any]]]


class Skip(Exception):
    """The namespace is being deleted under the pass: nothing to write, nothing to report."""


def problem_of(exc: ApiError, what: str, failures: int) -> Problem:
    """The Problem a failed write becomes, by the error's class; raises what the runner retries
    (a transient error not yet reported, a conflict) and Skip for a namespace being deleted."""
    kind = exc.kind
    if kind == TERMINATING:
        raise Skip()
    if kind == INVALID:
        # Refused as built from the spec (e.g. a malformed affinity): fix the spec.
        return Problem("ApplyRejected", f"{what} was rejected: {exc.message}")
    if kind == REFUSED:
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


class Writes:
    """The writes of one pass, in the order they are asked for. Once one fails, ``problem`` says why
    and every later write is skipped (returns None): a pass never writes past a failure.
    ``applied`` and ``deleted`` say what was written, for the pass's Events and its Outcome."""

    def __init__(self, kube: Kube, failures: int, problem: Optional[Problem] = None) -> None:
        self.kube = kube
        self.failures = failures
        self.problem = problem  # a problem found before any write stops the writes as well
        self.applied: list[str] = []
        self.deleted: list[str] = []
        # An autoscaler the API server refused (an HPA this cluster does not allow): the pods
        # serve without it, and the Autoscaling condition says why.
        self.refused: dict[Ref, str] = {}

    @property
    def stopped(self) -> bool:
        return self.problem is not None

    def stop(self, problem: Optional[Problem]) -> None:
        """A problem found without writing (the spec, the cluster): no write is sent after it."""
        if problem is not None and self.problem is None:
            self.problem = problem

    def fail(self, exc: ApiError, what: str) -> None:
        self.problem = problem_of(exc, what, self.failures)

    def delete(self, ref: Ref, uid: str, said: Optional[str] = None, what: Optional[str] = None,
               propagation: Optional[str] = None) -> bool:
        """Delete ``ref`` if it still has ``uid``; ``said`` is how the Events name it, ``what`` how
        a problem does (``ref`` by default)."""
        if self.stopped:
            return False
        try:
            if propagation is None:
                self.kube.delete(ref, uid)
            else:
                self.kube.delete(ref, uid, propagation=propagation)
        except ApiError as exc:
            self.fail(exc, what or str(ref))
            return False
        self.deleted.append(said or str(ref))
        return True

    def patch(self, ref: Ref, body: dict[str, Any], what: Optional[str] = None,
              said: Optional[str] = None) -> Optional[dict[str, Any]]:
        """A merge patch; ``said`` (when given) goes into ``applied``, ``what`` names the object in
        a problem (``ref`` by default)."""
        if self.stopped:
            return None
        try:
            answer = self.kube.patch(ref, body)
        except ApiError as exc:
            self.fail(exc, what or str(ref))
            return None
        if said is not None:
            self.applied.append(said)
        return answer

    def refused_before(self, isvc: api.InferenceService, desired: list[dict[str, Any]], live: Live) -> frozenset[Ref]:
        """The autoscaler the API server refused last time, unchanged since (status.autoscaler
        keeps its hash and the reason): held back, not sent again, so a pass that changes nothing
        writes nothing; still refused, as far as status is concerned."""
        before = isvc.status.autoscaler
        if before is None or before.refused_hash is None:
            return frozenset()
        for obj in desired:
            ref = kinds.ref_of(obj)
            if ref.kind in children.AUTOSCALERS and live.get(ref) is None and \
                    children.spec_hash(obj) == before.refused_hash:
                self.refused[ref] = before.refused_message or ""
                return frozenset({ref})
        return frozenset()

    def children(self, isvc: api.InferenceService, desired: list[dict[str, Any]], live: Live,
                 hold: frozenset[Ref]) -> None:
        """Carry out the plan's applies and deletions (``live`` follows each write). A create that
        finds the name taken (by an object the cache cannot show: someone else's, or one of ours
        whose labels were taken off) reads that object, once, and the plan is decided again with
        it: a foreign one is a ChildConflict and stays untouched. The only read a pass sends, and
        only on that path."""
        if self.stopped:
            return
        looked_up: set[Ref] = set()
        plan = children.plan(isvc, desired, live, looked_up=frozenset(), hold=hold)
        while not plan.conflicts:
            taken = self._apply(plan, live, looked_up)
            if taken is None:
                break
            plan = children.plan(isvc, desired, live, looked_up=frozenset(looked_up), hold=hold)
        if plan.conflicts:
            self.problem = Problem("ChildConflict", "; ".join(c.message for c in plan.conflicts))
        for ref in plan.delete:
            if self.delete(ref, live[ref]["metadata"]["uid"]):
                live[ref] = None

    def _apply(self, plan: children.Plan, live: Live, looked_up: set[Ref]) -> Optional[Ref]:
        """The plan's applies, in order; a create that found its name taken is looked up and
        returned (the plan is decided again), else None once done or stopped."""
        for obj in plan.apply:
            ref = kinds.ref_of(obj)
            try:
                live[ref] = self.kube.create(obj) if ref in plan.creates else self.kube.apply(obj)
            except ApiError as exc:
                if ref.kind in children.AUTOSCALERS and exc.kind in (INVALID, REFUSED):
                    self.refused[ref] = exc.message
                    continue
                if ref not in plan.creates or exc.kind != CONFLICT:
                    self.fail(exc, str(ref))
                    return None
                return self._look_up(ref, exc, live, looked_up)
            looked_up.discard(ref)
            self.applied.append(str(ref))
        return None

    def _look_up(self, ref: Ref, taken: ApiError, live: Live, looked_up: set[Ref]) -> Optional[Ref]:
        try:
            found = self.kube.get(ref)
        except ApiError as exc:
            self.fail(exc, str(ref))
            return None
        if found is None:  # gone again meanwhile: the next pass creates it
            self.fail(taken, str(ref))
            return None
        live[ref] = found
        looked_up.add(ref)
        return ref
