"""Reconcile decisions end to end over an in-memory Kube: what is written, and when nothing is."""

import copy

import pytest

from inference_operator import naming
from inference_operator.controller import render_cache
from inference_operator.controller.reconcile import SLOW_RETRY_SECONDS, reconcile
from inference_operator.controller.writes import REPORT_AFTER_FAILURES
from inference_operator.desired import children, render
from inference_operator.kube import ApiError

from .helpers import CONFIG, DEP, PDB_REF, SVC, clock, cond, finish_rollout, isvc_body, run


def test_first_pass_creates_children_and_writes_status(fake_kube):
    body = isvc_body()
    outcome = run(fake_kube, body)
    # Created without a read first, the workload last; one Event says both.
    assert fake_kube.writes == [("apply", "Service/demo"), ("apply", "Deployment/demo-predictor"), ("status", "ns/demo")]
    assert fake_kube.reads == []
    assert outcome.problem is None and outcome.writes == 3
    assert cond(body, "Ready")["status"] == "False"
    assert cond(body, "Progressing")["status"] == "True"
    assert body["status"]["observedGeneration"] == 1
    (event,) = fake_kube.events
    assert event.reason == "RollingOut"
    assert "(applied Service/demo, applied Deployment/demo-predictor)" in event.message


def test_children_written_without_a_transition_get_an_event_of_their_own(fake_kube):
    body = isvc_body()
    run(fake_kube, body)
    finish_rollout(fake_kube)
    run(fake_kube, body)
    fake_kube.events.clear()
    del fake_kube.objects[SVC]  # deleted by hand: re-made, no condition changes
    run(fake_kube, body)
    assert [(e.reason, e.message) for e in fake_kube.events] == [("ChildrenUpdated", "applied Service/demo")]


def test_unchanged_resync_writes_nothing(fake_kube):
    body = isvc_body()
    run(fake_kube, body)
    finish_rollout(fake_kube)
    run(fake_kube, body)  # status catches up with the finished rollout
    assert cond(body, "Ready")["status"] == "True"
    fake_kube.writes.clear()
    fake_kube.events.clear()
    for _ in range(3):
        outcome = run(fake_kube, body)
        assert outcome.writes == 0
    assert fake_kube.writes == [] and fake_kube.events == []


def test_ready_event_once_and_revision_recorded(fake_kube):
    body = isvc_body()
    run(fake_kube, body)
    finish_rollout(fake_kube)
    fake_kube.events.clear()
    run(fake_kube, body)
    assert [(e.type, e.reason) for e in fake_kube.events] == [("Normal", "Ready")]
    assert body["status"]["revision"] == naming.revision_of(fake_kube.objects[DEP])


def test_spec_change_reapplies_only_what_changed(fake_kube):
    body = isvc_body()
    run(fake_kube, body)
    finish_rollout(fake_kube)
    run(fake_kube, body)
    old_revision = body["status"]["revision"]
    fake_kube.writes.clear()

    body["spec"]["model"]["storageUri"] = "pvc://models/v2"
    body["metadata"]["generation"] = 2
    run(fake_kube, body)
    assert fake_kube.writes == [("apply", "Deployment/demo-predictor"), ("status", "ns/demo")]
    assert naming.revision_of(fake_kube.objects[DEP]) != old_revision
    assert body["status"]["revision"] == old_revision  # still what is deployed
    assert cond(body, "Ready")["reason"] == "RolloutInProgress"
    assert cond(body, "Ready")["observedGeneration"] == 2

    finish_rollout(fake_kube)
    run(fake_kube, body)
    assert body["status"]["revision"] == naming.revision_of(fake_kube.objects[DEP])


def test_scaling_down_to_one_deletes_the_pdb(fake_kube):
    body = isvc_body(replicas=3)
    run(fake_kube, body)
    assert PDB_REF in fake_kube.objects
    fake_kube.writes.clear()
    body["spec"]["replicas"] = 1
    run(fake_kube, body)
    assert ("delete", "PodDisruptionBudget/demo-predictor") in fake_kube.writes
    assert PDB_REF not in fake_kube.objects


def test_deleted_child_is_recreated(fake_kube):
    body = isvc_body()
    run(fake_kube, body)
    del fake_kube.objects[SVC]
    fake_kube.writes.clear()
    run(fake_kube, body)
    assert ("apply", "Service/demo") in fake_kube.writes


