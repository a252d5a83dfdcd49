"""spec.autoscaling: the HPA and the ScaledObject built for every signal, the replica count the
Deployments run (and its division during a canary), the Autoscaling condition, and the pass."""

import copy
import dataclasses
import fractions

import pytest

from inference_operator import api
from inference_operator.controller.reconcile import reconcile
from inference_operator.desired import autoscaling, signals
from inference_operator.kinds import DEPLOYMENT, HPA, SCALEDOBJECT, Ref
from inference_operator.kube import ApiError
from inference_operator.rollout import canary
from inference_operator.rollout import split as canary_split
from inference_operator.status import startup

from .canary_world import World
from .canary_world import spec as canary_spec
from .helpers import CONFIG, isvc_body

PROMETHEUS = "http://prometheus.monitoring:9090"
KEDA_CONFIG = dataclasses.replace(CONFIG, prometheus_url=PROMETHEUS)
KEDA_CRDS = frozenset({autoscaling.SCALEDOBJECT_CRD})
EVERY_TARGET = [
    {"name": "queueTime", "value": "50ms"}, {"name": "queueToComputeRatio", "value": "1.5"},
    {"name": "pendingRequests", "value": "4"}, {"name": "requestLatency", "value": "800us"},
    {"name": "gpuUtilization", "value": "80%"},
    {"name": "tokens", "query": "sum(rate(my_tokens{ {{selector}} }[1m]))", "value": "100", "perReplica": True},
]


def scaled(**fields) -> api.InferenceService:
    fields.setdefault("maxReplicas", 6)
    return api.parse(isvc_body(autoscaling=fields))


# ---- values ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("target, value, quantity, threshold", [
    ({"name": "queueTime", "value": "50ms"}, fractions.Fraction(1, 20), "50m", "0.05"),
    ({"name": "requestLatency", "value": "800us"}, fractions.Fraction(8, 10000), "800u", "0.0008"),
    ({"name": "requestLatency", "value": "1.5s"}, fractions.Fraction(3, 2), "1500m", "1.5"),
    ({"name": "queueToComputeRatio", "value": "0.5"}, fractions.Fraction(1, 2), "500m", "0.5"),
    ({"name": "pendingRequests", "value": "4"}, fractions.Fraction(4), "4", "4"),
    ({"name": "gpuUtilization", "value": "80%"}, fractions.Fraction(80), "80", "80"),
])
def test_a_targets_value_in_its_signals_unit(target, value, quantity, threshold):
    t = api.AutoscalingTarget.model_validate(target)
    assert autoscaling.value_of(t) == value
    assert autoscaling.quantity(value) == quantity
    assert autoscaling.decimal(value) == threshold


# ---- the HPA -----------------------------------------------------------------------------------------


def test_the_hpa_targets_the_inferenceservice_with_a_pods_metric_per_signal():
    isvc = scaled(minReplicas=2, maxReplicas=8, targets=EVERY_TARGET)
    (hpa,) = autoscaling.children(isvc, CONFIG, frozenset())
    assert hpa["apiVersion"] == "autoscaling/v2" and hpa["kind"] == "HorizontalPodAutoscaler"
    assert hpa["metadata"]["name"] == "demo" and hpa["metadata"]["namespace"] == "ns"
    spec = hpa["spec"]
    # The scale subresource of the InferenceService, never a Deployment.
    assert spec["scaleTargetRef"] == {"apiVersion": api.API_VERSION, "kind": "InferenceService", "name": "demo"}
    assert (spec["minReplicas"], spec["maxReplicas"]) == (2, 8)
    assert [(m["type"], m["pods"]["metric"]["name"], m["pods"]["target"]) for m in spec["metrics"]] == [
        ("Pods", "triton_queue_time_seconds", {"type": "AverageValue", "averageValue": "50m"}),
        ("Pods", "triton_queue_to_compute_ratio", {"type": "AverageValue", "averageValue": "1500m"}),
        ("Pods", "triton_pending_requests", {"type": "AverageValue", "averageValue": "4"}),
        ("Pods", "triton_request_latency_seconds", {"type": "AverageValue", "averageValue": "800u"}),
        ("Pods", "triton_gpu_utilization_percent", {"type": "AverageValue", "averageValue": "80"}),
        ("Pods", "tokens", {"type": "AverageValue", "averageValue": "100"}),
    ]
    # Each named signal's metric is one of the adapter rules the README ships.
    served = {r["name"]["as"] for r in autoscaling.adapter_values()["rules"]["custom"]}
    assert {m["pods"]["metric"]["name"] for m in spec["metrics"][:5]} == served


