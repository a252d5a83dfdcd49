"""The kopf layer: watches feed the cache and wake the runner; the runner's passes reconcile.

Kopf is used for what it does well, watching: list+watch with reconnects and timeouts, and an
index barrier (kopf calls no event handler before every indexed kind has been listed once), so
the first passes after a start see the whole world, not half of it. Kopf writes nothing: there
are no change handlers, timers or daemons, so no kopf finalizer, progress or diff-base annotation
is ever put on an InferenceService (a finalizer an older version left is removed by kopf itself).
"""

from __future__ import annotations

import logging
import os
import signal
import threading
from typing import Any, Hashable, Mapping

import kopf

from inference_operator import kinds
from inference_operator import __version__, api, naming
from inference_operator.controller import cache, heap, kopfpatch, leader, metrics, runner
from inference_operator.desired import children
from inference_operator.config import OperatorConfig
from inference_operator.controller.kube import RestKube
from inference_operator.controller.reconcile import SLOW_RETRY_SECONDS, reconcile
from inference_operator.controller.reconcile import RENDERED

log = logging.getLogger(__name__)
kopfpatch.apply()  # kopf's start-up barrier, linear in the objects instead of quadratic

# A full pass over every InferenceService per period, spread over it, in case an event was missed.
# Events drive everything else; an hour keeps an idle operator's CPU near nothing at a thousand
# InferenceServices (Flux reconciles every 10 minutes, controller-runtime resyncs every 10 hours).
RESYNC_SECONDS = 3600
WORKERS = 4
# How long a child's event waits for the events that follow it (seconds); see _child_event.
CHILD_EVENT_DELAY = 0.25
CHILD_LABELS = {"app.kubernetes.io/managed-by": naming.MANAGED_BY}
# The child kinds of the registry, and pods: streamed with our label only.
CHILD_RESOURCES = tuple((k.group, k.version, k.plural, k.kind)
                        for k in [*children.CHILD_KINDS, kinds.POD, kinds.REPLICASET])

_config = OperatorConfig.from_env()
_slow_retry_seconds = SLOW_RETRY_SECONDS
_kube: RestKube | None = None
USER_AGENT = f"inference-operator/{__version__}"
_trimming = None  # the heap trimmer's stop event, once started
# Compacted once kopf's start-up barrier opens (the first event handler call): see cache.Store.
STORE = cache.Store(deferred=True)


def kube() -> RestKube:
    global _kube
    if _kube is None:
        _kube = RestKube()
        _kube.client.user_agent = USER_AGENT
    return _kube


def process(key: Hashable, failures: int) -> runner.Result:
    """One pass for (namespace, name), from the cache; what it wrote goes back into the cache."""
    namespace, name = key  # type: ignore[misc]
    observed = STORE.observe(namespace, name)
    if observed is None:
        return runner.Result()  # gone: garbage collection takes the children
    trigger = "retry" if failures else "pass"
    with metrics.RECONCILE_SECONDS.labels(trigger).time():
        try:
            outcome = reconcile(observed, cache.WriteThrough(kube(), STORE), _config, failures=failures,
                                slow_retry_seconds=_slow_retry_seconds)
        except Exception:
            metrics.RECONCILES.labels(trigger, "error").inc()
            raise
    metrics.RECONCILES.labels(trigger, "problem" if outcome.problem else "ok").inc()
    metrics.WRITES.labels(namespace).inc(outcome.writes)
    if outcome.backoff:
        raise runner.RetryLater(outcome.problem.message)
    return runner.Result(requeue_after=outcome.requeue_after)


def _runner(workers: int = WORKERS, resync_seconds: float = RESYNC_SECONDS) -> runner.Runner:
    return runner.Runner(process, workers=workers, resync_seconds=resync_seconds, keys=lambda: STORE.keys(cache.ISVC))


RUNNER = _runner()


_election: dict[str, Any] | None = None  # the CLI's --leader-elect settings
_elector = None  # leader.Elector, while campaigning


def configure_leader_election(namespace: str, lease_seconds: float, renew_seconds: float,
                              retry_seconds: float, name: str = leader.LEASE_NAME) -> None:
    """Run passes only while this replica holds the Lease (the CLI's --leader-elect)."""
    global _election
    _election = {"namespace": namespace, "name": name, "lease_seconds": lease_seconds,
                 "renew_seconds": renew_seconds, "retry_seconds": retry_seconds}


# Passes start when this replica leads AND kopf's start-up barrier has opened (every indexed kind
# listed once), whichever comes second: a replica that wins the Lease while still listing must not
# run passes on half a cache (a Deployment not yet listed would look missing).
_start_lock = threading.Lock()
_leading = False
_listed = False


def _begin_when_ready() -> None:
    """Called with _start_lock held: every InferenceService the cache holds gets a pass (events
    seen while following are queued already), and the workers start."""
    if _leading and _listed and not RUNNER.gate.is_set():
        for key in STORE.keys(cache.ISVC):
            RUNNER.enqueue(key)
        metrics.LEADER.set(1)
        RUNNER.gate.set()


