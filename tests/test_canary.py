"""The canary state machine, pure: every transition, walked tick by tick over a simulated world
whose pods follow the split, with the state carried only through its JSON (as status carries it)."""

from __future__ import annotations

import dataclasses
import json

import pytest

from inference_operator import api
from inference_operator.rollout import canary
from inference_operator.rollout.canary import (
    ABORTED,
    HOLDING,
    PAUSED,
    PROGRESSING,
    PROMOTED,
    PROMOTING,
    ROLLED_BACK,
)
from inference_operator.rollout.split import Pods

from .canary_world import World, spec


def test_a_good_canary_walks_every_step_and_is_promoted_without_restarting_its_pods():
    w = World(spec())
    w.tick()
    assert w.state["phase"] == PROGRESSING and w.state["weight"] == 25 and w.state["revision"] == "new"
    assert w.events == ["CanaryStarted"]
    seen_weights = []
    for _ in range(200):
        d = w.tick()
        seen_weights.append(w.state.get("weight"))
        if d.promoted:
            break
    assert w.state["phase"] == PROMOTED and w.state["stableTrack"] == "canary"
    assert w.state["stableRevision"] == "new" and w.stable_revision == "new"
    assert [x for i, x in enumerate(seen_weights) if i == 0 or x != seen_weights[i - 1]] == [25, 50, 100]
    assert w.events.count("CanaryStep") == 1 and "CanaryPromoting" in w.events and "CanaryPromoted" in w.events
    # The pods that serve now are the canary track's (stable now): the ones that were analysed,
    # never removed on the way (_follow checks that a promotion only grows the canary).
    assert w.pods == Pods(4, 0, 4, 0)
    # Two passing checks a step, no more: the analysis waited for the pods and the initial delay.
    assert w.asked == 4
    after = w.tick()
    assert not after.active and after.split is None and w.state["phase"] == PROMOTED


def test_no_analysis_before_the_pods_are_ready_and_warmed_up():
    w = World(spec())
    w.tick(seconds=1)
    starts = w.now
    while w.now < starts + 20:
        w.tick(seconds=1)
        assert w.asked == 0, "analysed during the initial delay"
    w.run(until=lambda w: w.asked, seconds=1)
    state = w.state
    assert canary.parse_time(state["lastAnalysisAt"]) >= canary.parse_time(state["readyAt"]) + 20 + 10


def test_failed_checks_up_to_the_limit_roll_back_at_once_and_name_the_checks():
    w = World(spec())
    w.run("Pass", until=lambda w: w.asked == 1)
    w.tick("Fail")
    while not w.state.get("consecutiveFailures"):
        w.tick("Fail")
    assert w.state["phase"] == PROGRESSING and w.state["consecutiveFailures"] == 1
    w.run("Fail", until=lambda w: w.state["phase"] != PROGRESSING)
    assert w.state["phase"] == ROLLED_BACK and w.state["failedRevision"] == "new"
    assert w.asked == 1 + 2, "rolled back after another number of failures than failureLimit"
    last = canary.decide(w.inputs())
    assert last.split.canary == 0 and not last.active and last.route_weight == 0
    assert "AnalysisFailed" in w.events
    # Every check that failed, with its value and bound, for the Warning Event.
    w2 = World(spec(failureLimit=1))
    w2.run("Fail", until=lambda w: w.state.get("phase") == ROLLED_BACK)
    inputs = w2.inputs()
    assert inputs.state.analysis[0].result == "Fail" and inputs.state.analysis[0].value == 0.5


def test_a_failure_between_passes_is_not_consecutive():
    w = World(spec(failureLimit=2, checksPerStep=5))
    results = iter(["Pass", "Fail", "Pass", "Fail", "Pass", "Fail", "Pass"])
    current = "Pass"
    for _ in range(200):
        before = w.asked
        w.tick(current)
        if w.asked != before:
            current = next(results, "Pass")
        if w.state["phase"] != PROGRESSING:
            break
    assert w.state["phase"] in (PROMOTING, PROMOTED, PROGRESSING)
    assert ROLLED_BACK not in w.history


