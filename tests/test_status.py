"""Status computation: conditions from the live Deployment and Pods, and the events they imply."""

import pytest

from inference_operator import api, naming
from inference_operator.problems import Problem
from inference_operator.status import events, messages, patch
from inference_operator.status.conditions import Seen
from inference_operator.status.conditions import compute as compute_status

from .helpers import CONFIG, isvc_body

NOW, LATER = "2026-11-23T10:00:00Z", "2026-11-23T10:05:00Z"


def deployment(replicas=2, updated=2, ready=2, available=2, total=None, revision="rev1", generation=2,
               observed=2, conditions=None, progressing="NewReplicaSetAvailable"):
    if conditions is None:
        conditions = [{"type": "Progressing", "status": "True", "reason": progressing}]
    return {
        "metadata": {"name": "demo-predictor", "generation": generation},
        "spec": {"replicas": replicas, "template": {"metadata": {"labels": {naming.REVISION_LABEL: revision}}}},
        "status": {
            "observedGeneration": observed, "replicas": replicas if total is None else total,
            "updatedReplicas": updated, "readyReplicas": ready, "availableReplicas": available,
            "conditions": list(conditions),
        },
    }


def pod(name="demo-predictor-abc", scheduled=None, waiting=None, init_waiting=None, deleting=False, fetch=None,
        revision=None, ready=False, started=False, lost=False):
    """started: its containers run; lost: it was ready once (its Ready=False came after the start)."""
    ready_since = "2026-11-23T09:00:00Z" if not lost else "2026-11-23T09:30:00Z"
    p = {"metadata": {"name": name, "labels": {naming.REVISION_LABEL: revision} if revision else {}},
         "status": {"conditions": [{"type": "Ready", "status": "True" if ready else "False",
                                    "lastTransitionTime": ready_since}]}}
    if started or lost:
        p["status"]["containerStatuses"] = [{"name": "triton", "ready": ready, "started": True, "restartCount": 0,
                                             "state": {"running": {"startedAt": "2026-11-23T09:00:00Z"}}}]
    if fetch is not None:
        state, message = fetch
        terminated = {"exitCode": 1, "reason": "Error", "message": message}
        p["status"]["initContainerStatuses"] = [
            {"name": "storage-initializer", "state": {"terminated": terminated}} if state == "terminated" else
            {"name": "storage-initializer", "state": {"waiting": {"reason": "CrashLoopBackOff"}},
             "lastState": {"terminated": terminated}}]
    if deleting:
        p["metadata"]["deletionTimestamp"] = NOW
    if scheduled:
        p["status"]["conditions"].append({"type": "PodScheduled", "status": "False", "reason": "Unschedulable",
                                          "message": scheduled})
    if waiting:
        p["status"]["containerStatuses"] = [{"name": "triton", "state": {"waiting": {"reason": waiting, "message": "boom"}}}]
    if init_waiting:
        p["status"]["initContainerStatuses"] = [{"name": "init", "state": {"waiting": {"reason": init_waiting}}}]
    return p


def compute(dep=None, pods=(), problem=None, revision="rev1", previous=None, now=NOW, generation=4):
    body = isvc_body()
    body["metadata"]["generation"] = generation
    if previous:
        body["status"] = previous
    return compute_status(Seen(api.parse(body), deployment=dep, pods=list(pods), desired_revision=revision,
                               problem=problem, config=CONFIG, now=now))


def conds(st, types=("Ready", "Progressing", "Degraded")):
    return {c["type"]: (c["status"], c["reason"]) for c in st["conditions"] if c["type"] in types}


