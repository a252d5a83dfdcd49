"""Leader election on a Lease: exclusive, taken over when the leader goes silent for a lease,
handed over at once when it stops cleanly. A fake clock; an in-memory Lease with the API server's
optimistic concurrency (a write with a stale resourceVersion is a conflict)."""

import copy
import itertools

import pytest

from inference_operator.controller import leader


class Conflict(Exception):
    pass


class FakeLeases:
    def __init__(self):
        self.lease = None
        self.rv = itertools.count(1)
        self.down = False  # the API server unreachable
        self.writes = []

    def get(self, namespace, name):
        if self.down:
            raise OSError("connection refused")
        return copy.deepcopy(self.lease)

    def create(self, namespace, body):
        if self.down:
            raise OSError("connection refused")
        if self.lease is not None:
            raise Conflict("already exists")
        return self._store(body)

    def replace(self, namespace, name, body):
        if self.down:
            raise OSError("connection refused")
        if self.lease is None or body["metadata"].get("resourceVersion") != self.lease["metadata"]["resourceVersion"]:
            raise Conflict("the object has been modified")
        return self._store(body)

    def _store(self, body):
        stored = copy.deepcopy(body)
        stored["metadata"]["resourceVersion"] = str(next(self.rv))
        self.lease = stored
        self.writes.append(stored["spec"]["holderIdentity"])
        return copy.deepcopy(stored)


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


def candidate(leases, clock, me, events):
    return leader.Elector(leases, "ops", me=me, lease_seconds=15, renew_seconds=10, retry_seconds=2,
                          on_started=lambda: events.append(("started", me)),
                          on_stopped=lambda: events.append(("stopped", me)), clock=clock, wall=clock)


@pytest.mark.parametrize("record, unchanged_for, action", [
    (None, 0, leader.CREATE),
    (leader.Record(holder="me", lease_seconds=15), 100, leader.RENEW),
    (leader.Record(holder="", lease_seconds=1), 0, leader.ACQUIRE),  # released
    (leader.Record(holder="other", lease_seconds=15), 14.9, leader.WAIT),
    (leader.Record(holder="other", lease_seconds=15), 15, leader.ACQUIRE),  # silent for a whole lease
])
def test_decide(record, unchanged_for, action):
    assert leader.decide(record, "me", unchanged_for) == action


def run(clock, electors, seconds, step=1.0):
    """Every candidate steps when its delay is up, for ``seconds`` of fake time."""
    due = {id(e): clock.now for e in electors}
    end = clock.now + seconds
    while clock.now < end:
        for e in electors:
            if not e.lost and clock.now >= due[id(e)]:
                due[id(e)] = clock.now + e.step()
        clock.now += step


def test_one_leader_at_a_time_and_a_takeover_after_a_silent_lease():
    leases, clock, events = FakeLeases(), Clock(), []
    a, b = candidate(leases, clock, "a", events), candidate(leases, clock, "b", events)
    run(clock, [a, b], 60)
    assert (a.leading, b.leading) == (True, False) and events == [("started", "a")]
    assert set(leases.writes) == {"a"}  # the follower never wrote
    # a dies (SIGKILL: no release); b takes over once the record has not changed for a lease.
    died = clock.now  # right after a renewal at most a retry ago
    run(clock, [b], 30)
    assert b.leading and events[-1] == ("started", "b")
    assert leases.lease["spec"]["holderIdentity"] == "b" and leases.lease["spec"]["leaseTransitions"] == 1
    assert 15 <= b.started_at - a._renewed_at <= 15 + 2 + 1  # a lease after its last renewal, a retry and a tick more
    assert b.started_at - died <= 15 + 2 + 1