def test_conflict_writes_no_child_and_reports(fake_kube):
    fake_kube.objects[SVC] = {"apiVersion": "v1", "kind": "Service",
                              "metadata": {"name": "demo", "namespace": "ns", "uid": "theirs"}}
    body = isvc_body()
    outcome = run(fake_kube, body)
    assert [w for w in fake_kube.writes if w[0] != "status"] == []
    assert outcome.problem.reason == "ChildConflict" and outcome.retryable
    assert cond(body, "Degraded")["reason"] == "ChildConflict"
    assert ("Warning", "ChildConflict") in [(e.type, e.reason) for e in fake_kube.events]
    assert fake_kube.objects[SVC]["metadata"]["uid"] == "theirs"


@pytest.mark.parametrize(
    "change,reason,permanent",
    [
        (lambda b: b["spec"].update(replicas=-3), "InvalidSpec", True),
        (lambda b: b["spec"]["model"].update(storageUri="pvc://missing/m"), "StorageNotFound", False),
    ],
)
def test_bad_update_leaves_serving_children_untouched(fake_kube, change, reason, permanent):
    body = isvc_body()
    run(fake_kube, body)
    finish_rollout(fake_kube)
    run(fake_kube, body)
    before = copy.deepcopy(fake_kube.objects)
    fake_kube.writes.clear()
    fake_kube.events.clear()

    change(body)
    body["metadata"]["generation"] = 2
    outcome = run(fake_kube, body)
    assert fake_kube.objects == before
    assert fake_kube.writes == [("status", "ns/demo")]
    assert outcome.problem.reason == reason and outcome.permanent is permanent
    assert cond(body, "Ready")["reason"] == reason
    assert "keeps serving" in cond(body, "Ready")["message"]
    assert [(e.type, e.reason) for e in fake_kube.events] == [("Warning", reason)]

    # The same bad spec again: no new write, no new event (no retry storm of writes).
    fake_kube.writes.clear()
    fake_kube.events.clear()
    run(fake_kube, body)
    assert fake_kube.writes == [] and fake_kube.events == []


def test_rejected_apply_is_reported_not_raised(fake_kube):
    fake_kube.reject["Deployment"] = ApiError(422, "Invalid", "spec.template.spec.affinity: Invalid value")
    body = isvc_body()
    outcome = run(fake_kube, body)
    assert outcome.problem.reason == "ApplyRejected" and outcome.permanent
    assert "affinity" in cond(body, "Degraded")["message"]


def test_transient_api_errors_propagate_for_retry(fake_kube):
    fake_kube.reject["Deployment"] = ApiError(503, "ServiceUnavailable", "etcd is sad")
    with pytest.raises(ApiError):
        run(fake_kube, isvc_body())


def test_unschedulable_pod_reaches_status(fake_kube):
    body = isvc_body(resources={"gpu": {"count": 1, "product": "NVIDIA-B200"}})
    run(fake_kube, body)
    fake_kube.pods = [{
        "metadata": {"name": "demo-predictor-x"},
        "status": {"conditions": [{"type": "PodScheduled", "status": "False", "reason": "Unschedulable",
                                   "message": "0/4 nodes are available: 4 node(s) didn't match Pod's node affinity/selector."}]},
    }]
    run(fake_kube, body)
    assert cond(body, "Degraded")["reason"] == "Unschedulable"
    assert "didn't match" in cond(body, "Ready")["message"]


def test_invalid_spec_on_create_creates_nothing(fake_kube):
    body = isvc_body()
    body["spec"]["resources"] = {"gpu": {"count": "many"}}
    outcome = run(fake_kube, body)
    assert fake_kube.objects == {}
    assert outcome.problem.reason == "InvalidSpec"
    assert "spec.resources.gpu.count" in outcome.problem.message


def test_a_field_that_disappears_is_removed_from_status_and_the_next_pass_is_quiet(fake_kube):
    body = isvc_body()
    run(fake_kube, body)
    assert "url" in body["status"]
    # The Deployment vanishes while a problem (missing claim) blocks re-creating it: no url now.
    del fake_kube.objects[DEP]
    del fake_kube.objects[SVC]
    fake_kube.pvcs.clear()
    run(fake_kube, body)
    assert fake_kube.status_patches[-1]["url"] is None
    assert "url" not in body["status"]
    fake_kube.writes.clear()
    run(fake_kube, body)
    assert fake_kube.writes == []