def test_default_behavior_scales_up_fast_after_the_measured_startup_and_down_slowly():
    isvc = scaled()
    unmeasured = autoscaling.hpa(isvc, None)["spec"]["behavior"]
    assert unmeasured["scaleUp"] == {"stabilizationWindowSeconds": 60, "selectPolicy": "Max", "policies": [
        {"type": "Percent", "value": 100, "periodSeconds": 60}, {"type": "Pods", "value": 4, "periodSeconds": 60}]}
    assert unmeasured["scaleDown"] == {"stabilizationWindowSeconds": 300, "selectPolicy": "Max",
                                       "policies": [{"type": "Pods", "value": 1, "periodSeconds": 120}]}
    # A model that takes 3 minutes 21 s to load: no new replica asked for until the last is up.
    assert autoscaling.hpa(isvc, 201)["spec"]["behavior"]["scaleUp"]["stabilizationWindowSeconds"] == 210
    assert autoscaling.hpa(isvc, 3)["spec"]["behavior"]["scaleUp"]["stabilizationWindowSeconds"] == 30
    assert autoscaling.hpa(isvc, 5000)["spec"]["behavior"]["scaleUp"]["stabilizationWindowSeconds"] == 900
    # The revision's measured startup, from status, reaches the HPA.
    body = isvc_body(autoscaling={"maxReplicas": 6})
    body["status"] = {"revision": "abc", "startupSeconds": {"abc": 95, "old": 400}}
    (hpa,) = autoscaling.children(api.parse(body), CONFIG, frozenset())
    assert hpa["spec"]["behavior"]["scaleUp"]["stabilizationWindowSeconds"] == 100


def test_behavior_set_in_the_spec_wins_field_by_field():
    isvc = scaled(behavior={"scaleUp": {"stabilizationWindowSeconds": 0},
                            "scaleDown": {"selectPolicy": "Disabled",
                                          "policies": [{"type": "Percent", "value": 10, "periodSeconds": 60}]}})
    b = autoscaling.hpa(isvc, 500)["spec"]["behavior"]
    assert b["scaleUp"]["stabilizationWindowSeconds"] == 0 and len(b["scaleUp"]["policies"]) == 2
    assert b["scaleDown"] == {"stabilizationWindowSeconds": 300, "selectPolicy": "Disabled",
                              "policies": [{"type": "Percent", "value": 10, "periodSeconds": 60}]}


# ---- the ScaledObject --------------------------------------------------------------------------------


