"""The operator's runtime: one object owns the cache, the runner, the API client, the render cache,
the elector and the start gate. The CLI builds it before kopf starts; tests build their own."""

from __future__ import annotations

import dataclasses
import logging
import os
import signal
import threading
from typing import Any, Hashable, Mapping, Optional

from inference_operator import __version__, api, naming
from inference_operator.config import OperatorConfig
from inference_operator.controller import cache, faults, heap, leader, metrics, runner
from inference_operator.controller.reconcile import SLOW_RETRY_SECONDS, reconcile
from inference_operator.controller.render_cache import RenderCache
from inference_operator.desired import children
from inference_operator.kube import Kube, RestKube

log = logging.getLogger(__name__)

# A full pass over every InferenceService per period, spread over it, in case an event was missed.
# Events drive everything else; an hour keeps an idle operator's CPU near nothing at a thousand
# InferenceServices (Flux reconciles every 10 minutes, controller-runtime resyncs every 10 hours).
RESYNC_SECONDS = 3600
WORKERS = 4
# How long a child's event waits for the events that follow it (seconds); see Operator.child_event.
CHILD_EVENT_DELAY = 0.25
USER_AGENT = f"inference-operator/{__version__}"


@dataclasses.dataclass(frozen=True)
class Election:
    """The CLI's --leader-elect settings: passes run only while this replica holds the Lease."""

    namespace: str
    lease_seconds: float
    renew_seconds: float
    retry_seconds: float
    name: str = leader.LEASE_NAME


@dataclasses.dataclass(frozen=True)
class Settings:
    """The CLI's --workers, --resync-seconds, --slow-retry-seconds and --leader-elect."""

    workers: int = WORKERS
    resync_seconds: float = RESYNC_SECONDS
    slow_retry_seconds: float = SLOW_RETRY_SECONDS
    election: Optional[Election] = None


