"""The planner: what to apply, what to leave, what to delete, what never to touch."""

import copy
import dataclasses

import pytest

from inference_operator import api, kinds, naming
from inference_operator.desired import children, render

from .helpers import CONFIG, isvc_body


def setup(**spec):
    isvc = api.parse(isvc_body(**spec))
    desired = [children.stamp(c, isvc) for c in render.render(isvc, CONFIG)]
    return isvc, desired


def live_of(objs):
    return {kinds.ref_of(o): copy.deepcopy(o) for o in objs}


def test_stamp_sets_controller_owner_and_hash():
    isvc, desired = setup()
    for obj in desired:
        (owner,) = obj["metadata"]["ownerReferences"]
        assert owner == {
            "apiVersion": api.API_VERSION, "kind": api.KIND, "name": "demo", "uid": "uid-demo",
            "controller": True, "blockOwnerDeletion": True,
        }
        assert children.spec_hash(obj)


def test_hash_changes_with_content_and_owner():
    isvc, desired = setup()
    _, other = setup(replicas=3)
    assert children.spec_hash(desired[0]) != children.spec_hash(other[0])
    body = isvc_body()
    body["metadata"]["uid"] = "another-uid"
    recreated = api.parse(body)
    restamped = children.stamp(render.render(recreated, CONFIG)[0], recreated)
    assert children.spec_hash(restamped) != children.spec_hash(desired[0])


def test_nothing_live_creates_everything_the_workload_last():
    isvc, desired = setup(replicas=2)
    p = children.plan(isvc, desired, {})
    assert [str(kinds.ref_of(o)) for o in p.apply] == [
        "Service/demo", "PodDisruptionBudget/demo-predictor", "Deployment/demo-predictor"]
    assert p.creates == {kinds.ref_of(o) for o in desired}
    assert p.delete == [] and p.conflicts == []


def test_updates_go_before_creations_and_are_not_creations():
    isvc, desired = setup(replicas=2)
    live = live_of(desired)
    svc_ref, pdb_ref = kinds.ref_of(desired[1]), kinds.ref_of(desired[2])
    del live[pdb_ref]
    live[svc_ref]["spec"]["selector"] = {"other": "x"}  # drift
    p = children.plan(isvc, desired, live)
    assert [kinds.ref_of(o) for o in p.apply] == [svc_ref, pdb_ref]
    assert p.creates == {pdb_ref}


def test_a_looked_up_child_of_ours_is_applied_not_created():
    isvc, desired = setup()
    live = live_of(desired)
    dep_ref = kinds.ref_of(desired[0])
    p = children.plan(isvc, desired, live, looked_up=frozenset({dep_ref}))
    assert [kinds.ref_of(o) for o in p.apply] == [dep_ref] and p.creates == frozenset()


def test_unchanged_children_are_not_written():
    isvc, desired = setup(replicas=2)
    p = children.plan(isvc, desired, live_of(desired))
    assert p.writes == 0 and len(p.unchanged) == 3


def test_changed_hash_reapplies_only_that_child():
    isvc, desired = setup()
    live = live_of(desired)
    dep_ref = kinds.ref_of(desired[0])
    live[dep_ref]["metadata"]["annotations"][naming.SPEC_HASH_ANNOTATION] = "stale"
    p = children.plan(isvc, desired, live)
    assert [kinds.ref_of(o) for o in p.apply] == [dep_ref]


def test_child_no_longer_desired_is_deleted():
    isvc2, desired2 = setup(replicas=2)
    isvc1, desired1 = setup(replicas=1)
    p = children.plan(isvc1, desired1, live_of(desired2))
    assert [str(r) for r in p.delete] == ["PodDisruptionBudget/demo-predictor"]


