"""The kopf layer and the runner: what is registered with kopf, and how passes are scheduled."""

import copy
import random
import threading

import kopf
import pytest

from inference_operator import naming
from inference_operator.controller import cache, handlers, runner
from inference_operator.controller.operator import CHILD_EVENT_DELAY, Operator, new_work
from inference_operator.kube import ApiError

from .helpers import CONFIG, FakeKube, isvc_body


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


# ---- kopf registration ---------------------------------------------------------------------------


def test_kopf_has_no_change_handlers_timers_or_daemons_so_it_adds_no_finalizer():
    """Kopf puts its finalizer on objects with change handlers that need one, timers or daemons; a
    delete while the operator is down would then hang. Only watching and indexing is registered."""
    registry = handlers.registry(Operator(config=CONFIG))
    assert registry._changing.get_all_handlers() == []
    assert registry._spawning.get_all_handlers() == []
    watching = {h.id for h in registry._watching.get_all_handlers()}
    assert {"inferenceservice_event", "deployment_event", "pod_event", "service_event",
            "poddisruptionbudget_event", "claim_event"} <= watching
    indexing = {h.id for h in registry._indexing.get_all_handlers()}
    assert {"cache_inferenceservice", "cache_deployment", "cache_pod", "cache_pvc", "cache_namespace",
            "cache_replicaset", "cache_crd"} <= indexing
    # Kopf's login through the kubernetes client, as its default registry has it: not retried.
    (login,) = [h for h in registry._activities.get_all_handlers() if h.activity == "authentication"]
    assert login.id == "login_via_client" and login.errors == kopf.ErrorsMode.IGNORED
    # Nothing is registered on kopf's default registry: the operator's own is the only one.
    default = kopf.get_default_registry()
    assert default._watching.get_all_handlers() == [] and default._indexing.get_all_handlers() == []


def test_startup_settings_apply_to_real_kopf_settings():
    settings = kopf.OperatorSettings()
    handlers.configure(settings)
    assert isinstance(settings.persistence.progress_storage, kopf.AnnotationsProgressStorage)
    # No change handlers, so kopf's per-event diff is never read: it builds none (no deep copy).
    body = kopf.Body({"metadata": {"name": "x", "annotations": {"a": "b"}}, "spec": {"x": 1}})
    assert settings.persistence.diffbase_storage.build(body=body) is None
    assert settings.persistence.diffbase_storage.fetch(body=body) is None
    assert settings.watching.server_timeout and settings.watching.client_timeout > settings.watching.server_timeout
    assert settings.posting.enabled is False
    assert len(list(settings.watching.label_selectors)) == 8  # 6 child kinds, pods, ReplicaSets


@pytest.mark.parametrize("status,urgent", [({}, True), ({"observedGeneration": 1}, True),
                                           ({"observedGeneration": 2}, False)])
def test_a_spec_no_pass_has_acted_on_is_urgent(status, urgent):
    body = isvc_body()
    body["metadata"]["generation"] = 2
    body["status"] = status
    assert new_work(body) is urgent


# ---- a pass through the cache --------------------------------------------------------------------


def operator_with(kube=None, clock=None) -> Operator:
    """An operator of the test's own: its cache, runner and render cache, the API in memory."""
    return Operator(config=CONFIG, kube=kube if kube is not None else FakeKube(), clock=clock)


@pytest.fixture
def cached():
    """An operator whose API and cache are in memory, holding one InferenceService and its claim."""
    op = operator_with()
    body = isvc_body()
    body["metadata"]["resourceVersion"] = "1"
    op.kube.isvcs[("ns", "demo")] = copy.deepcopy(body)
    op.store.upsert(cache.ISVC, body)
    op.store.upsert(cache.PVC, {"metadata": {"namespace": "ns", "name": "models", "uid": "c"}})
    return op, body


