"""Which operator-wide defaults an InferenceService runs with.

An operator upgrade that changes a default (the Triton image, the storage initializer's image)
must not roll every InferenceService at once. So the defaults a revision was made with are kept
in its status, with a hash of the spec they were taken for, and used again until that spec
changes (a replica count aside: an autoscaler must never trigger a rollout). A spec change is a
rollout anyway, and it takes the operator's current defaults. Pure.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping, Optional

from inference_operator import api, naming
from inference_operator.config import OperatorConfig


def spec_hash(isvc: api.InferenceService) -> str:
    """The spec as the user wrote it, replicas aside: values equal to their defaults are left out,
    so a field a later version adds (with a default) changes no hash and rolls nothing."""
    spec = isvc.spec.model_dump(by_alias=True, exclude_defaults=True, exclude_none=True, mode="json")
    spec.pop("replicas", None)
    return naming.content_hash(spec)


def _from_running(deployment: Mapping[str, Any], config: OperatorConfig) -> OperatorConfig:
    """The defaults a Deployment made by a version that did not record them runs with."""
    pod = ((deployment.get("spec") or {}).get("template") or {}).get("spec") or {}
    triton = next((c for c in pod.get("containers") or [] if c.get("name") == "triton"), {})
    init = next((c for c in pod.get("initContainers") or [] if c.get("name") == naming.STORAGE_INITIALIZER), {})
    return dataclasses.replace(
        config,
        default_image=triton.get("image") or config.default_image,
        operator_image=init.get("image") or config.operator_image,
    )


def resolve(
    isvc: api.InferenceService, config: OperatorConfig, deployment: Optional[Mapping[str, Any]]
) -> tuple[OperatorConfig, dict[str, str]]:
    """The config to render with, and what status records of it."""
    current = spec_hash(isvc)
    pinned = isvc.status.operator_defaults
    if pinned is not None and pinned.spec_hash == current:
        effective = dataclasses.replace(
            config,
            default_image=pinned.triton_image or config.default_image,
            operator_image=pinned.storage_initializer_image or config.operator_image,
        )
    elif pinned is None and deployment is not None and isvc.status.revision is not None:
        # Upgraded from a version that recorded nothing: keep what runs. (Images the spec sets
        # itself are read back too, and are harmless: the spec's own value wins in rendering.)
        effective = _from_running(deployment, config)
    else:
        effective = config
    record = {
        "tritonImage": effective.default_image,
        "storageInitializerImage": effective.operator_image,
        "specHash": current,
    }
    return effective, record
