"""A pass's first step: the InferenceService parsed, and what it should have, decided from it and the
snapshot alone (children rendered through the render cache, the autoscaler, the defaults to pin)."""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping, Optional

import pydantic

from inference_operator import api, kinds, naming
from inference_operator.config import OperatorConfig
from inference_operator.controller.render_cache import RenderCache
from inference_operator.desired import autoscaling, children, defaults, migration, render
from inference_operator.observed import Observed
from inference_operator.problems import Problem
from inference_operator.rollout.plan import stable_track


@dataclasses.dataclass(frozen=True)
class Desired:
    """What the InferenceService should have, decided from it and the snapshot alone."""

    children: list[dict[str, Any]] = dataclasses.field(default_factory=list)  # stamped, in apply order
    revision: Optional[str] = None  # the stable Deployment's pod template hash
    operator_defaults: Optional[dict[str, str]] = None  # what status records of the defaults used
    # A Deployment made before tracks, due for a rollout: it is moved onto tracks (migration.py).
    migrate_from: Optional[dict[str, Any]] = None
    # A Deployment made before tracks: no canary until it is moved onto tracks.
    legacy: bool = False
    config: Optional[OperatorConfig] = None  # what the children are rendered with
    # The HPA or ScaledObject of spec.autoscaling, stamped (built once a pass, whatever the tracks).
    autoscaler: list[dict[str, Any]] = dataclasses.field(default_factory=list)


def parse(body: Mapping[str, Any]) -> tuple[api.InferenceService, Optional[Problem]]:
    """The typed InferenceService, or a shell of it (metadata and status) with the InvalidSpec
    problem that keeps it from being served."""
    try:
        return api.parse(body), None
    except pydantic.ValidationError as exc:
        # The API server's schema normally stops this; we get here if it was bypassed or is stale.
        errors = "; ".join(
            f"spec.{'.'.join(str(p) for p in e['loc'][1:])}: {e['msg']}" if e["loc"][:1] == ("spec",)
            else f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}"
            for e in exc.errors()[:5]
        )
        shell = api.InferenceService.model_construct(
            metadata=api.ObjectMeta.model_validate(body["metadata"]),
            status=api.InferenceServiceStatus.model_validate(body.get("status") or {}),
        )
        return shell, Problem("InvalidSpec", f"the spec is invalid: {errors}")


def _check_storage(isvc: api.InferenceService, observed: Observed) -> Optional[Problem]:
    """A claim must exist before pods are made to wait on it. Remote stores are checked by the
    storage initializer, whose failure reaches status from the pod (a Secret it names, too:
    reading Secrets is a permission the operator does not take)."""
    source = render.storage_source(isvc.spec.model.storage_uri)
    if isinstance(source, render.PVCSource) and source.claim not in observed.claims:
        return Problem(
            "StorageNotFound",
            f"PersistentVolumeClaim {source.claim} (from spec.model.storageUri) does not exist "
            f"in namespace {isvc.namespace}",
        )
    return None


def desire(
    isvc: api.InferenceService, observed: Observed, config: OperatorConfig, renders: RenderCache
) -> tuple[Desired, Optional[Problem]]:
    """The desired state, or the problem that keeps the spec from being served. No I/O."""
    stable = stable_track(isvc)
    live = _own_deployment(isvc, observed, stable)
    try:
        render_config, pins = defaults.resolve(isvc, config, live)
        track: Optional[str] = stable
        migrate_from = None
        if migration.is_legacy(live):
            # Kept as it is (no rollout for an operator upgrade) until a rollout is due anyway.
            as_is = renders.get(isvc, render_config, None)
            if naming.revision_of(as_is[0]) == naming.revision_of(live):
                track = None
            else:
                migrate_from = live
        stamped = rendered(renders, isvc, render_config, track, observed)
    except render.SpecError as exc:
        return Desired(), Problem(exc.reason, exc.message)
    # Not in the render cache: it follows status.startupSeconds too.
    scaler = [children.stamp(c, isvc) for c in autoscaling.children(isvc, render_config, observed.crds)]
    desired = Desired(children=stamped, revision=naming.revision_of(stamped[0]), operator_defaults=pins,
                      migrate_from=migrate_from, legacy=track is None or migrate_from is not None,
                      config=render_config, autoscaler=scaler)
    return desired, _check_storage(isvc, observed)


def rendered(renders: RenderCache, isvc: api.InferenceService, config: OperatorConfig, track: Optional[str],
             observed: Observed) -> list[dict[str, Any]]:
    """The stamped children with ``track``'s Deployment, of the kinds this cluster has."""
    return [c for c in renders.get(isvc, config, track) if children.installable(c["kind"], observed.crds)]


def _own_deployment(isvc: api.InferenceService, observed: Observed, track: str) -> Optional[dict[str, Any]]:
    live = observed.child_by_kind(kinds.DEPLOYMENT.kind, naming.predictor(isvc.name, track))
    if live is not None and children.controller_uid(dict(live)) == isvc.metadata.uid:
        return dict(live)
    return None
