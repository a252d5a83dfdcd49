"""Which children to write: owner references and hashes are stamped here, and the plan is decided here.

Everything in this module is pure; ``reconcile`` carries the plan out.
"""

from __future__ import annotations

import copy
import dataclasses
from typing import Any, Callable, Optional

from inference_operator import api, kinds, naming
from inference_operator.kinds import DEPLOYMENT, HPA, HTTPROUTE, PDB, SCALEDOBJECT, SERVICE, Kind, Ref


def possible_refs(isvc: api.InferenceService) -> list[Ref]:
    """Every child this InferenceService can ever have; names are deterministic."""
    n = naming.names(isvc.name)
    return [Ref(child.kind, isvc.namespace, child.name(n)) for child in REGISTRY]


def owner_reference(isvc: api.InferenceService) -> dict[str, Any]:
    return {
        "apiVersion": api.API_VERSION,
        "kind": api.KIND,
        "name": isvc.name,
        "uid": isvc.metadata.uid,
        "controller": True,
        "blockOwnerDeletion": True,
    }


def stamp(obj: dict[str, Any], isvc: api.InferenceService) -> dict[str, Any]:
    """Adds the controller owner reference and the spec-hash annotation (the hash covers both)."""
    result = copy.deepcopy(obj)
    meta = result["metadata"]
    meta["ownerReferences"] = [owner_reference(isvc)]
    meta.setdefault("annotations", {})[naming.SPEC_HASH_ANNOTATION] = naming.content_hash(result)
    return result


def controller_uid(obj: dict[str, Any]) -> Optional[str]:
    for ref in obj.get("metadata", {}).get("ownerReferences") or []:
        if ref.get("controller"):
            return ref.get("uid")
    return None


def spec_hash(obj: dict[str, Any]) -> Optional[str]:
    return (obj.get("metadata", {}).get("annotations") or {}).get(naming.SPEC_HASH_ANNOTATION)


def _get(obj: dict[str, Any], *path: str) -> Any:
    for part in path:
        if not isinstance(obj, dict):
            return None
        obj = obj.get(part)
    return obj


def _containers(obj: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["name"]: c for c in _get(obj, "spec", "template", "spec", "containers") or []}


def _ports(obj: dict[str, Any]) -> list[tuple]:
    return sorted((p.get("name"), p.get("port"), p.get("targetPort")) for p in _get(obj, "spec", "ports") or [])


def _deployment_drift(desired: dict[str, Any], live: dict[str, Any]) -> list[str]:
    found = []
    if "replicas" in desired["spec"] and _get(live, "spec", "replicas") != desired["spec"]["replicas"]:
        found.append("spec.replicas")
    live_containers = _containers(live)
    for name, want in _containers(desired).items():
        have = live_containers.get(name, {})
        found += [f"container {name} {f}" for f in ("image", "command", "args") if have.get(f) != want.get(f)]
    labels = _get(live, "spec", "template", "metadata", "labels") or {}
    if not _get(desired, "spec", "template", "metadata", "labels").items() <= labels.items():
        found.append("spec.template.metadata.labels")
    return found


def _service_drift(desired: dict[str, Any], live: dict[str, Any]) -> list[str]:
    found = []
    if _get(live, "spec", "selector") != desired["spec"]["selector"]:
        found.append("spec.selector")
    if _ports(live) != _ports(desired):
        found.append("spec.ports")
    return found


def _pdb_drift(desired: dict[str, Any], live: dict[str, Any]) -> list[str]:
    return [".".join(path) for path in (("spec", "maxUnavailable"), ("spec", "selector"))
            if _get(live, *path) != _get(desired, *path)]


def _route_drift(desired: dict[str, Any], live: dict[str, Any]) -> list[str]:
    """The route's parents, hostnames and backends with their weights (the API server defaults the
    rest: matches, a backend's group and kind)."""
    def backends(obj: dict[str, Any]) -> list[tuple]:
        return [[(b.get("name"), b.get("port"), b.get("weight")) for b in rule.get("backendRefs") or []]
                for rule in _get(obj, "spec", "rules") or []]

    def parents(obj: dict[str, Any]) -> list[tuple]:
        return [(p.get("name"), p.get("namespace"), p.get("sectionName"), p.get("port"))
                for p in _get(obj, "spec", "parentRefs") or []]

    found = []
    if parents(live) != parents(desired):
        found.append("spec.parentRefs")
    if (_get(live, "spec", "hostnames") or []) != (_get(desired, "spec", "hostnames") or []):
        found.append("spec.hostnames")
    if backends(live) != backends(desired):
        found.append("spec.rules.backendRefs")
    return found


def _autoscaler_drift(desired: dict[str, Any], live: dict[str, Any]) -> list[str]:
    """An HPA's or ScaledObject's spec, as sent (every field we set is set in full: the API server
    keeps it as it is; quantities are sent in their canonical form)."""
    want, have = desired["spec"], _get(live, "spec") or {}
    return [f"spec.{key}" for key in want if have.get(key) != want[key]]


@dataclasses.dataclass(frozen=True)
class ChildKind:
    """One entry of the registry of child kinds: where the kind lives, how its child is named, and
    the fields drift correction owns (compared with the live object; only fields the API server
    stores as sent, so a default it fills in never looks like drift). ``crd`` names the CRD of a
    kind that may be absent from a cluster (an HTTPRoute, a ScaledObject): such a kind is watched
    and written only where its CRD is installed. The builders are render.py's."""

    kind: Kind
    name: Callable[[naming.Names], str]
    drift: Callable[[dict[str, Any], dict[str, Any]], list[str]]
    crd: Optional[str] = None


