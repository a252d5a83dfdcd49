"""The replica split of a canary without a mesh: where each step ends, and every move on the way
keeps the bounds (total pods ≤ replicas + maxSurge, ready pods ≥ replicas - maxUnavailable)."""

import dataclasses

import pytest

from inference_operator.rollout.split import Pods, Split, drain, effective_weight, next_split, target


@pytest.mark.parametrize("replicas,weight,surge,expected", [
    (1, 10, 0, Split(stable=0, canary=1)),   # one replica, no spare GPU: the canary takes its place
    (1, 10, 1, Split(stable=1, canary=1)),   # a spare: both run
    (2, 10, 0, Split(stable=1, canary=1)),
    (2, 50, 0, Split(stable=1, canary=1)),
    (3, 10, 0, Split(stable=2, canary=1)),
    (3, 50, 0, Split(stable=1, canary=2)),
    (3, 50, 1, Split(stable=2, canary=2)),
    (4, 25, 0, Split(stable=3, canary=1)),
    (10, 25, 0, Split(stable=7, canary=3)),
    (10, 25, 2, Split(stable=8, canary=3)),
    (5, 0, 0, Split(stable=5, canary=0)),
    (5, 100, 0, Split(stable=0, canary=5)),
])
def test_where_a_step_ends(replicas, weight, surge, expected):
    assert target(replicas, weight, surge) == expected


def test_a_weight_outside_0_to_100_is_refused():
    with pytest.raises(ValueError):
        target(3, 101, 0)


def test_the_effective_weight_is_the_canarys_share_of_ready_pods():
    assert effective_weight(Pods(stable=2, canary=1, stable_ready=2, canary_ready=1)) == 33
    assert effective_weight(Pods(stable=1, canary=1, stable_ready=1, canary_ready=0)) == 0
    assert effective_weight(Pods(stable=0, canary=0, stable_ready=0, canary_ready=0)) == 0


@dataclasses.dataclass
class Revision:
    ready: int = 0
    starting: int = 0  # created, not ready yet
    terminating: int = 0

    @property
    def pods(self) -> int:
        return self.ready + self.starting + self.terminating

    def scale(self, replicas: int) -> None:
        alive = self.ready + self.starting
        if replicas > alive:
            self.starting += replicas - alive
        elif replicas < alive:
            gone = alive - replicas
            from_starting = min(gone, self.starting)  # not-ready pods go first
            self.starting -= from_starting
            self.ready -= gone - from_starting
            self.terminating += gone

    def tick(self) -> None:
        self.ready += self.starting
        self.starting = 0
        self.terminating = 0


def walk(replicas, surge, unavailable, weights, stable=None, keep_ready=True):
    """Runs a canary through ``weights`` as a controller would: each tick sets the counts
    next_split asks for, then checks the bounds at that worst moment (new pods not ready yet,
    removed ones still holding their place); pods then start and terminate."""
    s, c = Revision(ready=replicas if stable is None else stable), Revision()
    for weight in weights:
        for _ in range(4 * replicas + 8):
            pods = Pods(stable=s.pods, canary=c.pods, stable_ready=s.ready, canary_ready=c.ready)
            split = next_split(replicas, weight, surge, unavailable, pods)
            s.scale(split.stable)
            c.scale(split.canary)
            assert s.pods + c.pods <= replicas + surge, (weight, s, c)
            assert not keep_ready or s.ready + c.ready >= replicas - unavailable, (weight, s, c)
            s.tick()
            c.tick()
            goal = target(replicas, weight, surge)
            if (s.ready, c.ready) == (goal.stable, goal.canary):
                break
        else:
            raise AssertionError(f"weight {weight} never reached {target(replicas, weight, surge)}: {s} {c}")
    return s, c


@pytest.mark.parametrize("replicas", [1, 2, 3, 4, 7])
@pytest.mark.parametrize("surge,unavailable", [(0, 1), (1, 0), (1, 1), (2, 0), (0, 2)])
def test_every_canary_walk_keeps_the_bounds_and_reaches_each_step(replicas, surge, unavailable):
    if replicas - unavailable < 0:
        pytest.skip("more unavailable than replicas")
    s, c = walk(replicas, surge, unavailable, [10, 25, 50, 100])
    assert (s.ready, c.ready) == (0, replicas)  # promoted: every pod is the canary's


def test_with_no_surge_the_canary_never_needs_a_spare_pod():
    """maxSurge 0: a canary pod is made only once a stable pod is gone (no spare GPU needed)."""
    walk(3, 0, 1, [10, 50])  # the walk asserts total pods ≤ 3 at every tick


def test_a_rollback_removes_canary_pods_at_once_and_the_stable_grows_back_within_the_surge():
    """A failed canary stops serving at once (the rollback's choice, below the ready floor for a
    moment); the stable then grows back to every replica without exceeding replicas + maxSurge."""
    s, c = walk(4, 1, 1, [50])
    pods = Pods(stable=s.pods, canary=c.pods, stable_ready=s.ready, canary_ready=c.ready)
    split = next_split(4, 0, 1, 1, pods)
    assert split.canary == 0 and split.stable <= 4
    s, c = walk(4, 1, 1, [0], stable=s.ready, keep_ready=False)
    assert (s.ready, c.ready) == (4, 0)


@pytest.mark.parametrize("replicas,surge,unavailable,start", [
    (4, 1, 0, Pods(2, 2, 2, 2)), (4, 0, 1, Pods(2, 2, 2, 2)), (1, 1, 0, Pods(0, 1, 0, 1)),
    (3, 0, 1, Pods(1, 2, 1, 2)), (2, 1, 0, Pods(1, 1, 1, 1)), (5, 2, 0, Pods(0, 5, 0, 5)),
])
def test_a_drain_keeps_both_bounds_and_ends_with_the_stable_alone(replicas, surge, unavailable, start):
    """Pods follow each split a tick later, new ones ready a tick after that."""
    pods, floor = start, replicas - unavailable
    for _ in range(50):
        split = drain(replicas, surge, unavailable, pods)
        after = Pods(split.stable, split.canary, min(pods.stable_ready, split.stable), min(pods.canary_ready, split.canary))
        assert after.total <= max(replicas + surge, pods.total), (pods, split)
        assert after.ready >= min(floor, pods.ready), (pods, split)
        pods = Pods(after.stable, after.canary, after.stable, after.canary)  # ready on the next tick
        if pods == Pods(replicas, 0, replicas, 0):
            return
    raise AssertionError(f"the drain did not end: {pods}")
