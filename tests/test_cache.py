"""The cache the passes read: what a snapshot holds, and which version of an object wins."""

from inference_operator import kinds, naming
from inference_operator.controller import cache

from .helpers import isvc_body


def obj(kind, name, rv, uid="u1", owner=None, ns="ns", **extra):
    meta = {"name": name, "namespace": ns, "uid": uid, "resourceVersion": str(rv),
            "managedFields": [{"manager": "x"}]}
    if owner:
        meta["labels"] = {naming.ISVC_LABEL: owner}
    return {"kind": kind, "metadata": meta, **extra}


def test_a_snapshot_holds_the_inferenceservice_its_children_pods_and_claims():
    store = cache.Store()
    store.upsert(cache.ISVC, isvc_body())
    store.upsert("Deployment", obj("Deployment", "demo-predictor", 1, owner="demo"))
    store.upsert("Service", obj("Service", "demo", 1, owner="demo"))
    store.upsert("Service", obj("Service", "other", 1, owner="other"))
    store.upsert(cache.POD, obj("Pod", "demo-b", 1, owner="demo"))
    store.upsert(cache.POD, obj("Pod", "demo-a", 1, owner="demo"))
    store.upsert(cache.POD, obj("Pod", "demo-x", 1, owner="demo", ns="elsewhere"))
    store.upsert(cache.PVC, obj("PersistentVolumeClaim", "models", 1))
    observed = store.observe("ns", "demo")
    assert set(observed.children) == {("Deployment", "demo-predictor"), ("Service", "demo")}
    assert [p["metadata"]["name"] for p in observed.pods] == ["demo-a", "demo-b"]
    assert observed.claims == frozenset({"models"})
    assert not observed.namespace_terminating
    # managedFields are never read, and are often half of an object: not kept.
    assert "managedFields" not in observed.child_by_kind("Deployment", "demo-predictor")["metadata"]
    assert store.observe("ns", "missing") is None


def test_an_older_version_of_the_same_object_never_replaces_a_newer_one():
    store = cache.Store()
    assert store.upsert("Deployment", obj("Deployment", "d", 7, owner="demo"))
    assert not store.upsert("Deployment", obj("Deployment", "d", 5, owner="demo"))  # a late event
    assert store.get("Deployment", "ns", "d")["metadata"]["resourceVersion"] == "7"
    # A re-created object (new uid) replaces the old whatever its version.
    assert store.upsert("Deployment", obj("Deployment", "d", 2, uid="u2", owner="demo"))


def test_a_deletion_of_an_old_object_does_not_remove_its_successor():
    store = cache.Store()
    store.upsert("Deployment", obj("Deployment", "d", 9, uid="new", owner="demo"))
    store.remove("Deployment", obj("Deployment", "d", 3, uid="old"))
    assert store.get("Deployment", "ns", "d") is not None
    store.remove("Deployment", obj("Deployment", "d", 9, uid="new"))
    assert store.get("Deployment", "ns", "d") is None


def test_a_child_whose_label_changes_moves_to_its_new_owner():
    store = cache.Store()
    store.upsert(cache.ISVC, isvc_body())
    store.upsert("Service", obj("Service", "s", 1, owner="demo"))
    store.upsert("Service", obj("Service", "s", 2, owner="someone-else"))
    assert store.observe("ns", "demo").children == {}


def test_a_terminating_namespace_shows_in_the_snapshot():
    store = cache.Store()
    store.upsert(cache.ISVC, isvc_body())
    store.upsert(cache.NAMESPACE, {"metadata": {"name": "ns", "uid": "n"}, "status": {"phase": "Terminating"}})
    assert store.observe("ns", "demo").namespace_terminating


def test_the_users_of_a_claim_are_found():
    store = cache.Store()
    store.upsert(cache.ISVC, isvc_body())  # pvc://models/repo
    other = isvc_body()
    other["metadata"]["name"] = "other"
    other["spec"]["model"]["storageUri"] = "s3://bucket/models"
    store.upsert(cache.ISVC, other)
    assert store.users_of_claim("ns", "models") == ["demo"]
    assert store.users_of_claim("ns", "models-2") == []


def test_an_object_we_deleted_is_never_brought_back_by_a_late_event():
    store = cache.Store()
    store.upsert(cache.ISVC, isvc_body())
    dep = obj("Deployment", "demo-predictor", 5, uid="d1", owner="demo")
    store.upsert("Deployment", dep)
    store.remove("Deployment", dep, final=True)  # our own delete (an orphaning one takes a while)
    assert not store.upsert("Deployment", obj("Deployment", "demo-predictor", 6, uid="d1", owner="demo"))
    assert store.observe("ns", "demo").children == {}
    # Re-created under the same name: a new uid, welcome.
    assert store.upsert("Deployment", obj("Deployment", "demo-predictor", 7, uid="d2", owner="demo"))


def test_a_child_that_lost_our_labels_comes_back_when_they_are_put_back():
    """A label-filtered watch says DELETED when an object loses our labels; it is not gone."""
    store = cache.Store()
    store.upsert(cache.ISVC, isvc_body())
    svc = obj("Service", "demo", 5, uid="s1", owner="demo")
    store.upsert("Service", svc)
    store.remove("Service", svc)  # the watch's DELETED: the labels were taken off
    assert store.upsert("Service", obj("Service", "demo", 9, uid="s1", owner="demo"))  # our apply's reply
    assert ("Service", "demo") in store.observe("ns", "demo").children


