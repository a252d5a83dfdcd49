"""A Triton python-backend model with injectable latency and failures, a one-request client, and a
bounded load generator: the moving parts of the canary analysis process tests."""

from __future__ import annotations

import json
import pathlib
import threading
import time
import urllib.error
import urllib.request

CONFIG = """name: "{name}"
backend: "python"
max_batch_size: 0
input [ {{ name: "INPUT0" data_type: TYPE_FP32 dims: [ 4 ] }} ]
output [ {{ name: "OUTPUT0" data_type: TYPE_FP32 dims: [ 4 ] }} ]
instance_group [ {{ count: 1 kind: KIND_CPU }} ]
parameters {{ key: "delay_ms" value: {{ string_value: "{delay_ms}" }} }}
parameters {{ key: "failure_rate" value: {{ string_value: "{failure_rate}" }} }}
"""

# Failures are deterministic: the k-th request (k = 1, 2, ...) fails when floor(k*rate) steps past
# floor((k-1)*rate), so rate 0.5 fails every 2nd request and 1.0 every request.
#
# Only a raised TritonModelException makes this Triton count nv_inference_request_failure (an error
# *response* is counted as a success). Raising fails every request of the execute() call, so a
# failure is exact only when the call holds one request: the model keeps one instance and the
# callers (Load, infer) send one request at a time per thread. When a call does hold several
# requests, it raises if all of them are due to fail; otherwise the failing ones get an error
# response, which Triton counts as a success (a known undercount, not an overcount).
MODEL_PY = '''import json
import math
import time

import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        parameters = json.loads(args["model_config"]).get("parameters", {})

        def value(key):
            return float(parameters.get(key, {}).get("string_value", "0") or 0)

        self.delay = value("delay_ms") / 1000.0
        self.rate = value("failure_rate")
        self.count = 0

    def fails(self):
        self.count += 1
        k = self.count
        return math.floor(k * self.rate) != math.floor((k - 1) * self.rate)

    def execute(self, requests):
        outcomes = []
        for request in requests:
            if self.delay > 0:
                time.sleep(self.delay)
            outcomes.append(self.fails())
        if outcomes and all(outcomes):
            raise pb_utils.TritonModelException("injected failure")
        responses = []
        for request, failed in zip(requests, outcomes):
            if failed:
                responses.append(pb_utils.InferenceResponse(
                    output_tensors=[], error=pb_utils.TritonError("injected failure")))
                continue
            x = pb_utils.get_input_tensor_by_name(request, "INPUT0").as_numpy()
            responses.append(pb_utils.InferenceResponse([pb_utils.Tensor("OUTPUT0", (x * 2).astype(np.float32))]))
        return responses
'''


def write_model(repository: pathlib.Path, name: str, delay_ms: float = 0, failure_rate: float = 0.0) -> None:
    """Writes <repository>/<name>/config.pbtxt and <name>/1/model.py."""
    if not 0.0 <= failure_rate <= 1.0:
        raise ValueError(f"failure_rate must be in [0, 1], not {failure_rate}")
    if delay_ms < 0:
        raise ValueError(f"delay_ms must be >= 0, not {delay_ms}")
    model = repository / name
    (model / "1").mkdir(parents=True, exist_ok=True)
    (model / "config.pbtxt").write_text(CONFIG.format(name=name, delay_ms=delay_ms, failure_rate=failure_rate))
    (model / "1" / "model.py").write_text(MODEL_PY)


BODY = json.dumps({"inputs": [{"name": "INPUT0", "shape": [4], "datatype": "FP32", "data": [1, 2, 3, 4]}]}).encode()


def infer(url_base: str, model: str, timeout: float = 10) -> bool:
    """One KServe v2 HTTP inference: True on 200, False on an HTTP error status. A connection error
    (server gone, refused) is raised: it is not an answer from the model."""
    request = urllib.request.Request(f"{url_base.rstrip('/')}/v2/models/{model}/infer", data=BODY, method="POST",
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as r:
            r.read()
            return r.status == 200
    except urllib.error.HTTPError as e:
        e.read()
        e.close()
        return False


class Load:
    """rate_per_second requests, round-robin over targets, for duration_s, from one background thread
    (so one request is in flight at a time). Never sends more than int(rate * duration) requests.
    Counts sent, ok (200) and failed (HTTP error, or a connection error, which also lands in errors)."""

    def __init__(self, targets: list[str], model: str, rate_per_second: float, duration_s: float) -> None:
        if not targets:
            raise ValueError("no targets")
        if rate_per_second <= 0 or duration_s <= 0:
            raise ValueError("rate_per_second and duration_s must be > 0")
        self.targets = list(targets)
        self.model = model
        self.rate = rate_per_second
        self.limit = int(rate_per_second * duration_s)
        self.sent = 0
        self.ok = 0
        self.failed = 0
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="canary-load", daemon=True)

    def _run(self) -> None:
        start = time.monotonic()
        for i in range(self.limit):
            delay = start + i / self.rate - time.monotonic()
            if (delay > 0 and self._stop.wait(delay)) or self._stop.is_set():
                return
            target = self.targets[i % len(self.targets)]
            self.sent += 1
            try:
                good = infer(target, self.model)
            except OSError as e:
                self.errors.append(f"{target}: {e}")
                good = False
            if good:
                self.ok += 1
            else:
                self.failed += 1

    def start(self) -> "Load":
        self._thread.start()
        return self

    def join(self, timeout: float | None = None) -> None:
        """Waits for the load to finish on its own (after about duration_s)."""
        self._thread.join(timeout)

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()

    def __enter__(self) -> "Load":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