@pytest.mark.parametrize(
    "dep,pods,problem,expect",
    [
        # complete rollout
        (deployment(), [], None,
         {"Ready": ("True", "Available"), "Progressing": ("False", "RolloutComplete"), "Degraded": ("False", "AsExpected")}),
        # nothing created yet
        (None, [], None,
         {"Ready": ("False", "Pending"), "Progressing": ("True", "Creating"), "Degraded": ("False", "AsExpected")}),
        # created, pods still loading the model
        (deployment(updated=2, ready=0, available=0, progressing="ReplicaSetUpdated"), [], None,
         {"Ready": ("False", "RolloutInProgress"), "Progressing": ("True", "RollingOut"), "Degraded": ("False", "AsExpected")}),
        # rolling out: one of two updated
        (deployment(updated=1, available=1, total=3, progressing="ReplicaSetUpdated"), [], None,
         {"Ready": ("False", "RolloutInProgress"), "Progressing": ("True", "RollingOut"), "Degraded": ("False", "AsExpected")}),
        # the Deployment still has the old revision's template
        (deployment(revision="rev0"), [], None,
         {"Ready": ("False", "RolloutInProgress"), "Progressing": ("True", "RollingOut"), "Degraded": ("False", "AsExpected")}),
        # the deployment controller has not seen the new spec yet
        (deployment(observed=1), [], None,
         {"Ready": ("False", "RolloutInProgress"), "Progressing": ("True", "RollingOut"), "Degraded": ("False", "AsExpected")}),
        # unschedulable pod
        (deployment(updated=1, ready=0, available=0, replicas=1, progressing="ReplicaSetUpdated"),
         [pod(scheduled="0/3 nodes: Insufficient nvidia.com/gpu")], None,
         {"Ready": ("False", "Unschedulable"), "Progressing": ("True", "RollingOut"), "Degraded": ("True", "Unschedulable")}),
        # crash loop after the rollout finished: degraded, not progressing
        (deployment(ready=1, available=1), [pod(waiting="CrashLoopBackOff")], None,
         {"Ready": ("False", "CrashLoopBackOff"), "Progressing": ("False", "RolloutComplete"), "Degraded": ("True", "CrashLoopBackOff")}),
        # init container cannot pull, during a rollout
        (deployment(ready=1, available=1, progressing="ReplicaSetUpdated"), [pod(init_waiting="ImagePullBackOff")], None,
         {"Ready": ("False", "ImagePullBackOff"), "Progressing": ("True", "RollingOut"), "Degraded": ("True", "ImagePullBackOff")}),
        # a new pod waits for the GPU of an old one that is terminating: a normal rollout
        (deployment(updated=1, ready=0, available=0, replicas=1, total=1, progressing="ReplicaSetUpdated"),
         [pod("demo-predictor-new", scheduled="0/3 nodes: Insufficient nvidia.com/gpu"),
          pod("demo-predictor-old", deleting=True)], None,
         {"Ready": ("False", "RolloutInProgress"), "Progressing": ("True", "RollingOut"), "Degraded": ("False", "AsExpected")}),
        # a terminating pod's troubles do not count
        (deployment(), [pod(waiting="CrashLoopBackOff", deleting=True)], None,
         {"Ready": ("True", "Available"), "Progressing": ("False", "RolloutComplete"), "Degraded": ("False", "AsExpected")}),
        # stuck rollout
        (deployment(updated=1, available=1, total=3, conditions=[
            {"type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded", "message": "too slow"}]), [], None,
         {"Ready": ("False", "ProgressDeadlineExceeded"), "Progressing": ("False", "ProgressDeadlineExceeded"),
          "Degraded": ("True", "ProgressDeadlineExceeded")}),
        # pods cannot be created (quota)
        (deployment(updated=0, ready=0, available=0, total=0, conditions=[
            {"type": "Progressing", "status": "True", "reason": "NewReplicaSetCreated"},
            {"type": "ReplicaFailure", "status": "True", "reason": "FailedCreate", "message": "exceeded quota"}]), [], None,
         {"Ready": ("False", "ReplicaFailure"), "Progressing": ("True", "RollingOut"), "Degraded": ("True", "ReplicaFailure")}),
        # rolled out, then short of a replica with no pod in trouble (scale-up, a replaced pod)
        (deployment(ready=1, available=1), [], None,
         {"Ready": ("False", "ReplicasUnavailable"), "Progressing": ("False", "RolloutComplete"),
          "Degraded": ("False", "AsExpected")}),
        # scaled to zero
        (deployment(replicas=0, updated=0, ready=0, available=0), [], None,
         {"Ready": ("False", "ScaledToZero"), "Progressing": ("False", "RolloutComplete"), "Degraded": ("False", "AsExpected")}),
        # operator-detected problem, old children still serving
        (deployment(), [], Problem("StorageNotFound", "claim x is missing"),
         {"Ready": ("False", "StorageNotFound"), "Progressing": ("False", "StorageNotFound"), "Degraded": ("True", "StorageNotFound")}),
        # operator-detected problem before anything exists
        (None, [], Problem("InvalidSpec", "bad"),
         {"Ready": ("False", "InvalidSpec"), "Progressing": ("False", "InvalidSpec"), "Degraded": ("True", "InvalidSpec")}),
    ],
)
def test_conditions(dep, pods, problem, expect):
    st = compute(dep, pods, problem)
    assert conds(st) == expect
    assert all(c["observedGeneration"] == 4 for c in st["conditions"])
    assert st["observedGeneration"] == 4


