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


def cel(rule: str, message: str, **extra: Any) -> dict[str, Any]:
    """One x-kubernetes-validations entry."""
    return {"rule": rule, "message": message, **extra}


def validations(*rules: dict[str, Any]) -> dict[str, Any]:
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


# Kubernetes' own rules for the names and labels a pod carries: what the CRD accepts, the pod
# accepts too (e2e/test_fuzz.py found specs the CRD took whose Deployment the API server refused).
DNS_SUBDOMAIN_RE = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
DNS_SUBDOMAIN_MESSAGE = ("must be a lowercase RFC 1123 subdomain: lowercase letters, digits, '-' and '.', "
                         "starting and ending with a letter or digit")
QUALIFIED_NAME_RE = (r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?"
                     r"[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$")
LABEL_VALUE_RE = r"^(([A-Za-z0-9][-A-Za-z0-9_.]{0,61})?[A-Za-z0-9])?$"


def dns_subdomain(field: str) -> dict[str, Any]:
    return validations(cel(f"self.matches('{_cel_regex(DNS_SUBDOMAIN_RE)}')", f"{field} {DNS_SUBDOMAIN_MESSAGE}"))


class LocalSecretReference(Base):
    """A Secret by name, in the InferenceService's namespace: a reference never crosses namespaces."""

    name: str = Field(min_length=1, max_length=253, json_schema_extra=dns_subdomain("imagePullSecrets[].name"))