def _lead() -> None:
    global _leading
    with _start_lock:
        _leading = True
        _begin_when_ready()


def _abdicate() -> None:
    """The Lease is lost (not renewed in time, or taken): stop at once, as client-go's users do;
    the Deployment starts the process again, as a follower."""
    global _leading
    with _start_lock:
        _leading = False
        RUNNER.gate.clear()
    metrics.LEADER.set(0)
    log.error("leader election lost: stopping")
    os.kill(os.getpid(), signal.SIGTERM)


def configure_runner(
    workers: int = WORKERS, resync_seconds: float = RESYNC_SECONDS, slow_retry_seconds: float = SLOW_RETRY_SECONDS
) -> None:
    """Set before kopf starts (the CLI's --workers, --resync-seconds and --slow-retry-seconds)."""
    global RUNNER, _slow_retry_seconds
    _slow_retry_seconds = slow_retry_seconds
    RUNNER = _runner(workers, resync_seconds)


class NoDiffBase(kopf.DiffBaseStorage):
    """Kopf diffs every event's body against the last handled one, for change handlers, building
    a deep copy of the body each time: a tenth of the operator's CPU at a thousand
    InferenceServices. There are no change handlers here, so nothing reads the diff: build none."""

    def build(self, *, body: kopf.Body, extra_fields: Any = None) -> Any:
        return None

    def fetch(self, *, body: kopf.Body) -> Any:
        return None

    def store(self, *, body: kopf.Body, patch: Any, essence: Any) -> None:
        pass


@kopf.on.startup()
def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
    # Kopf keeps no state on our objects; were it ever to, annotations under our prefix, not status.
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=api.GROUP)
    settings.persistence.diffbase_storage = NoDiffBase()
    # Explicit watch timeouts: a silently stalled watch is kopf's most reported failure.
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330
    settings.watching.connect_timeout = 10
    # Only our children are streamed from the API server, not every pod of the cluster.
    selector = ",".join(f"{k}={v}" for k, v in CHILD_LABELS.items())
    for group, version, plural, _kind in CHILD_RESOURCES:
        settings.watching.label_selectors[(group, version, plural)] = selector
    # Events are ours alone (on transitions); kopf would post one per handler run.
    settings.posting.enabled = False
    kubernetes_login()
    if _election is not None:
        global _elector
        RUNNER.gate.clear()
        metrics.LEADER.set(0)
        me = leader.identity()
        # Each replica's requests carry its identity: an audit log tells the replicas apart.
        agent = kube().client.user_agent = f"{USER_AGENT} ({me})"
        _elector = leader.Elector(leader.KubernetesLeases(user_agent=agent), me=me, on_started=_lead,
                                  on_stopped=_abdicate, **_election)
        kube().fence, kube().write_seconds = _elector.fence, _elector.write_seconds
        _elector.start()
    else:
        metrics.LEADER.set(1)
    RUNNER.start()
    global _trimming
    _trimming = heap.start_trimming(lambda: _events_seen)


@kopf.on.cleanup()
def shutdown(**_: Any) -> None:
    RUNNER.stop()
    if _elector is not None:  # after the last pass: the next leader starts when this one is done
        _elector.stop(release=True)
    if _trimming is not None:
        _trimming.set()


def kubernetes_login() -> None:
    import kubernetes

    try:
        kubernetes.config.load_incluster_config()
    except kubernetes.config.ConfigException:
        kubernetes.config.load_kube_config()
    if not kubernetes.client.Configuration.get_default_copy().verify_ssl:
        # The kubeconfig asks for it (insecure-skip-tls-verify): say so once, not on every request.
        import urllib3

        log.warning("the kubeconfig disables TLS verification of the API server")
        urllib3.disable_warnings(urllib3.exceptions.InsecureRequestWarning)


def _raw(body: Mapping[str, Any]) -> dict[str, Any]:
    return dict(body)


def _owner(body: Mapping[str, Any]) -> str | None:
    return ((body.get("metadata") or {}).get("labels") or {}).get(naming.ISVC_LABEL)


def _new_work(body: Mapping[str, Any]) -> bool:
    """A spec no pass has acted on yet: it goes before resumes and resyncs."""
    generation = (body.get("metadata") or {}).get("generation")
    return (body.get("status") or {}).get("observedGeneration") != generation


# ---- the cache: kopf calls index functions for every listed or changed object (not deletions),
# before any event handler, and holds event handlers until every indexed kind is listed. --------


_events_seen = 0  # what heap trimming watches: it gives memory back after bursts of events


def _cache(kind: str, body: Mapping[str, Any]) -> None:
    global _events_seen
    _events_seen += 1
    STORE.upsert(kind, _raw(body))


