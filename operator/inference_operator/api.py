"""The InferenceService API: typed, frozen pydantic models, and the source of the CRD schema.

Validation that the API server can do lives here as schema constraints or CEL rules
(``x-kubernetes-validations``), so `kubectl apply` rejects bad input with a readable message.
"""

from __future__ import annotations

import re
from enum import Enum
from typing import Annotated, Any, Literal, Optional

from pydantic import AfterValidator, BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

GROUP = "serving.inference-operator.io"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
KIND = "InferenceService"
PLURAL = "inferenceservices"
SINGULAR = "inferenceservice"
SHORT_NAMES = ["infsvc"]
CATEGORIES = ["inference"]

# The longest child name is "<name>-predictor"; children are DNS-1035 labels (<= 63).
MAX_NAME_LENGTH = 53

# The quantities this API takes, narrower than resource.Quantity: positive, no exponents, bytes
# never in milli-units. One regex serves pydantic and the CEL rule; messages say what is expected.
BYTES_RE = r"^[0-9]+(\.[0-9]+)?(Ki|Mi|Gi|Ti|Pi|Ei|k|M|G|T|P|E)?$"
CPU_RE = r"^([0-9]+(\.[0-9]+)?|[0-9]+m)$"
ZERO_RE = r"^0+(\.0+)?[A-Za-z]*$"
BYTES_MESSAGE = "must be a positive byte quantity such as 512Mi or 16Gi"
CPU_MESSAGE = "must be a positive CPU quantity such as 500m or 2"


def _cel_regex(regex: str) -> str:
    """A regex as a CEL single-quoted string literal's content."""
    return regex.replace("\\", "\\\\")


def _quantity_rule(regex: str) -> str:
    return f"self.matches('{_cel_regex(regex)}') && !self.matches('{_cel_regex(ZERO_RE)}')"


def _quantity_validator(regex: str, message: str):
    def check(value: str) -> str:
        if not re.match(regex, value) or re.match(ZERO_RE, value):
            raise ValueError(f"{value!r} {message}")
        return value

    return AfterValidator(check)


ByteQuantity = Annotated[str, _quantity_validator(BYTES_RE, BYTES_MESSAGE)]
CPUQuantity = Annotated[str, _quantity_validator(CPU_RE, CPU_MESSAGE)]

# Triton flags the operator sets or relies on; a user value would break probes, ports, the model
# layout, scraping or graceful shutdown.
MANAGED_TRITON_FLAGS = (
    "model-repository",
    "model-store",
    "model-control-mode",
    "load-model",
    "http-port",
    "grpc-port",
    "metrics-port",
    "strict-readiness",
    "allow-metrics",
    "allow-gpu-metrics",
    "cache-config",
    "allow-http",
    "http-address",
    "http-restricted-api",
    "metrics-address",
    "exit-on-error",
    "exit-timeout-secs",
)


def _prefixes(word: str) -> str:
    """A regex matching every non-empty prefix of word: tritonserver (getopt_long) accepts any
    unambiguous abbreviation of a long flag, so --model-repos is --model-repository."""
    pattern = ""
    for ch in reversed(word[1:]):
        pattern = f"({ch}{pattern})?"
    return word[0] + pattern


MANAGED_FLAG_PATTERN = "^--(" + "|".join(_prefixes(f) for f in MANAGED_TRITON_FLAGS) + ")(=|$)"


def cel(rule: str, message: str, **extra: str) -> dict[str, str]:
    """One x-kubernetes-validations entry."""
    return {"rule": rule, "message": message, **extra}


def validations(*rules: dict[str, str]) -> dict[str, Any]:
    return {"x-kubernetes-validations": list(rules)}


def byte_quantity(default: Optional[str] = None, description: Optional[str] = None) -> Any:
    return Field(
        default=default,
        max_length=32,
        description=description,
        json_schema_extra=validations(cel(_quantity_rule(BYTES_RE), BYTES_MESSAGE)),
    )


def cpu_quantity() -> Any:
    return Field(
        default=None,
        max_length=32,
        json_schema_extra=validations(cel(_quantity_rule(CPU_RE), CPU_MESSAGE)),
    )


class Base(BaseModel):
    """Spec models: camelCase on the wire, immutable, unknown fields rejected."""

    model_config = ConfigDict(
        frozen=True,
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        protected_namespaces=(),
    )