def test_a_rolled_back_revision_is_not_tried_again_until_the_spec_names_another():
    w = World(spec(failureLimit=1))
    w.run("Fail", until=lambda w: w.state.get("phase") == ROLLED_BACK)
    for _ in range(20):
        d = w.tick("Pass")
        assert not d.active and w.state["phase"] == ROLLED_BACK
    assert w.pods.canary == 0 and w.pods.stable == 4
    w.desired = "newer"
    d = w.tick()
    assert d.active and w.state["revision"] == "newer" and w.state["phase"] == PROGRESSING
    assert "failedRevision" not in w.state  # the spec named another: "new" may be tried again
    w.desired = "old"  # back to the stable: no canary, and "new" may be tried again later
    d = w.tick()
    assert not d.active and w.state["phase"] == ABORTED
    assert "failedRevision" not in w.state
    w.desired = "new"
    assert w.tick().active


def test_no_data_is_never_a_pass_and_the_inconclusive_limit_holds():
    w = World(spec())
    w.run("Inconclusive", until=lambda w: w.state.get("phase") == HOLDING)
    assert w.state["consecutiveInconclusive"] == 3 and w.state["weight"] == 25
    asked = w.asked
    w.run("Inconclusive", ticks=30)
    assert w.state["phase"] == HOLDING and w.state["stepIndex"] == 0 and w.asked > asked  # still asking
    w.run("Pass", until=lambda w: w.state["phase"] != HOLDING)
    assert w.state["phase"] == PROGRESSING and w.state["consecutiveInconclusive"] == 0


def test_prometheus_down_holds_without_promoting_or_counting_a_failure():
    w = World(spec(failureLimit=1))
    w.run("Error", ticks=60)
    assert set(w.history) == {PROGRESSING, HOLDING}, "promoted or rolled back without an answer"
    assert w.state["phase"] == HOLDING and w.state["weight"] == 25 and w.state["message"].startswith("Holding")
    assert w.state.get("consecutiveFailures", 0) == 0 and w.state.get("checksPassed", 0) == 0
    w.run("Pass", until=lambda w: w.state["phase"] == PROMOTED)
    assert w.state["phase"] == PROMOTED


def test_the_progress_deadline_rolls_back_a_canary_whose_pods_never_get_ready():
    w = World(spec(), pods_ready=False)
    w.cfg = api.Canary.model_validate({**w.cfg.model_dump(by_alias=True, exclude_none=True),
                                       "progressDeadlineSeconds": 60})
    w.run(until=lambda w: w.state.get("phase") != PROGRESSING, seconds=5)
    assert w.state["phase"] == ROLLED_BACK and "ProgressDeadlineExceeded" in w.events
    assert w.asked == 0
    assert canary.decide(w.inputs()).split.canary == 0


def test_a_manual_gate_waits_for_promote_and_a_timed_pause_ends_by_itself():
    w = World(spec(steps=[{"weight": 25}, {"pause": {}}, {"weight": 50}, {"pause": {"duration": "30s"}}]))
    w.run(until=lambda w: w.state["phase"] == PAUSED)
    assert w.state["stepIndex"] == 1 and w.state["weight"] == 25
    w.run(ticks=50)
    assert w.state["phase"] == PAUSED and w.state["stepIndex"] == 1, "a gate passed by itself"
    w.annotations[canary.ANNOTATION_PREFIX + canary.PROMOTE] = "1"
    w.tick()
    assert w.state["stepIndex"] == 2 and w.state["phase"] == PROGRESSING and w.state["weight"] == 50
    w.run(until=lambda w: w.state["stepIndex"] == 3)
    paused_at = w.now
    w.run(until=lambda w: w.state["phase"] != PROGRESSING)
    assert w.state["phase"] in (PROMOTING, PROMOTED) and w.now - paused_at >= 30
    # The same token again is not a new request.
    assert w.inputs().state.handled[canary.PROMOTE] == "1"