def test_a_pass_reads_the_cache_and_puts_what_it_wrote_back(cached):
    op, body = cached
    kube, store = op.kube, op.store
    op.process(("ns", "demo"), 0)
    assert [w[0] for w in kube.writes] == ["apply", "apply", "status"]
    # The cache now holds what the API server answered, before any watch event: the next pass,
    # even one woken by a late event carrying the old InferenceService, writes nothing.
    assert store.get("Deployment", "ns", "demo-predictor") is not None
    assert store.get(cache.ISVC, "ns", "demo")["status"]["observedGeneration"] == 1
    store.upsert(cache.ISVC, body)  # the late, older event: ignored
    kube.writes.clear()
    kube.reads.clear()
    op.process(("ns", "demo"), 0)
    assert kube.writes == [] and kube.reads == []


def test_a_deleted_inferenceservice_leaves_nothing_behind_in_memory(cached):
    """Over create/delete churn the operator's memory must not grow: what a deleted
    InferenceService left in the cache, the queue and the render cache goes with it."""
    op, body = cached
    op.process(("ns", "demo"), 0)
    assert len(op.renders) == 1
    op.inferenceservice_event("DELETED", op.store.get(cache.ISVC, "ns", "demo"))
    assert op.store.get(cache.ISVC, "ns", "demo") is None
    assert len(op.renders) == 0
    assert op.runner.queue.delayed(("ns", "demo")) is None and op.runner.failures(("ns", "demo")) == 0


def _event(registry, kind, type, obj):
    """What kopf does with a watch event: the kind's index function, then its event handler."""
    import asyncio

    index = {h.id: h.fn for h in registry._indexing.get_all_handlers()}[f"cache_{kind.lower()}"]
    handler = {h.id: h.fn for h in registry._watching.get_all_handlers()}[f"{kind.lower()}_event"]
    asyncio.run(index(body=obj))
    asyncio.run(handler(type=type, body=obj))


def test_the_echo_of_our_own_write_wakes_no_pass_and_a_change_does():
    clock = Clock()
    op = operator_with(clock=clock)
    body = isvc_body()
    body["metadata"]["resourceVersion"] = "1"
    op.kube.isvcs[("ns", "demo")] = copy.deepcopy(body)
    op.store.upsert(cache.ISVC, body)
    op.store.upsert(cache.PVC, {"metadata": {"namespace": "ns", "name": "models", "uid": "c"}})
    registry = handlers.registry(op)
    op.process(("ns", "demo"), 0)  # writes status: the reply is cached
    written = copy.deepcopy(op.store.get(cache.ISVC, "ns", "demo"))
    dep = copy.deepcopy(op.store.get("Deployment", "ns", "demo-predictor"))

    _event(registry, "InferenceService", "MODIFIED", written)
    _event(registry, "Deployment", "MODIFIED", dep)
    assert len(op.runner.queue) == 0 and op.runner.queue.delayed(("ns", "demo")) is None
    assert not op.store.take_echo(cache.ISVC, written)  # each echo is taken once
    changed = copy.deepcopy(written)
    changed["metadata"]["resourceVersion"] = str(int(written["metadata"]["resourceVersion"]) + 100)
    _event(registry, "InferenceService", "MODIFIED", changed)
    assert len(op.runner.queue) == 1


def test_a_pass_for_an_inferenceservice_not_in_the_cache_does_nothing():
    op = operator_with()
    assert op.process(("ns", "gone"), 0) == runner.Result()
    assert op.kube.writes == [] and op.kube.reads == []


# ---- the work queue ------------------------------------------------------------------------------


def test_a_key_is_queued_once_however_often_it_is_added():
    q = runner.WorkQueue()
    for _ in range(10):
        q.add("a")
    assert len(q) == 1
    assert q.get(0) == "a"
    assert q.get(0) is None


def test_adds_during_processing_coalesce_into_one_more_pass():
    q = runner.WorkQueue()
    q.add("a")
    assert q.get(0) == "a"
    for _ in range(10):
        q.add("a")  # events while the pass runs
    assert q.get(0) is None  # never handed to two workers at once
    q.done("a")
    assert q.get(0) == "a"
    q.done("a")
    assert q.get(0) is None


