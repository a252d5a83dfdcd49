"""kubectl inference get's model and tree (overview.py): built from objects as the API server
returns them, during a canary, after one, and with an autoscaler."""

from __future__ import annotations

import copy
import json

import pytest

from inference_operator.kubectl import overview

from .overview_objects import CANARY, NOW, REV_A, REV_B, canary_objects, deployment, isvc, pod


def test_a_canary_shows_both_revisions_with_their_weights_and_pods():
    deps, pods = canary_objects()
    view = overview.overview(isvc(CANARY), deps, pods, now=NOW)
    revs = {r["revision"]: r for r in view["revisions"]}
    assert [r["role"] for r in view["revisions"]] == ["stable", "canary"]
    assert revs[REV_A]["weight"] == 75 and revs[REV_B]["weight"] == 25
    assert [p["name"] for p in revs[REV_B]["deployments"][0]["pods"]] == ["resnet-predictor-canary-0"]
    assert [d["name"] for d in revs[REV_A]["deployments"]] == ["resnet-predictor"]
    assert [d["name"] for d in revs[REV_B]["deployments"]] == ["resnet-predictor-canary"]
    c = view["canary"]
    assert c["active"] and c["step"] == {"number": 1, "of": 3, "kind": "weight", "weight": 25, "duration": None,
                                        "checksPerStep": 3, "failureLimit": 2, "traffic": "replicas"}
    latency = c["analysis"][1]
    assert latency["unit"] == "seconds" and latency["limits"] == [{"kind": "maxIncrease", "value": pytest.approx(0.006)}]
    assert c["analysis"][0]["limits"] == [{"kind": "max", "value": 0.01}] and c["analysis"][0]["unit"] == "fraction"
    json.dumps(view)  # JSON-ready


def test_the_tree_names_the_step_and_each_check_with_value_and_bound():
    deps, pods = canary_objects()
    text = overview.tree(overview.overview(isvc(CANARY), deps, pods, now=NOW))
    assert "Progressing  step 1/3 (weight 25%)  weight 25%" in text
    assert "✔ errorRate" in text and "0.2%  max 1%" in text
    assert "✖ requestLatency" in text and "9ms  max 6ms (stable 5ms +20%)" in text
    assert f"├── revision {REV_A}  stable  weight 75%  3 ready" in text
    assert f"└── revision {REV_B}  canary  weight 25%  1 ready" in text
    assert "Pod resnet-predictor-canary-0  ✔ Ready  Running  gpu-0  2m" in text
    assert "checks passed 1/3 this step, consecutive failures 0/2" in text


def test_a_gate_and_a_pause_by_hand_say_how_to_go_on():
    state = dict(CANARY, phase="Paused", stepIndex=1)
    text = overview.tree(overview.overview(isvc(state, annotations={"serving.inference-operator.io/paused": "true"}),
                                           *canary_objects(), now=NOW))
    assert "step 2/3 (gate: waits for `kubectl inference promote`)" in text
    assert "[paused by hand: `kubectl inference resume`]" in text


def _gateway(state: dict) -> dict:
    obj = isvc(state)
    obj["spec"]["rollout"]["canary"].update(traffic="gatewayAPI", gatewayAPI={"parentRefs": [{"name": "gw"}]})
    return obj


def _route(stable: int, canary: int) -> dict:
    return {"spec": {"rules": [{"backendRefs": [{"name": "resnet-stable", "port": 8000, "weight": stable},
                                                {"name": "resnet-canary", "port": 8000, "weight": canary}]}]}}


def test_gateway_api_weights_are_what_the_route_sends_not_the_step_or_the_pods():
    view = overview.overview(_gateway(dict(CANARY, weight=10)), *canary_objects(), now=NOW, route=_route(90, 10))
    assert [r["weight"] for r in view["revisions"]] == [90, 10]
    # The step asks 10%, but the operator sends nothing to a canary with no ready pod yet.
    view = overview.overview(_gateway(dict(CANARY, weight=10)), *canary_objects(), now=NOW, route=_route(100, 0))
    assert [r["weight"] for r in view["revisions"]] == [100, 0]
    # A route not readable as this user: no weight shown rather than a guess.
    view = overview.overview(_gateway(dict(CANARY, weight=10)), *canary_objects(), now=NOW)
    assert [r["weight"] for r in view["revisions"]] == [None, None]
    assert f"revision {REV_B}  canary  weight -  1 ready" in overview.tree(view)


