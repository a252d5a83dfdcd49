"""Moving a Deployment made before tracks onto tracks: the orphaned ReplicaSet shrinks as the new
Deployment's replicas come up, never below replicas - maxUnavailable serving."""

import pytest

from inference_operator import kinds, naming
from inference_operator.desired import migration


def rs(name, replicas, controller=None, available=None, revision=1, track=False):
    meta = {"name": name, "namespace": "ns", "labels": {naming.ISVC_LABEL: "demo"},
            "annotations": {"deployment.kubernetes.io/revision": str(revision)}}
    if controller:
        meta["ownerReferences"] = [{"uid": controller, "controller": True}]
    selector = {naming.ISVC_LABEL: "demo", **({naming.TRACK_LABEL: "stable"} if track else {})}
    return {"metadata": meta, "spec": {"replicas": replicas, "selector": {"matchLabels": selector}},
            "status": {"availableReplicas": replicas if available is None else available}}


def test_only_replicasets_no_deployment_controls_are_orphans():
    found = migration.orphans([rs("a", 2), rs("b", 2, controller="dep-uid")])
    assert [r["metadata"]["name"] for r in found] == ["a"]


def test_a_replicaset_with_a_track_is_never_an_orphan():
    """One left by `kubectl delete deploy --cascade=orphan` of a new-style Deployment: ours adopts it."""
    assert migration.orphans([rs("a", 2, track=True)]) == []


def test_the_serving_replicaset_is_kept_whatever_its_name():
    """A legacy Deployment caught mid-rollout leaves two orphans: keep the one that serves."""
    serving = rs("demo-predictor-5f7a", 1, available=1, revision=1)
    crashing = rs("demo-predictor-9c2b", 1, available=0, revision=2)
    step = migration.step(migration.orphans([serving, crashing]), desired_replicas=1, new_available=0,
                          max_unavailable=0)
    assert step.delete == ["demo-predictor-9c2b"] and step.scale == {}
    step = migration.step(migration.orphans([rs("demo-predictor-5f7a", 3, revision=1), crashing]),
                          desired_replicas=3, new_available=0, max_unavailable=0)
    assert step.delete == ["demo-predictor-9c2b"] and step.scale == {}


def test_a_replica_still_starting_is_scaled_away_before_a_serving_one():
    step = migration.step([rs("old", 3, available=2)], desired_replicas=3, new_available=1, max_unavailable=0)
    assert step.scale == {"old": 2}  # the not-ready pod goes; both serving ones stay


@pytest.mark.parametrize(
    "replicas,new_available,max_unavailable,scale,delete",
    [
        (3, 0, 0, {}, []),  # nothing new is up: the old ones all keep serving
        (3, 1, 0, {"old": 2}, []),
        (3, 2, 0, {"old": 1}, []),
        (3, 3, 0, {}, ["old"]),  # all new ones up: the old ReplicaSet goes
        (3, 0, 1, {"old": 2}, []),  # maxUnavailable 1: one old replica may go first, freeing a GPU
        (1, 0, 1, {}, ["old"]),  # replicas 1, maxUnavailable 1: replace in place, as maxSurge 0 does
    ],
)
def test_the_orphaned_replicaset_shrinks_as_new_replicas_serve(replicas, new_available, max_unavailable, scale,
                                                               delete):
    step = migration.step([rs("old", replicas)], desired_replicas=replicas, new_available=new_available,
                          max_unavailable=max_unavailable)
    assert (step.scale, step.delete) == (scale, delete)


def test_older_orphans_at_zero_are_deleted_and_never_scaled_up():
    step = migration.step([rs("older", 0), rs("old", 2)], desired_replicas=4, new_available=0, max_unavailable=0)
    assert step.scale == {} and step.delete == ["older"]


def test_a_legacy_deployment_is_one_without_a_track_in_its_selector():
    assert migration.is_legacy({"spec": {"selector": {"matchLabels": {naming.ISVC_LABEL: "demo"}}}})
    assert not migration.is_legacy({"spec": {"selector": {"matchLabels": {naming.TRACK_LABEL: "stable"}}}})
    assert not migration.is_legacy(None)


# ---- the whole move, pass by pass, over the in-memory Kube ------------------------------------------


def test_a_legacy_deployment_moves_onto_tracks_at_its_next_rollout_without_an_outage(fake_kube):
    from inference_operator import api
    from inference_operator.desired import children, render

    from .helpers import CONFIG, DEP, cond, isvc_body, run

    body = isvc_body(replicas=2)
    legacy = children.stamp(render.render(api.parse(body), CONFIG, track=None)[0], api.parse(body))
    fake_kube.apply(legacy)
    live = fake_kube.objects[DEP]
    live["status"] = {"observedGeneration": live["metadata"]["generation"], "replicas": 2, "updatedReplicas": 2,
                      "readyReplicas": 2, "availableReplicas": 2,
                      "conditions": [{"type": "Progressing", "status": "True", "reason": "NewReplicaSetAvailable"}]}
    run(fake_kube, body)
    assert cond(body, "Ready")["status"] == "True"

    # The spec changes: a rollout is due, and it moves the Deployment onto tracks.
    body["spec"]["model"]["storageUri"] = "pvc://models/v2"
    body["metadata"]["generation"] = 2
    fake_kube.writes.clear()
    run(fake_kube, body)
    assert ("delete", "Deployment/demo-predictor Orphan") in fake_kube.writes
    assert not [w for w in fake_kube.writes if w == ("apply", "Deployment/demo-predictor")]
    # What the garbage collector leaves: the old ReplicaSet, uncontrolled, its pods serving.
    old_rs = kinds.Ref(kinds.REPLICASET, "ns", "demo-predictor-old")
    fake_kube.objects[old_rs] = {"kind": "ReplicaSet", "metadata": {
        "name": "demo-predictor-old", "namespace": "ns", "uid": "rs-old",
        "labels": {naming.ISVC_LABEL: "demo"}}, "spec": {"replicas": 2, "selector": {"matchLabels": {}}},
        "status": {"availableReplicas": 2}}

    fake_kube.writes.clear()
    run(fake_kube, body)  # the old Deployment is gone: the new one is created with a track
    new = fake_kube.objects[DEP]
    assert new["spec"]["selector"]["matchLabels"][naming.TRACK_LABEL] == "stable"
    assert fake_kube.objects[old_rs]["spec"]["replicas"] == 2  # nothing new serves yet: all old ones stay
    # It is owned by the InferenceService now (not as controller): a delete mid-move takes it too.
    (owner,) = fake_kube.objects[old_rs]["metadata"]["ownerReferences"]
    assert owner["uid"] == "uid-demo" and owner["controller"] is False

    for available, old_replicas in ((1, 1), (2, None)):
        new["status"] = {"observedGeneration": new["metadata"]["generation"], "replicas": available,
                         "updatedReplicas": available, "readyReplicas": available, "availableReplicas": available}
        run(fake_kube, body)
        if old_replicas is None:
            assert old_rs not in fake_kube.objects  # all new replicas serve: the old ReplicaSet goes
        else:
            assert fake_kube.objects[old_rs]["spec"]["replicas"] == old_replicas


def test_replicasets_are_shrunk_by_what_serves_not_by_what_they_ask_for():
    """Two orphans half-serving each: keeping 2 serving keeps both, one available pod each."""
    a = rs("a", 2, available=1, revision=2)
    b = rs("b", 2, available=1, revision=1)
    step = migration.step(migration.orphans([a, b]), desired_replicas=2, new_available=0, max_unavailable=0)
    assert step.delete == [] and step.scale == {"a": 1, "b": 1}
