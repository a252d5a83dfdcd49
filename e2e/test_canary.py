"""Canaries end to end, with real components: the operator (its own process and ServiceAccount) on a
real control plane, a real Prometheus, and one real tritonserver per ready pod (``standins.py``:
kwok's pods run nothing), under a bounded load spread over the ready processes as a Service would.
The unit version of these is tests/test_rollout.py.

While a test waits, ``Invariants`` checks the rollout's bounds every 0.5 s: never more than
replicas + maxSurge pods (terminating ones included), never fewer than replicas - maxUnavailable
ready ones while a canary runs.
"""

from __future__ import annotations

import datetime
import json
import os
import pathlib
import re
import time
from typing import Any

import pytest

from tests.prometheus import Prometheus, require_prometheus
from tests.triton import python_backend_dir, require_triton

from .canary_harness import MAX_SURGE, MAX_UNAVAILABLE, MODEL, NAME, REPLICAS, Harness, event_time
from .helpers import Kubectl, Operator, condition
from .standins import BAD, GOOD, REVISION_LABEL, TRACK_LABEL, Invariants, StandinKubelet, Traffic

RESULTS: list[dict[str, Any]] = []  # timings and analyses, printed at the end of the module


# ---- fixtures ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def triton_home():
    return require_triton()


@pytest.fixture(scope="module")
def backends(triton_home, tmp_path_factory):
    return python_backend_dir(tmp_path_factory.mktemp("triton"), triton_home)


@pytest.fixture(scope="module")
def prometheus(tmp_path_factory):
    require_prometheus()
    prom = Prometheus([], workdir=tmp_path_factory.mktemp("prometheus"), file_sd=True)
    prom.start()
    try:
        yield prom
    finally:
        prom.stop()  # by PID
        _print_results()


@pytest.fixture
def harness(kubectl: Kubectl, namespace: str, prometheus: Prometheus, triton_home, backends, tmp_path):
    kubelet = StandinKubelet(kubectl.kubeconfig, namespace, NAME, MODEL, prometheus, triton_home, backends,
                             tmp_path / "pods", default=GOOD)
    invariants = Invariants(kubectl.kubeconfig, namespace, NAME, REPLICAS, MAX_SURGE, MAX_UNAVAILABLE)
    traffic = Traffic(kubelet.endpoints, MODEL, rate=20, limit=20 * 900)
    h = Harness(kubectl, namespace, kubelet, traffic, invariants)
    h._prometheus = prometheus
    h._prometheus_url = prometheus.url
    try:
        kubelet.start()
        invariants.start()
        traffic.start()
        yield h
    finally:
        # Each stopped whatever happens to the others; the processes by PID.
        for stop in (traffic.stop, invariants.stop, kubelet.stop):
            try:
                stop()
            except Exception as exc:  # noqa: BLE001
                print(f"teardown: {stop}: {exc}")
        print(f"traffic: sent {traffic.sent}, ok {traffic.ok}, failed {traffic.failed}, "
              f"unreachable {traffic.unreachable}; invariants: {invariants.samples} samples, "
              f"{invariants.watch.events} pod events watched, max pods {invariants.max_total}, "
              f"min ready {invariants.min_ready}")
        for entry in kubelet.history:
            print("kubelet:", entry)


def parse(text: str) -> datetime.datetime:
    text = text.replace("Z", "+00:00")
    return datetime.datetime.fromisoformat(text)


def seconds_between(start: str, end: str) -> float:
    return round((parse(end) - parse(start)).total_seconds(), 3)


def reasons(events: list[dict]) -> list[str]:
    return [e["reason"] for e in events]


def record(test: str, **fields: Any) -> None:
    RESULTS.append({"test": test, **fields})
    print(json.dumps(RESULTS[-1], indent=1))


def _print_results() -> None:
    path = os.environ.get("E2E_CANARY_REPORT")
    if path:
        pathlib.Path(path).write_text(json.dumps(RESULTS, indent=1))


def analysis_summary(state: dict) -> list[dict]:
    return [{k: c.get(k) for k in ("name", "result", "value", "stable", "bound")} for c in state.get("analysis", [])]