def _opened() -> None:
    """Every event handler calls this first: the first call after a start is kopf's start-up
    barrier opening, every object listed and indexed, and the cache compacts what it kept."""
    global _listed
    if STORE.deferred:
        STORE.compact_all()
    if not _listed:
        with _start_lock:
            _listed = True
            _begin_when_ready()


def _news(kind: str, type: str, body: Mapping[str, Any]) -> bool:
    """Whether this event may change what a pass decides: the echo of our own write does not (its
    reply is in the cache already, and the pass that wrote saw it). At creation that was most
    passes: each child's create and both status writes."""
    return type == "DELETED" or not STORE.take_echo(kind, body)


@kopf.index(api.GROUP, api.VERSION, api.PLURAL)
async def cache_inferenceservice(body: kopf.Body, **_: Any) -> None:
    _cache(cache.ISVC, body)


def _cache_child(kind: str):
    async def index(body: kopf.Body, **_: Any) -> None:
        if cache.wanted(kind, body):
            _cache(kind, body)
        else:  # e.g. a ReplicaSet a Deployment adopted: what an older version of it said is stale
            STORE.remove(kind, _raw(body))

    index.__name__ = f"cache_{kind.lower()}"
    return index


for _group, _version, _plural, _kind in CHILD_RESOURCES:
    kopf.index(_group, _version, _plural, labels=CHILD_LABELS, id=f"cache_{_kind.lower()}")(_cache_child(_kind))

kopf.index("", "v1", "persistentvolumeclaims", id="cache_pvc")(_cache_child(cache.PVC))
kopf.index("", "v1", "namespaces", id="cache_namespace")(_cache_child(cache.NAMESPACE))


@kopf.index("apiextensions.k8s.io", "v1", "customresourcedefinitions", id="cache_crd")
async def cache_crd(body: kopf.Body, **_: Any) -> None:
    # Only the name is kept (a CRD's schema is large): which optional child kinds can exist.
    meta = body.get("metadata") or {}
    STORE.upsert(cache.CRD, {"metadata": {"name": meta.get("name"), "uid": meta.get("uid"),
                                          "resourceVersion": meta.get("resourceVersion")}})


# ---- triggers: every event wakes the runner for the InferenceService it concerns ---------------


@kopf.on.event(api.GROUP, api.VERSION, api.PLURAL)
async def inferenceservice_event(type: str, body: kopf.Body, **_: Any) -> None:
    _opened()
    metrics.WATCH_EVENTS.labels(api.KIND).inc()
    key = cache.key_of(body)
    if type == "DELETED":
        STORE.remove(cache.ISVC, _raw(body))
        RUNNER.forget(key)
        RENDERED.forget(*key)
        return
    if _news(cache.ISVC, type, body):
        RUNNER.enqueue(key, urgent=_new_work(body))


def _child_event(kind: str):
    async def handler(type: str, body: kopf.Body, **_: Any) -> None:
        _opened()
        metrics.WATCH_EVENTS.labels(kind).inc()
        if type == "DELETED":
            STORE.remove(kind, _raw(body))
        owner = _owner(body)
        if owner and cache.wanted(kind, body) and _news(kind, type, body):
            # A moment's wait: a pod's change moves its ReplicaSet and Deployment a few
            # milliseconds later, and the pass that runs then sees all three.
            RUNNER.enqueue_soon((cache.key_of(body)[0], owner), CHILD_EVENT_DELAY)

    handler.__name__ = f"{kind.lower()}_event"
    return handler


for _group, _version, _plural, _kind in CHILD_RESOURCES:
    kopf.on.event(_group, _version, _plural, labels=CHILD_LABELS, id=f"{_kind.lower()}_event")(_child_event(_kind))


@kopf.on.event("", "v1", "persistentvolumeclaims")
async def claim_event(type: str, body: kopf.Body, **_: Any) -> None:
    """A claim appeared or went: the InferenceServices that name it look again, at once."""
    _opened()
    if type == "DELETED":
        STORE.remove(cache.PVC, _raw(body))
    namespace, claim = cache.key_of(body)
    for name in STORE.users_of_claim(namespace, claim):
        RUNNER.enqueue((namespace, name))


@kopf.on.event("", "v1", "namespaces")
async def namespace_event(type: str, body: kopf.Body, **_: Any) -> None:
    _opened()
    if type == "DELETED":
        STORE.remove(cache.NAMESPACE, _raw(body))


@kopf.on.event("apiextensions.k8s.io", "v1", "customresourcedefinitions")
async def crd_event(type: str, body: kopf.Body, **_: Any) -> None:
    """An optional child kind's CRD installed or removed: every InferenceService looks again."""
    _opened()
    name = (body.get("metadata") or {}).get("name")
    if type == "DELETED":
        STORE.remove(cache.CRD, _raw(body))
    if any(child.crd == name for child in children.REGISTRY if child.crd):
        for key in STORE.keys(cache.ISVC):
            RUNNER.enqueue(key)
