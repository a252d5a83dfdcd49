"""Autoscaling signals (issue #10, first step): the PromQL of each, pure."""

import pytest

from inference_operator.desired import signals

SEL = 'namespace="prod",inferenceservice="resnet"'


@pytest.mark.parametrize("signal,expected", [
    ("queueTime", 'sum by (pod) (rate(nv_inference_queue_duration_us{%s}[1m])) / '
                  'clamp_min(sum by (pod) (rate(nv_inference_request_success{%s}[1m])), 1e-9) / 1e6'),
    ("requestLatency", 'sum by (pod) (rate(nv_inference_request_duration_us{%s}[1m])) / '
                       'clamp_min(sum by (pod) (rate(nv_inference_request_success{%s}[1m])), 1e-9) / 1e6'),
    ("queueToComputeRatio", 'sum by (pod) (rate(nv_inference_queue_duration_us{%s}[1m])) / '
                            'clamp_min(sum by (pod) (rate(nv_inference_compute_infer_duration_us{%s}[1m])), 1e-9)'),
    ("pendingRequests", 'sum by (pod) (nv_inference_pending_request_count{%s})'),
    ("gpuUtilization", 'avg by (pod) (nv_gpu_utilization{%s}) * 100'),
])
def test_each_signal_per_pod_is_a_rate_with_a_denominator_clamped_away_from_zero(signal, expected):
    assert signals.query(signal, SEL, "1m", "pod") == expected.replace("%s", SEL)


def test_a_keda_query_is_one_number_for_the_inferenceservice_and_zero_when_nothing_is_scraped():
    q = signals.keda_query("queueTime", "prod", "resnet", "2m")
    assert q.startswith("sum(sum by (inferenceservice) (rate(nv_inference_queue_duration_us{")
    assert q.endswith(" or vector(0)") and "[2m]" in q
    custom = signals.keda_query("x", "prod", "resnet", "1m", custom="avg(my_metric{ {{selector}} })")
    assert custom == f"avg(my_metric{{ {SEL} }})"
    with pytest.raises(ValueError):
        signals.keda_query("cpu", "prod", "resnet", "1m")


def test_adapter_rules_render_as_the_adapter_renders_them():
    rule = signals.adapter_rule("queueTime")
    values = rule.as_values()
    assert values["name"] == {"as": "triton_queue_time_seconds"}
    assert values["seriesQuery"] == 'nv_inference_request_success{namespace!="",pod!=""}'
    assert values["resources"]["overrides"] == {"namespace": {"resource": "namespace"}, "pod": {"resource": "pod"}}
    rendered = signals.render_adapter(rule.metrics_query, 'namespace="prod",pod=~"a|b"', "pod")
    assert "<<" not in rendered and 'rate(nv_inference_queue_duration_us{namespace="prod",pod=~"a|b"}[1m])' in rendered
    assert "sum by (pod)" in rendered
    assert {signals.adapter_rule(s).name for s in signals.SIGNALS} == {
        "triton_queue_time_seconds", "triton_queue_to_compute_ratio", "triton_pending_requests",
        "triton_request_latency_seconds", "triton_gpu_utilization_percent"}
    assert signals.adapter_rule("gpuUtilization").series_query.startswith("nv_gpu_utilization{")