def test_the_scaledobject_has_a_prometheus_trigger_per_signal_averages_as_values():
    isvc = scaled(engine="keda", minReplicas=1, maxReplicas=5, targets=EVERY_TARGET, window="2m")
    (so,) = autoscaling.children(isvc, KEDA_CONFIG, KEDA_CRDS)
    assert so["apiVersion"] == "keda.sh/v1alpha1" and so["kind"] == "ScaledObject"
    spec = so["spec"]
    assert spec["scaleTargetRef"] == {"apiVersion": api.API_VERSION, "kind": "InferenceService", "name": "demo"}
    assert (spec["minReplicaCount"], spec["maxReplicaCount"]) == (1, 5)
    assert "fallback" not in spec
    kinds = {t["name"]: t["metricType"] for t in spec["triggers"]}
    # An average is one number over every pod's requests; a sum is divided by the replicas.
    assert kinds == {"queueTime": "Value", "queueToComputeRatio": "Value", "pendingRequests": "AverageValue",
                     "requestLatency": "Value", "gpuUtilization": "Value", "tokens": "AverageValue"}
    by_name = {t["name"]: t["metadata"] for t in spec["triggers"]}
    assert by_name["queueTime"] == {
        "serverAddress": PROMETHEUS, "threshold": "0.05",
        "query": signals.keda_query("queueTime", "ns", "demo", "2m")}
    assert "rate(nv_inference_queue_duration_us{" in by_name["queueTime"]["query"]
    assert by_name["tokens"]["query"] == 'sum(rate(my_tokens{ namespace="ns",inferenceservice="demo" }[1m]))'
    assert all("activationThreshold" not in m for m in by_name.values())
    assert all(t["type"] == "prometheus" for t in spec["triggers"])
    assert spec["advanced"]["horizontalPodAutoscalerConfig"]["behavior"] == autoscaling.behavior(
        isvc.spec.autoscaling, None)


def test_scale_to_zero_wakes_on_pending_requests():
    isvc = scaled(engine="keda", minReplicas=0, maxReplicas=3, keda={"activationPendingRequests": 2})
    (so,) = autoscaling.children(isvc, KEDA_CONFIG, KEDA_CRDS)
    triggers = {t["name"]: t for t in so["spec"]["triggers"]}
    assert so["spec"]["minReplicaCount"] == 0 and set(triggers) == {"queueTime", "pendingRequests"}
    assert triggers["pendingRequests"]["metadata"]["activationThreshold"] == "2"
    assert triggers["pendingRequests"]["metricType"] == "AverageValue"
    assert "activationThreshold" not in triggers["queueTime"]["metadata"]
    # A pendingRequests target of its own keeps its value, and wakes too.
    own = scaled(engine="keda", minReplicas=0, targets=[{"name": "pendingRequests", "value": "3"}])
    (so,) = autoscaling.children(own, KEDA_CONFIG, KEDA_CRDS)
    (trigger,) = so["spec"]["triggers"]
    assert trigger["metadata"]["threshold"] == "3" and trigger["metadata"]["activationThreshold"] == "0"


def test_fallback_authentication_and_the_address_from_the_spec():
    isvc = scaled(engine="keda", keda={"fallbackReplicas": 2, "authenticationRef": "prom-auth",
                                      "serverAddress": "https://prom.example:9090", "pollingInterval": 5})
    (so,) = autoscaling.children(isvc, CONFIG, KEDA_CRDS)
    assert so["spec"]["fallback"] == {"failureThreshold": 3, "replicas": 2, "behavior": "static"}
    assert so["spec"]["pollingInterval"] == 5
    (trigger,) = so["spec"]["triggers"]
    assert trigger["authenticationRef"] == {"name": "prom-auth"}
    assert trigger["metadata"]["serverAddress"] == "https://prom.example:9090"


def test_no_scaledobject_without_keda_or_a_prometheus():
    isvc = scaled(engine="keda")
    assert autoscaling.children(isvc, KEDA_CONFIG, frozenset()) == []
    assert autoscaling.children(isvc, CONFIG, KEDA_CRDS) == []
    assert autoscaling.children(api.parse(isvc_body()), KEDA_CONFIG, KEDA_CRDS) == []


# ---- the replica count -------------------------------------------------------------------------------


@pytest.mark.parametrize("replicas, autoscaling_spec, runs", [
    (3, None, 3),
    (0, None, 0),
    (1, {"minReplicas": 2, "maxReplicas": 6}, 2),  # a new InferenceService's default, brought up
    (4, {"minReplicas": 2, "maxReplicas": 6}, 4),  # what the autoscaler wrote
    (9, {"minReplicas": 2, "maxReplicas": 6}, 6),
    (0, {"engine": "keda", "minReplicas": 0, "maxReplicas": 6}, 0),  # scaled to zero
])
def test_the_deployments_run_spec_replicas_within_the_autoscaling_range(replicas, autoscaling_spec, runs):
    body = isvc_body(replicas=replicas)
    if autoscaling_spec:
        body["spec"]["autoscaling"] = autoscaling_spec
    assert api.parse(body).spec.target_replicas == runs


