"""The operator's cache of what its watch streams carry, and the snapshots passes read from it.

The watches (kopf) feed ``Store`` with every InferenceService, every child and pod carrying our
labels, every PersistentVolumeClaim and every Namespace; a pass reads an ``Observed`` snapshot and
sends no read request of its own. Objects the operator writes are put in at once from the API
server's reply, so the pass after a write never acts on the state before it; a watch event that
arrives late with an older resourceVersion of the same object is ignored.
"""

from __future__ import annotations

import collections
import sys
import threading
from typing import Any, Mapping, Optional

from inference_operator import kinds, naming
from inference_operator.desired import children
from inference_operator.observed import Observed

ISVC = "InferenceService"
POD = "Pod"
PVC = "PersistentVolumeClaim"
NAMESPACE = "Namespace"
CRD = "CustomResourceDefinition"
CHILD_KINDS = tuple(kind.kind for kind in children.CHILD_KINDS)
REPLICASET = kinds.REPLICASET.kind

Key = tuple[str, str]  # (namespace, name)
GONE_REMEMBERED = 100_000
ECHOES_REMEMBERED = 10_000


def key_of(obj: Mapping[str, Any]) -> Key:
    meta = obj.get("metadata") or {}
    return meta.get("namespace") or "", meta["name"]


def _rv(obj: Mapping[str, Any]) -> Optional[int]:
    try:
        return int(obj["metadata"].get("resourceVersion") or "")
    except (KeyError, ValueError):
        return None


# What passes read of the kinds the cache holds most of, the rest dropped: a pod's spec (most of
# a pod) is never read, only its labels, deletion and status; of a Deployment's pod template only
# the containers' names, images, commands and args (drift, defaults) and its labels; of a
# ReplicaSet (only an orphaned one is held, see ``wanted``), its selector, replicas and status.
_POD_STATUS = ("phase", "reason", "message", "conditions", "containerStatuses", "initContainerStatuses")
_CONTAINER = ("name", "image", "command", "args")


def _containers(spec: Mapping[str, Any], field: str) -> list[dict[str, Any]]:
    return [{k: c[k] for k in _CONTAINER if k in c} for c in spec.get(field) or []]


def slim(obj: Mapping[str, Any], kind: str = "", compact: bool = True) -> dict[str, Any]:
    """The object as cached: managedFields are dropped (often half an object's size, never read),
    and of pods, Deployments and ReplicaSets what passes never read (their size at a thousand
    InferenceServices). What is kept is a compact copy (_compact), never changed."""
    result = dict(obj)
    meta = dict(result.get("metadata") or {})
    meta.pop("managedFields", None)
    result["metadata"] = meta
    spec = result.get("spec") or {}
    if kind == POD:
        meta.pop("annotations", None)
        result.pop("spec", None)
        status = result.get("status") or {}
        result["status"] = {k: status[k] for k in _POD_STATUS if k in status}
    elif kind == children.WORKLOAD.kind and "template" in spec:
        template = spec["template"] or {}
        pod = template.get("spec") or {}
        result["spec"] = dict(spec, template={
            "metadata": {"labels": (template.get("metadata") or {}).get("labels") or {}},
            "spec": {"containers": _containers(pod, "containers"),
                     "initContainers": _containers(pod, "initContainers")}})
    elif kind == REPLICASET:
        result["spec"] = {k: v for k, v in spec.items() if k != "template"}
    return _compact(result) if compact else result


# CPython 3.12.0 to 3.12.5 never free an interned string (cpython#113993): there, interning would
# keep every resourceVersion and timestamp ever seen. Elsewhere interned strings die with their
# last reference.
_INTERN = sys.intern if not (3, 12, 0) <= sys.version_info[:3] < (3, 12, 6) else (lambda text: text)