def test_writes_go_into_the_cache_as_they_are_answered_even_if_the_pass_then_fails():
    from inference_operator.kube import ApiError

    from .helpers import FakeKube

    kube = FakeKube()
    store = cache.Store()
    writer = cache.WriteThrough(kube, store)
    deployment = {"apiVersion": "apps/v1", "kind": "Deployment",
                  "metadata": {"name": "demo-predictor", "namespace": "ns", "labels": {naming.ISVC_LABEL: "demo"}},
                  "spec": {}}
    writer.apply(deployment)
    kube.reject["Service"] = ApiError(503, "Unavailable", "down")
    try:
        writer.apply({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "demo", "namespace": "ns"}})
    except ApiError:
        pass
    assert store.get("Deployment", "ns", "demo-predictor") is not None
    ref = kinds.Ref(kinds.DEPLOYMENT, "ns", "demo-predictor")
    writer.delete(ref, store.get("Deployment", "ns", "demo-predictor")["metadata"]["uid"])
    assert store.get("Deployment", "ns", "demo-predictor") is None


def test_pods_are_kept_without_what_passes_never_read():
    """At a thousand InferenceServices pods are most of the cache: their spec is never read."""
    pod = obj("Pod", "demo-a", 1, owner="demo", spec={"containers": [{"name": "triton", "image": "x"}]},
              status={"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}],
                      "containerStatuses": [{"name": "triton", "ready": True}], "podIP": "10.0.0.1"})
    pod["metadata"].update(annotations={"a": "b"}, deletionTimestamp="t")
    store = cache.Store()
    store.upsert(cache.POD, pod)
    (kept,) = store.observe("ns", "demo").pods if store.upsert(cache.ISVC, isvc_body()) else ()
    assert "spec" not in kept and "annotations" not in kept["metadata"]
    assert kept["metadata"]["labels"] == {naming.ISVC_LABEL: "demo"} and kept["metadata"]["deletionTimestamp"] == "t"
    assert kept["status"] == {"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}],
                              "containerStatuses": [{"name": "triton", "ready": True}]}


def test_only_an_orphaned_replicaset_is_wanted_and_without_its_pod_template():
    controlled = obj(cache.REPLICASET, "demo-predictor-1", 1, owner="demo",
                     spec={"replicas": 1, "selector": {"matchLabels": {"a": "b"}}, "template": {"spec": {}}})
    controlled["metadata"]["ownerReferences"] = [{"uid": "dep", "controller": True}]
    orphan = obj(cache.REPLICASET, "demo-predictor-2", 1, owner="demo",
                 spec={"replicas": 1, "selector": {"matchLabels": {"a": "b"}}, "template": {"spec": {}}})
    assert not cache.wanted(cache.REPLICASET, controlled) and cache.wanted(cache.REPLICASET, orphan)
    assert cache.slim(orphan, cache.REPLICASET)["spec"] == {"replicas": 1, "selector": {"matchLabels": {"a": "b"}}}


def test_a_cached_deployment_keeps_everything_a_pass_reads_of_it():
    """Drift, the running defaults, the revision and the track read the cached Deployment: slimmed,
    it must answer each as the whole one does, while holding a fraction of it."""
    import json

    from inference_operator import api
    from inference_operator.desired import children, defaults, migration, render

    from .helpers import CONFIG

    isvc = api.parse(isvc_body(model={"name": "m", "storageUri": "s3://bucket/m"}, replicas=2))
    deployment = children.stamp(render.render(isvc, CONFIG)[0], isvc)
    deployment["status"] = {"replicas": 2, "readyReplicas": 2, "observedGeneration": 1}
    kept = cache.slim(deployment, "Deployment")
    assert children.drift(deployment, kept) == []
    assert defaults._from_running(kept, CONFIG) == defaults._from_running(deployment, CONFIG)
    assert naming.revision_of(kept) == naming.revision_of(deployment)
    assert naming.track_of(kept) == naming.track_of(deployment) and not migration.is_legacy(kept)
    assert kept["status"] == deployment["status"] and kept["metadata"] == deployment["metadata"]
    assert kept["spec"]["replicas"] == 2
    assert len(json.dumps(kept)) < len(json.dumps(deployment)) * 0.6, (len(json.dumps(kept)), len(json.dumps(deployment)))


def test_cached_objects_share_their_keys_and_short_values():
    import json

    text = json.dumps(obj("Service", "demo", 1, owner="demo", spec={"type": "ClusterIP", "note": "x" * 100}))
    a, b = (cache.slim(json.loads(text), "Service") for _ in range(2))
    assert a == json.loads(text) | {"metadata": a["metadata"]} and "managedFields" not in a["metadata"]
    key_a = next(k for k in a["spec"] if k == "type")
    key_b = next(k for k in b["spec"] if k == "type")
    assert key_a is key_b and a["spec"]["type"] is b["spec"]["type"]
    assert a["spec"]["note"] is not b["spec"]["note"]  # long values are left as they are


def test_a_deferred_store_compacts_everything_at_once_when_told():
    import json

    text = json.dumps(obj("Service", "demo", 1, owner="demo", spec={"type": "ClusterIP"}))
    store = cache.Store(deferred=True)
    body = json.loads(text)
    store.upsert("Service", body)
    kept = store.get("Service", "ns", "demo")
    assert kept["spec"] is body["spec"]  # shared with the event's body until compacted
    store.compact_all()
    compacted = store.get("Service", "ns", "demo")
    assert compacted == kept and compacted["spec"] is not body["spec"] and not store.deferred
    other = obj("Service", "other", 1, owner="demo", spec={"type": "ClusterIP"})
    store.upsert("Service", other)
    assert store.get("Service", "ns", "other")["spec"] is not other["spec"]