def test_after_a_rollback_the_record_stays_and_only_ready_pods_take_traffic():
    state = dict(CANARY, phase="RolledBack", reason="AnalysisFailed")
    deps = [deployment("stable", REV_A, 4, 3), deployment("canary", REV_B, 0, 0)]
    pods = [pod(f"resnet-predictor-{i}", "stable", REV_A, ready=i < 3) for i in range(4)]
    pods.append(pod("resnet-predictor-canary-0", "canary", REV_B, deleting=True))
    view = overview.overview(isvc(state), deps, pods, now=NOW)
    assert not view["canary"]["active"] and view["canary"]["step"] == {}
    assert [(r["role"], r["weight"], r["readyPods"]) for r in view["revisions"]] == [("stable", 100, 3), ("rolled back", 0, 0)]
    text = overview.tree(view)
    assert "RolledBack  (AnalysisFailed)" in text and "Terminating" in text


def test_autoscaler_current_and_desired_with_the_hpa_s_reading_against_the_target():
    obj = isvc(autoscaling={"engine": "keda", "maxReplicas": 8, "targets": [
        {"name": "queueTime", "value": "50ms"}, {"name": "pendingRequests", "value": "4"}]},
        autoscaler={"kind": "ScaledObject", "name": "resnet", "currentReplicas": 2, "desiredReplicas": 3})
    # KEDA names a trigger's metric s<index>-<...>; the HPA may list them in any order.
    hpa = {"status": {"currentMetrics": [
        {"type": "External", "external": {"metric": {"name": "s1-pendingRequests"}, "current": {"averageValue": "5500m"}}},
        {"type": "External", "external": {"metric": {"name": "s0-queueTime"}, "current": {"value": "72m"}}}]}}
    view = overview.overview(obj, [], [], hpa, now=NOW)
    a = view["autoscaler"]
    assert (a["currentReplicas"], a["desiredReplicas"], a["minReplicas"], a["maxReplicas"]) == (2, 3, 1, 8)
    assert a["metrics"] == [
        {"name": "queueTime", "unit": "seconds", "current": pytest.approx(0.072), "target": 0.05, "perReplica": False},
        {"name": "pendingRequests", "unit": "number", "current": pytest.approx(5.5), "target": 4.0, "perReplica": True}]
    text = overview.tree(view)
    assert "ScaledObject resnet  replicas 2 -> 3 (min 1, max 8)" in text
    assert "    queueTime                 72ms  target 50ms\n" in text
    assert "    pendingRequests            5.5  target 4 per replica\n" in text


def test_the_adapter_s_pods_metrics_are_matched_by_name():
    obj = isvc(autoscaling={"maxReplicas": 8, "targets": [{"name": "queueTime", "value": "50ms"},
                                                          {"name": "gpuUtilization", "value": "80%"}]})
    hpa = {"status": {"currentMetrics": [
        {"type": "Pods", "pods": {"metric": {"name": "triton_gpu_utilization_percent"}, "current": {"averageValue": "91"}}}]}}
    metrics = overview.overview(obj, [], [], hpa, now=NOW)["autoscaler"]["metrics"]
    assert [(m["name"], m["current"]) for m in metrics] == [("queueTime", None), ("gpuUtilization", 91.0)]


@pytest.mark.parametrize("value,unit,text", [(0.0042, "fraction", "0.42%"), (0.0056, "seconds", "5.6ms"),
                                             (0.000812, "seconds", "812us"), (1.25, "seconds", "1.25s"),
                                             (3.2, "number", "3.2"), (None, "seconds", "-"), (0, "seconds", "0s")])
def test_values_read_as_people_read_them(value, unit, text):
    assert overview.shown(value, unit) == text


def test_a_spec_that_does_not_parse_still_shows_status():
    obj = copy.deepcopy(isvc(CANARY))
    obj["spec"]["model"] = "not an object"
    view = overview.overview(obj, *canary_objects(), now=NOW)
    assert view["canary"]["phase"] == "Progressing" and view["canary"]["step"] == {}
    assert view["canary"]["analysis"][0]["limits"] == []
    overview.tree(view)
