"""How a canary advances: a pure state machine from ``status.canary`` and what is observed to the
next ``status.canary``, the replica split and the Events. No I/O, no clock of its own.

Everything a rollout needs lives in ``status.canary`` (phase, step, timers, counters, the last
analysis, the revision under test, the failed revision, the manual requests handled), so a
restarted operator resumes at the same step with the same timers. ``reconcile`` reads
``analysis_due`` to decide whether to ask Prometheus in a pass, then ``decide`` with the verdict.

Two Deployments, one per track (``stable`` and ``canary``); which track runs the stable revision
is ``status.canary.stableTrack``. A promotion never restarts pods: the canary's Deployment becomes
the stable one as it is, and the next canary is made in the other track.
"""

from __future__ import annotations

import dataclasses
import datetime
from typing import Any, Optional

from inference_operator import api, naming, promql
from inference_operator.problems import Event
from inference_operator.rollout import analysis as analysis_mod
from inference_operator.rollout import split as canary_split
from inference_operator.rollout.split import Pods, Split

# Phases. Active ones have a canary running; the others are the record of the last one.
PROGRESSING, PAUSED, HOLDING, PROMOTING = "Progressing", "Paused", "Holding", "Promoting"
PROMOTED, ROLLED_BACK, ABORTED = "Promoted", "RolledBack", "Aborted"
ACTIVE = (PROGRESSING, PAUSED, HOLDING, PROMOTING)

CANARY = "canary"
# Manual control: annotations on the InferenceService (not spec fields: under Argo CD the spec is
# Git's, and a pause or promotion is an act on one rollout, not a desired state to commit).
# promote, promote-full and abort take any new value (a request token: `$(date +%s)`), acted on
# once and recorded in status.canary.handled; paused is a level: "true" holds the canary.
ANNOTATION_PREFIX = f"{api.GROUP}/"
PROMOTE = "promote"  # past the current step (a manual gate, a step held or being analysed)
PROMOTE_FULL = "promote-full"  # every remaining step skipped: promote now
ABORT = "abort"
PAUSED_ANNOTATION = f"{ANNOTATION_PREFIX}paused"
ACTIONS = (PROMOTE, PROMOTE_FULL, ABORT)

# A pass runs again this soon while pods move (the watches wake it too; this is the floor).
MOVE_REQUEUE_SECONDS = 5.0
DEFAULT_DEADLINE_MARGIN = 600


def other_track(track: str) -> str:
    return CANARY if track == naming.STABLE else naming.STABLE


def parse_time(text: Optional[str]) -> Optional[float]:
    if not text:
        return None
    return datetime.datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=datetime.timezone.utc).timestamp()