@pytest.mark.parametrize("replicas, weight, surge, stable, canary_pods", [
    (4, 25, 1, 3, 1), (8, 25, 1, 6, 2), (2, 25, 1, 2, 1), (1, 50, 0, 0, 1), (10, 50, 0, 5, 5), (0, 50, 1, 0, 0),
])
def test_the_autoscalers_replicas_are_divided_by_the_canary_weight(replicas, weight, surge, stable, canary_pods):
    assert canary_split.target(replicas, weight, surge) == canary_split.Split(stable, canary_pods)


def test_a_canary_follows_the_autoscaler_up_and_down_within_its_bounds():
    """The autoscaler moves spec.replicas mid-step: the split follows (World checks the surge and
    the ready floor on every tick), and the weight stays the canary's share."""
    w = World(canary_spec(steps=({"weight": 25}, {"pause": {}})), replicas=4, pods=canary_split.Pods(4, 0, 4, 0))
    w.run(until=lambda w: w.pods == canary_split.Pods(3, 1, 3, 1), ticks=20)
    assert w.pods == canary_split.Pods(3, 1, 3, 1)
    w.replicas = 8  # the HPA scaled the InferenceService up
    w.run(until=lambda w: w.pods.total == 8 and w.pods.ready == 8, ticks=40)
    assert w.pods == canary_split.Pods(6, 2, 6, 2)
    w.replicas = 2  # and down again
    w.run(until=lambda w: w.pods.total <= 3, ticks=40)
    assert (w.pods.stable, w.pods.canary) == (2, 1)


# ---- startup time ------------------------------------------------------------------------------------


def pod(revision, created, scheduled, ready_at, ready=True, restarts=0):
    return {"metadata": {"name": f"p-{revision}-{ready_at}", "labels": {"serving.inference-operator.io/revision": revision},
                         "creationTimestamp": created},
            "status": {"conditions": [
                {"type": "PodScheduled", "status": "True", "lastTransitionTime": scheduled},
                {"type": "Ready", "status": "True" if ready else "False", "lastTransitionTime": ready_at}],
                "containerStatuses": [{"name": "triton", "restartCount": restarts}]}}


def test_startup_is_measured_from_scheduling_to_ready_and_the_longest_is_kept():
    pods = [pod("a", "2026-11-24T10:00:00Z", "2026-11-24T10:05:00Z", "2026-11-24T10:07:30Z"),  # waited for a GPU
            pod("a", "2026-11-24T10:00:00Z", "2026-11-24T10:00:01Z", "2026-11-24T10:01:41Z"),
            pod("b", "2026-11-24T10:00:00Z", "2026-11-24T10:00:00Z", "2026-11-24T10:00:09Z", ready=False),
            pod("c", "2026-11-24T10:00:00Z", "2026-11-24T10:00:00Z", "2026-11-24T10:09:00Z", restarts=1)]
    assert startup.measure({}, pods, keep=()) == {"a": 150}
    # Measured once: a later Ready time (a readiness flap an hour on) changes nothing. Kept while
    # the revision has pods, or is rolled out or desired.
    flapped = pods + [pod("a", "2026-11-24T10:00:00Z", "2026-11-24T10:00:01Z", "2026-11-24T11:00:00Z")]
    assert startup.measure({"a": 150, "gone": 10, "stable": 40}, flapped, keep=("stable", None)) == {
        "a": 150, "stable": 40}


def test_the_canarys_initial_delay_defaults_to_its_measured_startup():
    analysis = api.Analysis()
    assert canary.initial_delay(analysis, None) == 60.0
    assert canary.initial_delay(analysis, 150) == 150.0
    assert canary.initial_delay(analysis, 5) == 30.0
    assert canary.initial_delay(analysis, 5000) == 600.0
    assert canary.initial_delay(api.Analysis(initialDelay="20s"), 150) == 20.0


