"""Pure builders: a validated InferenceService in, its child objects (plain dicts) out. No I/O.

Templates live in ``templates/`` and render with StrictUndefined, so a typo fails loudly.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import json
import re
from typing import Any

import jinja2
import yaml

from inference_operator import api
from inference_operator.config import OperatorConfig
from inference_operator.modelrepo import model_config
from inference_operator.naming import (
    PORTS,
    REVISION_LABEL,
    SPEC_HASH_ANNOTATION,
    STABLE,
    STORAGE_INITIALIZER,
    TRACK_LABEL,
    content_hash,
    labels,
    names,
    predictor,
    selector,
    workload_selector,
)

GPU_TAINT_KEY = "nvidia.com/gpu"
GPU_PRODUCT_LABEL = "nvidia.com/gpu.product"
MODEL_MOUNT = "/mnt/models"

STARTUP_PERIOD_SECONDS = 10
TERMINATION_GRACE_SECONDS = 60
# Triton drains in-flight requests for this long on SIGTERM; it must be below the grace period.
EXIT_TIMEOUT_SECONDS = 45


class SpecError(Exception):
    """The spec passed the schema but cannot be served; ``reason`` is a CamelCase condition reason."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


# ---- quantities ----------------------------------------------------------------------------

_SUFFIX = {
    "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60,
    "k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12, "P": 10**15, "E": 10**18, "": 1,
}


def quantity_bytes(quantity: str) -> int:
    """A memory quantity as whole bytes (rounded up), for flags that take bytes."""
    m = re.fullmatch(r"([0-9]+(?:\.[0-9]*)?|\.[0-9]+)(Ki|Mi|Gi|Ti|Pi|Ei|k|M|G|T|P|E)?", quantity)
    if not m:
        raise SpecError("InvalidQuantity", f"{quantity!r} is not a byte quantity such as 256Mi")
    number, suffix = m.group(1), m.group(2) or ""
    whole, _, frac = number.partition(".")
    scale = _SUFFIX[suffix]
    value = int(whole or "0") * scale
    if frac:
        value += -(-int(frac) * scale // 10 ** len(frac))
    return value


# ---- storage -------------------------------------------------------------------------------


# A claim whose model needs a generated config.pbtxt is mounted here, read-only, and linked into
# MODEL_MOUNT by the storage initializer (same path in both containers, so the links resolve).
SOURCE_MOUNT = "/mnt/source"
GCS_KEY_MOUNT = "/var/run/secrets/inference-operator/storage"


@dataclasses.dataclass(frozen=True)
class PVCSource:
    claim: str
    path: str  # "" for the claim's root


@dataclasses.dataclass(frozen=True)
class RemoteSource:
    scheme: str  # s3 | gs | https | http: fetched by the storage initializer


def storage_source(storage_uri: str) -> PVCSource | RemoteSource:
    scheme, _, rest = storage_uri.partition("://")
    if scheme == "pvc":
        claim, _, path = rest.partition("/")
        return PVCSource(claim=claim, path=path.strip("/"))
    return RemoteSource(scheme)


# ---- the predictor -------------------------------------------------------------------------


def triton_args(isvc: api.InferenceService) -> list[str]:
    spec = isvc.spec
    args = [
        f"--model-repository={MODEL_MOUNT}",
        "--model-control-mode=explicit",
        f"--load-model={spec.model.name}",
        "--strict-readiness=true",
        "--exit-on-error=true",
        f"--exit-timeout-secs={EXIT_TIMEOUT_SECONDS}",
        f"--http-port={PORTS['http']}",
        f"--grpc-port={PORTS['grpc']}",
        f"--metrics-port={PORTS['metrics']}",
        "--allow-metrics=true",
        f"--allow-gpu-metrics={'true' if spec.resources.gpu.count > 0 else 'false'}",
    ]
    if spec.runtime.response_cache is not None:
        size = quantity_bytes(spec.runtime.response_cache.size)
        args.append(f"--cache-config=local,size={size}")
    return args + list(spec.runtime.args)


DEFAULT_REQUESTS = {"cpu": "1", "memory": "2Gi"}


def _resources(spec: api.InferenceServiceSpec) -> dict[str, Any]:
    r = spec.resources
    # As Kubernetes does: an unset request takes the limit; with no limit either, our default.
    requests = {
        "cpu": r.requests.cpu or r.limits.cpu or DEFAULT_REQUESTS["cpu"],
        "memory": r.requests.memory or r.limits.memory or DEFAULT_REQUESTS["memory"],
    }
    limits = {k: v for k, v in (("cpu", r.limits.cpu), ("memory", r.limits.memory)) if v}
    if r.gpu.count > 0:
        # Extended resources cannot be overcommitted: request and limit must be equal.
        requests[r.gpu.resource_name] = r.gpu.count
        limits[r.gpu.resource_name] = r.gpu.count
    return {"requests": requests, "limits": limits} if limits else {"requests": requests}


def _tolerations(spec: api.InferenceServiceSpec) -> list[dict[str, Any]]:
    result: list[dict[str, Any]] = []
    if spec.resources.gpu.count > 0:
        result.append({"key": GPU_TAINT_KEY, "operator": "Exists", "effect": "NoSchedule"})
    for t in spec.scheduling.tolerations:
        item = t.model_dump(by_alias=True, exclude_none=True)
        if item not in result:
            result.append(item)
    return result


def _node_selector(spec: api.InferenceServiceSpec) -> dict[str, str]:
    result = dict(spec.scheduling.node_selector)
    if spec.resources.gpu.product:
        result[GPU_PRODUCT_LABEL] = spec.resources.gpu.product
    return result


RESTRICTED = {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}}