class StorageSpec(Base):
    """How to reach an object store. Credentials come from a Secret or the pod's identity, never inline."""

    secret_name: Optional[str] = Field(
        default=None,
        max_length=253,
        json_schema_extra=dns_subdomain("storage.secretName"),
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


class EnvVarSource(Base):
    """As in a Pod's env[].valueFrom: exactly one source."""

    model_config = ConfigDict(json_schema_extra=validations(cel(
        "(has(self.fieldRef) ? 1 : 0) + (has(self.resourceFieldRef) ? 1 : 0) + (has(self.configMapKeyRef) ? 1 : 0)"
        " + (has(self.secretKeyRef) ? 1 : 0) + (has(self.fileKeyRef) ? 1 : 0) == 1",
        "valueFrom must set exactly one of fieldRef, resourceFieldRef, configMapKeyRef, secretKeyRef or fileKeyRef",
    )))

    field_ref: Optional[dict[str, Any]] = None
    resource_field_ref: Optional[dict[str, Any]] = None
    config_map_key_ref: Optional[dict[str, Any]] = None
    secret_key_ref: Optional[dict[str, Any]] = None
    file_key_ref: Optional[dict[str, Any]] = None


class EnvVar(Base):
    model_config = ConfigDict(json_schema_extra=validations(cel(
        "!has(self.valueFrom) || !has(self.value) || self.value == ''",
        "env[].value and env[].valueFrom are exclusive",
    )))

    name: str = Field(min_length=1, max_length=256, json_schema_extra=validations(cel(
        "self.matches('^[ -<>-~]+$')", "env[].name must consist only of printable ASCII characters other than '='")))
    value: Optional[str] = Field(default=None, max_length=32768)
    value_from: Optional[EnvVarSource] = Field(default=None, description="As in a Pod's env[].valueFrom.")


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
    model_config = ConfigDict(json_schema_extra=validations(
        cel("(has(self.key) && self.key != '') || (has(self.operator) && self.operator == 'Exists')",
            "tolerations[].operator must be Exists when key is empty (a toleration of every taint)"),
        cel("!has(self.operator) || self.operator != 'Exists' || !has(self.value) || self.value == ''",
            "tolerations[].value must be empty when operator is Exists"),
        cel("!has(self.tolerationSeconds) || (has(self.effect) && self.effect == 'NoExecute')",
            "tolerations[].tolerationSeconds applies to effect NoExecute only"),
    ))

    key: Optional[str] = Field(default=None, max_length=316, json_schema_extra=validations(cel(
        f"self == '' || self.matches('{_cel_regex(QUALIFIED_NAME_RE)}')",
        "tolerations[].key must be a label key: an optional DNS subdomain prefix and '/', then up to 63 "
        "letters, digits, '-', '_' and '.'")))
    operator: Optional[Literal["Exists", "Equal"]] = None
    value: Optional[str] = Field(default=None, max_length=63, json_schema_extra=validations(cel(
        f"self.matches('{_cel_regex(LABEL_VALUE_RE)}')",
        "tolerations[].value must be a label value: up to 63 letters, digits, '-', '_' and '.'")))
    effect: Optional[Literal["NoSchedule", "PreferNoSchedule", "NoExecute"]] = None
    toleration_seconds: Optional[int] = None


class SchedulingSpec(Base):
    # Values are checked here; keys are not: CEL's cost estimate of a rule over a map's keys has no
    # bound (a structural schema cannot bound key length), so an invalid key is refused when the
    # Deployment is applied, and the InferenceService says so in its Degraded condition.
    node_selector: dict[str, Annotated[str, Field(max_length=63, json_schema_extra=validations(cel(
        f"self.matches('{_cel_regex(LABEL_VALUE_RE)}')",
        "spec.scheduling.nodeSelector values must be label values: up to 63 letters, digits, '-', '_' and '.'",
    )))]] = Field(default_factory=dict, json_schema_extra={"maxProperties": 64})
    tolerations: list[Toleration] = Field(
        default_factory=list,
        max_length=32,
        description="Added to the nvidia.com/gpu toleration that GPU replicas always get.",
    )
    affinity: Optional[dict[str, Any]] = Field(default=None, description="As in a Pod's affinity.")
    topology_spread_constraints: list[dict[str, Any]] = Field(
        default_factory=list, max_length=16, description="As in a Pod's topologySpreadConstraints.",
        # What a pod requires of each (make faults' fuzz run found the CRD taking [{}]): the three
        # fields typed and required, the rest kept as written. (CEL cannot see the fields of an
        # object that preserves unknown fields.)
        json_schema_extra={"items": {
            "type": "object", "x-kubernetes-preserve-unknown-fields": True,
            "required": ["maxSkew", "topologyKey", "whenUnsatisfiable"],
            "properties": {"maxSkew": {"type": "integer", "format": "int32"}, "topologyKey": {"type": "string"},
                           "whenUnsatisfiable": {"type": "string"}},
        }},
    )
    priority_class_name: Optional[str] = Field(default=None, max_length=253,
                                               json_schema_extra=dns_subdomain("priorityClassName"))
    runtime_class_name: Optional[str] = Field(default=None, max_length=253,
                                              json_schema_extra=dns_subdomain("runtimeClassName"))


# A duration as Kubernetes and Prometheus write one: 30s, 5m, 1h30m, 500ms.
DURATION_RE = r"^([0-9]+(ms|s|m|h))+$"
DURATION_MESSAGE = "must be a duration such as 30s, 5m or 1h30m"
# The built-in checks of a canary's analysis, read from Triton's own metrics (analysis.py).
BUILTIN_CHECKS = ("errorRate", "queueTime", "requestLatency", "computeTime", "latencyQuantile")
TIME_CHECKS = ("queueTime", "requestLatency", "computeTime", "latencyQuantile")


def duration(default: Optional[str] = None, description: Optional[str] = None) -> Any:
    return Field(
        default=default,
        max_length=32,
        description=description,
        json_schema_extra=validations(cel(f"self.matches('{_cel_regex(DURATION_RE)}')", DURATION_MESSAGE)),
    )


class Pause(Base):
    duration: Optional[str] = duration(
        description="How long to hold before the next step. Unset: a manual gate, held until promoted."
    )


class CanaryStep(Base):
    """One step of a canary: a traffic weight held for a while and analysed, or a pause."""

    model_config = ConfigDict(
        json_schema_extra=validations(
            cel("has(self.weight) != has(self.pause)", "a canary step sets exactly one of weight and pause"),
            cel("!has(self.duration) || has(self.weight)",
                "a step's duration goes with a weight; a pause sets pause.duration"),
        )
    )

    weight: Optional[int] = Field(
        default=None, ge=1, le=100, description="The canary's share of the traffic, in percent."
    )
    duration: Optional[str] = duration(
        description="How long the weight is held (and analysed). Unset: analysis.interval x "
        "analysis.checksPerStep."
    )
    pause: Optional[Pause] = Field(
        default=None, description="Hold here: for pause.duration, or (pause: {}) until promoted by hand."
    )


class Check(Base):
    """A check of the canary against an absolute bound and/or the stable revision over the same window."""

    model_config = ConfigDict(
        json_schema_extra=validations(
            cel("has(self.max) || has(self.maxIncrease)", "a check needs max, maxIncrease or both"),
            cel(
                "has(self.query) != (self.name in " + repr(list(BUILTIN_CHECKS)) + ")",
                "a check is built in (errorRate, queueTime, requestLatency, computeTime, latencyQuantile) "
                "or has a query, not both",
            ),
            cel(
                "!has(self.max) || self.name != 'errorRate' || self.max.endsWith('%')",
                "errorRate's max is a percentage such as 1%",
            ),
            cel(
                "!has(self.max) || !(self.name in " + repr(list(TIME_CHECKS)) + ") || "
                "self.max.matches('^[0-9]+(\\\\.[0-9]+)?(us|ms|s)$')",
                "the max of a time check is a time such as 50ms, 800us or 1.5s",
            ),
            cel(
                "!has(self.max) || !has(self.query) || self.max.matches('^-?[0-9]+(\\\\.[0-9]+)?$')",
                "the max of a query check is a number",
            ),
            cel(
                "has(self.quantile) == (self.name == 'latencyQuantile')",
                "quantile is set for latencyQuantile, and only for it",
            ),
        )
    )

    name: str = Field(
        min_length=1,
        max_length=63,
        description="errorRate, queueTime, requestLatency, computeTime, latencyQuantile, or a name of "
        "your own for a query check.",
        json_schema_extra=validations(
            cel("self.matches('^[A-Za-z][A-Za-z0-9_-]*$')",
                "a check's name starts with a letter and holds letters, digits, '_' and '-'")
        ),
    )
    max: Optional[str] = Field(
        default=None,
        max_length=32,
        description="The absolute bound: a percentage for errorRate (1%), a time for the latency "
        "checks (50ms), a number for a query.",
    )
    max_increase: Optional[str] = Field(
        default=None,
        max_length=16,
        description="The bound relative to the stable revision over the same window, e.g. 20%.",
        json_schema_extra=validations(
            cel("self.matches('^[0-9]+(\\\\.[0-9]+)?%$')", "maxIncrease is a percentage such as 20%")
        ),
    )
    quantile: Optional[float] = Field(
        default=None,
        ge=0.01,
        le=0.999,
        description="latencyQuantile: which one (0.5, 0.9, 0.95, 0.99); Triton reports them with "
        "--metrics-config=summary_latencies=true, per pod and over its own span, not the window: the "
        "worst pod's is compared.",
    )
    query: Optional[str] = Field(
        default=None,
        max_length=4096,
        description="PromQL returning one number, with {{selector}} where the revision's label "
        "matchers go (it runs once for the canary and once for the stable).",
        json_schema_extra=validations(
            cel("self.contains('{{selector}}')", "a check's query must contain {{selector}}")
        ),
    )


class PrometheusSpec(Base):
    address: Optional[str] = Field(
        default=None,
        max_length=512,
        description="Prometheus's base URL. Unset: INFERENCE_OPERATOR_PROMETHEUS_URL.",
        json_schema_extra=validations(
            cel("self.matches('^https?://[^/]+')", "analysis.prometheus.address must be an http:// or https:// URL")
        ),
    )
    secret_name: Optional[str] = Field(
        default=None,
        max_length=253,
        json_schema_extra=dns_subdomain("analysis.prometheus.secretName"),
        description="A Secret in the InferenceService's namespace: `token` (bearer), or `username` "
        "and `password` (basic).",
    )


def _default_checks() -> list["Check"]:
    return [Check(name="errorRate", max="1%"), Check(name="requestLatency", max_increase="20%")]


class Analysis(Base):
    prometheus: PrometheusSpec = Field(default_factory=PrometheusSpec, json_schema_extra={"default": {}})
    interval: str = duration("30s", "How often the checks run.")
    window: Optional[str] = duration(description="The range each check's rates cover. Unset: interval.")
    initial_delay: Optional[str] = duration(
        description="How long after the canary's pods are ready before the first check (warm-up). Unset: "
        "the canary revision's measured startup (status.startupSeconds), within 30s..10m; 60s unmeasured."
    )
    checks_per_step: int = Field(
        default=3, ge=1, le=100,
        description="Passed checks that end a weight step without a duration of its own.",
    )
    min_requests: int = Field(
        default=20, ge=1, le=1_000_000,
        description="Requests the canary must serve in a check's window; fewer is inconclusive, never a pass.",
    )
    failure_limit: int = Field(
        default=2, ge=1, le=100, description="Consecutive failed checks that roll the canary back."
    )
    inconclusive_limit: int = Field(
        default=5, ge=1, le=1000,
        description="Consecutive inconclusive checks after which the canary holds (a condition says "
        "so) until there is traffic, or it is promoted or aborted by hand.",
    )
    checks: list[Check] = Field(
        default_factory=_default_checks,
        min_length=1,
        max_length=16,
        json_schema_extra={
            "default": [{"name": "errorRate", "max": "1%"}, {"name": "requestLatency", "maxIncrease": "20%"}],
            "x-kubernetes-list-type": "map",
            "x-kubernetes-list-map-keys": ["name"],
        },
    )


class ParentRef(Base):
    """A Gateway API parentReference."""

    name: str = Field(min_length=1, max_length=253)
    namespace: Optional[str] = Field(default=None, max_length=63)
    section_name: Optional[str] = Field(default=None, max_length=253)
    port: Optional[int] = Field(default=None, ge=1, le=65535)
    group: Optional[str] = Field(default=None, max_length=253)
    kind: Optional[str] = Field(default=None, max_length=63)


class GatewayAPIRouting(Base):
    parent_refs: list[ParentRef] = Field(
        min_length=1, max_length=32, description="The Gateways (or other parents) the HTTPRoute attaches to."
    )
    hostnames: list[Annotated[str, Field(max_length=253)]] = Field(default_factory=list, max_length=16)


class Canary(Base):
    model_config = ConfigDict(
        json_schema_extra=validations(
            cel(
                "(has(self.traffic) ? self.traffic : 'replicas') != 'gatewayAPI' || has(self.gatewayAPI)",
                "traffic: gatewayAPI needs canary.gatewayAPI.parentRefs",
            ),
            cel(
                "self.steps.filter(s, has(s.weight)).map(s, s.weight).isSorted() && "
                "self.steps.filter(s, has(s.weight)).all(s, "
                "self.steps.filter(t, has(t.weight) && t.weight == s.weight).size() == 1)",
                "canary step weights must increase from one step to the next",
            ),
        )
    )

    traffic: Literal["replicas", "gatewayAPI"] = Field(
        default="replicas",
        description="replicas: the weight is the canary's share of the Service's ready pods (no mesh). "
        "gatewayAPI: an HTTPRoute splits traffic between a stable and a canary Service at exact weights.",
    )
    gateway_api: Optional[GatewayAPIRouting] = Field(default=None, alias="gatewayAPI")
    steps: list[CanaryStep] = Field(
        min_length=1, max_length=20,
        description="Ascending weights, each held and analysed; pauses between them. Promotion follows the last.",
    )
    analysis: Analysis = Field(default_factory=Analysis, json_schema_extra={"default": {}})
    progress_deadline_seconds: Optional[int] = Field(
        default=None, ge=60, le=86400,
        description="A canary whose pods are not ready this long after it started is rolled back "
        "(ProgressDeadlineExceeded). Unset: runtime.startupTimeoutSeconds + 600.",
    )


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
    canary: Optional[Canary] = Field(
        default=None,
        description="Roll a new revision out through a canary judged on Triton's metrics, instead of "
        "a plain rolling update.",
    )


# ---- autoscaling (autoscaling.py, signals.py) -------------------------------------------------

# The named signals an autoscaler scales on, from Triton's metrics (signals.py).
SIGNALS = ("queueTime", "queueToComputeRatio", "pendingRequests", "requestLatency", "gpuUtilization")
TIME_SIGNALS = ("queueTime", "requestLatency")
_TIME_RE = "^[0-9]+(\\\\.[0-9]+)?(us|ms|s)$"
_NUMBER_RE = "^[0-9]+(\\\\.[0-9]+)?$"


class AutoscalingTarget(Base):
    """One signal and the value it is held at: the autoscaler adds replicas while the signal is above it."""

    model_config = ConfigDict(
        json_schema_extra=validations(
            cel("has(self.value)", "an autoscaling target needs a value, e.g. {name: queueTime, value: 50ms}"),
            cel("!has(self.value) || !self.value.matches('^0*(\\\\.0*)?(us|ms|s|%)?$')",
                "an autoscaling target's value must be above 0"),
            cel(
                "has(self.query) != (self.name in " + repr(list(SIGNALS)) + ")",
                "an autoscaling target is a signal (queueTime, queueToComputeRatio, pendingRequests, "
                "requestLatency, gpuUtilization) or has a query, not both",
            ),
            cel(
                "!has(self.value) || !(self.name in " + repr(list(TIME_SIGNALS)) + ") || "
                f"self.value.matches('{_TIME_RE}')",
                "the value of queueTime and requestLatency is a time such as 50ms, 800us or 1.5s",
            ),
            cel(
                "!has(self.value) || self.name != 'gpuUtilization' || "
                "self.value.matches('^[0-9]+(\\\\.[0-9]+)?%$')",
                "the value of gpuUtilization is a percentage such as 80%",
            ),
            cel(
                "!has(self.value) || self.name in " + repr(list(TIME_SIGNALS) + ["gpuUtilization"]) + " || "
                f"self.value.matches('{_NUMBER_RE}')",
                "the value of queueToComputeRatio, pendingRequests and a query is a number such as 0.5 or 4",
            ),
        )
    )

    name: str = Field(
        min_length=1,
        max_length=63,
        description="queueTime, queueToComputeRatio, pendingRequests, requestLatency, gpuUtilization, or a "
        "name of your own for a query.",
        json_schema_extra=validations(
            cel("self.matches('^[A-Za-z][A-Za-z0-9]*$')",
                "an autoscaling target's name starts with a letter and holds letters and digits")
        ),
    )
    value: Optional[str] = Field(
        default=None,
        max_length=32,
        description="queueTime, requestLatency: a time (50ms); queueToComputeRatio: a ratio (1.5); "
        "pendingRequests: requests per replica (4); gpuUtilization: a percentage (80%); a query: a number.",
    )
    query: Optional[str] = Field(
        default=None,
        max_length=4096,
        description="PromQL returning one number per pod (`by (pod)`, for the HPA engine's adapter) or one "
        "number (the keda engine); {{selector}} stands for the label matchers of the InferenceService's "
        "pods (a metric from in front of them, which wakes one scaled to zero, needs none).",
    )
    per_replica: bool = Field(
        default=False,
        description="A query only: its number adds up over replicas (divided by them, like pendingRequests) "
        "rather than being an average.",
    )


class ScalingPolicy(Base):
    type: Literal["Pods", "Percent"]
    value: int = Field(ge=1, le=100000)
    period_seconds: int = Field(ge=1, le=1800)


class ScalingRules(Base):
    stabilization_window_seconds: Optional[int] = Field(
        default=None, ge=0, le=3600,
        description="Scale up: unset is the revision's measured startup time (status.startupSeconds), "
        "at least 30s. Scale down: unset is 300s.",
    )
    select_policy: Optional[Literal["Max", "Min", "Disabled"]] = None
    policies: Optional[list[ScalingPolicy]] = Field(default=None, min_length=1, max_length=10)


# Passed to the HPA (KEDA's too). Defaults for GPU models that take minutes to load
# (autoscaling.behavior): scale up fast (100% or 4 pods a minute, whichever is more) after a window
# as long as a new replica takes to load; scale down slowly (1 pod every 2 minutes) after 5 minutes.
class ScalingBehavior(Base):

    scale_up: ScalingRules = Field(default_factory=ScalingRules, json_schema_extra={"default": {}})
    scale_down: ScalingRules = Field(default_factory=ScalingRules, json_schema_extra={"default": {}})


class KedaSpec(Base):
    server_address: Optional[str] = Field(
        default=None,
        max_length=512,
        description="The Prometheus KEDA queries. Unset: INFERENCE_OPERATOR_PROMETHEUS_URL.",
        json_schema_extra=validations(
            cel("self.matches('^https?://[^/]+')", "autoscaling.keda.serverAddress must be an http:// or https:// URL")
        ),
    )
    polling_interval: int = Field(default=15, ge=1, le=3600, description="Seconds between KEDA's queries.")
    cooldown_period: int = Field(
        default=300, ge=0, le=86400,
        description="minReplicas: 0 only: seconds without activity before scaling to zero.",
    )
    activation_pending_requests: int = Field(
        default=0, ge=0, le=100000,
        description="minReplicas: 0 only: pending requests above this wake the InferenceService from zero "
        "(and keep it up).",
    )
    fallback_replicas: Optional[int] = Field(
        default=None, ge=1, le=1000,
        description="Replicas to run when Prometheus cannot be queried 3 times in a row. Unset: no fallback.",
    )
    authentication_ref: Optional[str] = Field(
        default=None, max_length=253,
        description="A TriggerAuthentication in the namespace for KEDA's Prometheus queries.",
        json_schema_extra=dns_subdomain("autoscaling.keda.authenticationRef"),
    )


def _default_targets() -> list["AutoscalingTarget"]:
    return [AutoscalingTarget(name="queueTime", value="50ms")]


class Autoscaling(Base):
    model_config = ConfigDict(
        json_schema_extra=validations(
            cel("(has(self.minReplicas) ? self.minReplicas : 1) <= self.maxReplicas",
                "autoscaling.minReplicas must not exceed autoscaling.maxReplicas"),
            cel("(has(self.minReplicas) ? self.minReplicas : 1) > 0 || "
                "(has(self.engine) ? self.engine : 'hpa') == 'keda'",
                "autoscaling.minReplicas: 0 (scale to zero) needs engine: keda; an HPA on per-pod metrics "
                "cannot wake an InferenceService that has no pods"),
            cel("(has(self.minReplicas) ? self.minReplicas : 1) > 0 || "
                "(has(self.targets) && self.targets.exists(t, has(t.query)))",
                "autoscaling.minReplicas: 0 needs a target with a query on a metric from outside the pods (a "
                "gateway's request rate, say): at zero replicas no Triton reports anything that could wake it"),
        )
    )

    engine: Literal["hpa", "keda"] = Field(
        default="hpa",
        description="hpa: an autoscaling/v2 HorizontalPodAutoscaler on custom metrics served by "
        "prometheus-adapter (with the README's rules). keda: a KEDA ScaledObject with Prometheus triggers.",
    )
    min_replicas: int = Field(default=1, ge=0, le=1000)
    max_replicas: int = Field(ge=1, le=1000)
    targets: list[AutoscalingTarget] = Field(
        default_factory=_default_targets,
        min_length=1,
        max_length=8,
        description="The autoscaler keeps every signal at or below its value (the largest replica count wins).",
        json_schema_extra={
            "default": [{"name": "queueTime", "value": "50ms"}],
            "x-kubernetes-list-type": "map",
            "x-kubernetes-list-map-keys": ["name"],
        },
    )
    window: str = duration("1m", "The range the signals' rates cover (at least two scrape intervals).")
    behavior: ScalingBehavior = Field(
        default_factory=ScalingBehavior, json_schema_extra={"default": {}},
        description="The HPA's behavior, with defaults for models that take minutes to load: scale up by "
        "100% or 4 pods a minute (the more), scale down by 1 pod every 2 minutes after 5 minutes.",
    )
    keda: KedaSpec = Field(default_factory=KedaSpec, json_schema_extra={"default": {}})


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
            # With oldSelf optional, so it runs on create too (oldSelf absent): there spec.replicas
            # may not exceed maxReplicas (the default 1 never does; below minReplicas the operator
            # brings it up). On an update, a changed spec.replicas must lie within the range; an
            # unchanged one passes, so lowering maxReplicas below what the autoscaler set is fine.
            cel(
                "!has(self.autoscaling) || "
                "(oldSelf.hasValue() && self.replicas == oldSelf.value().replicas) || "
                "(self.replicas <= self.autoscaling.maxReplicas && (!oldSelf.hasValue() || "
                "self.replicas >= (has(self.autoscaling.minReplicas) ? self.autoscaling.minReplicas : 1)))",
                "spec.replicas is the autoscaler's while spec.autoscaling is set: a value above "
                "autoscaling.maxReplicas, or a change outside minReplicas..maxReplicas, would not be honoured; "
                "leave spec.replicas out of the manifest (see the README's Argo CD note) or change the range",
                optionalOldSelf=True,
            ),
        )
    )

    @property
    def target_replicas(self) -> int:
        """The replica count the Deployments run: spec.replicas, within the autoscaling range."""
        a = self.autoscaling
        return self.replicas if a is None else min(max(self.replicas, a.min_replicas), a.max_replicas)

    model: ModelSpec
    runtime: RuntimeSpec = Field(default_factory=RuntimeSpec, json_schema_extra={"default": {}})
    resources: ResourcesSpec = Field(
        default_factory=ResourcesSpec, json_schema_extra={"default": {}}
    )
    scheduling: SchedulingSpec = Field(
        default_factory=SchedulingSpec, json_schema_extra={"default": {}}
    )
    replicas: int = Field(
        default=1, ge=0, le=1000,
        description="Pods of the predictor. With spec.autoscaling the autoscaler owns it (through the scale "
        "subresource): it is the starting count, brought within minReplicas..maxReplicas.",
    )
    autoscaling: Optional[Autoscaling] = Field(
        default=None,
        description="Scale on Triton's queue and latency metrics. The autoscaler wins over spec.replicas.",
    )
    rollout: RolloutSpec = Field(default_factory=RolloutSpec, json_schema_extra={"default": {}})
    service_account_name: Optional[str] = Field(
        default=None,
        max_length=253,
        description="The pods' service account (e.g. for workload identity to an object store).",
        json_schema_extra=dns_subdomain("serviceAccountName"),
    )
    image_pull_secrets: list[LocalSecretReference] = Field(
        default_factory=list,
        max_length=16,
        description="Secrets in the InferenceService's namespace for pulling the runtime's image from a "
        "private registry (the pods' imagePullSecrets).",
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"]},
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


class CheckResult(StatusBase):
    """One check of one analysis: what was measured against what bound."""

    name: str
    result: Literal["Pass", "Fail", "Inconclusive", "Error"]
    value: Optional[float] = Field(default=None, description="The canary's value (seconds for times, a fraction for rates).")
    stable: Optional[float] = Field(default=None, description="The stable revision's value over the same window.")
    bound: Optional[str] = Field(default=None, description="The bound it was held to, as written in the spec.")
    message: str = ""


class CanaryStatus(StatusBase):
    """Everything a canary needs to resume after an operator restart: it lives here, never only in memory."""

    phase: Optional[str] = Field(
        default=None,
        description="Progressing, Paused, Holding, Promoted, RolledBack or Aborted.",
    )
    reason: Optional[str] = Field(
        default=None, description="Why the last canary was rolled back: AnalysisFailed, ProgressDeadlineExceeded, "
        "CanaryAborted.")
    revision: Optional[str] = Field(default=None, description="The revision under test.")
    stable_revision: Optional[str] = None
    stable_track: Optional[str] = Field(
        default=None,
        description="Which Deployment (track) runs the stable revision: a promotion keeps the canary's "
        "pods, so after one the canary's Deployment is the stable one.",
    )
    step_index: Optional[int] = None
    step_started_at: Optional[str] = None
    started_at: Optional[str] = None
    ready_at: Optional[str] = Field(default=None, description="When the canary's pods of this step were all ready.")
    weight: Optional[int] = Field(default=None, description="The weight the current step asks for.")
    effective_weight: Optional[int] = Field(default=None, description="The canary's share of the ready pods (replicas mode).")
    consecutive_failures: Optional[int] = None
    consecutive_inconclusive: Optional[int] = None
    checks_passed: Optional[int] = Field(default=None, description="Passed checks in the current step.")
    last_analysis_at: Optional[str] = None
    analysis: list[CheckResult] = Field(default_factory=list, description="The last analysis, check by check.")
    failed_revision: Optional[str] = Field(
        default=None,
        description="A revision rolled back or aborted: not tried again until the spec names another.",
    )
    handled: dict[str, str] = Field(
        default_factory=dict, description="The manual requests (annotations) already acted on, by action."
    )
    message: Optional[str] = None


class AutoscalerStatus(StatusBase):
    """The autoscaler of spec.autoscaling, as its HPA reports it."""

    kind: Optional[str] = Field(default=None, description="HorizontalPodAutoscaler or ScaledObject.")
    name: Optional[str] = None
    current_replicas: Optional[int] = None
    desired_replicas: Optional[int] = None
    refused_hash: Optional[str] = Field(
        default=None, description="The spec hash of an autoscaler the API server refused: not sent again until "
        "the spec makes another.")
    refused_message: Optional[str] = Field(default=None, description="Why it was refused.")


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
    canary: Optional[CanaryStatus] = None
    startup_seconds: dict[str, int] = Field(
        default_factory=dict,
        description="Per revision, the longest measured time from a pod's scheduling to Ready (image pull "
        "and model load), in seconds: the default scale-up stabilization and canary initialDelay.",
    )
    autoscaler: Optional[AutoscalerStatus] = None


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
