"""The generated CRD: committed file is current, the schema is structural, the CEL rules say what we mean."""

import copy
import pathlib

import cel
import pytest

from inference_operator import api
from inference_operator.api import crd, validation

from .helpers import load_case

CRD_FILE = pathlib.Path(__file__).parents[1] / "crds" / "inferenceservices.serving.inference-operator.io.yaml"


@pytest.fixture(scope="module")
def schema():
    return crd.build_crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]


def test_committed_crd_is_current():
    assert CRD_FILE.read_text() == crd.crd_yaml(), (
        "crds/ is stale: run `inference-operator crd > " + str(CRD_FILE.relative_to(CRD_FILE.parents[1])) + "`"
    )


def walk(node, path="$"):
    yield path, node
    for key, child in (node.get("properties") or {}).items():
        yield from walk(child, f"{path}.{key}")
    if isinstance(node.get("items"), dict):
        yield from walk(node["items"], f"{path}[]")
    if isinstance(node.get("additionalProperties"), dict):
        yield from walk(node["additionalProperties"], f"{path}{{}}")


def test_schema_is_structural(schema):
    forbidden = {"$ref", "anyOf", "oneOf", "allOf", "title", "$defs", "const", "nullable"}
    for path, node in walk(schema):
        assert not forbidden & node.keys(), f"{path} has {forbidden & node.keys()}"
        if path == "$.metadata":
            continue
        assert "type" in node, f"{path} has no type"
        if node["type"] == "object":
            assert "properties" in node or "additionalProperties" in node or node.get(
                "x-kubernetes-preserve-unknown-fields"
            ), f"{path} is an object with no schema"


def test_status_and_scale_subresources():
    version = crd.build_crd()["spec"]["versions"][0]
    assert version["subresources"]["status"] == {}
    assert version["subresources"]["scale"] == {
        "specReplicasPath": ".spec.replicas",
        "statusReplicasPath": ".status.replicas",
        "labelSelectorPath": ".status.selector",
    }
    columns = [c["name"] for c in version["additionalPrinterColumns"]]
    for wanted in ("Ready", "Replicas", "Revision", "URL", "Age"):
        assert wanted in columns


def test_names():
    names = crd.build_crd()["spec"]["names"]
    assert names["shortNames"] == ["infsvc"] and names["categories"] == ["inference"]
    assert crd.build_crd()["metadata"]["name"] == "inferenceservices.serving.inference-operator.io"


def test_defaults_are_declared_for_nested_objects(schema):
    spec = schema["properties"]["spec"]["properties"]
    assert spec["resources"]["default"] == {}
    assert spec["resources"]["properties"]["gpu"]["properties"]["count"]["default"] == 1
    assert spec["replicas"]["default"] == 1


# ---- CEL rules, evaluated offline -------------------------------------------------------------


def rules(schema):
    for path, node in walk(schema):
        for rule in node.get("x-kubernetes-validations", []):
            yield path, rule


def test_every_rule_has_a_message_and_compiles(schema):
    found = list(rules(schema))
    assert len(found) >= 15
    for path, rule in found:
        assert rule.get("message"), f"{path}: rule without message"
        cel.compile(rule["rule"])


def test_every_rule_accepts_its_nodes_default(schema):
    """The API server validates each default as written (no nested defaulting) against the rules."""
    checked = 0
    for path, node in walk(schema):
        if "default" not in node:
            continue
        for rule in node.get("x-kubernetes-validations", []):
            if "oldSelf" in rule["rule"]:
                continue
            assert cel.evaluate(rule["rule"], validation._context({"self": node["default"]})), \
                f"{path}: {rule['message']}"
            checked += 1
    assert checked >= 3


def node_at(schema, path):
    node = schema
    for part in path.split(".")[1:]:
        node = node["items"] if part == "[]" else node["properties"][part]
    return node


def violations(schema, path, value, old=None):
    """Messages of the rules at `path` that reject `value`."""
    failed = []
    for rule in node_at(schema, path).get("x-kubernetes-validations", []):
        if "oldSelf" in rule["rule"] and old is None:
            continue  # transition rules only run on update
        ctx = {"self": value}
        if old is not None:
            ctx["oldSelf"] = old
        if not cel.evaluate(rule["rule"], ctx):
            failed.append(rule["message"])
    return failed


