"""Operator-wide settings, read once at startup from the environment (the Helm chart sets them)."""

from __future__ import annotations

import dataclasses
import os

# A pinned Triton release; platform teams override it operator-wide with INFERENCE_OPERATOR_TRITON_IMAGE.
DEFAULT_TRITON_IMAGE = "nvcr.io/nvidia/tritonserver:25.01-py3"
FIELD_MANAGER = "inference-operator"
# The operator's own image runs `inference-operator fetch-model` as the storage init container.
DEFAULT_OPERATOR_IMAGE = "inference-operator:0.1.0"


@dataclasses.dataclass(frozen=True)
class OperatorConfig:
    default_image: str = DEFAULT_TRITON_IMAGE
    cluster_domain: str = "cluster.local"
    operator_image: str = DEFAULT_OPERATOR_IMAGE
    # Where canary analysis asks, unless an InferenceService names its own Prometheus.
    prometheus_url: str | None = None

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> "OperatorConfig":
        env = os.environ if environ is None else environ
        return cls(
            default_image=env.get("INFERENCE_OPERATOR_TRITON_IMAGE") or DEFAULT_TRITON_IMAGE,
            cluster_domain=env.get("INFERENCE_OPERATOR_CLUSTER_DOMAIN") or "cluster.local",
            operator_image=env.get("INFERENCE_OPERATOR_IMAGE") or DEFAULT_OPERATOR_IMAGE,
            prometheus_url=env.get("INFERENCE_OPERATOR_PROMETHEUS_URL") or None,
        )