def canary_pod_uids(isvc: dict, pods: list[dict]) -> set[str]:
    """The pods of the canary's track at the canary's revision, not terminating."""
    state = isvc["status"].get("canary") or {}
    stable_track = state.get("stableTrack") or "stable"
    return {p["metadata"]["uid"] for p in pods
            if p["metadata"]["labels"].get(TRACK_LABEL) != stable_track
            and p["metadata"]["labels"].get(REVISION_LABEL) == state.get("revision")
            and not p["metadata"].get("deletionTimestamp")}


# ---- tests ------------------------------------------------------------------------------------


def test_a_good_canary_is_promoted_and_its_pods_serve_on(harness: Harness):
    h = harness
    first = h.start_first_revision()
    t0 = time.monotonic()
    h.apply(version=2)

    phases: list[str] = []
    started = h.wait_phase("Progressing", phases)["status"]["canary"]
    new = started["revision"]
    assert new != first and started["stableRevision"] == first and started["stepIndex"] == 0
    assert started["weight"] == 50

    # The canary's pods while they are analysed: the pods that serve once it is promoted.
    analysed: set[str] = set()
    pids: dict[str, int] = {}

    def watch(isvc: dict) -> None:
        state = isvc["status"].get("canary") or {}
        if state.get("phase") == "Progressing" and state.get("analysis"):
            uids = canary_pod_uids(isvc, h.pods())
            analysed.update(uids)
            for uid, process in h.kubelet.serving().items():
                if uid in uids:
                    pids[uid] = process.pid

    # Promoting may last less than a poll (kwok's pods are ready at once): the phases seen are
    # checked for their order, and the Events for all three steps.
    isvc = h.wait_phase("Promoted", phases, on_each=watch)
    wall = time.monotonic() - t0
    state = isvc["status"]["canary"]
    assert phases[0] == "Progressing" and phases[-1] == "Promoted", phases
    assert phases in (["Progressing", "Promoted"], ["Progressing", "Promoting", "Promoted"]), phases
    assert state["revision"] == state["stableRevision"] == new and state["stableTrack"] == "canary"
    assert all(c["result"] == "Pass" for c in state["analysis"]), state["analysis"]
    assert {c["name"] for c in state["analysis"]} == {"errorRate", "requestLatency"}

    isvc = h.wait(lambda: (i := h.isvc())["status"].get("revision") == new
                  and condition(i, "Ready").get("status") == "True" and i, "status.revision to follow the promotion")
    assert condition(isvc, "Progressing")["reason"] == "RolloutComplete"

    pods = h.wait_serving(new)
    serving_uids = {p["metadata"]["uid"] for p in pods}
    assert analysed, "no canary pod was seen while it was analysed"
    assert analysed <= serving_uids, "promotion replaced the canary's pods"
    # The very processes that were analysed still serve: nothing was restarted.
    now_serving = h.kubelet.serving()
    assert {uid: now_serving[uid].pid for uid in pids} == pids
    assert {p["metadata"]["labels"][TRACK_LABEL] for p in pods} == {"canary"}

    h.wait(lambda: h.deployment(f"{NAME}-predictor") is None, "the old stable Deployment to be deleted")
    dep = h.deployment(f"{NAME}-predictor-canary")
    assert dep["spec"]["replicas"] == REPLICAS and dep["spec"]["strategy"]["type"] == "RollingUpdate"

    events = h.events()
    got = reasons(events)
    canary_events = [r for r in got if r.startswith("Canary")]
    assert canary_events == ["CanaryStarted", "CanaryPromoting", "CanaryPromoted"], got
    by = {e["reason"]: e for e in events}
    record("promotion", first=first, new=new, phases=phases, startedAt=state["startedAt"],
           promoted_event=event_time(by["CanaryPromoted"]),
           started_to_promoted_s=seconds_between(state["startedAt"], event_time(by["CanaryPromoted"])),
           event_started_to_promoted_s=seconds_between(event_time(by["CanaryStarted"]),
                                                       event_time(by["CanaryPromoted"])),
           wall_apply_to_promoted_s=round(wall, 1), analysis=analysis_summary(state),
           events=[(event_time(e), e["reason"], e.get("note") or e.get("message")) for e in events])