class ModelFormat(str, Enum):
    onnx = "onnx"
    tensorrt_plan = "tensorrt_plan"
    pytorch_libtorch = "pytorch_libtorch"
    tensorflow_savedmodel = "tensorflow_savedmodel"
    tensorflow_graphdef = "tensorflow_graphdef"
    python = "python"
    openvino = "openvino"
    fil = "fil"
    dali = "dali"
    ensemble = "ensemble"


class StorageSpec(Base):
    """How to reach an object store. Credentials come from a Secret or the pod's identity, never inline."""

    secret_name: Optional[str] = Field(
        default=None,
        max_length=253,
        description="A Secret in the InferenceService's namespace. s3://: its keys become the "
        "fetcher's environment (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN). "
        "gs://: it holds a service-account key file under the key `key.json`. Unset: the pod's "
        "identity (IRSA, workload identity) or anonymous access.",
    )
    endpoint: Optional[str] = Field(
        default=None,
        max_length=512,
        description="An S3-compatible endpoint (MinIO, Ceph, ...), e.g. https://minio.storage:9000.",
        json_schema_extra=validations(
            cel("self.matches('^https?://[^/]+')", "storage.endpoint must be an http:// or https:// URL")
        ),
    )
    region: Optional[str] = Field(default=None, max_length=64)


class ModelSpec(Base):
    """What Triton serves: one model, from a Triton model repository."""

    model_config = ConfigDict(
        json_schema_extra=validations(
            cel(
                "!has(self.storage) || (!has(self.storage.endpoint) && !has(self.storage.region)) || "
                "self.storageUri.startsWith('s3://')",
                "storage.endpoint and storage.region apply to s3:// only",
            ),
            cel(
                "!has(self.storage) || !has(self.storage.secretName) || "
                "self.storageUri.startsWith('s3://') || self.storageUri.startsWith('gs://')",
                "storage.secretName applies to s3:// and gs:// only",
            ),
            cel(
                "!has(self.checksum) || !self.storageUri.startsWith('pvc://')",
                "checksum applies to a downloaded file or archive, not to pvc://",
            ),
        )
    )

    name: str = Field(
        min_length=1,
        max_length=128,
        description="The Triton model name: the directory under the model repository root "
        "and the name clients call (/v2/models/<name>/infer). Immutable.",
        json_schema_extra=validations(
            cel(
                "self.matches('^[A-Za-z0-9][A-Za-z0-9_.-]*$')",
                "spec.model.name must start with a letter or digit and contain only "
                "letters, digits, '_', '.' and '-'",
            ),
            cel(
                "self == oldSelf",
                "spec.model.name is immutable: clients address the model by name; "
                "create a new InferenceService to serve another model",
            ),
        ),
    )
    storage_uri: str = Field(
        min_length=1,
        max_length=2048,
        description="Where the Triton model repository lives: pvc://<claim>[/<path>], "
        "s3://<bucket>[/<prefix>], gs://<bucket>[/<prefix>], https://<url> or http://<url>.",
        json_schema_extra=validations(
            cel(
                "self.matches('^(pvc|s3|gs|https|http)://')",
                "spec.model.storageUri must start with pvc://, s3://, gs://, https:// or http://",
            ),
            cel(
                "!self.startsWith('pvc://') || "
                "self.matches('^pvc://[a-z0-9]([-a-z0-9.]*[a-z0-9])?(/[^/].*)?$')",
                "a pvc:// storageUri is pvc://<claim-name>[/<path>], "
                "with a lowercase DNS-1123 claim name",
            ),
            cel(
                "!self.startsWith('s3://') && !self.startsWith('gs://') || "
                "self.matches('^(s3|gs)://[a-z0-9][a-z0-9.\\\\-_]{1,61}[a-z0-9](/.*)?$')",
                "an s3:// or gs:// storageUri is <scheme>://<bucket>[/<prefix>], "
                "with a valid bucket name",
            ),
            cel(
                "!self.contains('/../') && !self.endsWith('/..')",
                "spec.model.storageUri must not contain '..' path segments",
            ),
        ),
    )
    version: Optional[int] = Field(
        default=None,
        ge=1,
        description="The model version directory to serve. Unset: Triton's default policy "
        "(the latest version).",
    )
    format: Optional[ModelFormat] = Field(
        default=None,
        description="The model's format (Triton platform/backend): used when a config.pbtxt is "
        "generated, and to place a single downloaded file. Unset: the model's own config.pbtxt.",
    )
    checksum: Optional[str] = Field(
        default=None,
        max_length=71,
        description="sha256:<hex> of the downloaded file or archive; a mismatch fails the fetch.",
        json_schema_extra=validations(
            cel("self.matches('^sha256:[0-9a-f]{64}$')", "checksum must be sha256: followed by 64 hex digits")
        ),
    )
    storage: Optional[StorageSpec] = None