def test_a_pass_soon_rides_along_with_one_already_due_and_gathers_events_meanwhile():
    clock = Clock()
    q = runner.WorkQueue(clock)
    q.add("a")
    q.add_soon("a", 0.25)  # already due: nothing more
    assert q.get(0) == "a" and q.delayed("a") is None
    q.add_soon("a", 0.25)  # while its pass runs: once more after it
    q.done("a")
    assert q.get(0) == "a"
    q.done("a")
    for _ in range(5):  # a pod, its ReplicaSet, its Deployment...
        q.add_soon("b", 0.25)
    assert q.get(0) is None and q.delayed("b") == 0.25
    clock.now += 0.25
    assert q.get(0) == "b"
    q.done("b")
    assert q.get(0) is None


def test_child_events_wake_one_pass_and_a_controlled_replicaset_wakes_none():
    clock = Clock()
    op = operator_with(clock=clock)
    registry = handlers.registry(op)
    labels = {naming.ISVC_LABEL: "demo", "app.kubernetes.io/managed-by": naming.MANAGED_BY}
    rs = {"kind": "ReplicaSet", "metadata": {"name": "demo-predictor-1", "namespace": "ns", "uid": "r",
                                              "labels": labels, "ownerReferences": [{"uid": "d", "controller": True}]}}
    pod = {"kind": "Pod", "metadata": {"name": "demo-predictor-1-x", "namespace": "ns", "uid": "p", "labels": labels}}
    dep = {"kind": "Deployment", "metadata": {"name": "demo-predictor", "namespace": "ns", "uid": "d", "labels": labels}}
    _event(registry, "ReplicaSet", "MODIFIED", rs)
    assert op.store.get("ReplicaSet", "ns", "demo-predictor-1") is None
    assert op.runner.queue.delayed(("ns", "demo")) is None and len(op.runner.queue) == 0
    import asyncio

    watching = {h.id: h.fn for h in registry._watching.get_all_handlers()}
    for kind, obj in (("Pod", pod), ("Deployment", dep)):
        asyncio.run(watching[f"{kind.lower()}_event"](type="MODIFIED", body=obj))
    assert len(op.runner.queue) == 0 and op.runner.queue.delayed(("ns", "demo")) == CHILD_EVENT_DELAY
    clock.now += CHILD_EVENT_DELAY
    assert op.runner.queue.get(0) == ("ns", "demo")
    assert op.runner.queue.get(0) is None  # one pass for both


def test_new_work_goes_before_background_work():
    q = runner.WorkQueue()
    for key in ("resume-1", "resume-2", "resume-3"):
        q.add(key)
    q.add("new", urgent=True)
    q.add("resume-2", urgent=True)  # a resume that turns out to be new work is promoted
    order = []
    while (key := q.get(0)) is not None:
        order.append(key)
        q.done(key)
    assert order == ["new", "resume-2", "resume-1", "resume-3"]


def test_delayed_keys_come_due_and_the_earliest_booking_wins():
    clock = Clock()
    q = runner.WorkQueue(clock)
    q.add_after("a", 10)
    q.add_after("a", 30)  # later: the earlier booking stands
    q.add_after("b", 5)
    assert q.get(0) is None
    clock.now = 6
    assert q.get(0) == "b"
    q.done("b")
    clock.now = 11
    assert q.get(0) == "a"
    q.done("a")
    clock.now = 31
    assert q.get(0) is None


def test_a_forgotten_key_does_not_come_back():
    clock = Clock()
    q = runner.WorkQueue(clock)
    q.add_after("a", 10)
    q.forget("a")
    clock.now = 11
    assert q.get(0) is None


@pytest.mark.parametrize("failures,low,high", [(1, 0.25, 0.5), (2, 0.5, 1), (5, 4, 8), (20, 150, 300)])
def test_backoff_doubles_is_capped_and_jittered(failures, low, high):
    delays = [runner.backoff(failures, random.Random(seed).uniform) for seed in range(50)]
    assert all(low <= d <= high for d in delays)
    assert len(set(delays)) > 1  # jittered, so failing objects spread out


# ---- the runner ----------------------------------------------------------------------------------


def test_a_failed_pass_is_retried_with_backoff_and_never_dropped():
    clock = Clock()
    calls = []

    def process(key, failures):
        calls.append(failures)
        if len(calls) < 4:
            raise ApiError(503, "ServiceUnavailable", "down")
        return runner.Result()

    r = runner.Runner(process, clock=clock, rng=random.Random(1))
    r.enqueue("a")
    assert r.process_one(0)
    for _ in range(3):
        assert r.queue.get(0) is None  # not before its backoff
        clock.now += 400
        assert r.process_one(0)
    assert calls == [0, 1, 2, 3]  # the pass is told how many failed before it
    assert r.failures("a") == 0  # reset by the success
    clock.now += 10_000
    assert not r.process_one(0)