def _compact(value: Any) -> Any:
    """A copy with every key, and every short string value, interned: each watch event is decoded
    on its own, so thousands of objects would each hold their own "metadata", "lastTransitionTime",
    "True"... Halves what a cached object holds (a tracemalloc count over a thousand of them)."""
    if isinstance(value, dict):
        return {_INTERN(k): _compact(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_compact(v) for v in value]
    if isinstance(value, str) and len(value) <= _INTERNED_VALUE:
        return _INTERN(value)
    return value


_INTERNED_VALUE = 24  # enums, names, short labels, timestamps; not messages or images with digests


def wanted(kind: str, obj: Mapping[str, Any]) -> bool:
    """Whether the cache holds this object at all. A ReplicaSet a Deployment controls is never read
    (its Deployment's status says what it does): only an orphaned one is, for a migration."""
    return kind != REPLICASET or children.controller_uid(dict(obj)) is None


class Store:
    """Thread-safe: the watch side writes, passes read. Objects are never mutated once stored.

    ``deferred``: objects are kept slimmed but not yet compacted (they share what they keep with
    the watch event's body) until ``compact_all``. A start lists every object and kopf holds each
    one's full body until all are indexed; compact copies made one by one in between would pin the
    memory of those bodies once they are freed. Made together after that, they do not."""

    def __init__(self, deferred: bool = False) -> None:
        self.deferred = deferred
        self._lock = threading.Lock()
        # (kind, uid, resourceVersion) of versions our own writes made: their watch events are
        # echoes (see take_echo). Bounded: an echo that never arrives is forgotten in time.
        self._echoes: collections.OrderedDict[tuple[str, str, str], None] = collections.OrderedDict()
        self._objects: dict[str, dict[Key, dict[str, Any]]] = {}
        # Children and pods by the InferenceService named in their label: (kind, ns, owner) -> names.
        self._owned: dict[tuple[str, str, str], set[str]] = {}
        self._owner_of: dict[tuple[str, str, str], str] = {}
        # UIDs of objects we deleted: an event about one that arrives late never brings it back
        # (uids are never reused; a re-created object has a new one).
        self._gone: collections.OrderedDict[str, None] = collections.OrderedDict()
        # Names by (kind, namespace): a pass reads its namespace's claims, not every claim.
        self._in_ns: dict[tuple[str, str], set[str]] = {}
        self._crd_names: frozenset[str] = frozenset()

    # ---- the watch side ---------------------------------------------------------------------

    def written(self, kind: str, obj: Mapping[str, Any]) -> None:
        """The API server's reply to our own write: cached, and its watch event will be an echo."""
        meta = obj.get("metadata") or {}
        with self._lock:
            self._echoes[(kind, meta.get("uid") or "", meta.get("resourceVersion") or "")] = None
            while len(self._echoes) > ECHOES_REMEMBERED:
                self._echoes.popitem(last=False)
        self.upsert(kind, obj)

    def take_echo(self, kind: str, obj: Mapping[str, Any]) -> bool:
        """Whether a watch event carries exactly a version our own write made (and its reply is
        cached already): it brings nothing a pass has not seen. Each echo is taken once."""
        meta = obj.get("metadata") or {}
        key = (kind, meta.get("uid") or "", meta.get("resourceVersion") or "")
        with self._lock:
            if key in self._echoes:
                del self._echoes[key]
                return True
        return False

    def upsert(self, kind: str, obj: Mapping[str, Any]) -> bool:
        """Store obj unless this version of the same object, or a newer one, is already here (the
        reply to our own write comes before its watch event); True if stored: something new."""
        meta = obj.get("metadata") or {}
        key = key_of(obj)
        with self._lock:
            if meta.get("uid") in self._gone:
                return False
            objects = self._objects.setdefault(kind, {})
            current = objects.get(key)
            if current is not None and current["metadata"].get("uid") == meta.get("uid"):
                old, new = _rv(current), _rv(obj)
                if old is not None and new is not None and new <= old:
                    return False
            objects[key] = slim(obj, kind, compact=not self.deferred)
            self._index(kind, key, (meta.get("labels") or {}).get(naming.ISVC_LABEL))
            self._in_ns.setdefault((kind, key[0]), set()).add(key[1])
            if kind == CRD:
                self._crd_names = self._crd_names | {key[1]}
            return True

    def compact_all(self) -> None:
        """Compact what was kept deferred, and compact from now on."""
        with self._lock:
            if not self.deferred:
                return
            for objects in self._objects.values():
                for key, obj in objects.items():
                    objects[key] = _compact(obj)
            self.deferred = False

    def remove(self, kind: str, obj: Mapping[str, Any], final: bool = False) -> None:
        """Forget obj, unless what is stored is a different object of the same name (re-created).

        ``final``: we deleted it ourselves, so no later reply or event may bring this uid back. A
        watch's DELETED is not final: a label-filtered watch also says DELETED when an object
        loses our labels, and it comes back (same uid) when they are put back.
        """
        key = key_of(obj)
        uid = (obj.get("metadata") or {}).get("uid")
        with self._lock:
            if uid and final:
                self._gone[uid] = None
                while len(self._gone) > GONE_REMEMBERED:
                    self._gone.popitem(last=False)
            objects = self._objects.setdefault(kind, {})
            current = objects.get(key)
            if current is None:
                return
            if uid and current["metadata"].get("uid") not in (None, uid):
                return
            del objects[key]
            self._index(kind, key, None)
            names = self._in_ns.get((kind, key[0]))
            if names is not None:
                names.discard(key[1])
                if not names:
                    del self._in_ns[(kind, key[0])]
            if kind == CRD:
                self._crd_names = self._crd_names - {key[1]}

    def _index(self, kind: str, key: Key, owner: Optional[str]) -> None:
        ns, name = key
        previous = self._owner_of.pop((kind, ns, name), None)
        if previous is not None:
            names = self._owned.get((kind, ns, previous))
            if names is not None:
                names.discard(name)
                if not names:
                    del self._owned[(kind, ns, previous)]
        if owner is not None:
            self._owner_of[(kind, ns, name)] = owner
            self._owned.setdefault((kind, ns, owner), set()).add(name)

    # ---- the pass side ----------------------------------------------------------------------

    def get(self, kind: str, namespace: str, name: str) -> Optional[dict[str, Any]]:
        with self._lock:
            return self._objects.get(kind, {}).get((namespace, name))

    def keys(self, kind: str = ISVC) -> list[Key]:
        with self._lock:
            return list(self._objects.get(kind, {}))

    def observe(self, namespace: str, name: str) -> Optional[Observed]:
        """Everything a pass over this InferenceService reads; None if it is not (or no longer) there."""
        with self._lock:
            isvc = self._objects.get(ISVC, {}).get((namespace, name))
            if isvc is None:
                return None
            children = {}
            for kind in CHILD_KINDS:
                objects = self._objects.get(kind, {})
                for child in self._owned.get((kind, namespace, name), ()):
                    children[(kind, child)] = objects[(namespace, child)]
            sets = self._objects.get(REPLICASET, {})
            owned_sets = tuple(sets[(namespace, r)] for r in sorted(self._owned.get((REPLICASET, namespace, name), ())))
            pods = self._objects.get(POD, {})
            owned_pods = tuple(pods[(namespace, p)] for p in sorted(self._owned.get((POD, namespace, name), ())))
            claims = frozenset(self._in_ns.get((PVC, namespace), ()))
            ns_obj = self._objects.get(NAMESPACE, {}).get(("", namespace))
            crds = self._crd_names
        terminating = ns_obj is not None and (
            bool(ns_obj["metadata"].get("deletionTimestamp"))
            or (ns_obj.get("status") or {}).get("phase") == "Terminating"
        )
        return Observed(isvc=isvc, children=children, pods=owned_pods, claims=claims,
                        namespace_terminating=terminating, replicasets=owned_sets, crds=crds)

    def users_of_claim(self, namespace: str, claim: str) -> list[str]:
        """InferenceServices in namespace whose storageUri names this claim."""
        with self._lock:
            objects = self._objects.get(ISVC, {})
            isvcs = [(name, objects[(namespace, name)]) for name in self._in_ns.get((ISVC, namespace), ())]
        result = []
        for name, body in sorted(isvcs, key=lambda item: item[0]):
            uri = ((body.get("spec") or {}).get("model") or {}).get("storageUri") or ""
            if uri.startswith("pvc://") and uri[len("pvc://"):].split("/", 1)[0] == claim:
                result.append(name)
        return result


class WriteThrough:
    """The operator's writes, each put into the cache as soon as the API server answers it (also
    when a later write of the same pass fails), so the next pass never acts on the world before it."""

    def __init__(self, kube: Any, store: Store) -> None:
        self.kube = kube
        self.store = store

    def get(self, ref: Any) -> Optional[dict[str, Any]]:
        return self.kube.get(ref)

    def apply(self, obj: dict[str, Any]) -> dict[str, Any]:
        return self._keep(obj, self.kube.apply(obj))

    def create(self, obj: dict[str, Any]) -> dict[str, Any]:
        return self._keep(obj, self.kube.create(obj))

    def _keep(self, sent: dict[str, Any], result: dict[str, Any]) -> dict[str, Any]:
        self.store.written(result.get("kind") or sent["kind"], result)
        return result

    def delete(self, ref: Any, uid: str, propagation: str = "Background") -> None:
        self.kube.delete(ref, uid, propagation)
        self.store.remove(ref.kind.kind, {"metadata": {"namespace": ref.namespace, "name": ref.name, "uid": uid}},
                          final=True)

    def patch(self, ref: Any, body: dict[str, Any]) -> dict[str, Any]:
        result = self.kube.patch(ref, body)
        self.store.written(ref.kind.kind, result)
        return result

    def patch_status(self, namespace: str, name: str, status: dict[str, Any], resource_version: str) -> dict[str, Any]:
        result = self.kube.patch_status(namespace, name, status, resource_version)
        self.store.written(ISVC, result)
        return result

    def event(self, isvc: Any, event: Any) -> None:
        self.kube.event(isvc, event)