class DynamicBatching(Base):
    preferred_batch_sizes: list[int] = Field(
        default_factory=list,
        max_length=16,
        description="Batch sizes the scheduler prefers to form.",
        json_schema_extra=validations(
            cel("self.all(s, s >= 1)", "preferredBatchSizes must be positive")
        ),
    )
    max_queue_delay_microseconds: int = Field(
        default=0,
        ge=0,
        le=10_000_000,
        description="How long a request may wait in the queue for a batch to form.",
    )


class ModelConfigOverrides(Base):
    """config.pbtxt settings that matter in production, applied over the model's own config."""

    model_config = ConfigDict(
        json_schema_extra=validations(
            cel(
                "!has(self.dynamicBatching) || (has(self.maxBatchSize) && self.maxBatchSize > 0)",
                "dynamicBatching needs maxBatchSize > 0",
            ),
            cel(
                "!has(self.dynamicBatching) || !has(self.maxBatchSize) || "
                "!has(self.dynamicBatching.preferredBatchSizes) || "
                "self.dynamicBatching.preferredBatchSizes.all(s, s <= self.maxBatchSize)",
                "every dynamicBatching.preferredBatchSizes entry must be <= maxBatchSize",
            ),
        )
    )

    max_batch_size: Optional[int] = Field(default=None, ge=0, le=1_000_000)
    dynamic_batching: Optional[DynamicBatching] = None
    instance_count: Optional[int] = Field(
        default=None,
        ge=1,
        le=16,
        description="Model instances per GPU (instance_group count); per pod on CPU.",
    )


class ResponseCache(Base):
    size: ByteQuantity = byte_quantity("256Mi", "Memory for Triton's local response cache.")


class EnvVar(Base):
    name: str = Field(min_length=1, max_length=256)
    value: Optional[str] = Field(default=None, max_length=32768)
    value_from: Optional[dict[str, Any]] = Field(
        default=None, description="As in a Pod's env[].valueFrom."
    )


class RuntimeSpec(Base):
    image: Optional[str] = Field(
        default=None,
        max_length=512,
        description="The tritonserver image. Unset: the operator's default (a pinned release).",
    )
    args: list[Annotated[str, Field(max_length=1024)]] = Field(
        default_factory=list,
        max_length=64,
        description="Extra tritonserver flags. Flags the operator manages are rejected.",
        json_schema_extra=validations(
            cel(
                f"self.all(a, !a.matches('{MANAGED_FLAG_PATTERN}'))",
                "spec.runtime.args must not set (or abbreviate) flags the operator manages: "
                + ", ".join("--" + f for f in MANAGED_TRITON_FLAGS),
            )
        ),
    )
    env: list[EnvVar] = Field(
        default_factory=list,
        max_length=64,
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"]},
    )
    model_config_overrides: ModelConfigOverrides = Field(
        default_factory=ModelConfigOverrides,
        alias="modelConfig",
        description="Overrides of the model's config.pbtxt.",
        json_schema_extra={"default": {}},
    )
    response_cache: Optional[ResponseCache] = Field(
        default=None,
        description="Enable Triton's response cache for the model, with this much memory.",
    )
    startup_timeout_seconds: int = Field(
        default=1800,
        ge=60,
        le=86400,
        description="How long a model load may take before the pod is restarted.",
    )