def test_a_bad_canary_is_rolled_back(harness: Harness):
    h = harness
    first = h.start_first_revision()
    h.kubelet.profiles[first] = GOOD
    h.kubelet.default = BAD  # every other revision: every 2nd request fails
    t0 = time.monotonic()
    h.apply(version=2)

    phases: list[str] = []
    new = h.wait_phase("Progressing", phases)["status"]["canary"]["revision"]
    assert new != first
    isvc = h.wait_phase("RolledBack", phases)
    wall = time.monotonic() - t0
    state = isvc["status"]["canary"]
    assert "Promoting" not in phases and "Promoted" not in phases, phases
    assert state["failedRevision"] == new and state["revision"] == new and state["stableRevision"] == first
    assert isvc["status"]["revision"] == first
    failed = {c["name"]: c for c in state["analysis"]}
    assert failed["errorRate"]["result"] == "Fail" and failed["errorRate"]["value"] > 0.05, failed

    for ctype in ("Degraded", "Stalled"):
        assert (condition(isvc, ctype)["status"], condition(isvc, ctype)["reason"]) == ("True", "AnalysisFailed")

    h.wait(lambda: h.deployment(f"{NAME}-predictor-canary") is None, "the canary's Deployment to be deleted")
    pods = h.wait_serving(first)
    dep = h.deployment(f"{NAME}-predictor")
    assert dep["spec"]["replicas"] == REPLICAS
    assert dep["spec"]["template"]["metadata"]["labels"][REVISION_LABEL] == first
    assert {p["metadata"]["labels"][TRACK_LABEL] for p in pods} == {"stable"}
    # Ready describes what serves: the stable revision, whole again.
    ready = h.wait(lambda: (c := condition(h.isvc(), "Ready")).get("reason") == "StableServing" and c,
                   "Ready to say the stable revision serves")
    assert ready["status"] == "True" and f"stable revision {first} keeps serving" in ready["message"]
    # Only the canary got the bad profile; what serves now is good.
    assert {p.profile for p in h.kubelet.serving().values()} == {GOOD}

    events = h.events()
    warning = [e for e in events if e["reason"] == "AnalysisFailed"]
    assert len(warning) == 1 and warning[0]["type"] == "Warning", reasons(events)
    note = warning[0].get("note") or warning[0].get("message") or ""
    # The failing analysis's value (every 2nd canary request fails: about 50%, as increase() over
    # a 4 s window extrapolates it) and bound, as status.canary.analysis recorded them.
    shown = re.search(r"errorRate: ([0-9.]+)% > max 5%", note)
    assert shown, note
    assert 0.3 < float(shown.group(1)) / 100 < 0.7
    assert f"{failed['errorRate']['value'] * 100:.3g}%" == f"{shown.group(1)}%", (note, failed)
    assert "CanaryStarted" in reasons(events)

    # Held off: the rolled-back revision is not tried again while the spec names it.
    time.sleep(6)
    h.check()
    assert h.deployment(f"{NAME}-predictor-canary") is None
    assert h.canary_state()["phase"] == "RolledBack"

    record("rollback", first=first, new=new, phases=phases, startedAt=state["startedAt"],
           rolled_back_event=event_time(warning[0]),
           started_to_rolled_back_s=seconds_between(state["startedAt"], event_time(warning[0])),
           wall_apply_to_rolled_back_s=round(wall, 1), analysis=analysis_summary(state), message=note,
           traffic_to_canary={u: c for u, c in h.traffic.by_endpoint.items()})