def _storage_initializer(
    spec: api.InferenceServiceSpec, config: OperatorConfig, scheme: str, uri: str, overrides: str
) -> tuple[dict, list]:
    """The init container that fetches (or, from a claim, links) the model into the pod's repository."""
    model = spec.model
    args = ["fetch-model", f"--uri={uri}", f"--repository={MODEL_MOUNT}",
            f"--model={model.name}", "--termination-log=/dev/termination-log"]
    if model.format:
        args.append(f"--format={model.format.value}")
    if model.checksum:
        args.append(f"--checksum={model.checksum}")
    if overrides:
        args.append(f"--config-overrides={overrides}")
    storage = model.storage or api.StorageSpec()
    if storage.endpoint:
        args.append(f"--endpoint={storage.endpoint}")
    if storage.region:
        args.append(f"--region={storage.region}")
    container: dict[str, Any] = {
        "name": STORAGE_INITIALIZER,
        "image": config.operator_image,
        "imagePullPolicy": "IfNotPresent",
        "args": args,
        "env": [{"name": "HOME", "value": "/tmp"}],
        "resources": {"requests": {"cpu": "100m", "memory": "256Mi"}, "limits": {"memory": "1Gi"}},
        "securityContext": RESTRICTED,
        # The fetcher writes its one-line reason there; status quotes it.
        "terminationMessagePolicy": "FallbackToLogsOnError",
        "volumeMounts": [{"name": "model-repository", "mountPath": MODEL_MOUNT}],
    }
    volumes: list[dict] = []
    if storage.secret_name and scheme == "gs":
        volumes.append({"name": "storage-credentials", "secret": {"secretName": storage.secret_name}})
        container["volumeMounts"].append({"name": "storage-credentials", "mountPath": GCS_KEY_MOUNT, "readOnly": True})
        container["env"].append({"name": "GOOGLE_APPLICATION_CREDENTIALS", "value": f"{GCS_KEY_MOUNT}/key.json"})
    elif storage.secret_name:
        container["envFrom"] = [{"secretRef": {"name": storage.secret_name}}]
    return container, volumes


def _storage(spec: api.InferenceServiceSpec, config: OperatorConfig) -> tuple[list[dict], list[dict], list[dict]]:
    """Volumes, Triton's mounts and init containers: a claim is mounted; anything else is fetched."""
    source = storage_source(spec.model.storage_uri)
    volumes = [{"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": spec.resources.shared_memory_size}}]
    repo_mount: dict[str, Any] = {"name": "model-repository", "mountPath": MODEL_MOUNT, "readOnly": True}
    mounts = [{"name": "dshm", "mountPath": "/dev/shm"}, repo_mount]
    init: list[dict] = []
    # Settings that live in config.pbtxt: a claim is then composed by the initializer, not mounted as is.
    overrides = model_config.overrides(spec)
    if isinstance(source, PVCSource) and not overrides:
        volumes.append({"name": "model-repository",
                        "persistentVolumeClaim": {"claimName": source.claim, "readOnly": True}})
        if source.path:
            repo_mount["subPath"] = source.path
        return volumes, mounts, init
    volumes.append({"name": "model-repository", "emptyDir": {}})
    if isinstance(source, PVCSource):
        source_mount: dict[str, Any] = {"name": "model-source", "mountPath": SOURCE_MOUNT, "readOnly": True}
        if source.path:
            source_mount["subPath"] = source.path
        volumes.append({"name": "model-source", "persistentVolumeClaim": {"claimName": source.claim, "readOnly": True}})
        container, extra = _storage_initializer(spec, config, "file", f"file://{SOURCE_MOUNT}", overrides)
        container["volumeMounts"].append(source_mount)
        mounts.append(source_mount)
    else:
        container, extra = _storage_initializer(spec, config, source.scheme, spec.model.storage_uri, overrides)
    init.append(container)
    volumes += extra
    return volumes, mounts, init


_SURROGATE_PAIR = re.compile(r"\\u(d[89ab][0-9a-f]{2})\\u(d[c-f][0-9a-f]{2})")


def _yaml_safe_json(obj: Any, **kwargs: Any) -> str:
    """JSON, which the templates write values as (``tojson``), is YAML but for one thing: YAML's
    double-quoted strings take no UTF-16 surrogate pairs, so a character beyond the BMP (an emoji
    in an env value) becomes YAML's \\U escape instead (found by tests/test_fuzz.py)."""
    text = json.dumps(obj, **kwargs)
    return _SURROGATE_PAIR.sub(
        lambda m: "\\U%08x" % (0x10000 + ((int(m[1], 16) - 0xD800) << 10) + (int(m[2], 16) - 0xDC00)), text)


