"""A fetched repository, with the spec's config overrides merged, is loaded and served by the real
tritonserver (python backend, CPU)."""

import json
import urllib.request

from inference_operator import api
from inference_operator.modelrepo import fetch as storage
from inference_operator.modelrepo import model_config

from .helpers import isvc_body, tar_gz
from .servers import http_server
from .triton import TritonServer, python_backend_dir, require_triton

CONFIG = """name: "exported"
backend: "python"
max_batch_size: 4
input [ { name: "INPUT0" data_type: TYPE_FP32 dims: [ 4 ] } ]
output [ { name: "OUTPUT0" data_type: TYPE_FP32 dims: [ 4 ] } ]
"""
MODEL_PY = b'''import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        responses = []
        for request in requests:
            x = pb_utils.get_input_tensor_by_name(request, "INPUT0").as_numpy()
            responses.append(pb_utils.InferenceResponse([pb_utils.Tensor("OUTPUT0", (x * 2).astype(np.float32))]))
        return responses
'''


def test_fetched_model_loads_in_tritonserver_with_the_overrides(tmp_path):
    home = require_triton()
    web = tmp_path / "web"
    web.mkdir()
    (web / "doubler.tar.gz").write_bytes(tar_gz({"export/config.pbtxt": CONFIG.encode(), "export/1/model.py": MODEL_PY}))
    spec = api.parse(isvc_body(
        model={"name": "doubler", "storageUri": "https://x/doubler.tar.gz", "format": "python"},
        resources={"gpu": {"count": 0}},
        runtime={"modelConfig": {"maxBatchSize": 8, "instanceCount": 2,
                                 "dynamicBatching": {"preferredBatchSizes": [4, 8], "maxQueueDelayMicroseconds": 500}}},
    )).spec
    with http_server(web) as url:
        storage.fetch(f"{url}/doubler.tar.gz", tmp_path / "repo", "doubler", fmt="python",
                      config_overrides=model_config.overrides(spec))

    server = TritonServer(home, tmp_path / "repo", python_backend_dir(tmp_path, home), "doubler")
    try:
        server.wait_ready("/v2/models/doubler/ready")
        with urllib.request.urlopen(server.url("/v2/models/doubler/config")) as r:
            config = json.load(r)
        assert config["name"] == "doubler" and config["max_batch_size"] == 8
        assert config["dynamic_batching"]["preferred_batch_size"] == [4, 8]
        assert int(config["dynamic_batching"]["max_queue_delay_microseconds"]) == 500
        assert [(g["count"], g["kind"]) for g in config["instance_group"]] == [(2, "KIND_CPU")]
        body = json.dumps({"inputs": [{"name": "INPUT0", "shape": [2, 4], "datatype": "FP32",
                                       "data": [1, 2, 3, 4, 5, 6, 7, 8]}]}).encode()
        request = urllib.request.Request(server.url("/v2/models/doubler/infer"), data=body, method="POST")
        with urllib.request.urlopen(request) as r:
            (out,) = json.load(r)["outputs"]
        assert out["shape"] == [2, 4] and out["data"] == [2, 4, 6, 8, 10, 12, 14, 16]
    finally:
        server.stop()


def test_a_linked_claim_repository_loads_in_tritonserver(tmp_path):
    """pvc:// with overrides: the version directory is a link into the (read-only) claim."""
    home = require_triton()
    claim = tmp_path / "claim" / "repo" / "doubler"
    (claim / "1").mkdir(parents=True)
    (claim / "config.pbtxt").write_text(CONFIG)
    (claim / "1" / "model.py").write_bytes(MODEL_PY)
    storage.fetch(f"file://{tmp_path / 'claim' / 'repo'}", tmp_path / "repo", "doubler",
                  config_overrides="max_batch_size: 2\n")
    assert (tmp_path / "repo" / "doubler" / "1").is_symlink()
    server = TritonServer(home, tmp_path / "repo", python_backend_dir(tmp_path, home), "doubler")
    try:
        server.wait_ready("/v2/models/doubler/ready")
        with urllib.request.urlopen(server.url("/v2/models/doubler/config")) as r:
            assert json.load(r)["max_batch_size"] == 2
    finally:
        server.stop()