class Operator:
    """What one operator process runs. ``kube`` is built on first use (after the kubeconfig is
    loaded at kopf's start-up) unless one is given."""

    def __init__(self, settings: Settings = Settings(), config: Optional[OperatorConfig] = None,
                 kube: Optional[Kube] = None, clock: Optional[Any] = None) -> None:
        self.settings = settings
        self.config = config if config is not None else OperatorConfig.from_env()
        # Compacted once kopf's start-up barrier opens (the first event handler call): see cache.Store.
        self.store = cache.Store(deferred=True)
        self.renders = RenderCache()
        clocked = {"clock": clock} if clock is not None else {}
        self.runner = runner.Runner(self.process, workers=settings.workers, resync_seconds=settings.resync_seconds,
                                    keys=lambda: self.store.keys(cache.ISVC), **clocked)
        self._kube = kube
        self.elector: Optional[leader.Elector] = None
        self._trimming: Optional[threading.Event] = None  # the heap trimmer's stop event, once started
        self.events_seen = 0  # what heap trimming watches: it gives memory back after bursts of events
        # Passes start when this replica leads AND kopf's start-up barrier has opened (every indexed
        # kind listed once), whichever comes second: a replica that wins the Lease while still
        # listing must not run passes on half a cache (a Deployment not yet listed would look missing).
        self._start_lock = threading.Lock()
        self._leading = False
        self._listed = False

    @property
    def kube(self) -> Kube:
        if self._kube is None:
            rest = RestKube(count=metrics.count_request)
            rest.client.user_agent = USER_AGENT
            kill_point = faults.from_env()
            if kill_point is not None:
                rest.before_write = kill_point.before_write
            self._kube = rest
        return self._kube

    # ---- one pass ------------------------------------------------------------------------------

    def process(self, key: Hashable, failures: int) -> runner.Result:
        """One pass for (namespace, name), from the cache; what it wrote goes back into the cache."""
        namespace, name = key  # type: ignore[misc]
        observed = self.store.observe(namespace, name)
        if observed is None:
            return runner.Result()  # gone: garbage collection takes the children
        trigger = "retry" if failures else "pass"
        with metrics.RECONCILE_SECONDS.labels(trigger).time():
            try:
                outcome = reconcile(observed, cache.WriteThrough(self.kube, self.store), self.config,
                                    failures=failures, slow_retry_seconds=self.settings.slow_retry_seconds,
                                    renders=self.renders)
            except Exception:
                metrics.RECONCILES.labels(trigger, "error").inc()
                raise
        metrics.RECONCILES.labels(trigger, "problem" if outcome.problem else "ok").inc()
        metrics.WRITES.labels(namespace).inc(outcome.writes)
        if outcome.backoff:
            raise runner.RetryLater(outcome.problem.message)
        return runner.Result(requeue_after=outcome.requeue_after)

    # ---- start, leadership and stop ---------------------------------------------------------------

    def start(self) -> None:
        """At kopf's start-up, the kubeconfig loaded: campaign for the Lease (or lead at once), start
        the workers and the heap trimmer."""
        election = self.settings.election
        if election is not None:
            self.runner.gate.clear()
            metrics.LEADER.set(0)
            me = leader.identity()
            # Each replica's requests carry its identity: an audit log tells the replicas apart.
            rest = self.kube
            assert isinstance(rest, RestKube), "leader election fences the API server's client"
            agent = rest.client.user_agent = f"{USER_AGENT} ({me})"
            self.elector = leader.Elector(
                leader.KubernetesLeases(user_agent=agent), me=me, on_started=self.lead, on_stopped=self.abdicate,
                namespace=election.namespace, name=election.name, lease_seconds=election.lease_seconds,
                renew_seconds=election.renew_seconds, retry_seconds=election.retry_seconds)
            rest.fence, rest.write_seconds = self.elector.fence, self.elector.write_seconds
            self.elector.start()
        else:
            metrics.LEADER.set(1)
        self.runner.start()
        self._trimming = heap.start_trimming(lambda: self.events_seen)

    def stop(self) -> None:
        self.runner.stop()
        if self.elector is not None:  # after the last pass: the next leader starts when this one is done
            self.elector.stop(release=True)
        if self._trimming is not None:
            self._trimming.set()

    def _begin_when_ready(self) -> None:
        """Called with the start lock held: every InferenceService the cache holds gets a pass
        (events seen while following are queued already), and the workers start."""
        if self._leading and self._listed and not self.runner.gate.is_set():
            for key in self.store.keys(cache.ISVC):
                self.runner.enqueue(key)
            metrics.LEADER.set(1)
            self.runner.gate.set()

    def lead(self) -> None:
        with self._start_lock:
            self._leading = True
            self._begin_when_ready()

    def abdicate(self) -> None:
        """The Lease is lost (not renewed in time, or taken): stop at once, as client-go's users do;
        the Deployment starts the process again, as a follower."""
        with self._start_lock:
            self._leading = False
            self.runner.gate.clear()
        metrics.LEADER.set(0)
        log.error("leader election lost: stopping")
        os.kill(os.getpid(), signal.SIGTERM)

    def opened(self) -> None:
        """Every event handler calls this first: the first call after a start is kopf's start-up
        barrier opening, every object listed and indexed, and the cache compacts what it kept."""
        if self.store.deferred:
            self.store.compact_all()
        if not self._listed:
            with self._start_lock:
                self._listed = True
                self._begin_when_ready()

    # ---- the cache: what kopf's index functions hand over ------------------------------------------

    def cache(self, kind: str, body: Mapping[str, Any]) -> None:
        self.events_seen += 1
        self.store.upsert(kind, dict(body))

    def cache_child(self, kind: str, body: Mapping[str, Any]) -> None:
        if cache.wanted(kind, body):
            self.cache(kind, body)
        else:  # e.g. a ReplicaSet a Deployment adopted: what an older version of it said is stale
            self.store.remove(kind, dict(body))

    def cache_crd(self, body: Mapping[str, Any]) -> None:
        # Only the name is kept (a CRD's schema is large): which optional child kinds can exist.
        meta = body.get("metadata") or {}
        self.store.upsert(cache.CRD, {"metadata": {"name": meta.get("name"), "uid": meta.get("uid"),
                                                   "resourceVersion": meta.get("resourceVersion")}})

    # ---- triggers: every event wakes the runner for the InferenceService it concerns ---------------

    def _news(self, kind: str, type: str, body: Mapping[str, Any]) -> bool:
        """Whether this event may change what a pass decides: the echo of our own write does not
        (its reply is in the cache already, and the pass that wrote saw it). At creation that was
        most passes: each child's create and both status writes."""
        return type == "DELETED" or not self.store.take_echo(kind, body)

    def inferenceservice_event(self, type: str, body: Mapping[str, Any]) -> None:
        self.opened()
        metrics.WATCH_EVENTS.labels(api.KIND).inc()
        key = cache.key_of(body)
        if type == "DELETED":
            self.store.remove(cache.ISVC, dict(body))
            self.runner.forget(key)
            self.renders.forget(*key)
            return
        if self._news(cache.ISVC, type, body):
            self.runner.enqueue(key, urgent=new_work(body))

    def child_event(self, kind: str, type: str, body: Mapping[str, Any]) -> None:
        self.opened()
        metrics.WATCH_EVENTS.labels(kind).inc()
        if type == "DELETED":
            self.store.remove(kind, dict(body))
        owner = ((body.get("metadata") or {}).get("labels") or {}).get(naming.ISVC_LABEL)
        if owner and cache.wanted(kind, body) and self._news(kind, type, body):
            # A moment's wait: a pod's change moves its ReplicaSet and Deployment a few
            # milliseconds later, and the pass that runs then sees all three.
            self.runner.enqueue_soon((cache.key_of(body)[0], owner), CHILD_EVENT_DELAY)

    def claim_event(self, type: str, body: Mapping[str, Any]) -> None:
        """A claim appeared or went: the InferenceServices that name it look again, at once."""
        self.opened()
        if type == "DELETED":
            self.store.remove(cache.PVC, dict(body))
        namespace, claim = cache.key_of(body)
        for name in self.store.users_of_claim(namespace, claim):
            self.runner.enqueue((namespace, name))

    def namespace_event(self, type: str, body: Mapping[str, Any]) -> None:
        self.opened()
        if type == "DELETED":
            self.store.remove(cache.NAMESPACE, dict(body))

    def crd_event(self, type: str, body: Mapping[str, Any]) -> None:
        """An optional child kind's CRD installed or removed: every InferenceService looks again."""
        self.opened()
        name = (body.get("metadata") or {}).get("name")
        if type == "DELETED":
            self.store.remove(cache.CRD, dict(body))
        if any(child.crd == name for child in children.REGISTRY if child.crd):
            for key in self.store.keys(cache.ISVC):
                self.runner.enqueue(key)


def new_work(body: Mapping[str, Any]) -> bool:
    """A spec no pass has acted on yet: it goes before resumes and resyncs."""
    generation = (body.get("metadata") or {}).get("generation")
    return (body.get("status") or {}).get("observedGeneration") != generation