# ---- the condition -----------------------------------------------------------------------------------


def hpa_status(current=2, desired=3, able=("True", "ReadyForNewScale", ""), active=("True", "ValidMetricFound", ""),
               limited=("False", "DesiredWithinRange", "")):
    conds = [{"type": t, "status": s, "reason": r, "message": m}
             for t, (s, r, m) in (("AbleToScale", able), ("ScalingActive", active), ("ScalingLimited", limited))]
    return {"metadata": {"name": "demo"}, "status": {"currentReplicas": current, "desiredReplicas": desired,
                                                      "conditions": conds}}


def so_status(ready="True", active="True", fallback="False"):
    return {"metadata": {"name": "demo"}, "status": {"conditions": [
        {"type": "Ready", "status": ready, "reason": "ScaledObjectReady" if ready == "True" else "TriggerError",
         "message": "" if ready == "True" else "prometheus query failed"},
        {"type": "Active", "status": active}, {"type": "Fallback", "status": fallback}]}}


@pytest.mark.parametrize("fields, crds, config, seen, expected", [
    ({}, frozenset(), CONFIG, autoscaling.Observation(), ("Unknown", "AutoscalerPending")),
    ({}, frozenset(), CONFIG, autoscaling.Observation(rejected="minReplicas must be greater than 0"),
     ("False", "AutoscalerRejected")),
    ({}, frozenset(), CONFIG, autoscaling.Observation(autoscaler=hpa_status(), hpa=hpa_status()),
     ("True", "ScalingActive")),
    ({}, frozenset(), CONFIG, autoscaling.Observation(autoscaler=hpa_status(), hpa=hpa_status(
        active=("False", "FailedGetPodsMetric", "unable to get metric triton_queue_time_seconds")),
    ), ("False", "FailedGetPodsMetric")),
    ({}, frozenset(), CONFIG, autoscaling.Observation(autoscaler=hpa_status(), hpa=hpa_status(
        able=("False", "FailedGetScale", "no scale"))), ("False", "FailedGetScale")),
    ({"engine": "keda"}, frozenset(), KEDA_CONFIG, autoscaling.Observation(), ("False", "KEDANotInstalled")),
    ({"engine": "keda"}, KEDA_CRDS, CONFIG, autoscaling.Observation(), ("False", "NoPrometheus")),
    ({"engine": "keda"}, KEDA_CRDS, KEDA_CONFIG, autoscaling.Observation(autoscaler={"metadata": {}}),
     ("Unknown", "AutoscalerPending")),
    ({"engine": "keda"}, KEDA_CRDS, KEDA_CONFIG, autoscaling.Observation(autoscaler=so_status(ready="False")),
     ("False", "TriggerError")),
    ({"engine": "keda", "keda": {"fallbackReplicas": 2}}, KEDA_CRDS, KEDA_CONFIG,
     autoscaling.Observation(autoscaler=so_status(fallback="True"), hpa=hpa_status()), ("False", "Fallback")),
    ({"engine": "keda"}, KEDA_CRDS, KEDA_CONFIG, autoscaling.Observation(autoscaler=so_status(), hpa=hpa_status()),
     ("True", "ScalingActive")),
])
def test_the_autoscaling_condition(fields, crds, config, seen, expected):
    fields.setdefault("maxReplicas", 4)
    isvc = api.parse(isvc_body(autoscaling=fields))
    status, reason, message = autoscaling.condition(isvc, config, crds, seen)
    assert (status, reason) == expected
    assert message


def test_keda_activity_is_in_the_message():
    isvc = scaled(engine="keda")
    for active, said in (("True", "; active"), ("False", "; inactive")):
        seen = autoscaling.Observation(autoscaler=so_status(active=active), hpa=hpa_status())
        assert said in autoscaling.condition(isvc, KEDA_CONFIG, KEDA_CRDS, seen)[2]