@pytest.mark.parametrize("owner_uid", [None, "someone-else"])
def test_foreign_object_with_our_name_is_a_conflict_and_never_touched(owner_uid):
    isvc, desired = setup()
    foreign = copy.deepcopy(desired[1])  # the Service
    foreign["metadata"]["ownerReferences"] = (
        [{"uid": owner_uid, "controller": True, "kind": "X", "name": "x", "apiVersion": "v1"}] if owner_uid else []
    )
    p = children.plan(isvc, desired, {kinds.ref_of(foreign): foreign})
    assert [str(c.ref) for c in p.conflicts] == ["Service/demo"]
    assert "not owned by this InferenceService" in p.conflicts[0].message
    assert all(kinds.ref_of(o) != kinds.ref_of(foreign) for o in p.apply)


def test_foreign_object_not_desired_is_left_alone():
    isvc, desired = setup(replicas=1)
    foreign_pdb = {"apiVersion": "policy/v1", "kind": "PodDisruptionBudget",
                   "metadata": {"name": "demo-predictor", "namespace": "ns", "uid": "u"}}
    p = children.plan(isvc, desired, {kinds.ref_of(foreign_pdb): foreign_pdb})
    assert p.delete == [] and p.conflicts == []


def _edit(obj, change):
    edited = copy.deepcopy(obj)
    change(edited)
    return edited


@pytest.mark.parametrize(
    "kind,change,field",
    [
        ("Deployment", lambda d: d["spec"].update(replicas=0), "spec.replicas"),
        ("Deployment", lambda d: d["spec"]["template"]["spec"]["containers"][0].update(image="evil:1"),
         "container triton image"),
        ("Deployment", lambda d: d["spec"]["template"]["spec"]["containers"][0]["args"].append("--log-verbose=9"),
         "container triton args"),
        ("Deployment", lambda d: d["spec"]["template"]["metadata"]["labels"].pop(naming.REVISION_LABEL),
         "spec.template.metadata.labels"),
        ("Service", lambda s: s["spec"]["ports"].pop(), "spec.ports"),
        ("Service", lambda s: s["spec"]["selector"].update(extra="x"), "spec.selector"),
        ("PodDisruptionBudget", lambda p: p["spec"].update(maxUnavailable=0), "spec.maxUnavailable"),
    ],
)
def test_drift_in_fields_we_set_is_reapplied(kind, change, field):
    isvc, desired = setup(replicas=2)
    live = live_of(desired)
    ref = next(r for r in live if r.kind.kind == kind)
    live[ref] = _edit(live[ref], change)
    assert field in children.drift(next(o for o in desired if o["kind"] == kind), live[ref])
    p = children.plan(isvc, desired, live)
    assert [kinds.ref_of(o) for o in p.apply] == [ref]


def test_what_the_api_server_adds_is_not_drift():
    isvc, desired = setup(replicas=2)
    live = live_of(desired)
    for ref, obj in live.items():
        obj["metadata"].update(uid="u", resourceVersion="7", generation=3,
                               annotations={**obj["metadata"]["annotations"], "deployment.kubernetes.io/revision": "4"})
        obj["status"] = {"observedGeneration": 3}
        if ref.kind.kind == "Service":
            obj["spec"].update(clusterIP="10.96.0.10", clusterIPs=["10.96.0.10"], sessionAffinity="None",
                               ipFamilies=["IPv4"], internalTrafficPolicy="Cluster")
        if ref.kind.kind == "Deployment":
            pod = obj["spec"]["template"]["spec"]
            pod.update(dnsPolicy="ClusterFirst", restartPolicy="Always", schedulerName="default-scheduler")
            pod["containers"][0].update(terminationMessagePath="/dev/termination-log")
            obj["spec"]["template"]["metadata"]["labels"]["pod-template-hash"] = "abc"
    p = children.plan(isvc, desired, live)
    assert p.writes == 0