@pytest.mark.parametrize(
    "path,value,expect",
    [
        ("$.spec.model.storageUri", "pvc://models/triton", None),
        ("$.spec.model.storageUri", "pvc://models", None),
        ("$.spec.model.storageUri", "s3://bucket-1/prefix/x", None),
        ("$.spec.model.storageUri", "gs://bucket", None),
        ("$.spec.model.storageUri", "https://example.com/model.tar.gz", None),
        ("$.spec.model.storageUri", "ftp://host/model", "must start with pvc://"),
        ("$.spec.model.storageUri", "pvc://Models/x", "pvc://<claim-name>"),
        ("$.spec.model.storageUri", "pvc:///x", "pvc://<claim-name>"),
        ("$.spec.model.storageUri", "s3://", "valid bucket name"),
        ("$.spec.model.storageUri", "pvc://models/../etc", "'..'"),
        ("$.spec.model.name", "resnet50_v1.5-onnx", None),
        ("$.spec.model.name", "_hidden", "must start with a letter or digit"),
        ("$.spec.model.name", "a/b", "must start with a letter or digit"),
        ("$.spec.runtime.args", ["--log-verbose=1", "--model-load-thread-count=4"], None),
        ("$.spec.runtime.args", ["--model-repository=/x"], "flags the operator manages"),
        ("$.spec.runtime.args", ["--http-port", "9000"], "flags the operator manages"),
        ("$.spec.runtime.args", ["--model-repos=/x"], "flags the operator manages"),
        ("$.spec.runtime.args", ["--model-control=poll"], "flags the operator manages"),
        ("$.spec.runtime.args", ["--allow-http=false"], "flags the operator manages"),
        ("$.spec.runtime.args", ["--exit-timeout-secs=600"], "flags the operator manages"),
        ("$.spec.runtime.args", ["--log-verbose=1", "--model-load-thread-count=4", "--grpc-keepalive-time=10"], None),
        ("$.spec.runtime.args", ["--model-load-retry-count=2", "--pinned-memory-pool-byte-size=0"], None),
        ("$.spec.resources.gpu", {"count": 0, "product": "NVIDIA-A100"}, "needs gpu.count > 0"),
        ("$.spec.resources.gpu", {"count": 1, "product": "NVIDIA-A100"}, None),
        ("$.spec.resources.gpu.resourceName", "nvidia.com/mig-1g.10gb", None),
        ("$.spec.resources.gpu.resourceName", "nvidia.com/mig-3g.40gb", None),
        ("$.spec.resources.gpu.resourceName", "amd.com/gpu", "must be nvidia.com/gpu"),
        ("$.spec.resources.gpu.resourceName", "nvidia.com/gpu.shared", None),
        ("$.spec.resources.gpu.resourceName", "nvidia.com/mig-1g.10gb+me", "must be nvidia.com/gpu"),
        ("$.spec.model.storageUri", "pvc://models.v2/triton", None),
        ("$.spec.resources.sharedMemorySize", "16Gi", None),
        ("$.spec.resources.sharedMemorySize", "1.5Gi", None),
        ("$.spec.resources.sharedMemorySize", "100m", "positive byte quantity"),
        ("$.spec.resources.sharedMemorySize", "-1Gi", "positive byte quantity"),
        ("$.spec.resources.sharedMemorySize", "0", "positive byte quantity"),
        ("$.spec.resources.sharedMemorySize", "1e9", "positive byte quantity"),
        ("$.spec.resources.requests.cpu", "500m", None),
        ("$.spec.resources.requests.cpu", "2", None),
        ("$.spec.resources.requests.cpu", "0.5", None),
        ("$.spec.resources.requests.cpu", "-1", "positive CPU quantity"),
        ("$.spec.resources.requests.cpu", "1Gi", "positive CPU quantity"),
        ("$.spec.resources.limits.memory", "8Gi", None),
        ("$.spec.runtime.responseCache.size", "100m", "positive byte quantity"),
        ("$.spec.runtime.modelConfig", {"maxBatchSize": 8, "dynamicBatching": {}}, None),
        ("$.spec.model.checksum", "sha256:" + "ab" * 32, None),
        ("$.spec.model.checksum", "md5:abc", "sha256: followed by 64 hex digits"),
        ("$.spec.model.checksum", "sha256:" + "AB" * 32, "sha256: followed by 64 hex digits"),
        ("$.spec.model.storage.endpoint", "https://minio.storage:9000", None),
        ("$.spec.model.storage.endpoint", "minio:9000", "http:// or https:// URL"),
        ("$.spec.model", {"storageUri": "gs://b/m", "storage": {"endpoint": "http://x"}}, "s3:// only"),
        ("$.spec.model", {"storageUri": "s3://b/m", "storage": {"endpoint": "http://x", "region": "r"}}, None),
        ("$.spec.model", {"storageUri": "pvc://c/m", "storage": {"secretName": "s"}}, "s3:// and gs:// only"),
        ("$.spec.model", {"storageUri": "https://h/m", "storage": {"secretName": "s"}}, "s3:// and gs:// only"),
        ("$.spec.model", {"storageUri": "pvc://c/m", "checksum": "sha256:" + "a" * 64}, "not to pvc://"),
        ("$.spec.model", {"storageUri": "https://h/m.tgz", "checksum": "sha256:" + "a" * 64}, None),
        ("$.spec.rollout", {"maxSurge": 0, "maxUnavailable": 0}, "cannot both be 0"),
        ("$.spec.rollout", {"maxSurge": 1, "maxUnavailable": 0}, None),
        ("$.spec.runtime.modelConfig", {"dynamicBatching": {"preferredBatchSizes": [4]}}, "needs maxBatchSize > 0"),
        ("$.spec.runtime.modelConfig", {"maxBatchSize": 8, "dynamicBatching": {"preferredBatchSizes": [4, 16]}}, "<= maxBatchSize"),
        ("$.spec.runtime.modelConfig", {"maxBatchSize": 8, "dynamicBatching": {"preferredBatchSizes": [4, 8]}}, None),
        ("$.spec", {"resources": {"gpu": {"product": "A"}}, "scheduling": {"nodeSelector": {"nvidia.com/gpu.product": "B"}}}, "contradicts"),
        ("$.spec", {"resources": {"gpu": {"product": "A"}}, "scheduling": {"nodeSelector": {"nvidia.com/gpu.product": "A"}}}, None),
        ("$", {"metadata": {"name": "resnet"}}, None),
        ("$", {"metadata": {"name": "x" * 54}}, "at most 53"),
        ("$", {"metadata": {"name": "9lives"}}, "DNS-1035"),
    ],
)
def test_cel_rules(schema, path, value, expect):
    failed = violations(schema, path, value)
    if expect is None:
        assert failed == []
    else:
        assert any(expect in m for m in failed), failed


def test_model_name_is_immutable(schema):
    assert violations(schema, "$.spec.model.name", "a", old="a") == []
    assert any("immutable" in m for m in violations(schema, "$.spec.model.name", "b", old="a"))


# Structural defaulting as the API server does it (the same function `render` uses).
apply_defaults = validation.apply_defaults


@pytest.mark.parametrize("case", ["gpu", "mig", "multi-gpu", "cpu"])
def test_crd_defaults_equal_model_defaults(schema, case):
    """`render -f` (model defaults) and the operator (API-server defaults) must see the same spec."""
    body = load_case(case)
    defaulted = apply_defaults(schema["properties"]["spec"], copy.deepcopy(body["spec"]))
    assert api.InferenceServiceSpec.model_validate(defaulted) == api.InferenceServiceSpec.model_validate(body["spec"])
    # And the defaults the API server writes are exactly those the model would fill in.
    full = api.InferenceServiceSpec.model_validate(body["spec"]).model_dump(by_alias=True, exclude_none=True, mode="json")
    for key in ("runtime", "resources", "rollout"):
        assert defaulted[key].items() <= full[key].items()
    assert defaulted["replicas"] == full["replicas"]
