"""How many pods each revision runs during a canary in the `replicas` traffic mode (issue #9).

Without a mesh, a Service spreads requests over its ready pods, so the canary's weight is its
share of the ready pods. This module is pure arithmetic: where a step should end (``target``),
and the replica counts to set now to move there without breaking the rollout's bounds (``next``):

- total pods (terminating ones included: they still hold their GPU) never exceed
  ``replicas + max_surge``: with ``max_surge = 0`` a canary pod takes a stable pod's place and
  needs no spare GPU;
- ready pods never fall below ``replicas - max_unavailable``: a stable pod is removed only when
  enough others are ready, not-ready ones first.

Argo Rollouts' CalculateReplicaCountsForCanary solves the same problem; this one differs in
counting terminating pods against the surge, for GPUs.
"""

from __future__ import annotations

import dataclasses
import math


@dataclasses.dataclass(frozen=True)
class Pods:
    """What runs now, per revision: pods (terminating included) and how many of them are ready."""

    stable: int
    canary: int
    stable_ready: int
    canary_ready: int

    @property
    def total(self) -> int:
        return self.stable + self.canary

    @property
    def ready(self) -> int:
        return self.stable_ready + self.canary_ready


@dataclasses.dataclass(frozen=True)
class Split:
    """Replica counts for the two Deployments."""

    stable: int
    canary: int


def target(replicas: int, weight: int, max_surge: int) -> Split:
    """Where a step at ``weight`` percent ends: the canary's share rounded up (a step above 0 runs
    at least one canary pod), the stable's share rounded up too while the surge allows it, else
    what is left (with one replica and no surge, a canary at any weight serves everything)."""
    if not 0 <= weight <= 100:
        raise ValueError(f"weight {weight} is not a percentage")
    if weight == 0 or replicas == 0:
        return Split(stable=replicas, canary=0)
    if weight == 100:
        return Split(stable=0, canary=replicas)
    canary = max(1, math.ceil(replicas * weight / 100))
    stable = math.ceil(replicas * (100 - weight) / 100)
    stable = min(stable, replicas + max_surge - canary)
    return Split(stable=max(stable, 0), canary=min(canary, replicas + max_surge))


def effective_weight(pods: Pods) -> int:
    """The canary's share of ready pods, in percent: what the Service actually sends it."""
    return round(100 * pods.canary_ready / pods.ready) if pods.ready else 0


def next_split(replicas: int, weight: int, max_surge: int, max_unavailable: int, pods: Pods,
               other: int = 0) -> Split:
    """The replica counts to set now, moving ``pods`` toward ``target`` within the bounds above.

    The canary grows into the room the surge leaves (counting pods that still exist); the stable
    shrinks by its not-ready pods, then by as many ready ones as keep ``replicas -
    max_unavailable`` ready. Called again as pods come and go, it reaches the target; with both
    bounds at 0 it cannot move (Kubernetes refuses that pair too). A lower weight than the canary
    runs (a rollback) removes canary pods at once, and the stable grows back as room frees.
    ``other`` pods (an earlier canary's, on their way out) take room too."""
    goal = target(replicas, weight, max_surge)
    room = replicas + max_surge - pods.total - other
    if goal.canary >= pods.canary:
        canary = min(goal.canary, pods.canary + max(room, 0))
    else:
        canary = goal.canary
    floor = replicas - max_unavailable
    may_remove = (pods.stable - pods.stable_ready) + max(pods.ready - floor, 0)
    stable = max(goal.stable, pods.stable - may_remove) if goal.stable < pods.stable else goal.stable
    if stable > pods.stable:  # growing back (a lower weight): within the room the canary left
        stable = min(stable, pods.stable + max(room - max(canary - pods.canary, 0), 0))
    return Split(stable=stable, canary=canary)


def drain(replicas: int, max_surge: int, max_unavailable: int, pods: Pods, other: int = 0) -> Split:
    """The replica counts to set now when a canary that is not failing goes away (the spec went
    back to the stable revision, or dropped the canary): the stable grows back into the room the
    surge leaves, and canary pods go only as others are ready, not-ready ones first, keeping
    ``replicas - max_unavailable`` ready. Called again as pods come and go, it ends at
    (replicas, 0). A rollback does not drain: it removes the canary at once (``next_split``)."""
    room = replicas + max_surge - pods.total - other
    stable = min(replicas, pods.stable + max(room, 0)) if pods.stable < replicas else replicas
    floor = replicas - max_unavailable
    may_remove = (pods.canary - pods.canary_ready) + max(pods.ready - floor, 0)
    canary = max(0, pods.canary - may_remove)
    if stable >= replicas and pods.stable_ready >= floor:
        canary = 0  # the stable serves alone: the rest of the canary goes
    return Split(stable=stable, canary=canary)