def test_a_clean_stop_releases_and_the_other_takes_over_within_a_retry():
    leases, clock, events = FakeLeases(), Clock(), []
    a, b = candidate(leases, clock, "a", events), candidate(leases, clock, "b", events)
    run(clock, [a, b], 10)
    a.stop()
    assert leases.lease["spec"]["holderIdentity"] == "" and not a.leading
    stopped = clock.now
    run(clock, [b], 10)
    assert b.leading and b.started_at - stopped <= 2 + 1


def test_a_leader_that_cannot_renew_stops_before_another_may_start():
    leases, clock, events = FakeLeases(), Clock(), []
    a = candidate(leases, clock, "a", events)
    run(clock, [a], 5)
    renewed = a._renewed_at
    leases.down = True
    run(clock, [a], 20)
    assert a.lost and events == [("started", "a"), ("stopped", "a")]
    # It stopped within the renew deadline (and a retry), before the lease ran out for others.
    stopped_at = renewed + 10
    assert stopped_at < renewed + 15


def test_a_leader_that_finds_another_holder_stops_at_once():
    leases, clock, events = FakeLeases(), Clock(), []
    a = candidate(leases, clock, "a", events)
    run(clock, [a], 3)
    leases.lease["spec"]["holderIdentity"] = "intruder"
    run(clock, [a], 3)
    assert a.lost and events[-1] == ("stopped", "a")


def test_bounds_must_nest():
    with pytest.raises(ValueError):
        leader.Elector(FakeLeases(), "ops", lease_seconds=10, renew_seconds=10, retry_seconds=2)


def test_a_runner_that_does_not_lead_runs_no_pass_and_keeps_its_queue():
    import threading

    from inference_operator.controller import runner

    ran = []
    done = threading.Event()

    def process(key, failures):
        ran.append(key)
        done.set()
        return runner.Result()

    r = runner.Runner(process, workers=2, resync_seconds=3600)
    r.gate.clear()
    r.start()
    try:
        r.enqueue(("ns", "a"))
        assert not done.wait(1.5) and ran == []  # queued, not run
        r.gate.set()  # leading now
        assert done.wait(5) and ran == [("ns", "a")]
    finally:
        r.stop()


def test_the_fence_closes_at_the_renew_deadline_before_anyone_may_take_over():
    """A leader paused past its renew deadline (SIGSTOP, a long pause) writes nothing when it
    wakes, before its elector thread has run: the fence judges by its own clock."""
    leases, clock, events = FakeLeases(), Clock(), []
    a = candidate(leases, clock, "a", events)
    assert a.fence() == "a does not hold the Lease"
    a.step()
    assert a.leading and a.fence() is None
    clock.now += 9.9
    assert a.fence() is None
    clock.now += 0.1  # the renew deadline (10 s), 5 s before the lease (15 s) lets another take over
    assert "renew deadline 10s" in a.fence()
    a.step()  # it renews: writes again
    assert a.fence() is None


def test_a_write_may_take_until_a_lease_after_the_last_renewal():
    leases, clock, events = FakeLeases(), Clock(), []
    a = candidate(leases, clock, "a", events)
    a.step()
    assert a.write_seconds() == 15
    clock.now += 9
    assert a.write_seconds() == 6
    clock.now += 20
    assert a.write_seconds() == 0


def test_a_clean_stop_closes_the_fence_before_the_lease_is_free():
    """A pass still running when the Lease is released (the runner gave up waiting for it) must
    not write after another replica may have taken over."""
    leases, clock, events = FakeLeases(), Clock(), []
    a = candidate(leases, clock, "a", events)
    a.step()
    seen = []
    replace = leases.replace
    leases.replace = lambda ns, name, body: seen.append(a.fence()) or replace(ns, name, body)
    a.stop(release=True)
    assert seen and seen[0] == "a does not hold the Lease"
    assert leases.lease["spec"]["holderIdentity"] == ""


def test_the_default_clock_counts_a_suspended_machine():
    import time

    if hasattr(time, "CLOCK_BOOTTIME"):
        assert abs(leader.boottime() - time.clock_gettime(time.CLOCK_BOOTTIME)) < 1
