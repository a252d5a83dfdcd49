"""The kopf layer: watches feed the operator's cache and wake its runner. Each handler only hands
what kopf gave it to the Operator (operator.py).

Kopf is used for what it does well, watching: list+watch with reconnects and timeouts, and an
index barrier (kopf calls no event handler before every indexed kind has been listed once), so
the first passes after a start see the whole world, not half of it. Kopf writes nothing: there
are no change handlers, timers or daemons, so no kopf finalizer, progress or diff-base annotation
is ever put on an InferenceService (a finalizer an older version left is removed by kopf itself).
"""

from __future__ import annotations

import logging
from typing import Any, Optional

import kopf

from inference_operator import api, kinds, naming
from inference_operator.controller import cache
from inference_operator.controller.operator import Operator
from inference_operator.desired import children

log = logging.getLogger(__name__)

CHILD_LABELS = {"app.kubernetes.io/managed-by": naming.MANAGED_BY}
# The child kinds of the registry, and pods: streamed with our label only.
CHILD_RESOURCES = tuple((k.group, k.version, k.plural, k.kind)
                        for k in [*children.CHILD_KINDS, kinds.POD, kinds.REPLICASET])


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


def configure(settings: kopf.OperatorSettings) -> None:
    """Kopf's settings: what it watches, with which timeouts, and that it stores and posts nothing."""
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


def registry(op: Operator) -> kopf.OperatorRegistry:
    """A kopf registry whose handlers feed ``op``: kopf calls index functions for every listed or
    changed object (not deletions) before any event handler, and holds event handlers until every
    indexed kind is listed."""
    reg = kopf.OperatorRegistry()

    # What kopf's default registry does (its id and errors mode too): the credentials the
    # kubernetes client loaded; a failure is not retried, and kopf exits having no credentials.
    @kopf.on.login(id="login_via_client", errors=kopf.ErrorsMode.IGNORED, registry=reg)
    def login(**kwargs: Any) -> Optional[kopf.ConnectionInfo]:
        return kopf.login_via_client(**kwargs)

    @kopf.on.startup(id="startup", registry=reg)
    def startup(settings: kopf.OperatorSettings, **_: Any) -> None:
        configure(settings)
        kubernetes_login()
        op.start()

    @kopf.on.cleanup(id="shutdown", registry=reg)
    def shutdown(**_: Any) -> None:
        op.stop()

    _watch_inferenceservices(reg, op)
    for group, version, plural, kind in CHILD_RESOURCES:
        _watch_children(reg, op, group, version, plural, kind)
    _watch_others(reg, op)
    return reg


def _watch_inferenceservices(reg: kopf.OperatorRegistry, op: Operator) -> None:
    @kopf.index(api.GROUP, api.VERSION, api.PLURAL, id="cache_inferenceservice", registry=reg)
    async def cache_inferenceservice(body: kopf.Body, **_: Any) -> None:
        op.cache(cache.ISVC, body)

    @kopf.on.event(api.GROUP, api.VERSION, api.PLURAL, id="inferenceservice_event", registry=reg)
    async def inferenceservice_event(type: str, body: kopf.Body, **_: Any) -> None:
        op.inferenceservice_event(type, body)


def _watch_children(reg: kopf.OperatorRegistry, op: Operator, group: str, version: str, plural: str,
                    kind: str) -> None:
    async def index(body: kopf.Body, **_: Any) -> None:
        op.cache_child(kind, body)

    async def event(type: str, body: kopf.Body, **_: Any) -> None:
        op.child_event(kind, type, body)

    kopf.index(group, version, plural, labels=CHILD_LABELS, id=f"cache_{kind.lower()}", registry=reg)(index)
    kopf.on.event(group, version, plural, labels=CHILD_LABELS, id=f"{kind.lower()}_event", registry=reg)(event)


def _watch_others(reg: kopf.OperatorRegistry, op: Operator) -> None:
    """Claims (a missing one blocks a pass), namespaces (one being deleted is left alone) and the
    names of installed CRDs (which optional child kinds exist)."""

    @kopf.index("", "v1", "persistentvolumeclaims", id="cache_pvc", registry=reg)
    async def cache_pvc(body: kopf.Body, **_: Any) -> None:
        op.cache_child(cache.PVC, body)

    @kopf.index("", "v1", "namespaces", id="cache_namespace", registry=reg)
    async def cache_namespace(body: kopf.Body, **_: Any) -> None:
        op.cache_child(cache.NAMESPACE, body)

    @kopf.index("apiextensions.k8s.io", "v1", "customresourcedefinitions", id="cache_crd", registry=reg)
    async def cache_crd(body: kopf.Body, **_: Any) -> None:
        op.cache_crd(body)

    @kopf.on.event("", "v1", "persistentvolumeclaims", id="claim_event", registry=reg)
    async def claim_event(type: str, body: kopf.Body, **_: Any) -> None:
        op.claim_event(type, body)

    @kopf.on.event("", "v1", "namespaces", id="namespace_event", registry=reg)
    async def namespace_event(type: str, body: kopf.Body, **_: Any) -> None:
        op.namespace_event(type, body)

    @kopf.on.event("apiextensions.k8s.io", "v1", "customresourcedefinitions", id="crd_event", registry=reg)
    async def crd_event(type: str, body: kopf.Body, **_: Any) -> None:
        op.crd_event(type, body)