@pytest.mark.parametrize(
    "dep,problem,reconciling,stalled",
    [
        (deployment(), None, ("False", "Reconciled"), ("False", "AsExpected")),
        (deployment(updated=1, available=1, total=3, progressing="ReplicaSetUpdated"), None,
         ("True", "RollingOut"), ("False", "AsExpected")),
        (None, Problem("InvalidSpec", "bad"), ("False", "Reconciled"), ("True", "InvalidSpec")),
        (deployment(updated=1, available=1, total=3, conditions=[
            {"type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded", "message": "slow"}]),
         None, ("False", "Reconciled"), ("True", "ProgressDeadlineExceeded")),
    ],
)
def test_kstatus_conditions(dep, problem, reconciling, stalled):
    st = compute(dep, [], problem)
    assert conds(st, ("Reconciling", "Stalled")) == {"Reconciling": reconciling, "Stalled": stalled}


@pytest.mark.parametrize(
    "fetch,reason,text",
    [
        (("terminated", "NoSuchBucket: bucket models does not exist"), "NoSuchBucket", "bucket models does not exist"),
        (("crashloop", "AccessDenied: s3://m/x: InvalidAccessKeyId: check the credentials Secret"), "AccessDenied",
         "check the credentials Secret"),
        (("terminated", "2026-11-23 fetch-model: GET x\nfetch-model failed: ChecksumMismatch: m.tgz: sha256 is 1"),
         "ChecksumMismatch", "sha256 is 1"),
        (("terminated", "Traceback (most recent call last):\nMemoryError"), "ModelFetchFailed", "MemoryError"),
    ],
    ids=["message", "crash-loop", "log-fallback", "unexpected"],
)
def test_a_failed_model_fetch_is_reported_with_its_reason(fetch, reason, text):
    st = compute(deployment(ready=0, available=0, progressing="ReplicaSetUpdated"), [pod(fetch=fetch)])
    degraded = next(c for c in st["conditions"] if c["type"] == "Degraded")
    assert degraded["status"] == "True" and degraded["reason"] == reason
    assert text in degraded["message"] and "could not be fetched" in degraded["message"]
    assert conds(st)["Ready"] == ("False", reason)


def test_problem_message_says_the_previous_revision_keeps_serving():
    st = compute(deployment(), [], Problem("StorageNotFound", "claim x is missing"))
    ready = next(c for c in st["conditions"] if c["type"] == "Ready")
    assert "claim x is missing" in ready["message"] and "keeps serving" in ready["message"]


def test_unschedulable_message_carries_the_scheduler_reason():
    st = compute(deployment(updated=1, ready=0, available=0, replicas=1),
                 [pod(scheduled="0/3 nodes are available: 3 node(s) didn't match Pod's node affinity/selector.")])
    degraded = next(c for c in st["conditions"] if c["type"] == "Degraded")
    assert "didn't match Pod's node affinity/selector" in degraded["message"]


def test_fields():
    st = compute(deployment())
    assert st["url"] == "http://demo.ns.svc.cluster.local:8000"
    assert st["selector"] == "app.kubernetes.io/component=predictor,serving.inference-operator.io/inferenceservice=demo"
    assert (st["replicas"], st["readyReplicas"], st["revision"]) == (2, 2, "rev1")
    assert "url" not in compute(None)


def test_revision_is_kept_until_the_new_one_is_rolled_out():
    done = compute(deployment(revision="rev1"), revision="rev1")
    rolling = compute(deployment(revision="rev2", updated=1, progressing="ReplicaSetUpdated"), revision="rev2",
                      previous=done)
    assert rolling["revision"] == "rev1"
    finished = compute(deployment(revision="rev2"), revision="rev2", previous=rolling)
    assert finished["revision"] == "rev2"


def test_transition_time_moves_only_when_status_changes():
    first = compute(deployment(), now=NOW)
    same = compute(deployment(), previous=first, now=LATER)
    assert [c["lastTransitionTime"] for c in same["conditions"]] == [NOW] * 5
    # A replica that served and stopped: Ready moves (maxUnavailable is 0 by default).
    lost = pod(name="demo-predictor-b", revision="rev1", lost=True)
    changed = compute(deployment(ready=1, available=1), pods=[lost], previous=first, now=LATER)
    times = {c["type"]: c["lastTransitionTime"] for c in changed["conditions"]}
    assert times == {"Ready": LATER, "Progressing": NOW, "Degraded": NOW, "Reconciling": NOW, "Stalled": NOW}


