"""InferenceService specs for property-based tests, drawn from the CRD's own schema (itself made from
the API models): every field the schema has, values of its type near its bounds and from a pool
of strings that look like what users write (durations, quantities, URIs, GPU names), so that a
good share passes the CEL rules; and, in a share of cases, one fault in a random place (a wrong
type, a value past a bound, an unknown field, a required field dropped)."""

from __future__ import annotations

from typing import Any

from hypothesis import strategies as st

from inference_operator import api
from inference_operator.api import crd

STRINGS = [
    "", "a", "resnet50", "my-model", "30s", "1m", "0s", "500ms", "2h", "1h30m", "10m", "1Gi", "256Mi", "500m", "1",
    "2", "0", "-1", "10%", "1%", "0%", "100%", "250%", "pvc://models/triton", "pvc://models", "s3://bucket/models",
    "s3://bucket", "gs://bucket/models", "https://example.com/model.tar.gz", "http://prometheus.monitoring:9090",
    "prometheus:9090", "ftp://host/x", "nvidia.com/gpu", "nvidia.com/mig-1g.10gb", "amd.com/gpu",
    "NVIDIA-A100-SXM4-80GB", "NVIDIA-H100-80GB-HBM3", "sha256:" + "a" * 64, "sha256:abc", "onnx", "tensorrt",
    "pytorch", "python", "Exists", "Equal", "NoSchedule", "hpa", "keda", "queueTime", "requestLatency",
    "pendingRequests", "errorRate", "latencyQuantile", "{{selector}}", "sum(rate(x{ {{selector}} }[1m]))",
    "Gateway", "gateway.networking.k8s.io", "default", "kube-system", "x" * 300, "Ünïcode", "a b", "UPPER",
    "--model-control-mode=poll", "--log-verbose=1", "us-east-1", "https://minio.storage:9000", "0.99", "1e3",
]


def _strings(node: dict[str, Any]) -> st.SearchStrategy:
    if "enum" in node:
        return st.sampled_from(node["enum"])
    low, high = node.get("minLength", 0), node.get("maxLength", 253)
    pool = st.sampled_from([s for s in STRINGS if low <= len(s) <= high] or ["a" * max(low, 1)])
    return st.one_of(pool, pool, pool, st.text(min_size=low, max_size=min(high, 24)))


def _integers(node: dict[str, Any]) -> st.SearchStrategy:
    low, high = node.get("minimum", -(2**31)), node.get("maximum", 2**31 - 1)
    edges = sorted({v for v in (low, high, 0, 1, 2, 3, 10, 100) if low <= v <= high})
    return st.one_of(st.sampled_from(edges), st.integers(int(low), int(high)))


def _numbers(node: dict[str, Any]) -> st.SearchStrategy:
    low, high = node.get("minimum", -1e6), node.get("maximum", 1e6)
    return st.floats(low, high, allow_nan=False, allow_infinity=False)


def value(node: dict[str, Any], depth: int = 0) -> st.SearchStrategy:
    """A value the schema's types and bounds allow (CEL rules aside)."""
    if node.get("x-kubernetes-int-or-string"):
        return st.one_of(st.integers(0, 10), st.sampled_from(["0", "1", "25%", "100%", "x"]))
    kind = node.get("type")
    if kind == "object" or "properties" in node:
        return _object(node, depth)
    if kind == "array":
        items = node.get("items") or {"type": "string"}
        return st.lists(value(items, depth + 1), min_size=node.get("minItems", 0),
                        max_size=min(node.get("maxItems", 3), 3))
    if kind == "string":
        return _strings(node)
    if kind == "integer":
        return _integers(node)
    if kind == "number":
        return _numbers(node)
    if kind == "boolean":
        return st.booleans()
    return st.just({})  # free-form (x-kubernetes-preserve-unknown-fields)


def _object(node: dict[str, Any], depth: int) -> st.SearchStrategy:
    properties = node.get("properties") or {}
    if not properties:
        extra = node.get("additionalProperties")
        if isinstance(extra, dict):
            # Valid label keys only: the CRD cannot check a map's keys (README, spec.scheduling),
            # the API server refuses a bad one when the Deployment is applied.
            keys = st.sampled_from(["a", "nvidia.com/gpu.product", "zone", "team", "x" * 63])
            return st.dictionaries(keys, value(extra, depth + 1), max_size=min(node.get("maxProperties", 2), 2))
        return st.just({})
    required = set(node.get("required") or [])

    @st.composite
    def build(draw: st.DrawFn) -> dict[str, Any]:
        out = {}
        for name, child in properties.items():
            # Optional fields: often at the top, rarely deep down (a spec of every field is no spec).
            if name in required or draw(st.integers(0, 2 + depth)) == 0:
                out[name] = draw(value(child, depth + 1))
        return out

    return build()


WRONG = [None, "x", 7, -1, 2**40, 1.5, True, [], {}, {"unknown": 1}]


@st.composite
def fault(draw: st.DrawFn, spec: dict[str, Any]) -> dict[str, Any]:
    """The spec with one thing wrong somewhere: a value of the wrong type or out of range, an
    unknown field, or a field removed (a required one, at times)."""
    paths: list[tuple[Any, Any]] = []

    def walk(obj: Any) -> None:
        if isinstance(obj, dict):
            for key in list(obj):
                paths.append((obj, key))
                walk(obj[key])
        elif isinstance(obj, list):
            for i, item in enumerate(obj):
                paths.append((obj, i))
                walk(item)

    walk(spec)
    container, key = draw(st.sampled_from(paths or [(spec, "model")]))
    action = draw(st.sampled_from(["wrong", "unknown", "drop"]))
    if action == "unknown" and isinstance(container, dict):
        container[draw(st.sampled_from(["unknownField", "Replicas", "gpus"]))] = draw(st.sampled_from(WRONG))
    elif action == "drop" and isinstance(container, dict):
        container.pop(key, None)
    else:
        container[key] = draw(st.sampled_from(WRONG))
    return spec


def spec_schema() -> dict[str, Any]:
    return crd.build_crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]


BASE_MODEL = {"name": "resnet50", "storageUri": "pvc://models/triton"}


@st.composite
def specs(draw: st.DrawFn) -> dict[str, Any]:
    """A model that can be served, and each other section of the spec, at times, drawn whole from
    the schema: most sections drawn are valid on their own, so a good share of specs is too."""
    schema = spec_schema()["properties"]
    spec: dict[str, Any] = {"model": dict(BASE_MODEL)}
    if draw(st.integers(0, 3)) == 0:
        spec["model"] = {**draw(value(schema["model"])), **(BASE_MODEL if draw(st.booleans()) else {})}
    for name, node in schema.items():
        if name != "model" and draw(st.integers(0, 3)) == 0:
            spec[name] = draw(value(node, depth=1))
    return spec


@st.composite
def bodies(draw: st.DrawFn, namespace: str = "fuzz") -> dict[str, Any]:
    """An InferenceService, valid or not; a third of them with a fault injected."""
    spec = draw(specs())
    if draw(st.integers(0, 2)) == 0:
        spec = draw(fault(spec))
    return {"apiVersion": api.API_VERSION, "kind": api.KIND,
            "metadata": {"name": draw(st.sampled_from(["fuzz", "a", "resnet-50"])), "namespace": namespace},
            "spec": spec}