def test_promote_full_skips_every_step_and_abort_rolls_back():
    w = World(spec(steps=[{"weight": 10}, {"weight": 20}, {"weight": 30}]))
    w.tick()
    w.annotations[canary.ANNOTATION_PREFIX + canary.PROMOTE_FULL] = "now"
    w.run(until=lambda w: w.state["phase"] == PROMOTED)
    assert w.asked == 0 and w.state["stepIndex"] == 0

    w = World(spec())
    w.run(until=lambda w: w.asked == 1)
    w.annotations[canary.ANNOTATION_PREFIX + canary.ABORT] = "x"
    d = w.tick()
    assert w.state["phase"] == ABORTED and w.state["failedRevision"] == "new" and not d.active
    assert d.split.canary == 0 and "CanaryAborted" in w.events


def test_requests_made_before_a_canary_are_not_acted_on():
    w = World(spec(), annotations={canary.ANNOTATION_PREFIX + canary.ABORT: "old-token",
                                   canary.ANNOTATION_PREFIX + canary.PROMOTE_FULL: "old"})
    w.tick()
    w.tick()
    assert w.state["phase"] == PROGRESSING


def test_pause_and_resume_by_annotation():
    w = World(spec())
    w.tick()
    w.annotations[canary.PAUSED_ANNOTATION] = "true"
    w.run(ticks=60)
    assert w.state["phase"] == PAUSED and w.state["stepIndex"] == 0 and "CanaryPaused" in w.events
    del w.annotations[canary.PAUSED_ANNOTATION]
    w.run(until=lambda w: w.state["phase"] == PROMOTED)


def test_a_new_revision_mid_canary_replaces_it_and_analysis_restarts():
    w = World(spec())
    w.run(until=lambda w: w.state.get("stepIndex") == 1)
    w.desired = "newer"
    # The old canary's pods are now of another revision.
    w.other, w.pods = w.pods.canary, Pods(w.pods.stable, 0, w.pods.stable_ready, 0)
    d = w.tick()
    assert w.state["revision"] == "newer" and w.state["stepIndex"] == 0 and "CanaryReplaced" in w.events
    assert "lastAnalysisAt" not in w.state and w.state["checksPassed"] == 0
    assert d.active
    w.run(until=lambda w: w.state["phase"] == PROMOTED)


def test_reverting_the_spec_aborts_cleanly_and_removing_the_canary_spec_too():
    w = World(spec())
    w.run(until=lambda w: w.asked == 1)
    w.desired = "old"
    d = w.tick()
    assert not d.active and w.state["phase"] == ABORTED and "failedRevision" not in w.state
    # The canary drains: its pods go as the stable's are ready again, within both bounds (checked
    # by _follow); the stable is held until they are gone, and then it is the spec's again.
    assert d.hold and d.draining and d.reason == "CanaryDraining"
    w.run(until=lambda w: w.pods == Pods(4, 0, 4, 0), ticks=20)
    assert w.pods == Pods(4, 0, 4, 0)
    d = w.tick()
    assert not d.hold and d.split is None

    w = World(spec())
    w.run(until=lambda w: w.asked == 1)
    w.cfg = None
    d = w.tick()
    assert not d.active and w.state["phase"] == ABORTED


def test_no_canary_without_a_stable_revision_or_a_canary_spec():
    assert canary.decide(World(spec(), stable_revision=None).inputs()).state is None
    assert canary.decide(World(None).inputs()).state is None
    assert canary.decide(World(spec(), desired="old").inputs()).state is None


@pytest.mark.parametrize("phase_reached", [PROGRESSING, PAUSED, HOLDING, PROMOTING, PROMOTED, ROLLED_BACK])
def test_a_restart_at_any_phase_resumes_at_the_same_step_with_the_same_timers(phase_reached):
    """A restart loses everything but status: the decision from the JSON alone equals the one
    from the pass before it, timer for timer."""
    steps = [{"weight": 25}, {"pause": {}}, {"weight": 50}]
    w = World(spec(steps=steps, failureLimit=1))
    result = {HOLDING: "Inconclusive", ROLLED_BACK: "Fail"}.get(phase_reached, "Pass")
    if phase_reached in (PROMOTING, PROMOTED):
        w.run(until=lambda w: w.state.get("phase") == PAUSED)
        w.annotations[canary.ANNOTATION_PREFIX + canary.PROMOTE_FULL] = "go"
    w.run(result, until=lambda w: w.state.get("phase") == phase_reached)
    assert w.state["phase"] == phase_reached
    # A restarted operator has only what the API server stored: exactly what was decided, timers
    # and counters included, and it decides the same from it.
    assert w.state == w.decided
    restarted = dataclasses.replace(w, state_json=json.dumps(w.decided))
    assert canary.decide(w.inputs()) == canary.decide(restarted.inputs())