def test_reason_change_keeps_transition_time():
    stuck = dict(updated=1, ready=0, available=0, replicas=1, progressing="ReplicaSetUpdated")
    first = compute(deployment(**stuck), [pod(scheduled="x")], now=NOW)
    second = compute(deployment(**stuck), [pod(waiting="CrashLoopBackOff")],
                     previous=first, now=LATER)
    degraded = next(c for c in second["conditions"] if c["type"] == "Degraded")
    assert (degraded["reason"], degraded["lastTransitionTime"]) == ("CrashLoopBackOff", NOW)


def test_comparable_matches_for_the_same_status():
    st = compute(deployment())
    assert patch.comparable(st) == patch.comparable(compute(deployment(), previous=st, now=LATER))


def test_events_only_on_transitions():
    pending = compute(None)
    ready = compute(deployment(), previous=pending)
    evs = events.events(pending, ready)
    assert [(e.type, e.reason) for e in evs] == [("Normal", "Ready")]
    assert events.events(ready, compute(deployment(), previous=ready, now=LATER)) == []
    broken = compute(deployment(ready=1, available=1), [pod(waiting="CrashLoopBackOff")], previous=ready)
    assert [(e.type, e.reason) for e in events.events(ready, broken)] == [("Warning", "CrashLoopBackOff")]
    rolling = compute(deployment(revision="rev2", updated=1, progressing="ReplicaSetUpdated"), revision="rev2",
                      previous=ready)
    assert ("Normal", "RollingOut") in [(e.type, e.reason) for e in events.events(ready, rolling)]


def test_long_messages_are_truncated():
    st = compute(deployment(updated=1, ready=0, available=0, replicas=1), [pod(scheduled="x" * 5000)])
    assert all(len(c["message"]) <= messages.MAX_MESSAGE for c in st["conditions"])


def rolled_out():
    return compute(deployment(replicas=2), pods=[pod(f"p{i}", revision="rev1", ready=True, started=True)
                                                for i in range(2)])


def test_a_scale_up_is_not_a_rollout_and_ready_does_not_flap():
    before = rolled_out()
    assert before["revision"] == "rev1"
    pods = [pod(f"p{i}", revision="rev1", ready=True, started=True) for i in range(2)]
    pods += [pod("new-0", revision="rev1"), pod("new-1", revision="rev1", scheduled=None)]  # starting
    # The ReplicaSet made two more pods: they are of the newest ReplicaSet (updated), not ready yet.
    after = compute(deployment(replicas=4, updated=4, ready=2, available=2, total=4, progressing="ReplicaSetUpdated"),
                    pods=pods, previous=before, now=LATER)
    assert conds(after) == {"Ready": ("True", "Available"), "Progressing": ("False", "RolloutComplete"),
                            "Degraded": ("False", "AsExpected")}
    assert events.events(before, after) == []
    assert "2/4 replicas ready" in next(c for c in after["conditions"] if c["type"] == "Ready")["message"]


def test_a_scale_down_is_not_a_rollout_either():
    before = rolled_out()
    after = compute(deployment(replicas=1, updated=2, ready=2, available=2, total=2, observed=1, generation=2),
                    pods=[pod(f"p{i}", revision="rev1", ready=True, started=True) for i in range(2)],
                    previous=before, now=LATER)
    # The deployment controller has not caught up; it is still the same revision, scaling.
    assert conds(after)["Ready"] == ("True", "Available")
    assert events.events(before, after) == []


def test_a_lost_replica_beyond_max_unavailable_makes_ready_false():
    before = rolled_out()
    pods = [pod("p0", revision="rev1", ready=True, started=True), pod("p1", revision="rev1", lost=True)]
    after = compute(deployment(ready=1, available=1), pods=pods, previous=before, now=LATER)
    assert conds(after)["Ready"] == ("False", "ReplicasUnavailable")


def scaled_from_two_to_three(new_pod):
    """The status once a rolled-out revision of two serving replicas is scaled to three."""
    pods = [pod(f"p{i}", revision="rev1", ready=True, started=True) for i in range(2)] + [new_pod]
    return compute(deployment(replicas=3, updated=3, ready=2, available=2, total=3), pods=pods,
                   previous=rolled_out(), now=LATER)