@pytest.mark.parametrize(
    "error,reason,permanent",
    [
        (ApiError(403, "Forbidden", 'cannot patch resource "deployments"', "apply", "deployments"), "Forbidden", False),
        (ApiError(403, "Forbidden", "exceeded quota: gpus", "apply", "deployments"), "Forbidden", False),
        (ApiError(422, "Invalid", "spec.template: bad"), "ApplyRejected", True),
        (ApiError(400, "BadRequest", "admission webhook denied"), "ApplyRejected", True),
    ],
)
def test_write_errors_become_conditions_by_class(fake_kube, error, reason, permanent):
    fake_kube.reject["Deployment"] = error
    body = isvc_body()
    outcome = run(fake_kube, body)
    assert outcome.problem.reason == reason and outcome.permanent is permanent
    assert outcome.retryable is (not permanent)
    # Refusals are looked at again slowly; spec problems wait for the spec to change.
    assert outcome.requeue_after == (None if permanent else SLOW_RETRY_SECONDS)
    assert cond(body, "Degraded")["reason"] == reason
    assert ("Warning", reason) in [(e.type, e.reason) for e in fake_kube.events]


def test_a_refusal_names_the_verb_and_the_resource(fake_kube):
    fake_kube.reject["Deployment"] = ApiError(403, "Forbidden", "RBAC: nope", "apply", "deployments")
    body = isvc_body()
    run(fake_kube, body)
    assert "refused to apply deployments (Deployment/demo-predictor)" in cond(body, "Degraded")["message"]


def test_a_refusal_retried_while_nothing_changes_writes_nothing(fake_kube):
    fake_kube.reject["Deployment"] = ApiError(403, "Forbidden", "RBAC: nope", "apply", "deployments")
    body = isvc_body()
    run(fake_kube, body)
    fake_kube.writes.clear()
    fake_kube.events.clear()
    for _ in range(5):
        outcome = run(fake_kube, body)
        assert outcome.requeue_after == SLOW_RETRY_SECONDS
    assert fake_kube.writes == [] and fake_kube.events == []


@pytest.mark.parametrize("error,reason", [
    (ApiError(403, "Forbidden", "denied by a webhook", "apply", "services"), "Forbidden"),
    (ApiError(422, "Invalid", "spec.ports: Invalid value"), "ApplyRejected"),
    (ApiError(503, "ServiceUnavailable", "etcd leader changed"), "TransientError"),
])
def test_a_pass_writes_nothing_after_its_first_failed_write(fake_kube, error, reason):
    """Writes stop at the first failure: a child no longer wanted is not deleted, nor the next one
    applied, in a pass whose earlier write failed; the next pass starts from what is there."""
    body = isvc_body()
    run(fake_kube, body)
    finish_rollout(fake_kube)
    run(fake_kube, body)
    # A child of ours the spec no longer asks for (it would be deleted), and the Service changed
    # behind our back (it would be applied first, and fails).
    pdb = copy.deepcopy(fake_kube.objects[SVC])
    pdb.update(apiVersion="policy/v1", kind="PodDisruptionBudget")
    pdb["metadata"]["name"] = PDB_REF.name
    fake_kube.objects[PDB_REF] = pdb
    fake_kube.objects[SVC]["spec"]["ports"] = []
    fake_kube.reject["Service"] = error
    fake_kube.writes.clear()
    outcome = reconcile(fake_kube.observe(body), fake_kube, CONFIG, now=clock, failures=REPORT_AFTER_FAILURES)
    assert outcome.problem.reason == reason
    assert fake_kube.writes == [("status", "ns/demo")] and PDB_REF in fake_kube.objects
    del fake_kube.reject["Service"]
    fake_kube.writes.clear()
    run(fake_kube, body)
    assert fake_kube.writes[:2] == [("apply", "Service/demo"), ("delete", "PodDisruptionBudget/demo-predictor")]


@pytest.mark.parametrize("code", [0, 409, 429, 500, 503, 404])
def test_transient_errors_raise_until_they_persist_then_are_reported(fake_kube, code):
    fake_kube.reject["Deployment"] = ApiError(code, "X", "down")
    body = isvc_body()
    for failures in range(REPORT_AFTER_FAILURES - 1):
        with pytest.raises(ApiError):
            reconcile(fake_kube.observe(body), fake_kube, CONFIG, now=clock, failures=failures)
    # Invisible while it is being retried (the Service, created before the workload, is made once).
    assert fake_kube.writes == [("apply", "Service/demo")]
    outcome = reconcile(fake_kube.observe(body), fake_kube, CONFIG, now=clock,
                        failures=REPORT_AFTER_FAILURES - 1)
    assert outcome.problem.reason == "TransientError" and outcome.backoff
    assert fake_kube.writes == [("apply", "Service/demo"), ("status", "ns/demo")]
    # Reported again on the next failures: worded the same, so nothing more is written.
    body["status"] = fake_kube.last_status
    for failures in range(REPORT_AFTER_FAILURES, REPORT_AFTER_FAILURES + 3):
        reconcile(fake_kube.observe(body), fake_kube, CONFIG, now=clock, failures=failures)
    assert fake_kube.writes == [("apply", "Service/demo"), ("status", "ns/demo")]