def test_a_pass_asks_to_run_again():
    clock = Clock()
    r = runner.Runner(lambda key, failures: runner.Result(requeue_after=30), clock=clock)
    r.enqueue("a")
    assert r.process_one(0)
    assert 29 <= r.queue.delayed("a") <= 30
    clock.now = 31
    assert r.process_one(0)


def test_resync_spreads_every_key_over_the_period():
    clock = Clock()
    keys = [f"k{i}" for i in range(1000)]
    r = runner.Runner(lambda k, f: runner.Result(), resync_seconds=600, keys=lambda: keys, clock=clock,
                      rng=random.Random(7))
    r.resync()
    due = sorted(r.queue.delayed(k) for k in keys)
    # No burst: about a tenth of the keys in each tenth of the period.
    for tenth in range(10):
        n = sum(1 for d in due if tenth * 60 <= d < (tenth + 1) * 60)
        assert 60 <= n <= 140, (tenth, n)


def test_workers_run_passes_for_different_keys_in_parallel_but_never_one_key_twice():
    running: dict[str, int] = {}
    overlap = []
    lock = threading.Lock()
    both = threading.Barrier(2, timeout=5)

    def process(key, failures):
        with lock:
            running[key] = running.get(key, 0) + 1
            if running[key] > 1:
                overlap.append(key)
        if key in ("a", "b"):
            both.wait()  # a and b must be in flight together, or this times out
        with lock:
            running[key] -= 1
        return runner.Result()

    r = runner.Runner(process, workers=3, resync_seconds=3600)
    r.start()
    try:
        r.enqueue("a")
        r.enqueue("b")
        for _ in range(50):
            r.enqueue("c")
    finally:
        import time

        deadline = time.monotonic() + 5
        while len(r.queue) and time.monotonic() < deadline:
            time.sleep(0.01)
        r.stop()
    assert overlap == [] and not both.broken


def test_a_reported_transient_failure_keeps_backing_off(cached):
    """Reporting TransientError in status must not reset the backoff to a quick retry loop."""
    op, _ = cached
    kube, store = op.kube, op.store
    kube.reject["Deployment"] = ApiError(503, "ServiceUnavailable", "etcd leader changed")
    clock = Clock()
    r = runner.Runner(op.process, clock=clock, rng=random.Random(3))
    r.enqueue(("ns", "demo"))
    delays = []
    for _ in range(8):
        assert r.process_one(0)
        delays.append(r.queue.delayed(("ns", "demo")))
        clock.now += 1000
    assert r.failures(("ns", "demo")) == 8
    assert store.get(cache.ISVC, "ns", "demo")["status"]["conditions"][2]["reason"] == "TransientError"
    assert delays[-1] > delays[4] > delays[0]  # still growing after it was reported
    # The Service was created on the first pass (creations put the workload last); the status
    # was reported once.
    assert kube.writes == [("apply", "Service/demo"), ("status", "ns/demo")]


def test_a_replica_elected_before_its_cache_is_listed_runs_no_pass_until_it_is(cached):
    """Leader election can be won while kopf is still listing: passes wait for its start-up barrier
    (the first event handler call), whichever of the two comes second, so no pass sees half a cache."""
    op, _ = cached
    op.runner.gate.clear()  # what start() does with --leader-elect
    op.lead()
    assert not op.runner.gate.is_set() and len(op.runner.queue) == 0
    op.opened()  # the barrier opens: every kind listed
    assert op.runner.gate.is_set() and len(op.runner.queue) == 1  # the cached InferenceService gets its pass

    # The other order: listed first, elected later.
    other = operator_with()
    other.store.upsert(cache.ISVC, op.store.get(cache.ISVC, "ns", "demo"))
    other.runner.gate.clear()
    other.opened()
    assert not other.runner.gate.is_set()
    other.lead()
    assert other.runner.gate.is_set() and len(other.runner.queue) == 1