def test_a_keda_scaled_to_zero_condition_is_true():
    body = isvc_body(replicas=0, autoscaling={"engine": "keda", "minReplicas": 0, "maxReplicas": 4})
    seen = autoscaling.Observation(autoscaler=so_status(active="False"), hpa=hpa_status(current=0, desired=0))
    assert autoscaling.condition(api.parse(body), KEDA_CONFIG, KEDA_CRDS, seen)[:2] == ("True", "ScaledToZero")


def test_no_condition_without_autoscaling():
    assert autoscaling.condition(api.parse(isvc_body()), CONFIG, frozenset(), autoscaling.Observation()) is None


# ---- the pass ----------------------------------------------------------------------------------------

DEP = Ref(DEPLOYMENT, "ns", "demo-predictor")
HPA_REF = Ref(HPA, "ns", "demo")
SO_REF = Ref(SCALEDOBJECT, "ns", "demo")


def run(kube, body, config=CONFIG):
    outcome = reconcile(kube.observe(body), kube, config, now=lambda: "2026-11-24T10:00:00Z")
    if outcome.status_written:
        body["status"] = copy.deepcopy(kube.last_status)
    return outcome


def settle(kube, body, config=CONFIG):
    """Passes until one writes nothing, the Deployment's rollout done between them."""
    for _ in range(6):
        dep = kube.objects.get(DEP)
        if dep is not None:
            r = dep["spec"]["replicas"]
            dep["status"] = {"observedGeneration": dep["metadata"]["generation"], "replicas": r, "updatedReplicas": r,
                             "readyReplicas": r, "availableReplicas": r, "conditions": [
                                 {"type": "Progressing", "status": "True", "reason": "NewReplicaSetAvailable"}]}
        if run(kube, body, config).writes == 0:
            return
    raise AssertionError("the passes never settled")


def cond(body, ctype):
    return next((c for c in body["status"]["conditions"] if c["type"] == ctype), None)


def test_the_pass_writes_the_hpa_and_follows_spec_replicas_without_writing_them(fake_kube):
    body = isvc_body(replicas=1, autoscaling={"minReplicas": 2, "maxReplicas": 6})
    run(fake_kube, body)
    assert ("apply", "HorizontalPodAutoscaler/demo") in fake_kube.writes
    assert fake_kube.objects[DEP]["spec"]["replicas"] == 2  # the default 1, brought within the range
    settle(fake_kube, body)
    assert cond(body, "Ready")["status"] == "True"
    assert cond(body, "Autoscaling")["status"] == "Unknown"  # no HPA controller here
    # The HPA reports, and scales the InferenceService through /scale: the Deployment follows.
    fake_kube.objects[HPA_REF]["status"] = hpa_status(current=2, desired=5)["status"]
    body["spec"]["replicas"] = 5
    body["metadata"]["generation"] = 2
    fake_kube.writes.clear()
    settle(fake_kube, body)
    assert fake_kube.objects[DEP]["spec"]["replicas"] == 5
    assert cond(body, "Autoscaling")["status"] == "True" and "5 desired" in cond(body, "Autoscaling")["message"]
    assert body["status"]["autoscaler"] == {"kind": "HorizontalPodAutoscaler", "name": "demo",
                                            "currentReplicas": 2, "desiredReplicas": 5}
    assert body["spec"]["replicas"] == 5  # never written by the operator: only status and children are
    assert {verb for verb, _ in fake_kube.writes} <= {"apply", "status"}
    assert not [w for w in fake_kube.writes if w[1] == "HorizontalPodAutoscaler/demo"]
    # Nothing changed: nothing written.
    fake_kube.writes.clear()
    run(fake_kube, body)
    assert fake_kube.writes == []