REGISTRY: tuple[ChildKind, ...] = (
    ChildKind(DEPLOYMENT, lambda n: n.predictor, _deployment_drift),
    ChildKind(SERVICE, lambda n: n.service, _service_drift),
    ChildKind(PDB, lambda n: n.pdb, _pdb_drift),
    # The canary track's Deployment (canary.py): a canary, or the stable revision after a promotion.
    ChildKind(DEPLOYMENT, lambda n: n.predictor_canary, _deployment_drift),
    # traffic: gatewayAPI (traffic.py): a Service per role and the weighted route between them.
    ChildKind(SERVICE, lambda n: n.stable_service, _service_drift),
    ChildKind(SERVICE, lambda n: n.canary_service, _service_drift),
    ChildKind(HTTPROUTE, lambda n: n.route, _route_drift, crd="httproutes.gateway.networking.k8s.io"),
    # spec.autoscaling (autoscaling.py): the HPA (engine hpa), or KEDA's ScaledObject (engine keda).
    ChildKind(HPA, lambda n: n.autoscaler, _autoscaler_drift),
    ChildKind(SCALEDOBJECT, lambda n: n.autoscaler, _autoscaler_drift, crd="scaledobjects.keda.sh"),
)
# The autoscaler's kinds: a write of one the API server refuses (an HPA the cluster does not allow)
# is reported in the Autoscaling condition, and never stops the pass (the pods serve on).
AUTOSCALERS = frozenset({HPA, SCALEDOBJECT})
WORKLOAD = DEPLOYMENT  # the child that runs pods
# Each kind once (two Deployments share one): what is watched and cached.
CHILD_KINDS: tuple[Kind, ...] = tuple(dict.fromkeys(child.kind for child in REGISTRY))
_BY_KIND = {child.kind.kind: child for child in REGISTRY}


def installable(kind: str, crds: frozenset[str]) -> bool:
    """Whether a child of this kind can exist here: a built-in kind, or one whose CRD is installed."""
    child = _BY_KIND.get(kind)
    return child is None or child.crd is None or child.crd in crds


def drift(desired: dict[str, Any], live: dict[str, Any]) -> list[str]:
    """Fields someone changed behind our back (kubectl scale, set image, edit), by name."""
    return _BY_KIND[desired["kind"]].drift(desired, live)


@dataclasses.dataclass(frozen=True)
class Conflict:
    ref: Ref
    message: str


@dataclasses.dataclass(frozen=True)
class Plan:
    apply: list[dict[str, Any]]  # updates first, then creations with the workload last
    delete: list[Ref]
    conflicts: list[Conflict]
    unchanged: list[Ref]
    # Of ``apply``: children no object of that name was seen for; created only if it is still free.
    creates: frozenset[Ref] = frozenset()

    @property
    def writes(self) -> int:
        return len(self.apply) + len(self.delete)


def plan(
    isvc: api.InferenceService,
    desired: list[dict[str, Any]],
    live: dict[Ref, Optional[dict[str, Any]]],
    looked_up: frozenset[Ref] = frozenset(),
    hold: frozenset[Ref] = frozenset(),
) -> Plan:
    """Decide the writes that take the live children to the desired ones.

    ``desired`` must be stamped. A child is written only when it is missing, its spec-hash
    differs, or someone changed a field we set (drift); a same-named object that another
    controller (or nobody) owns is never touched. Also written: one of ours that had to be
    ``looked_up`` because the cache did not show it (its labels were taken off: applying puts
    them back, and the watch with them). Never written: one on its way out (it is re-created
    once gone, not patched while it goes), and those held back (``hold``).

    A child no object was seen for is created, create-only (Kube.create): the cache shows only
    objects with our labels, so the name may still be someone else's; reconcile then looks at
    what holds it (``looked_up``) and plans again. Creations come after updates and the workload
    comes last, so that a name someone else holds stops the pass before a pod is scheduled.
    """
    apply, create, delete, conflicts, unchanged = [], [], [], [], []
    wanted = {kinds.ref_of(obj): obj for obj in desired}
    for ref in possible_refs(isvc):
        current = live.get(ref)
        owner = controller_uid(current) if current else None
        if current is not None and owner != isvc.metadata.uid:
            if ref in wanted:
                who = f"controller uid {owner}" if owner else "no controller"
                conflicts.append(
                    Conflict(ref, f"{ref} already exists in namespace {ref.namespace} "
                                  f"and is not owned by this InferenceService ({who}); "
                                  "delete or rename it")
                )
            continue
        if ref in wanted:
            if ref in hold or (current is not None and current["metadata"].get("deletionTimestamp")):
                continue
            if current is None:
                create.append(wanted[ref])
            elif ref in looked_up or spec_hash(current) != spec_hash(wanted[ref]) or drift(wanted[ref], current):
                apply.append(wanted[ref])
            else:
                unchanged.append(ref)
        elif current is not None:
            delete.append(ref)
    create.sort(key=lambda obj: obj["kind"] == WORKLOAD.kind)  # stable: otherwise in registry order
    return Plan(apply=apply + create, delete=delete, conflicts=conflicts, unchanged=unchanged,
                creates=frozenset(kinds.ref_of(obj) for obj in create))