def test_a_terminating_namespace_is_left_alone(fake_kube):
    body = isvc_body()
    outcome = reconcile(fake_kube.observe(body, terminating=True), fake_kube, CONFIG, now=clock)
    assert outcome.skipped and fake_kube.writes == [] and fake_kube.reads == []


def test_a_refusal_because_the_namespace_terminates_is_not_a_problem(fake_kube):
    fake_kube.reject["Service"] = ApiError(
        403, "Forbidden", "unable to create new content in namespace ns because it is being terminated")
    outcome = run(fake_kube, isvc_body())
    assert outcome.skipped and outcome.problem is None and fake_kube.writes == []


def test_a_stale_status_write_raises_for_the_runner_to_rerun(fake_kube):
    fake_kube.stale = True
    with pytest.raises(ApiError) as err:
        run(fake_kube, isvc_body())
    assert err.value.kind == "conflict"


def test_an_unchanged_pass_sends_no_request_at_all(fake_kube):
    body = isvc_body(replicas=1)
    run(fake_kube, body)
    finish_rollout(fake_kube)
    run(fake_kube, body)
    fake_kube.writes.clear()
    fake_kube.reads.clear()
    fake_kube.events.clear()
    run(fake_kube, body)
    assert fake_kube.writes == [] and fake_kube.reads == [] and fake_kube.events == []


def test_a_create_that_finds_the_name_taken_reads_it_once_and_never_touches_it(fake_kube):
    """The cache cannot show someone else's object: the create-only apply finds it (409), and the
    one read of the pass tells whose it is."""
    fake_kube.objects[SVC] = {"apiVersion": "v1", "kind": "Service",
                              "metadata": {"name": "demo", "namespace": "ns", "uid": "theirs"}}
    body = isvc_body()
    run(fake_kube, body)
    assert fake_kube.reads == ["Service/demo"]
    assert cond(body, "Degraded")["reason"] == "ChildConflict"
    assert fake_kube.objects[SVC]["metadata"]["uid"] == "theirs"


def test_a_partial_apply_does_not_claim_the_previous_revision_serves(fake_kube):
    body = isvc_body(replicas=1)
    run(fake_kube, body)
    fake_kube.reject["PodDisruptionBudget"] = ApiError(403, "Forbidden", "denied by a webhook")
    body["spec"]["model"]["storageUri"] = "pvc://models/v2"
    body["spec"]["replicas"] = 2  # now a PDB is wanted, and refused
    run(fake_kube, body)
    assert ("apply", "Deployment/demo-predictor") in fake_kube.writes[-3:]
    ready = cond(body, "Ready")
    assert ready["reason"] == "Forbidden" and "keeps serving" not in ready["message"]


def test_a_remote_model_needs_no_claim_and_gets_an_init_container(fake_kube):
    fake_kube.pvcs.clear()
    body = isvc_body(model={"name": "m", "storageUri": "s3://bucket/m", "storage": {"secretName": "creds"}})
    outcome = run(fake_kube, body)
    assert outcome.problem is None
    init = fake_kube.objects[DEP]["spec"]["template"]["spec"]["initContainers"]
    assert [c["name"] for c in init] == ["storage-initializer"]


def test_a_refused_look_before_create_is_reported_like_a_refused_write(fake_kube):
    """The one read a pass may send (a create found the name taken) is classified like a write."""
    fake_kube.objects[PDB_REF] = {"apiVersion": "policy/v1", "kind": "PodDisruptionBudget",
                                  "metadata": {"name": "demo-predictor", "namespace": "ns", "uid": "theirs"}}
    original = fake_kube.get

    def get(ref):
        if ref.kind.kind == "PodDisruptionBudget":
            raise ApiError(403, "Forbidden", 'cannot get resource "poddisruptionbudgets"', "get",
                           "poddisruptionbudgets")
        return original(ref)

    fake_kube.get = get
    body = isvc_body(replicas=2)
    outcome = run(fake_kube, body)
    assert outcome.problem.reason == "Forbidden" and outcome.requeue_after == SLOW_RETRY_SECONDS
    assert "refused to get poddisruptionbudgets" in cond(body, "Degraded")["message"]
    # The Service went first; the workload, last, was not made.
    assert [w for w in fake_kube.writes if w[0] == "apply"] == [("apply", "Service/demo")]


