"""The canary simulation: a World whose pods follow the split a tick after the state machine decides it,
with a clock and status carried only as JSON, and the canary spec it runs."""

from __future__ import annotations

import dataclasses
import json
from typing import Optional

from inference_operator import api
from inference_operator.rollout import analysis, canary
from inference_operator.rollout.canary import PROMOTING, Inputs
from inference_operator.rollout.split import Pods
from inference_operator.status import patch

from .helpers import merge

T0 = 1_800_000_000.0


def spec(steps=({"weight": 25}, {"weight": 50}), **analysis_fields) -> api.Canary:
    fields = {"interval": "10s", "initialDelay": "20s", "checksPerStep": 2, "minRequests": 10,
              "failureLimit": 2, "inconclusiveLimit": 3}
    fields.update(analysis_fields)
    return api.Canary.model_validate({"steps": list(steps), "analysis": fields})


def verdict(result: str) -> analysis.Verdict:
    check = api.CheckResult(name="errorRate", result=result, value=0.5 if result == "Fail" else 0.0,
                            bound="max 1%", message=f"{result} message")
    return analysis.Verdict(result, (check,), 100, f"errorRate {result.lower()}")


@dataclasses.dataclass
class World:
    """Pods that follow the split a tick later (ready a tick after that), a clock, and status as JSON."""

    cfg: Optional[api.Canary]
    replicas: int = 4
    max_surge: int = 1
    max_unavailable: int = 0
    desired: str = "new"
    stable_revision: str = "old"
    state_json: Optional[str] = None
    pods: Pods = Pods(4, 0, 4, 0)
    other: int = 0
    now: float = T0
    annotations: dict = dataclasses.field(default_factory=dict)
    history: list = dataclasses.field(default_factory=list)
    decided: Optional[dict] = None  # status.canary as the last pass decided it
    events: list = dataclasses.field(default_factory=list)
    asked: int = 0
    pods_ready: bool = True  # new canary pods become ready (False: they never do)

    def inputs(self) -> Inputs:
        state = api.CanaryStatus.model_validate(json.loads(self.state_json)) if self.state_json else None
        return Inputs(canary=self.cfg, replicas=self.replicas, max_surge=self.max_surge,
                      max_unavailable=self.max_unavailable, startup_timeout_seconds=600,
                      desired_revision=self.desired, stable_revision=self.stable_revision, state=state,
                      pods=self.pods, other=self.other, actions=canary.actions_of(self.annotations), now=self.now)

    def tick(self, result: Optional[str] = "Pass", seconds: float = 5.0) -> canary.Decision:
        # Pods made on the last tick are ready now (canary pods only if they can be).
        p = self.pods
        self.pods = Pods(p.stable, p.canary, p.stable, p.canary if self.pods_ready else p.canary_ready)
        inputs = self.inputs()
        v = None
        if canary.analysis_due(inputs):
            self.asked += 1
            v = verdict(result) if result else None
        d = canary.decide(inputs, v)
        # What the API server holds after the status write: the operator's merge patch, merged.
        before = {"canary": json.loads(self.state_json)} if self.state_json else {}
        after = {"canary": d.state} if d.state is not None else {}
        stored = merge(before, patch.merge_patch(before, after)).get("canary")
        self.decided = d.state
        self.state_json = json.dumps(stored) if stored is not None else None
        self.events += [e.reason for e in d.events]
        if d.promoted:
            self.stable_revision = self.desired
            # The canary track is the stable one now.
            self.pods = Pods(self.pods.canary, 0, self.pods.canary_ready, 0)
        if d.split is not None:
            self._follow(d)
        elif not d.promoted:
            # No canary: its Deployment is deleted, the stable one runs as the spec says.
            self.pods, self.other = Pods(self.replicas, 0, min(self.pods.stable_ready, self.replicas), 0), 0
        self.history.append((d.state or {}).get("phase"))
        self.now += seconds
        return d

    def _follow(self, d: canary.Decision) -> None:
        p, s = self.pods, d.split
        after = Pods(s.stable, s.canary, min(p.stable_ready, s.stable), min(p.canary_ready, s.canary))
        # The invariants, on what runs after this tick: never more pods than the surge allows;
        # while a canary runs (a rollback takes its pods at once), never fewer ready than allowed.
        assert after.total + self.other <= self.replicas + self.max_surge, (p, s)
        # A replaced canary's pods (``other``) go at once, as a rolled-back one's do (README).
        if (d.active or d.draining) and not self.other:
            # Never below the floor, and never lower while below it (after a replacement).
            assert after.ready >= min(self.replicas - self.max_unavailable, p.ready), (p, s)
        if (d.state or {}).get("phase") == PROMOTING:
            assert s.canary >= p.canary, "a promotion removed a canary pod"
        self.pods = after
        self.other = 0

    @property
    def state(self) -> dict:
        return json.loads(self.state_json) if self.state_json else {}

    def run(self, result="Pass", until=None, ticks=200, seconds=5.0):
        for _ in range(ticks):
            self.tick(result, seconds)
            if until and until(self):
                return self
        return self