def test_every_rendered_child_is_in_the_registry_and_the_watches():
    from inference_operator.controller import handlers

    isvc = api.parse(isvc_body(replicas=3))
    from inference_operator.desired import traffic

    routed = api.parse(isvc_body(replicas=3, rollout={"canary": {
        "steps": [{"weight": 10}], "traffic": "gatewayAPI", "gatewayAPI": {"parentRefs": [{"name": "gw"}]}}}))
    rendered = {c["kind"] for c in render.render(isvc, CONFIG)} | {
        c["kind"] for c in render.render(isvc, CONFIG, track="canary")} | {
        c["kind"] for c in traffic.children(routed, "stable", "canary", 10)}
    from inference_operator.desired import autoscaling

    for engine in ("hpa", "keda"):
        scaled = api.parse(isvc_body(autoscaling={"engine": engine, "maxReplicas": 3}))
        config = dataclasses.replace(CONFIG, prometheus_url="http://prometheus:9090")
        rendered |= {c["kind"] for c in autoscaling.children(scaled, config, frozenset({autoscaling.SCALEDOBJECT_CRD}))}
    registered = {child.kind.kind for child in children.REGISTRY}
    assert rendered == registered
    watched = {kind for _, _, _, kind in handlers.CHILD_RESOURCES}
    assert registered | {"Pod", "ReplicaSet"} == watched
    assert [str(r) for r in children.possible_refs(isvc)] == [
        "Deployment/demo-predictor", "Service/demo", "PodDisruptionBudget/demo-predictor",
        "Deployment/demo-predictor-canary", "Service/demo-stable", "Service/demo-canary", "HTTPRoute/demo",
        "HorizontalPodAutoscaler/demo", "ScaledObject/demo"]
    assert render.render(isvc, CONFIG, track="canary")[0]["metadata"]["name"] == "demo-predictor-canary"


def test_a_child_kind_whose_crd_is_absent_is_skipped_until_it_is_installed(monkeypatch):
    """The registry's optional CRD: such a kind is neither rendered into the plan nor watched for
    nothing until its CRD exists (an HTTPRoute without the Gateway API, a ScaledObject without KEDA)."""
    import dataclasses

    optional = dataclasses.replace(children._BY_KIND["PodDisruptionBudget"], crd="poddisruptionbudgets.example.io")
    monkeypatch.setitem(children._BY_KIND, "PodDisruptionBudget", optional)
    assert not children.installable("PodDisruptionBudget", frozenset())
    assert children.installable("PodDisruptionBudget", frozenset({"poddisruptionbudgets.example.io"}))
    assert children.installable("Deployment", frozenset())

    from inference_operator.controller.desire import desire
    from inference_operator.controller.render_cache import RenderCache
    from inference_operator.observed import Observed

    isvc = api.parse(isvc_body(replicas=3))
    without, _ = desire(isvc, Observed(isvc=isvc_body(replicas=3), claims=frozenset({"models"})), CONFIG,
                        RenderCache())
    assert [c["kind"] for c in without.children] == ["Deployment", "Service"]
    with_crd, _ = desire(isvc, Observed(isvc=isvc_body(replicas=3), claims=frozenset({"models"}),
                                         crds=frozenset({"poddisruptionbudgets.example.io"})), CONFIG,
                         RenderCache())
    assert [c["kind"] for c in with_crd.children] == ["Deployment", "Service", "PodDisruptionBudget"]


def test_the_plan_applies_a_child_of_ours_found_by_a_look_up_and_waits_for_one_going_away():
    isvc = api.parse(isvc_body())
    desired = [children.stamp(c, isvc) for c in render.render(isvc, CONFIG)]
    live = {kinds.ref_of(o): copy.deepcopy(o) for o in desired}
    dep, svc = (kinds.ref_of(o) for o in desired[:2])
    assert children.plan(isvc, desired, live).apply == []
    assert [kinds.ref_of(o) for o in children.plan(isvc, desired, live, looked_up=frozenset({svc})).apply] == [svc]
    live[dep]["metadata"]["deletionTimestamp"] = "2026-11-24T00:00:00Z"
    live[svc] = None
    plan = children.plan(isvc, desired, live, hold=frozenset({svc}))
    assert plan.apply == []  # the Deployment is going away; the Service is held back