def test_an_hpa_the_cluster_refuses_is_reported_and_the_model_serves_on(fake_kube):
    # A refusal the schema cannot foresee: a validating admission policy of the cluster's.
    fake_kube.reject["HorizontalPodAutoscaler"] = ApiError(
        422, "Invalid", 'HorizontalPodAutoscaler.autoscaling "demo" is invalid: spec.maxReplicas: Invalid value: 4: '
        "ValidatingAdmissionPolicy 'hpa-limits' denied request", "create", "horizontalpodautoscalers")
    body = isvc_body(replicas=2, autoscaling={"minReplicas": 1, "maxReplicas": 4})
    outcome = run(fake_kube, body)
    assert outcome.problem is None
    settle(fake_kube, body)
    assert cond(body, "Ready")["status"] == "True" and cond(body, "Degraded")["status"] == "False"
    autoscaling_cond = cond(body, "Autoscaling")
    assert (autoscaling_cond["status"], autoscaling_cond["reason"]) == ("False", "AutoscalerRejected")
    assert "hpa-limits" in autoscaling_cond["message"]
    assert "AutoscalerRejected" in [e.reason for e in fake_kube.events if e.type == "Warning"]
    assert fake_kube.objects[DEP]["spec"]["replicas"] == 2
    # Not sent again while the spec makes the same HPA: a pass that changes nothing sends nothing.
    attempts = fake_kube.apply_attempts
    run(fake_kube, body)
    assert fake_kube.apply_attempts == attempts and cond(body, "Autoscaling")["reason"] == "AutoscalerRejected"
    # Another HPA (the range changed) is tried again, and made once the cluster takes it.
    del fake_kube.reject["HorizontalPodAutoscaler"]
    body["spec"]["autoscaling"]["maxReplicas"] = 3
    settle(fake_kube, body)
    assert fake_kube.objects[HPA_REF]["spec"]["maxReplicas"] == 3
    assert cond(body, "Autoscaling")["reason"] == "AutoscalerPending" and "refusedHash" not in body["status"]["autoscaler"]


def test_keda_not_installed_is_a_condition_and_nothing_else_breaks(fake_kube):
    body = isvc_body(replicas=2, autoscaling={"engine": "keda", "maxReplicas": 4})
    settle(fake_kube, body, KEDA_CONFIG)
    assert SO_REF not in fake_kube.objects and HPA_REF not in fake_kube.objects
    assert cond(body, "Ready")["status"] == "True"
    assert cond(body, "Autoscaling")["reason"] == "KEDANotInstalled"
    # KEDA installed: the ScaledObject is made.
    fake_kube.crds = KEDA_CRDS
    settle(fake_kube, body, KEDA_CONFIG)
    assert fake_kube.objects[SO_REF]["spec"]["scaleTargetRef"]["kind"] == "InferenceService"
    # engine hpa: the ScaledObject goes, the HPA comes; autoscaling removed: both gone, condition too.
    body["spec"]["autoscaling"]["engine"] = "hpa"
    settle(fake_kube, body, KEDA_CONFIG)
    assert SO_REF not in fake_kube.objects and HPA_REF in fake_kube.objects
    del body["spec"]["autoscaling"]
    settle(fake_kube, body, KEDA_CONFIG)
    assert HPA_REF not in fake_kube.objects and cond(body, "Autoscaling") is None


def test_an_autoscaler_changed_behind_our_back_is_put_back(fake_kube):
    body = isvc_body(autoscaling={"maxReplicas": 4})
    settle(fake_kube, body)
    fake_kube.objects[HPA_REF]["spec"]["maxReplicas"] = 40
    fake_kube.writes.clear()
    run(fake_kube, body)
    assert ("apply", "HorizontalPodAutoscaler/demo") in fake_kube.writes
    assert fake_kube.objects[HPA_REF]["spec"]["maxReplicas"] == 4