def format_time(at: float) -> str:
    return datetime.datetime.fromtimestamp(at, datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclasses.dataclass(frozen=True)
class Actions:
    """The manual requests on the InferenceService now: tokens by action, and the pause level."""

    tokens: dict[str, str] = dataclasses.field(default_factory=dict)
    paused: bool = False


def actions_of(annotations: dict[str, str]) -> Actions:
    tokens = {a: annotations[ANNOTATION_PREFIX + a] for a in ACTIONS if ANNOTATION_PREFIX + a in annotations}
    return Actions(tokens=tokens, paused=annotations.get(PAUSED_ANNOTATION, "").lower() == "true")


@dataclasses.dataclass(frozen=True)
class Inputs:
    """What one pass knows for the canary: the spec's part, status, and the pods by track."""

    canary: Optional[api.Canary]
    replicas: int
    max_surge: int
    max_unavailable: int
    startup_timeout_seconds: int
    desired_revision: Optional[str]  # what the spec renders to now
    stable_revision: Optional[str]  # status.revision: fully rolled out
    state: Optional[api.CanaryStatus]
    # Pods of the stable track, and of the canary track at the desired revision (an earlier
    # canary's pods count against the surge only, in ``other``).
    pods: Pods
    other: int
    actions: Actions
    now: float
    # status.startupSeconds of the canary's revision: its pods' measured load time.
    startup_seconds: Optional[int] = None

    @property
    def stable_track(self) -> str:
        return (self.state.stable_track if self.state and self.state.stable_track else naming.STABLE)


@dataclasses.dataclass(frozen=True)
class Decision:
    """The outcome: the next status.canary (None: leave none), whether a canary Deployment runs and
    at what split, the Events, and when to run again."""

    state: Optional[dict[str, Any]]
    active: bool = False  # a canary runs
    # The stable Deployment is held at its revision and only scaled (to split.stable): while a
    # canary runs, and while the spec names a revision that was rolled back.
    hold: bool = False
    # The spec names a revision that was rolled back: held off, the stable revision serves.
    failed: bool = False
    # A canary that is not failing goes away (a revert, the canary spec removed): both
    # Deployments are held and scaled (split), the canary's shrinking as the stable's pods are ready.
    draining: bool = False
    split: Optional[Split] = None
    stable_track: str = naming.STABLE
    route_weight: int = 0  # gatewayAPI: the canary's share at the HTTPRoute
    promoted: bool = False  # this pass finished a promotion: the revision is rolled out
    events: tuple[Event, ...] = ()
    requeue_after: Optional[float] = None
    # The Progressing reason and message while active, or after a rollback (Degraded/Stalled).
    reason: Optional[str] = None
    message: Optional[str] = None

    @property
    def canary_track(self) -> str:
        return other_track(self.stable_track)


def _dump(state: api.CanaryStatus) -> dict[str, Any]:
    return state.model_dump(by_alias=True, exclude_none=True, mode="json")


def deadline(inputs: Inputs) -> int:
    cfg = inputs.canary
    if cfg is not None and cfg.progress_deadline_seconds:
        return cfg.progress_deadline_seconds
    return inputs.startup_timeout_seconds + DEFAULT_DEADLINE_MARGIN


def step_weight(steps: list[api.CanaryStep], index: int) -> int:
    """The weight at a step: its own, or (a pause) the last weight before it."""
    for step in reversed(steps[: index + 1]):
        if step.weight is not None:
            return step.weight
    return 0


def _handled(inputs: Inputs) -> tuple[dict[str, str], set[str]]:
    """The manual requests recorded as handled after this pass, and those new in it."""
    before = dict(inputs.state.handled) if inputs.state else {}
    new = {a for a, token in inputs.actions.tokens.items() if before.get(a) != token}
    return {**before, **inputs.actions.tokens}, new


def _ready_enough(inputs: Inputs, weight: int) -> bool:
    """The step's canary pods are all there and ready."""
    if weight == 0:
        return True
    goal = canary_split.target(inputs.replicas, weight, inputs.max_surge)
    return inputs.pods.canary_ready >= goal.canary


def analysis_start(inputs: Inputs, state: api.CanaryStatus) -> Optional[float]:
    """When the first check of this step may run: its pods ready, warmed up, and one window
    of their traffic in Prometheus."""
    ready = parse_time(state.ready_at)
    if ready is None or inputs.canary is None:
        return None
    a = inputs.canary.analysis
    return ready + initial_delay(a, inputs.startup_seconds) + promql.seconds(a.window or a.interval)


# analysis.initialDelay when unset: the canary's measured startup (a model that takes long to load
# takes long to warm up: caches, CUDA graphs, autotuning), within these bounds; 60 s unmeasured.
DEFAULT_INITIAL_DELAY = 60.0
MIN_INITIAL_DELAY, MAX_INITIAL_DELAY = 30.0, 600.0


def initial_delay(analysis: api.Analysis, startup_seconds: Optional[int]) -> float:
    if analysis.initial_delay:
        return promql.seconds(analysis.initial_delay)
    if startup_seconds is None:
        return DEFAULT_INITIAL_DELAY
    return min(MAX_INITIAL_DELAY, max(MIN_INITIAL_DELAY, float(startup_seconds)))


def next_analysis(inputs: Inputs) -> Optional[float]:
    state = inputs.state
    if state is None or state.phase not in (PROGRESSING, PAUSED, HOLDING) or inputs.canary is None:
        return None
    if state.revision != inputs.desired_revision or not state.weight:
        return None
    start = analysis_start(inputs, state)
    if start is None:
        return None
    last = parse_time(state.last_analysis_at)
    interval = promql.seconds(inputs.canary.analysis.interval)
    return max(start, last + interval) if last is not None else start


def analysis_due(inputs: Inputs) -> bool:
    """Whether this pass asks Prometheus: a canary under analysis whose next check is due."""
    at = next_analysis(inputs)
    return at is not None and inputs.now >= at


def _fresh(inputs: Inputs, handled: dict[str, str]) -> api.CanaryStatus:
    cfg = inputs.canary
    assert cfg is not None
    now = format_time(inputs.now)
    return api.CanaryStatus(
        phase=PROGRESSING, revision=inputs.desired_revision, stable_revision=inputs.stable_revision,
        stable_track=inputs.stable_track, step_index=0, step_started_at=now, started_at=now,
        weight=step_weight(cfg.steps, 0), effective_weight=0, consecutive_failures=0,
        consecutive_inconclusive=0, checks_passed=0, handled=handled,
        # A canary of another revision: the spec named another, so a failed one may be tried again.
        failed_revision=None,
    )


def _settle(inputs: Inputs, state: Optional[api.CanaryStatus], handled: dict[str, str],
            events: list[Event]) -> Decision:
    """No canary runs: the record stays (what happened last, which track is stable)."""
    if state is not None and state.phase in ACTIVE:
        state = state.model_copy(update={"phase": ABORTED, "weight": 0})
    record = state.model_copy(update={"handled": handled}) if state is not None else None
    if record is not None and record.failed_revision and (
            record.failed_revision != inputs.desired_revision or record.failed_revision == inputs.stable_revision):
        # The spec names another (tried again later), or it was rolled out without a canary.
        record = record.model_copy(update={"failed_revision": None})
    if record is not None and record == api.CanaryStatus(stable_track=naming.STABLE, handled={}):
        record = None
    track = inputs.stable_track
    dumped = _dump(record) if record is not None else None
    if inputs.pods.canary + inputs.other:
        # The canary's pods go as the stable's are ready again (both bounds kept); then the
        # stable rolls as the spec says.
        split = canary_split.drain(inputs.replicas, inputs.max_surge, inputs.max_unavailable, inputs.pods,
                                   inputs.other)
        return Decision(state=dumped, hold=True, draining=True, split=split, stable_track=track,
                        events=tuple(events), requeue_after=MOVE_REQUEUE_SECONDS,
                        reason="CanaryDraining",
                        message=f"The canary's pods go as the stable revision's are ready again "
                                f"(stable {inputs.pods.stable_ready}/{inputs.replicas} ready, "
                                f"{inputs.pods.canary} canary pods left).")
    # The canary's Deployment goes; the stable one rolls as the spec says.
    return Decision(state=dumped, stable_track=track, events=tuple(events))


def _rollback(inputs: Inputs, state: api.CanaryStatus, handled: dict[str, str], events: list[Event],
              phase: str, reason: str, message: str) -> Decision:
    state = state.model_copy(update={
        "phase": phase, "reason": reason, "weight": 0, "effective_weight": 0, "failed_revision": state.revision,
        "handled": handled, "message": message,
    })
    events.append(Event("Warning", reason, f"Revision {state.revision} rolled back: {message}; all traffic "
                                             f"goes to the stable revision {state.stable_revision}"))
    return _inactive(inputs, state, events)


def _inactive(inputs: Inputs, state: api.CanaryStatus, events: list[Event]) -> Decision:
    """Rolled back (or its revision failed before): the canary's pods go at once, the stable grows
    back as room frees."""
    split = canary_split.next_split(inputs.replicas, 0, inputs.max_surge, inputs.max_unavailable, inputs.pods,
                                        inputs.other)
    leftover = inputs.pods.canary + inputs.other
    track = inputs.stable_track
    return Decision(state=_dump(state), active=False, hold=True, failed=True, split=split, stable_track=track,
                    events=tuple(events),
                    requeue_after=MOVE_REQUEUE_SECONDS if leftover or split.stable != inputs.pods.stable else None,
                    reason=state.reason or state.phase, message=state.message)


def decide(inputs: Inputs, verdict: Optional[analysis_mod.Verdict] = None) -> Decision:
    """The next step of the canary, from the inputs and (when ``analysis_due``) the analysis verdict."""
    handled, new = _handled(inputs)
    events: list[Event] = []
    state = inputs.state
    cfg = inputs.canary
    desired = inputs.desired_revision

    promoted = state is not None and state.phase == PROMOTED and state.revision == desired
    if (cfg is None or inputs.stable_revision is None or desired is None or desired == inputs.stable_revision
            or promoted):
        if state is not None and state.phase in ACTIVE:
            why = ("the spec went back to the stable revision" if desired == inputs.stable_revision
                   else "spec.rollout.canary was removed")
            events.append(Event("Normal", "CanaryAborted", f"Canary of revision {state.revision} aborted: {why}"))
            state = state.model_copy(update={"message": f"Aborted: {why}."})
        return _settle(inputs, state, handled, events)

    if state is not None and state.failed_revision == desired:
        # Not tried again until the spec names another revision (or comes back to this one after).
        state = state.model_copy(update={"handled": handled})
        if state.phase in ACTIVE:
            state = state.model_copy(update={"phase": ROLLED_BACK})
        return _inactive(inputs, state, events)

    if state is None or state.revision != desired or state.phase not in ACTIVE:
        if state is not None and state.phase in ACTIVE:
            events.append(Event("Normal", "CanaryReplaced",
                                f"Revision {desired} replaces the canary of revision {state.revision}; analysis restarts"))
        # Requests made before this canary are not for it.
        state = _fresh(inputs, handled)
        events.append(Event("Normal", "CanaryStarted",
                            f"Canary of revision {desired} started at {state.weight}% "
                            f"(stable revision {inputs.stable_revision})"))
        _too_few(inputs, state.weight or 0, events)
        new = set()

    return _advance(inputs, state, handled, new, events, verdict)


def _advance(inputs: Inputs, state: api.CanaryStatus, handled: dict[str, str], new: set[str],
             events: list[Event], verdict: Optional[analysis_mod.Verdict]) -> Decision:
    """One pass of a running canary: an abort by hand, the pods' readiness, the analysis, the
    other controls by hand, and the step's own end."""
    # Recorded whatever else this pass does: a request is acted on once.
    state = state.model_copy(update={"handled": handled})
    if ABORT in new:
        return _rollback(inputs, state, handled, events, ABORTED, "CanaryAborted", "aborted by hand")
    state, late = _readiness(inputs, state)
    if late is not None:
        return _rollback(inputs, state, handled, events, ROLLED_BACK, "ProgressDeadlineExceeded", late)
    if verdict is not None and state.phase != PROMOTING:
        state, failed = _judged(inputs, state, verdict)
        if failed is not None:
            return _rollback(inputs, state, handled, events, ROLLED_BACK, "AnalysisFailed", failed)
    state = _by_hand(inputs, state, new, events)
    return _active(inputs, _step_end(inputs, state, events), events)


def _readiness(inputs: Inputs, state: api.CanaryStatus) -> tuple[api.CanaryStatus, Optional[str]]:
    """When the canary's pods were first ready enough for its weight; why it is rolled back when
    they were not within the deadline (None: not late)."""
    if state.phase == PROMOTING:
        return state, None
    now = inputs.now
    if _ready_enough(inputs, state.weight or 0):
        if state.ready_at is None:
            state = state.model_copy(update={"ready_at": format_time(now)})
        return state, None
    started = parse_time(state.step_started_at) or now
    if state.ready_at is None and now - started > deadline(inputs):
        return state, f"the canary's pods were not ready within {deadline(inputs)}s"
    return state, None


def _judged(inputs: Inputs, state: api.CanaryStatus,
            verdict: analysis_mod.Verdict) -> tuple[api.CanaryStatus, Optional[str]]:
    """The analysis's verdict counted in status; why the canary is rolled back when failures
    reached the limit (None: it goes on, or holds)."""
    cfg = inputs.canary
    assert cfg is not None
    update: dict[str, Any] = {"last_analysis_at": format_time(inputs.now), "analysis": list(verdict.checks)}
    failures = state.consecutive_failures or 0
    inconclusive = state.consecutive_inconclusive or 0
    passed = state.checks_passed or 0
    resume = {"phase": PROGRESSING} if state.phase == HOLDING else {}
    if verdict.result == analysis_mod.ERROR:
        update.update(phase=HOLDING, message=f"Holding: {verdict.message}")
    elif verdict.result == analysis_mod.FAIL:
        failures += 1
        update.update(consecutive_failures=failures, consecutive_inconclusive=0, checks_passed=0,
                      message=f"Analysis failed ({failures}/{cfg.analysis.failure_limit}): {verdict.failed()}")
        if failures >= cfg.analysis.failure_limit:
            return (state.model_copy(update=update),
                    f"analysis failed {failures} times in a row: {verdict.failed()}")
        update.update(resume)
    elif verdict.result == analysis_mod.INCONCLUSIVE:
        inconclusive += 1
        update.update(consecutive_inconclusive=inconclusive,
                      message=f"Analysis inconclusive ({inconclusive}/{cfg.analysis.inconclusive_limit}): "
                              f"{verdict.message}")
        if inconclusive >= cfg.analysis.inconclusive_limit:
            update.update(phase=HOLDING, message=f"Holding: {inconclusive} inconclusive analyses in a row "
                                                 f"({verdict.message}); promote or abort by hand, or send traffic")
        else:
            update.update(resume)
    else:
        update.update(consecutive_failures=0, consecutive_inconclusive=0, checks_passed=passed + 1,
                      message=f"Analysis passed ({passed + 1}): {verdict.message}", **resume)
    return state.model_copy(update=update), None


def _by_hand(inputs: Inputs, state: api.CanaryStatus, new: set[str], events: list[Event]) -> api.CanaryStatus:
    """A promotion (past the step, or all the way), a pause and a resume, asked by annotation."""
    cfg = inputs.canary
    assert cfg is not None
    if PROMOTE_FULL in new and state.phase != PROMOTING:
        state = _promoting(state, inputs.now)
        events.append(Event("Normal", "CanaryPromoting", f"Revision {state.revision}: promoted by hand"))
    elif PROMOTE in new and state.phase != PROMOTING:
        state = _next_step(inputs, state, events, "promoted past the step by hand")
    paused = inputs.actions.paused
    if state.phase in (PROGRESSING, PAUSED) and paused != (state.phase == PAUSED):
        if paused or not at_gate(cfg.steps, state):
            state = state.model_copy(update={"phase": PAUSED if paused else PROGRESSING})
            if paused:
                events.append(Event("Normal", "CanaryPaused", f"Revision {state.revision}: paused by hand"))
    return state


def _step_end(inputs: Inputs, state: api.CanaryStatus, events: list[Event]) -> api.CanaryStatus:
    """The step's own end (its weight held long enough, its checks passed): the next step; a
    manual gate (a pause with no duration) pauses there."""
    cfg = inputs.canary
    assert cfg is not None
    if state.phase == PROGRESSING and _step_done(inputs, state):
        state = _next_step(inputs, state, events, None)
    index = state.step_index or 0
    if state.phase == PROGRESSING and cfg.steps[index].pause is not None and cfg.steps[index].pause.duration is None:
        state = state.model_copy(update={"phase": PAUSED, "message": f"Paused at step {index + 1}: waiting "
                                                                      "for a promotion by hand"})
    return state


def at_gate(steps: list[api.CanaryStep], state: api.CanaryStatus) -> bool:
    """Paused at a manual gate (pause: {}): only a promotion moves it on."""
    step = steps[state.step_index or 0]
    return state.phase == PAUSED and step.pause is not None and step.pause.duration is None


def _step_done(inputs: Inputs, state: api.CanaryStatus) -> bool:
    cfg = inputs.canary
    assert cfg is not None
    step = cfg.steps[state.step_index or 0]
    if step.pause is not None:
        started = parse_time(state.step_started_at)
        return (step.pause.duration is not None and started is not None
                and inputs.now >= started + promql.seconds(step.pause.duration))
    passed = state.checks_passed or 0
    if step.duration is None:
        return passed >= cfg.analysis.checks_per_step
    ready = parse_time(state.ready_at)
    return ready is not None and passed >= 1 and inputs.now >= ready + promql.seconds(step.duration)


def _promoting(state: api.CanaryStatus, now: float) -> api.CanaryStatus:
    return state.model_copy(update={"phase": PROMOTING, "weight": 100, "step_started_at": format_time(now),
                                    "message": "Promoting: the canary's pods take every replica"})


# How far (percentage points) the replica split may be from a step's weight before a Warning.
WEIGHT_TOLERANCE = 5


def _too_few(inputs: Inputs, weight: int, events: list[Event]) -> None:
    """A Warning when the replicas cannot make the step's weight (replicas), or leave the stable
    revision no pod (gatewayAPI: its route then sends everything to the canary)."""
    cfg = inputs.canary
    if cfg is None or weight in (0, 100):
        return
    goal = canary_split.target(inputs.replicas, weight, inputs.max_surge)
    total = goal.canary + goal.stable
    made = round(100 * goal.canary / total) if total else 0
    if cfg.traffic == "gatewayAPI" and goal.stable == 0:
        events.append(Event("Warning", "TooFewReplicas",
                            f"weight {weight}% leaves no stable pod with {inputs.replicas} replicas (maxSurge "
                            f"{inputs.max_surge}): the route sends everything to the canary"))
    elif cfg.traffic == "replicas" and abs(made - weight) > WEIGHT_TOLERANCE:
        events.append(Event("Warning", "TooFewReplicas",
                            f"weight {weight}% cannot be made with {inputs.replicas} replicas (maxSurge "
                            f"{inputs.max_surge}): {goal.canary} canary and {goal.stable} stable pods, {made}% "
                            f"(traffic: gatewayAPI makes exact weights)"))


def _next_step(inputs: Inputs, state: api.CanaryStatus, events: list[Event], why: Optional[str]) -> api.CanaryStatus:
    cfg = inputs.canary
    assert cfg is not None
    index = (state.step_index or 0) + 1
    if index >= len(cfg.steps):
        events.append(Event("Normal", "CanaryPromoting",
                            f"Revision {state.revision}: {why or 'every step passed'}; promoting"))
        return _promoting(state.model_copy(update={"step_index": index - 1}), inputs.now)
    weight = step_weight(cfg.steps, index)
    update: dict[str, Any] = {
        "phase": PROGRESSING, "step_index": index, "step_started_at": format_time(inputs.now), "weight": weight,
        "checks_passed": 0,
    }
    if weight != state.weight:
        update["ready_at"] = None  # new pods: ready, warmed up and analysed afresh
    step = cfg.steps[index]
    if weight != state.weight:
        _too_few(inputs, weight, events)
    what = f"pause {step.pause.duration or 'until promoted'}" if step.pause is not None else f"weight {weight}%"
    events.append(Event("Normal", "CanaryStep", f"Revision {state.revision}: step {index + 1}/{len(cfg.steps)}, "
                                                f"{what}" + (f" ({why})" if why else "")))
    return state.model_copy(update=update)


def _active(inputs: Inputs, state: api.CanaryStatus, events: list[Event]) -> Decision:
    cfg = inputs.canary
    assert cfg is not None
    weight = state.weight or 0
    split = canary_split.next_split(inputs.replicas, weight, inputs.max_surge, inputs.max_unavailable,
                                    inputs.pods, inputs.other)
    effective = canary_split.effective_weight(inputs.pods)
    track = inputs.stable_track
    if state.phase == PROMOTING:
        pods = inputs.pods
        floor = max(1, inputs.replicas - inputs.max_unavailable) if inputs.replicas else 0
        if pods.stable == 0 and inputs.other == 0 and pods.canary == inputs.replicas and pods.canary_ready >= floor:
            done = state.model_copy(update={
                "phase": PROMOTED, "stable_track": other_track(track), "stable_revision": state.revision,
                "effective_weight": 100, "message": f"Revision {state.revision} promoted",
            })
            events.append(Event("Normal", "CanaryPromoted",
                                f"Revision {state.revision} promoted; its canary pods serve every replica"))
            return Decision(state=_dump(done), active=False, split=None, stable_track=other_track(track),
                            promoted=True, events=tuple(events))
    state = state.model_copy(update={"effective_weight": effective})
    # gatewayAPI: the route sends the step's weight once a canary pod is ready, and never sends
    # anything to a Service with no ready pod (a stable with none left at a high weight).
    if inputs.pods.canary_ready == 0:
        route = 0
    elif inputs.pods.stable_ready == 0:
        route = 100
    else:
        route = weight
    moving = split != Split(inputs.pods.stable, inputs.pods.canary) or inputs.other > 0 or not _ready_enough(inputs, weight)
    waits = [MOVE_REQUEUE_SECONDS] if moving or state.phase == PROMOTING else []
    at = next_analysis(dataclasses.replace(inputs, state=state))
    if at is not None:
        waits.append(max(at - inputs.now, 1.0))
    step = cfg.steps[state.step_index or 0]
    if state.phase == PROGRESSING:
        ends = None
        if step.pause is not None and step.pause.duration is not None:
            ends = (parse_time(state.step_started_at) or inputs.now) + promql.seconds(step.pause.duration)
        elif step.duration is not None and state.ready_at is not None:
            ends = (parse_time(state.ready_at) or inputs.now) + promql.seconds(step.duration)
        if ends is not None:
            waits.append(max(ends - inputs.now, 1.0))
    if not _ready_enough(inputs, weight) and state.ready_at is None:
        started = parse_time(state.step_started_at) or inputs.now
        waits.append(max(started + deadline(inputs) - inputs.now, 1.0))
    return Decision(state=_dump(state), active=True, hold=True, split=split, stable_track=track,
                    route_weight=route, events=tuple(events), requeue_after=min(waits) if waits else None,
                    reason=f"Canary{state.phase}", message=describe(inputs, state))


def describe(inputs: Inputs, state: api.CanaryStatus) -> str:
    """One line for the Progressing condition: where the canary stands."""
    cfg = inputs.canary
    steps = len(cfg.steps) if cfg else 0
    index = (state.step_index or 0) + 1
    pods = inputs.pods
    where = (f"Canary of revision {state.revision}: step {index}/{steps}, weight {state.weight}% "
             f"(effective {state.effective_weight or 0}%), canary {pods.canary_ready}/{pods.canary} ready, "
             f"stable {pods.stable_ready}/{pods.stable} ready")
    if state.phase == PROMOTING:
        where = (f"Promoting revision {state.revision}: canary {pods.canary_ready}/{inputs.replicas} ready, "
                 f"{pods.stable} stable pods left")
    return f"{where}. {state.message}" if state.message else f"{where}."


def pods_by_track(pods: list[dict[str, Any]], stable_track: str, canary_revision: Optional[str],
                  is_ready) -> tuple[Pods, int]:
    """The pods of each track (the stable's whatever their revision), and the canary track's
    pods of another revision (an earlier canary's): every pod counts toward the surge. With
    ``canary_revision`` None, every canary-track pod is the canary's (one being drained)."""
    stable = stable_ready = canary = canary_ready = other = 0
    for pod in pods:
        labels = (pod.get("metadata") or {}).get("labels") or {}
        track = labels.get(naming.TRACK_LABEL, naming.STABLE)
        ready = is_ready(pod) and not (pod.get("metadata") or {}).get("deletionTimestamp")
        if track == stable_track:
            stable += 1
            stable_ready += ready
        elif (canary_revision is None or labels.get(naming.REVISION_LABEL) == canary_revision) \
                and not pod["metadata"].get("deletionTimestamp"):
            canary += 1
            canary_ready += ready
        else:
            other += 1
    return Pods(stable=stable, canary=canary, stable_ready=stable_ready, canary_ready=canary_ready), other

