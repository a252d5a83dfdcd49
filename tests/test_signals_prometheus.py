"""Autoscaling signals against a real Prometheus scraping a real tritonserver whose model takes
20 ms a request on one instance: every signal is defined (0) when idle, and under a load of four
concurrent clients the queue builds to what arrivals above the service rate imply."""

from __future__ import annotations

import time

import pytest

from inference_operator import api
from inference_operator.config import OperatorConfig
from inference_operator.desired import autoscaling, signals

from .canary_model import Load, write_model
from .prometheus import Prometheus, require_prometheus
from .triton import TritonServer, python_backend_dir, require_triton

MODEL = "resnet"
SERVICE_MS = 20
CLIENTS = 4


def value(result: list[dict]) -> float:
    (sample,) = result
    return float(sample["value"][1])


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    home = require_triton()
    require_prometheus()
    root = tmp_path_factory.mktemp("signals")
    write_model(root / "pod" / "repo", MODEL, delay_ms=SERVICE_MS)
    server = TritonServer(home, root / "pod" / "repo", python_backend_dir(root, home), MODEL)
    try:
        server.wait_ready(f"/v2/models/{MODEL}/ready")
        labels = {"namespace": "prod", "pod": "resnet-predictor-0", "inferenceservice": MODEL}
        with Prometheus([(f"127.0.0.1:{server.metrics}", labels)], workdir=root / "prometheus") as prom:
            # Two samples in the window: a rate is defined from the second scrape on.
            prom.wait_for('rate(nv_inference_request_success{inferenceservice="resnet"}[5s])', timeout=30)
            yield server, prom
    finally:
        server.stop()


# What the operator ships, as it ships it: the triggers of the ScaledObject it builds for every
# signal, and the adapter rules of the README's values block, at a 5 s window (scraped every second).
SCALED = api.parse({"metadata": {"name": MODEL, "namespace": "prod"}, "spec": {
    "model": {"name": MODEL, "storageUri": "pvc://models/repo"},
    "autoscaling": {"engine": "keda", "maxReplicas": 4, "window": "5s", "targets": [
        {"name": name, "value": "80%" if name == "gpuUtilization" else "1"} for name in api.SIGNALS]}}})
(SCALED_OBJECT,) = autoscaling.children(SCALED, OperatorConfig(prometheus_url="http://127.0.0.1:9090"),
                                        frozenset({autoscaling.SCALEDOBJECT_CRD}))
TRIGGERS = {t["name"]: t["metadata"]["query"] for t in SCALED_OBJECT["spec"]["triggers"]}
RULES = {signals.metric_name(name): rule["metricsQuery"]
         for name, rule in zip(signals.SIGNALS, autoscaling.adapter_values("5s")["rules"]["custom"])}


def measure(prom: Prometheus) -> dict[str, tuple[float, float]]:
    """Each signal as KEDA asks it (over the InferenceService) and as the adapter does (per pod)."""
    result = {}
    for name in ("queueTime", "queueToComputeRatio", "pendingRequests", "requestLatency"):
        keda = value(prom.query(TRIGGERS[name]))
        adapter = value(prom.query(signals.render_adapter(
            RULES[signals.metric_name(name)], 'namespace="prod",pod=~"resnet-predictor-0"', "pod")))
        result[name] = (keda, adapter)
    return result


def test_every_signal_is_defined_and_zero_when_idle(stack):
    _, prom = stack
    idle = measure(prom)
    print("idle:", idle)
    assert idle == {name: (0.0, 0.0) for name in idle}
    # No GPU here: Triton exports no nv_gpu_utilization, the adapter finds no series (the HPA
    # then reports the metric missing), and KEDA's trigger reads a defined 0.
    assert value(prom.query(TRIGGERS["gpuUtilization"])) == 0.0
    assert prom.query(signals.render_adapter(
        RULES["triton_gpu_utilization_percent"], 'namespace="prod",pod=~"resnet-predictor-0"', "pod")) == []


def test_under_load_the_queue_builds_as_arrivals_above_the_service_rate_imply(stack):
    server, prom = stack
    loads = [Load([server.url("")], MODEL, rate_per_second=100, duration_s=12) for _ in range(CLIENTS)]
    for load in loads:
        load.start()
    try:
        time.sleep(8)  # a full 5 s window of steady load, scraped every second
        busy = measure(prom)
    finally:
        for load in loads:
            load.stop()
    print("under load:", busy)
    assert sum(load.failed for load in loads) == 0
    queue, _ = busy["queueTime"]
    latency, _ = busy["requestLatency"]
    ratio, _ = busy["queueToComputeRatio"]
    # Four clients on one 20 ms instance: each request waits for about three others.
    assert 0.6 * (CLIENTS - 1) * SERVICE_MS / 1000 < queue < 1.5 * (CLIENTS - 1) * SERVICE_MS / 1000
    assert latency > queue + 0.8 * SERVICE_MS / 1000
    assert 0.6 * (CLIENTS - 1) < ratio < 1.5 * (CLIENTS - 1)
    assert busy["pendingRequests"][0] >= 1  # requests waiting, at the scrape's instant
    for name, (keda, adapter) in busy.items():
        if name != "pendingRequests":  # a gauge, read at two scrapes' instants
            assert keda == pytest.approx(adapter, rel=0.05), name
    time.sleep(7)  # the window past the load: idle again, and defined
    after = measure(prom)
    print("after the load:", after)
    assert after == {name: (0.0, 0.0) for name in after}