@functools.lru_cache(maxsize=1)
def _environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("inference_operator.desired", "templates"),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
        autoescape=False,
    )
    env.policies["json.dumps_function"] = _yaml_safe_json
    return env


# libyaml's loader is ~10x faster than the pure-Python one, and parsing dominated a pass.
_YAML_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def render_template(name: str, context: dict[str, Any]) -> dict[str, Any]:
    text = _environment().get_template(name).render(**context)
    return yaml.load(text, Loader=_YAML_LOADER)


def context(isvc: api.InferenceService, config: OperatorConfig) -> dict[str, Any]:
    spec = isvc.spec
    volumes, mounts, init_containers = _storage(spec, config)
    startup_timeout = spec.runtime.startup_timeout_seconds
    return {
        "names": names(isvc.name),
        "namespace": isvc.namespace,
        "labels": labels(isvc.name),
        "selector": selector(isvc.name),
        "pod_labels": labels(isvc.name),
        "rollout": spec.rollout,
        "progress_deadline_seconds": startup_timeout + 600,
        "termination_grace_period_seconds": TERMINATION_GRACE_SECONDS,
        "service_account_name": spec.service_account_name,
        "image_pull_secrets": [{"name": ref.name} for ref in spec.image_pull_secrets],
        "node_selector": _node_selector(spec),
        "tolerations": _tolerations(spec),
        "affinity": spec.scheduling.affinity,
        "topology_spread_constraints": list(spec.scheduling.topology_spread_constraints),
        "priority_class_name": spec.scheduling.priority_class_name,
        "runtime_class_name": spec.scheduling.runtime_class_name,
        "image": spec.runtime.image or config.default_image,
        "args": triton_args(isvc),
        "env": [e.model_dump(by_alias=True, exclude_none=True) for e in spec.runtime.env],
        "ports": PORTS,
        "startup": {
            "period_seconds": STARTUP_PERIOD_SECONDS,
            "failure_threshold": -(-startup_timeout // STARTUP_PERIOD_SECONDS),
        },
        "resources": _resources(spec),
        "volume_mounts": mounts,
        "volumes": volumes,
        "init_containers": init_containers,
        "restricted": RESTRICTED,
    }


@dataclasses.dataclass(frozen=True)
class PodTemplate:
    """The hashed pod template: what, changed, restarts pods. ``revision`` is its hash."""

    template: dict[str, Any]
    revision: str


@dataclasses.dataclass(frozen=True)
class Workload:
    """What carries a pod template: a Deployment's name, track and replica count.

    ``track`` is None only for a Deployment made before tracks existed: its selector is immutable,
    so it keeps selecting without one (and its pods are the stable track).
    """

    name: str
    track: str | None
    replicas: int


def pod_template(ctx: dict[str, Any]) -> PodTemplate:
    template = render_template("podtemplate.yaml.j2", ctx)
    # The revision is the hash of the pod template itself: anything that restarts pods changes it.
    revision = content_hash(template)
    template["metadata"]["labels"][REVISION_LABEL] = revision
    return PodTemplate(template, revision)


def deployment(ctx: dict[str, Any], template: PodTemplate, workload: Workload) -> dict[str, Any]:
    """A Deployment that runs ``template`` as ``workload``; two of them can run side by side."""
    pod = copy.deepcopy(template.template)
    if workload.track is not None:
        pod["metadata"]["labels"][TRACK_LABEL] = workload.track
    return render_template("deployment.yaml.j2", {
        **ctx, "template": pod, "workload": workload,
        "workload_selector": workload_selector(ctx["names"].instance, workload.track),
    })


def render(
    isvc: api.InferenceService, config: OperatorConfig, *, track: str | None = STABLE
) -> list[dict[str, Any]]:
    """The desired children, in apply order. Raises SpecError for a spec that cannot be served.

    ``track`` is the stable Deployment's track: None keeps the selector of a Deployment made
    before tracks existed (reconcile passes what it observes).
    """
    ctx = context(isvc, config)
    stable = Workload(name=predictor(isvc.name, track), track=track, replicas=isvc.spec.target_replicas)
    children = [deployment(ctx, pod_template(ctx), stable), render_template("service.yaml.j2", ctx)]
    # With an autoscaler, by its range: the budget does not come and go as it scales.
    most = isvc.spec.autoscaling.max_replicas if isvc.spec.autoscaling else isvc.spec.replicas
    if most > 1:
        children.append(render_template("poddisruptionbudget.yaml.j2", ctx))
    return children


def as_canary(deployment: dict[str, Any], replicas: int) -> dict[str, Any]:
    """A rendered Deployment as a canary's: the replica count of its step, and its pods replaced
    all at once (a new revision mid-canary: never a surge beyond what rollout/split.py allows). The
    stable one rolls. Unstamped: its caller stamps it again."""
    result = copy.deepcopy(deployment)
    result["spec"]["replicas"] = replicas
    result["spec"]["strategy"] = {"type": "Recreate"}
    result["metadata"].get("annotations", {}).pop(SPEC_HASH_ANNOTATION, None)
    return result