def test_the_operator_killed_mid_step_resumes_the_canary(harness: Harness, operator: Operator):
    h = harness
    h.start_first_revision()
    h.apply(version=2)

    # Mid-step: the canary's pods ready (readyAt recorded), its analysis not finished.
    isvc = h.wait_phase("Progressing", also=lambda s: s.get("readyAt") is not None)
    before = isvc["status"]["canary"]
    assert before["stepIndex"] == 0 and before["stepStartedAt"] and before["startedAt"]
    operator.restart()
    after_restart = h.canary_state()
    keys = ("revision", "stableRevision", "stepIndex", "stepStartedAt", "startedAt", "readyAt")
    assert {k: after_restart.get(k) for k in keys} == {k: before.get(k) for k in keys}

    # Analysis goes on after the restart, at the same step, with the same timers.
    resumed = h.wait(lambda: (s := h.canary_state()).get("lastAnalysisAt")
                     and s["lastAnalysisAt"] != before.get("lastAnalysisAt") and s, "an analysis after the restart")
    if resumed["phase"] == "Progressing":
        assert {k: resumed.get(k) for k in keys} == {k: before.get(k) for k in keys}
    else:
        assert resumed["phase"] in ("Promoting", "Promoted"), resumed
    state = h.wait_phase("Promoted")["status"]["canary"]
    assert state["startedAt"] == before["startedAt"] and state["revision"] == before["revision"]
    h.wait_serving(state["revision"])
    got = reasons(h.events())
    assert got.count("CanaryStarted") == 1 and "CanaryPromoted" in got, got
    assert "CanaryReplaced" not in got, got
    record("restart", before={k: before.get(k) for k in keys + ("checksPassed", "lastAnalysisAt")},
           resumed={k: resumed.get(k) for k in keys + ("phase", "checksPassed", "lastAnalysisAt", "message")},
           resumed_analysis=analysis_summary(resumed),
           analysis=analysis_summary(state))


def test_a_manual_gate_holds_until_promoted_and_an_abort_rolls_back(harness: Harness):
    h = harness
    steps = "[{weight: 50}, {pause: {}}]"
    first = h.start_first_revision(steps=steps)
    h.apply(version=2, steps=steps)

    phases: list[str] = []
    paused = h.wait_phase("Paused", phases, also=lambda s: s.get("stepIndex") == 1)["status"]["canary"]
    second = paused["revision"]
    assert second != first and paused["weight"] == 50
    # Held: it stays at the gate through several analysis intervals.
    for _ in range(8):
        time.sleep(1)
        h.check()
        state = h.canary_state()
        assert state["phase"] == "Paused" and state["stepIndex"] == 1, state
    h.annotate("promote")
    isvc = h.wait_phase("Promoted", phases)
    assert isvc["status"]["canary"]["revision"] == second and isvc["status"]["canary"]["stableTrack"] == "canary"
    h.wait(lambda: h.isvc()["status"].get("revision") == second, "status.revision to follow the promotion")
    h.wait_serving(second)
    h.wait(lambda: h.deployment(f"{NAME}-predictor") is None, "the old stable Deployment to be deleted")
    promoted_events = reasons(h.events())
    assert "CanaryPromoted" in promoted_events, promoted_events

    # The next canary runs in the other track (the `stable` Deployment), and is aborted by hand.
    h.apply(version=3, steps=steps)
    progressing = h.wait_phase("Progressing", also=lambda s: s.get("revision") not in (first, second)
                               and s.get("readyAt") is not None)["status"]["canary"]
    third = progressing["revision"]
    assert progressing["stableTrack"] == "canary" and progressing["stableRevision"] == second
    assert h.deployment(f"{NAME}-predictor") is not None  # the canary's, in the stable track's name
    h.annotate("abort")
    isvc = h.wait_phase("Aborted")
    state = isvc["status"]["canary"]
    assert state["failedRevision"] == third and isvc["status"]["revision"] == second
    assert condition(isvc, "Degraded")["reason"] == "CanaryAborted", condition(isvc, "Degraded")
    h.wait(lambda: h.deployment(f"{NAME}-predictor") is None, "the aborted canary's Deployment to be deleted")
    pods = h.wait_serving(second)
    assert {p["metadata"]["labels"][TRACK_LABEL] for p in pods} == {"canary"}
    assert h.deployment(f"{NAME}-predictor-canary")["spec"]["replicas"] == REPLICAS
    got = reasons(h.events())
    assert "CanaryAborted" in got, got
    record("manual", phases=phases, second=second, third=third, handled=state.get("handled"),
           events=got)
