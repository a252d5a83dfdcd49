"""config.pbtxt: generated from the spec, or the spec's overrides merged into the model's own."""

import pytest

from inference_operator import api
from inference_operator.modelrepo import model_config

from .helpers import isvc_body

EXISTING = '''# exported by the training job
name: "old_name"
platform: "onnxruntime_onnx"
max_batch_size: 4
input [
  { name: "INPUT0", data_type: TYPE_FP32, dims: [ 16 ] }
]
output [ { name: "OUTPUT0" data_type: TYPE_FP32 dims: [ 16 ] } ]
dynamic_batching { preferred_batch_size: [ 2 ] }
parameters { key: "note" value: { string_value: "a } in a string" } }
'''


def spec(**kw):
    return api.parse(isvc_body(**kw)).spec


def test_no_settings_no_overrides():
    assert model_config.overrides(spec()) == ""


def test_overrides_from_the_spec():
    text = model_config.overrides(spec(
        model={"name": "m", "storageUri": "s3://b/m", "version": 3},
        runtime={"modelConfig": {"maxBatchSize": 8, "instanceCount": 2,
                                 "dynamicBatching": {"preferredBatchSizes": [4, 8], "maxQueueDelayMicroseconds": 100}},
                 "responseCache": {"size": "64Mi"}},
    ))
    assert "max_batch_size: 8" in text
    assert "preferred_batch_size: [ 4, 8 ]" in text and "max_queue_delay_microseconds: 100" in text
    assert "instance_group [ { count: 2 kind: KIND_GPU } ]" in text
    assert "versions: [ 3 ]" in text and "response_cache { enable: true }" in text
    cpu = model_config.overrides(spec(resources={"gpu": {"count": 0}}, runtime={"modelConfig": {"instanceCount": 1}}))
    assert "KIND_CPU" in cpu


def test_top_level_fields_skip_nesting_strings_and_comments():
    names = [name for name, _, _ in model_config.top_level_fields(EXISTING)]
    assert names == ["name", "platform", "max_batch_size", "input", "output", "dynamic_batching", "parameters"]


def test_merge_replaces_overridden_fields_and_keeps_the_rest():
    extra = "max_batch_size: 8\ndynamic_batching {\n  max_queue_delay_microseconds: 100\n}\n"
    merged = model_config.build("resnet", None, EXISTING, extra)
    fields = [name for name, _, _ in model_config.top_level_fields(merged)]
    assert fields.count("max_batch_size") == 1 and fields.count("dynamic_batching") == 1
    assert merged.startswith('name: "resnet"\n') and '"old_name"' not in merged
    assert "max_batch_size: 8" in merged and "max_batch_size: 4" not in merged
    assert 'INPUT0' in merged and 'a } in a string' in merged and "preferred_batch_size: [ 2 ]" not in merged


def test_adjacent_string_literals_are_one_value():
    text = 'default_model_filename: "mo" "del.py"\nmax_batch_size: 4\n'
    assert [n for n, _, _ in model_config.top_level_fields(text)] == ["default_model_filename", "max_batch_size"]
    merged = model_config.build("m", None, text, "max_batch_size: 8\n")
    assert merged.count("max_batch_size") == 1 and '"mo" "del.py"' in merged


def test_generated_config_needs_a_format():
    assert model_config.build("m", "onnx", None, "") == 'name: "m"\nbackend: "onnxruntime"\nmax_batch_size: 0\n'
    assert 'platform: "tensorrt_plan"' in model_config.build("m", "tensorrt_plan", None, "")
    assert model_config.build("m", "python", None, "max_batch_size: 8\n").count("max_batch_size") == 1
    with pytest.raises(model_config.ConfigError) as err:
        model_config.build("m", None, None, "")
    assert err.value.reason == "NotAModelRepository"


@pytest.mark.parametrize("broken", ["input [ { name: 'x' }", "max_batch_size:"])
def test_unreadable_config_is_an_error(broken):
    with pytest.raises(model_config.ConfigError):
        model_config.build("m", None, broken, "max_batch_size: 1\n")