def test_a_new_replica_whose_model_loaded_but_is_not_ready_yet_is_not_lost():
    """The startup probe passed (started) before the first readiness probe: still capacity on its way."""
    after = scaled_from_two_to_three(pod("new", revision="rev1", started=True))
    assert conds(after)["Ready"] == ("True", "Available")


def test_replicas_that_cannot_be_scheduled_after_a_scale_leave_ready_true_and_say_degraded():
    after = scaled_from_two_to_three(
        pod("new", revision="rev1", scheduled="0/5 nodes are available: 5 Insufficient nvidia.com/gpu."))
    assert conds(after)["Ready"] == ("True", "Available")
    assert conds(after)["Degraded"] == ("True", "Unschedulable")
    assert conds(after)["Progressing"] == ("False", "RolloutComplete")


def test_a_crash_looping_new_replica_after_a_scale_makes_ready_false():
    after = scaled_from_two_to_three(pod("new", revision="rev1", waiting="CrashLoopBackOff"))
    assert conds(after)["Ready"] == ("False", "CrashLoopBackOff")


def test_ready_during_a_rollout_once_enough_replicas_serve_the_new_revision():
    body = isvc_body(replicas=4, rollout={"maxSurge": 0, "maxUnavailable": 1})
    pods = [pod(f"n{i}", revision="rev2", ready=True, started=True) for i in range(3)]
    pods += [pod("old", revision="rev1", ready=True, started=True)]
    st = compute_status(Seen(api.parse(body), deployment=deployment(replicas=4, updated=3, ready=4, available=4,
                                                                    total=4, revision="rev2",
                                                                    progressing="ReplicaSetUpdated"),
                             pods=pods, desired_revision="rev2", problem=None, config=CONFIG, now=NOW))
    assert conds(st)["Ready"] == ("True", "Available")
    assert conds(st)["Progressing"] == ("True", "RollingOut")


def test_a_rollout_waiting_for_a_gpu_says_so_while_the_old_revision_serves():
    before = rolled_out()
    pods = [pod("old", revision="rev1", ready=True, started=True),
            pod("new", revision="rev2", scheduled="0/5 nodes are available: 5 Insufficient nvidia.com/gpu.")]
    after = compute(deployment(replicas=1, updated=1, ready=1, available=1, total=2, revision="rev2",
                               progressing="ReplicaSetUpdated"),
                    pods=pods, revision="rev2", previous=before, now=LATER)
    assert conds(after)["Progressing"] == ("True", "WaitingForCapacity")
    ready = next(c for c in after["conditions"] if c["type"] == "Ready")
    assert ready["reason"] == "Unschedulable" and "previous revision keeps serving (1 ready)" in ready["message"]
    assert "Insufficient nvidia.com/gpu" in ready["message"]
    assert after["revision"] == "rev1"


def test_keeps_serving_is_said_only_when_a_replica_serves():
    nothing_ready = compute(deployment(ready=0, available=0), problem=Problem("InvalidSpec", "bad"))
    ready = next(c for c in nothing_ready["conditions"] if c["type"] == "Ready")
    assert "keeps serving" not in ready["message"]


def test_a_template_changed_behind_our_back_is_not_a_scale():
    """`kubectl set image` keeps our revision label: the Deployment's counts tell its pods apart."""
    before = rolled_out()
    pods = [pod(f"p{i}", revision="rev1", ready=True, started=True) for i in range(3)]
    # Restored by the operator: the newest ReplicaSet has 1 of 2 pods; 2 pods of the edited one serve.
    after = compute(deployment(replicas=2, updated=1, ready=3, available=3, total=3, progressing="ReplicaSetUpdated"),
                    pods=pods, previous=before, now=LATER)
    assert conds(after)["Ready"] == ("False", "RolloutInProgress")
    assert conds(after)["Progressing"] == ("True", "RollingOut")


def test_a_merge_patch_removes_keys_gone_at_any_depth():
    old = {"canary": {"readyAt": "t", "phase": "Progressing", "handled": {"promote": "1"}}, "url": "u"}
    new = {"canary": {"phase": "Progressing", "handled": {}}}
    assert patch.merge_patch(old, new) == {
        "canary": {"readyAt": None, "phase": "Progressing", "handled": {"promote": None}}, "url": None}
