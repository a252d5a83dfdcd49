"""What ``kubectl inference promote|abort|pause|resume`` asks of an InferenceService: the README's
manual-control annotations (canary.py acts on them), decided from the object as read. Pure.

promote, promote-full and abort take a new token each time; paused is a level. When the operator
would not act (no canary in progress, a promotion already under way, resume when not paused) the
request is refused with EXIT_NOTHING_TO_DO and nothing is written, so a script can tell.
"""

from __future__ import annotations

import dataclasses
from typing import Optional

import pydantic

from inference_operator import api
from inference_operator.kubectl.userclient import EXIT_NOTHING_TO_DO, UserError
from inference_operator.rollout import canary

ACTIONS = (canary.PROMOTE, canary.PROMOTE_FULL, canary.ABORT, "pause", "resume")


@dataclasses.dataclass(frozen=True)
class Request:
    annotations: dict[str, Optional[str]]  # a merge patch: None removes one
    note: str = ""  # what the person should know about when it takes effect


def plan(isvc: dict, action: str, token: str) -> Request:
    meta = isvc.get("metadata") or {}
    state = (isvc.get("status") or {}).get("canary") or {}
    phase = state.get("phase")
    paused = canary.actions_of(meta.get("annotations") or {}).paused
    where = f'{api.PLURAL}/{meta.get("name")} in namespace "{meta.get("namespace")}"'
    verb = action.replace("-full", "")
    if action in (canary.PROMOTE, canary.PROMOTE_FULL, canary.ABORT):
        if phase not in canary.ACTIVE:
            raise UserError(f"error: {where} has no canary in progress (status.canary.phase: {phase or 'none'}); "
                            f"nothing to {verb}", EXIT_NOTHING_TO_DO)
        if phase == canary.PROMOTING and action != canary.ABORT:
            raise UserError(f"error: {where} is promoting already; nothing to {verb}", EXIT_NOTHING_TO_DO)
        note = ""
        if action == canary.PROMOTE and paused:
            note = "paused by hand: it moves past this step and stays paused until resumed"
        return Request({canary.ANNOTATION_PREFIX + action: token}, note)
    if action == "pause":
        if paused:
            raise UserError(f"error: {where} is paused already", EXIT_NOTHING_TO_DO)
        note = {
            None: "no canary in progress: the next one holds at its first step until resumed",
            canary.HOLDING: "holding: the pause takes hold when the canary leaves Holding",
            canary.PROMOTING: "promoting: this canary is past pausing; the next one holds until resumed",
        }.get(phase if phase in canary.ACTIVE else None, "")
        return Request({canary.PAUSED_ANNOTATION: "true"}, note)
    if action == "resume":
        if not paused:
            raise UserError(f"error: {where} is not paused", EXIT_NOTHING_TO_DO)
        at_gate = _at_gate(isvc, state)
        return Request({canary.PAUSED_ANNOTATION: None},
                       "at a gate: it stays there until promoted" if at_gate else "")
    raise ValueError(action)


def _at_gate(isvc: dict, state: dict) -> bool:
    """canary.at_gate on the object as read (False where its spec no longer has that step)."""
    try:
        cfg = api.parse(isvc).spec.rollout.canary
        return cfg is not None and canary.at_gate(cfg.steps, api.CanaryStatus.model_validate(state))
    except (pydantic.ValidationError, IndexError):
        return False