def test_status_records_startup_per_revision(fake_kube):
    body = isvc_body(autoscaling={"maxReplicas": 4})
    settle(fake_kube, body)
    revision = body["status"]["revision"]
    fake_kube.pods = [pod(revision, "2026-11-24T09:00:00Z", "2026-11-24T09:00:02Z", "2026-11-24T09:02:07Z")]
    for p in fake_kube.pods:
        p["metadata"]["labels"].update({"serving.inference-operator.io/inferenceservice": "demo"})
    settle(fake_kube, body)
    assert body["status"]["startupSeconds"] == {revision: 125}
    assert fake_kube.objects[HPA_REF]["spec"]["behavior"]["scaleUp"]["stabilizationWindowSeconds"] == 130


def test_the_adapter_values_in_charts_are_what_the_code_generates(capsys):
    import pathlib

    from inference_operator import cli

    assert cli.main(["adapter-values"]) == 0
    shipped = pathlib.Path(__file__).resolve().parents[1] / "charts" / "inference-operator" / "files" / "prometheus-adapter-values.yaml"
    assert shipped.read_text() == capsys.readouterr().out, (
        "charts/ is stale: run `inference-operator adapter-values > charts/inference-operator/files/prometheus-adapter-values.yaml`")


def test_the_readme_carries_the_same_adapter_rules():
    import pathlib

    root = pathlib.Path(__file__).resolve().parents[1]
    values = (root / "charts" / "inference-operator" / "files" / "prometheus-adapter-values.yaml").read_text()
    assert values[values.index("rules:"):] in (root / "README.md").read_text()


def test_scaled_to_zero_is_not_ready_and_not_degraded(fake_kube):
    fake_kube.crds = KEDA_CRDS
    body = isvc_body(replicas=1, autoscaling={"engine": "keda", "minReplicas": 0, "maxReplicas": 3})
    settle(fake_kube, body, KEDA_CONFIG)
    assert cond(body, "Ready")["status"] == "True"
    body["spec"]["replicas"] = 0  # KEDA, through the scale subresource, once inactive
    body["metadata"]["generation"] = 2
    settle(fake_kube, body, KEDA_CONFIG)
    assert fake_kube.objects[DEP]["spec"]["replicas"] == 0
    assert (cond(body, "Ready")["status"], cond(body, "Ready")["reason"]) == ("False", "ScaledToZero")
    assert cond(body, "Degraded")["status"] == "False" and cond(body, "Stalled")["status"] == "False"


def test_adapter_values_add_a_rule_for_each_query_target_of_the_hpa_engine(tmp_path, capsys):
    import yaml

    from inference_operator import cli

    hpa = isvc_body(autoscaling={"maxReplicas": 4, "targets": [
        {"name": "tokens", "value": "500", "query": "sum by (pod) (rate(tokens_total{ {{selector}} }[1m]))"}]})
    keda = isvc_body(autoscaling={"engine": "keda", "maxReplicas": 4, "targets": [
        {"name": "ignored", "value": "1", "query": "sum(up{ {{selector}} })"}]})
    keda["metadata"]["name"] = "other"
    manifest = tmp_path / "isvc.yaml"
    manifest.write_text(yaml.safe_dump_all([hpa, keda]))
    assert cli.main(["adapter-values", "-f", str(manifest)]) == 0
    rules = yaml.safe_load(capsys.readouterr().out)["rules"]["custom"]
    assert [r["name"]["as"] for r in rules][5:] == ["tokens"]  # the keda engine's queries are KEDA's
    assert rules[5]["metricsQuery"] == "sum by (pod) (rate(tokens_total{ <<.LabelMatchers>> }[1m]))"
    assert rules[5]["resources"] == rules[0]["resources"] and rules[5]["seriesQuery"] == rules[0]["seriesQuery"]
    twice = api.parse(isvc_body(autoscaling={"maxReplicas": 2, "targets": [
        {"name": "tokens", "value": "5", "query": "sum by (pod) (x{ {{selector}} })"}]}))
    with pytest.raises(ValueError, match="two autoscaling queries are named tokens"):
        autoscaling.adapter_values("1m", (api.parse(isvc_body(autoscaling={"maxReplicas": 2, "targets": [
            {"name": "tokens", "value": "5", "query": "sum by (pod) (y{ {{selector}} })"}]})), twice))