class GPUSpec(Base):
    model_config = ConfigDict(
        json_schema_extra=validations(
            cel("!has(self.product) || self.count > 0", "gpu.product needs gpu.count > 0"),
        )
    )

    count: int = Field(
        default=1, ge=0, le=16, description="GPUs (or MIG slices) per replica; 0 runs on CPU."
    )
    resource_name: str = Field(
        default="nvidia.com/gpu",
        max_length=128,
        description="The extended resource to request: nvidia.com/gpu, nvidia.com/gpu.shared, or a "
        "MIG profile such as nvidia.com/mig-1g.10gb.",
        json_schema_extra=validations(
            cel(
                "self == 'nvidia.com/gpu' || self == 'nvidia.com/gpu.shared' || "
                "self.matches('^nvidia\\\\.com/mig-[0-9]+g\\\\.[0-9]+gb(\\\\.[a-z0-9]+)?$')",
                "gpu.resourceName must be nvidia.com/gpu, nvidia.com/gpu.shared (time-slicing) or "
                "a MIG resource such as nvidia.com/mig-1g.10gb",
            )
        ),
    )
    product: Optional[str] = Field(
        default=None,
        max_length=63,
        description="Pin replicas to nodes whose nvidia.com/gpu.product label has this value "
        "(e.g. NVIDIA-A100-SXM4-80GB).",
        json_schema_extra=validations(
            cel(
                "self.matches('^[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$')",
                "gpu.product must be a valid label value",
            )
        ),
    )


class ComputeResources(Base):
    """CPU and memory. Requests left unset take the limit if there is one, else 1 CPU and 2Gi."""

    cpu: Optional[CPUQuantity] = cpu_quantity()
    memory: Optional[ByteQuantity] = byte_quantity()


class ResourcesSpec(Base):
    model_config = ConfigDict(
        json_schema_extra=validations(
            cel(
                "!has(self.limits) || !has(self.limits.cpu) || !has(self.requests) || "
                "!has(self.requests.cpu) || "
                "quantity(self.limits.cpu).compareTo(quantity(self.requests.cpu)) >= 0",
                "resources.limits.cpu must be >= resources.requests.cpu",
            ),
            cel(
                "!has(self.limits) || !has(self.limits.memory) || !has(self.requests) || "
                "!has(self.requests.memory) || "
                "quantity(self.limits.memory).compareTo(quantity(self.requests.memory)) >= 0",
                "resources.limits.memory must be >= resources.requests.memory",
            ),
        )
    )

    gpu: GPUSpec = Field(default_factory=GPUSpec, json_schema_extra={"default": {}})
    requests: ComputeResources = Field(
        default_factory=ComputeResources, json_schema_extra={"default": {}}
    )
    limits: ComputeResources = Field(
        default_factory=ComputeResources, json_schema_extra={"default": {}}
    )
    shared_memory_size: ByteQuantity = byte_quantity(
        "1Gi",
        "Size of /dev/shm (a memory emptyDir); Triton's python backend and shared-memory clients need it.",
    )


class Toleration(Base):
    key: Optional[str] = Field(default=None, max_length=316)
    operator: Optional[Literal["Exists", "Equal"]] = None
    value: Optional[str] = Field(default=None, max_length=63)
    effect: Optional[Literal["NoSchedule", "PreferNoSchedule", "NoExecute"]] = None
    toleration_seconds: Optional[int] = None


class SchedulingSpec(Base):
    node_selector: dict[str, str] = Field(
        default_factory=dict, json_schema_extra={"maxProperties": 64}
    )
    tolerations: list[Toleration] = Field(
        default_factory=list,
        max_length=32,
        description="Added to the nvidia.com/gpu toleration that GPU replicas always get.",
    )
    affinity: Optional[dict[str, Any]] = Field(default=None, description="As in a Pod's affinity.")
    topology_spread_constraints: list[dict[str, Any]] = Field(
        default_factory=list, max_length=16, description="As in a Pod's topologySpreadConstraints."
    )
    priority_class_name: Optional[str] = Field(default=None, max_length=253)
    runtime_class_name: Optional[str] = Field(default=None, max_length=253)


class RolloutSpec(Base):
    model_config = ConfigDict(
        json_schema_extra=validations(
            # The API server also checks rules against the default ({}), before nested defaulting.
            cel(
                "(has(self.maxSurge) ? self.maxSurge : 1) + "
                "(has(self.maxUnavailable) ? self.maxUnavailable : 0) > 0",
                "rollout.maxSurge and rollout.maxUnavailable cannot both be 0",
            )
        )
    )

    # The defaults never take serving capacity down: a new pod must be ready before an old one
    # goes, so a single replica keeps serving through a rollout. That needs one spare GPU; when
    # none is free the rollout waits (and status says so) while the old revision serves.
    # maxSurge: 0 (with maxUnavailable >= 1) replaces pods in place and needs no spare GPU.
    max_surge: int = Field(
        default=1,
        ge=0,
        le=100,
        description="Extra replicas (and GPUs) a rollout may start. 0: replace in place, no spare GPU needed.",
    )
    max_unavailable: int = Field(
        default=0, ge=0, le=100,
        description="Replicas a rollout may take down at once; also how many replicas may be "
        "unavailable while Ready stays True.",
    )


