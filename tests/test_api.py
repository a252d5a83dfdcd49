"""The pydantic models: defaults, aliases, and what they reject."""

import pydantic
import pytest

from inference_operator import api

from .helpers import isvc_body, load_case


def test_defaults_fill_a_minimal_spec():
    isvc = api.parse(isvc_body())
    spec = isvc.spec
    assert spec.replicas == 1
    assert spec.resources.gpu.count == 1
    assert spec.resources.gpu.resource_name == "nvidia.com/gpu"
    assert spec.resources.requests.cpu is None and spec.resources.limits.memory is None
    assert spec.resources.shared_memory_size == "1Gi"
    assert spec.rollout.max_surge == 1 and spec.rollout.max_unavailable == 0
    assert spec.runtime.startup_timeout_seconds == 1800
    assert isvc.status.conditions == []


@pytest.mark.parametrize("case", ["gpu", "mig", "multi-gpu", "cpu"])
def test_sample_cases_parse_and_round_trip(case):
    body = load_case(case)
    isvc = api.parse(body)
    dumped = isvc.spec.model_dump(by_alias=True, exclude_defaults=True, mode="json")
    assert api.InferenceServiceSpec.model_validate(dumped) == isvc.spec


def test_camel_case_aliases():
    isvc = api.parse(isvc_body(runtime={"modelConfig": {"maxBatchSize": 8}, "startupTimeoutSeconds": 600}))
    assert isvc.spec.runtime.model_config_overrides.max_batch_size == 8
    assert isvc.spec.runtime.startup_timeout_seconds == 600


def test_models_are_frozen():
    isvc = api.parse(isvc_body())
    with pytest.raises(pydantic.ValidationError):
        isvc.spec.replicas = 3


@pytest.mark.parametrize(
    "spec",
    [
        {"replicas": -1},
        {"resources": {"gpu": {"count": 17}}},
        {"resources": {"sharedMemorySize": "lots"}},
        {"resources": {"sharedMemorySize": "100m"}},
        {"resources": {"requests": {"cpu": "1Gi"}}},
        {"resources": {"limits": {"memory": "0"}}},
        {"runtime": {"startupTimeoutSeconds": 10}},
        {"model": {"name": "m"}},  # storageUri missing
        {"modelz": {}},  # unknown field
        {"model": {"name": "m", "storageUri": "pvc://x", "format": "caffe"}},
        {"scheduling": {"tolerations": [{"operator": "Maybe"}]}},
    ],
)
def test_invalid_specs_are_rejected(spec):
    body = isvc_body()
    body["spec"].update(spec)
    with pytest.raises(pydantic.ValidationError):
        api.parse(body)


def test_status_ignores_unknown_fields_and_none():
    body = isvc_body()
    body["status"] = {"observedGeneration": 1, "kopf": {"progress": {}}}
    assert api.parse(body).status.observed_generation == 1
    body["status"] = None
    assert api.parse(body).status == api.InferenceServiceStatus()