def test_a_deployment_made_before_tracks_keeps_its_selector_and_pods(fake_kube):
    """Its selector is immutable (a changed one is refused) and a new pod label would roll every pod."""
    from inference_operator import api
    from inference_operator.desired import children

    body = isvc_body()
    legacy = children.stamp(render.render(api.parse(body), CONFIG, track=None)[0], api.parse(body))
    fake_kube.apply(legacy)
    fake_kube.writes.clear()
    run(fake_kube, body)
    assert ("apply", "Deployment/demo-predictor") not in fake_kube.writes
    live = fake_kube.objects[DEP]
    assert naming.TRACK_LABEL not in live["spec"]["selector"]["matchLabels"]


def test_a_refused_spec_writes_nothing_while_it_stands_and_is_never_wedged(fake_kube):
    """Refused as invalid: a condition, no retry timer, no write on later events; and nothing
    remembered that would keep it refused once what refused it is gone."""
    fake_kube.reject["Deployment"] = ApiError(422, "Invalid", "spec.template.spec.affinity: Invalid value")
    body = isvc_body()
    run(fake_kube, body)
    fake_kube.writes.clear()
    for _ in range(3):  # pod and child events
        outcome = run(fake_kube, body)
        assert outcome.problem.reason == "ApplyRejected" and outcome.requeue_after is None
    assert fake_kube.writes == []
    del fake_kube.reject["Deployment"]  # a webhook fixed, an operator upgrade that renders it right
    outcome = run(fake_kube, body)
    assert outcome.problem is None and ("apply", "Deployment/demo-predictor") in fake_kube.writes


def test_a_child_whose_labels_were_taken_off_is_applied_back_not_looked_up_every_pass(fake_kube):
    body = isvc_body()
    run(fake_kube, body)
    fake_kube.objects[SVC]["metadata"]["labels"] = {}  # kubectl label svc/demo ...- : gone from the watch
    fake_kube.writes.clear()
    fake_kube.reads.clear()
    run(fake_kube, body)
    assert ("apply", "Service/demo") in fake_kube.writes and fake_kube.reads == ["Service/demo"]
    fake_kube.reads.clear()
    run(fake_kube, body)
    assert fake_kube.reads == []


def test_an_unchanged_inferenceservice_is_not_rendered_again_and_any_change_is():
    """Rendering is most of a no-op pass's cost; the cache keys on everything rendering reads."""
    import dataclasses

    from inference_operator import api
    from inference_operator.controller.desire import desire
    from inference_operator.observed import Observed

    cache = render_cache.RenderCache()
    isvc = api.parse(isvc_body())
    first = cache.get(isvc, CONFIG, "stable")
    again = cache.get(api.parse(isvc_body()), CONFIG, "stable")
    assert again == first and cache.misses == 1
    again[0]["spec"]["replicas"] = 99  # a copy: its caller may change it
    assert cache.get(isvc, CONFIG, "stable") == first
    for other in (api.parse(isvc_body(replicas=2)),
                  api.parse({**isvc_body(), "metadata": {**isvc_body()["metadata"], "uid": "another"}})):
        cache.get(other, CONFIG, "stable")
    cache.get(isvc, dataclasses.replace(CONFIG, default_image="other:1"), "stable")
    cache.get(isvc, CONFIG, None)
    assert cache.misses == 5
    # One slot per InferenceService and track: a change replaces it, a deletion takes it.
    assert len(cache) == 2
    cache.forget("ns", "demo")
    assert len(cache) == 0
    small = render_cache.RenderCache(size=2)
    for i in range(3):
        small.get(api.parse({**isvc_body(), "metadata": {**isvc_body()["metadata"], "name": f"m{i}"}}),
                  CONFIG, "stable")
    assert len(small) == 2
    # The desired state a pass builds is the same whether it came from the cache or not.
    observed = Observed(isvc=isvc_body(), claims=frozenset({"models"}))
    assert desire(isvc, observed, CONFIG, render_cache.RenderCache())[0].children == \
        [children.stamp(c, isvc) for c in render.render(isvc, CONFIG)]