class InferenceServiceSpec(Base):
    model_config = ConfigDict(
        json_schema_extra=validations(
            cel(
                "!has(self.scheduling) || !has(self.scheduling.nodeSelector) || "
                "!has(self.resources) || !has(self.resources.gpu) || "
                "!has(self.resources.gpu.product) || "
                "!('nvidia.com/gpu.product' in self.scheduling.nodeSelector) || "
                "self.scheduling.nodeSelector['nvidia.com/gpu.product'] == "
                "self.resources.gpu.product",
                "scheduling.nodeSelector['nvidia.com/gpu.product'] contradicts "
                "resources.gpu.product",
            ),
        )
    )

    model: ModelSpec
    runtime: RuntimeSpec = Field(default_factory=RuntimeSpec, json_schema_extra={"default": {}})
    resources: ResourcesSpec = Field(
        default_factory=ResourcesSpec, json_schema_extra={"default": {}}
    )
    scheduling: SchedulingSpec = Field(
        default_factory=SchedulingSpec, json_schema_extra={"default": {}}
    )
    replicas: int = Field(default=1, ge=0, le=1000)
    rollout: RolloutSpec = Field(default_factory=RolloutSpec, json_schema_extra={"default": {}})
    service_account_name: Optional[str] = Field(
        default=None,
        max_length=253,
        description="The pods' service account (e.g. for workload identity to an object store).",
    )


# ---- status -------------------------------------------------------------------------------


class StatusBase(BaseModel):
    model_config = ConfigDict(
        frozen=True, alias_generator=to_camel, populate_by_name=True, extra="ignore"
    )


class ConditionStatus(str, Enum):
    true = "True"
    false = "False"
    unknown = "Unknown"


class Condition(StatusBase):
    type: str = Field(max_length=316)
    status: ConditionStatus
    reason: str = Field(max_length=1024)
    message: str = Field(default="", max_length=32768)
    last_transition_time: str
    observed_generation: Optional[int] = None


class OperatorDefaults(StatusBase):
    """Operator-wide defaults this InferenceService runs with, kept until its spec changes."""

    triton_image: Optional[str] = None
    storage_initializer_image: Optional[str] = None
    spec_hash: Optional[str] = Field(
        default=None, description="Hash of the spec (replicas aside) these defaults were taken for."
    )


class InferenceServiceStatus(StatusBase):
    observed_generation: Optional[int] = None
    conditions: list[Condition] = Field(
        default_factory=list,
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"]},
    )
    url: Optional[str] = Field(default=None, description="In-cluster HTTP endpoint.")
    replicas: Optional[int] = Field(default=None, description="Pods of the predictor, all revisions.")
    ready_replicas: Optional[int] = None
    revision: Optional[str] = Field(
        default=None, description="Hash of the pod template that is fully rolled out."
    )
    selector: Optional[str] = Field(
        default=None, description="Label selector of the pods (for the scale subresource)."
    )
    operator_defaults: Optional[OperatorDefaults] = Field(
        default=None,
        description="The operator's defaults (images) this InferenceService runs with: an operator "
        "upgrade that changes them rolls an InferenceService only when its spec next changes.",
    )


# ---- the resource -------------------------------------------------------------------------


class ObjectMeta(StatusBase):
    name: str
    namespace: str = "default"
    uid: Optional[str] = None
    generation: Optional[int] = None
    labels: dict[str, str] = Field(default_factory=dict)
    annotations: dict[str, str] = Field(default_factory=dict)


class InferenceService(StatusBase):
    api_version: Literal["serving.inference-operator.io/v1alpha1"] = API_VERSION
    kind: Literal["InferenceService"] = KIND
    metadata: ObjectMeta
    spec: InferenceServiceSpec
    status: InferenceServiceStatus = Field(default_factory=InferenceServiceStatus)

    @property
    def name(self) -> str:
        return self.metadata.name

    @property
    def namespace(self) -> str:
        return self.metadata.namespace


def parse(body: Any) -> InferenceService:
    """Validate a raw body (dict or kopf Body) into the typed model; raises pydantic's ValidationError."""
    data = dict(body)
    data.setdefault("status", {})
    if data["status"] is None:
        data["status"] = {}
    return InferenceService.model_validate(data)