def test_effective_weight_reports_what_the_service_sends():
    w = World(spec(steps=[{"weight": 10}]), replicas=3)
    w.run(until=lambda w: w.pods.canary_ready == 1)
    w.tick()
    assert w.state["weight"] == 10 and w.state["effectiveWeight"] == 25  # one of four ready pods


def test_gateway_route_weight_waits_for_a_ready_canary_pod():
    w = World(spec(), pods_ready=False)
    d = w.tick()
    assert d.route_weight == 0
    w.pods_ready = True
    w.run(until=lambda w: w.pods.canary_ready > 0)
    assert w.tick().route_weight == 25


def test_requeue_says_when_the_next_check_is_due():
    w = World(spec())
    w.run(until=lambda w: w.state.get("readyAt") and w.pods.canary_ready == w.pods.canary and w.pods.stable == 3)
    d = canary.decide(w.inputs())
    due = canary.next_analysis(w.inputs())
    assert d.requeue_after == pytest.approx(max(due - w.now, 1.0))


def test_checks_run_one_interval_apart():
    w = World(spec(checksPerStep=4))
    times = []
    for _ in range(100):
        w.tick(seconds=1)
        at = w.state.get("lastAnalysisAt")
        if at and (not times or times[-1] != at):
            times.append(at)
    gaps = [canary.parse_time(b) - canary.parse_time(a) for a, b in zip(times, times[1:])]
    assert len(times) >= 4 and min(gaps) >= 10, gaps


def test_too_few_replicas_for_a_step_is_a_warning_once_per_step():
    w = World(spec(steps=[{"weight": 10}, {"weight": 50}]), replicas=2, max_surge=0, max_unavailable=1,
              pods=Pods(2, 0, 2, 0))
    w.run(until=lambda w: w.state.get("phase") == PROMOTED)
    assert w.events.count("TooFewReplicas") == 1  # 10% of 2 is 1 of 2 pods; 50% is exact
    w = World(spec(steps=[{"weight": 25}, {"weight": 50}]))  # 4 replicas: both exact
    w.run(until=lambda w: w.state.get("phase") == PROMOTED)
    assert "TooFewReplicas" not in w.events


def test_a_promotion_by_hand_is_acted_on_once_and_the_next_steps_keep_their_own_ends():
    w = World(spec(steps=[{"weight": 25}, {"pause": {}}, {"weight": 50, "duration": "60s"}, {"weight": 75}]))
    w.run(until=lambda w: w.state["phase"] == PAUSED)
    w.annotations[canary.ANNOTATION_PREFIX + canary.PROMOTE] = "once"
    w.tick()
    assert w.state["stepIndex"] == 2 and w.state["handled"] == {canary.PROMOTE: "once"}
    started = w.now
    w.run(until=lambda w: w.state["stepIndex"] == 3)
    assert w.now - started >= 60, "the promotion was acted on again"
    w.run(until=lambda w: w.state["phase"] == PROMOTED)


def test_gateway_route_never_sends_traffic_to_a_track_without_ready_pods():
    cfg = api.Canary.model_validate({"steps": [{"weight": 10}], "traffic": "gatewayAPI",
                                     "gatewayAPI": {"parentRefs": [{"name": "gw"}]},
                                     "analysis": {"interval": "10s", "initialDelay": "20s"}})
    w = World(cfg, replicas=1, max_surge=0, max_unavailable=1, pods=Pods(1, 0, 1, 0))
    routes = []
    for _ in range(40):
        d = w.tick()
        p = w.pods
        routes.append(d.route_weight)
        if d.active and p.canary_ready == 0:
            assert d.route_weight == 0
    assert 100 in routes, "with the stable's only pod replaced, the canary must get everything"
    assert "TooFewReplicas" in w.events
