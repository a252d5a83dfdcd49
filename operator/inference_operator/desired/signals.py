"""Autoscaling signals from Triton's own metrics (issue #10): the PromQL of each, per pod for
prometheus-adapter's rules and over the whole InferenceService for a KEDA trigger. Pure.

Every signal is defined for an idle model: a rate over the window, the denominator clamped away
from zero, so an idle pod reads 0 rather than NaN (which freezes an HPA). Triton's series are per
model and version; a pod's are summed first. Series are selected by the labels a kubernetes_sd
scrape puts on them (the README's scrape configuration): ``namespace``, ``pod`` and
``inferenceservice`` (the pod label ``serving.inference-operator.io/inferenceservice``).
"""

from __future__ import annotations

import dataclasses
from typing import Optional

from inference_operator.promql import quoted

NAMESPACE_LABEL = "namespace"
POD_LABEL = "pod"
INFERENCESERVICE_LABEL = "inferenceservice"
# Keeps a ratio defined when nothing was served in the window (1e-9 requests per second).
EPSILON = "1e-9"


@dataclasses.dataclass(frozen=True)
class Signal:
    """One named signal: its unit, and whether it adds up over pods (pending requests: a KEDA
    AverageValue, divided by replicas) or is an average (a KEDA Value)."""

    name: str
    unit: str  # seconds | ratio | requests | percent | custom
    additive: bool


SIGNALS = {s.name: s for s in (
    Signal("queueTime", "seconds", additive=False),
    Signal("queueToComputeRatio", "ratio", additive=False),
    Signal("pendingRequests", "requests", additive=True),
    Signal("requestLatency", "seconds", additive=False),
    Signal("gpuUtilization", "percent", additive=False),
)}


def _rate(metric: str, matchers: str, window: str, by: str) -> str:
    return f"sum by ({by}) (rate({metric}{{{matchers}}}[{window}]))"


def _per_request(numerator: str, denominator: str, matchers: str, window: str, by: str, scale: str) -> str:
    return (f"{_rate(numerator, matchers, window, by)} / "
            f"clamp_min({_rate(denominator, matchers, window, by)}, {EPSILON}){scale}")


def query(signal: str, matchers: str, window: str, by: str) -> str:
    """The PromQL of ``signal`` over the series ``matchers`` select, grouped ``by`` (``pod`` for a
    value per pod, ``inferenceservice`` for one over all of its pods)."""
    if signal == "queueTime":
        return _per_request("nv_inference_queue_duration_us", "nv_inference_request_success", matchers, window, by,
                            " / 1e6")
    if signal == "requestLatency":
        return _per_request("nv_inference_request_duration_us", "nv_inference_request_success", matchers, window,
                            by, " / 1e6")
    if signal == "queueToComputeRatio":
        return _per_request("nv_inference_queue_duration_us", "nv_inference_compute_infer_duration_us", matchers,
                            window, by, "")
    if signal == "pendingRequests":
        return f"sum by ({by}) (nv_inference_pending_request_count{{{matchers}}})"
    if signal == "gpuUtilization":
        # Triton reports it per GPU (0 to 1); a pod with several GPUs averages them, in percent.
        return f"avg by ({by}) (nv_gpu_utilization{{{matchers}}}) * 100"
    raise ValueError(f"unknown signal {signal}")


def matchers(namespace: str, inferenceservice: str) -> str:
    return f"{NAMESPACE_LABEL}={quoted(namespace)},{INFERENCESERVICE_LABEL}={quoted(inferenceservice)}"


def keda_query(signal: str, namespace: str, inferenceservice: str, window: str,
               custom: Optional[str] = None, empty_is_zero: bool = True) -> str:
    """One number for the whole InferenceService, as a KEDA Prometheus trigger wants it: an
    average signal over every pod's requests (a Value), an additive one summed (an AverageValue,
    which the HPA divides by the replicas). Empty (no pod scraped yet) reads 0, unless
    ``empty_is_zero`` is off (a plot draws no data as a gap, not a zero)."""
    sel = matchers(namespace, inferenceservice)
    text = custom.replace("{{selector}}", sel) if custom is not None else query(signal, sel, window,
                                                                               INFERENCESERVICE_LABEL)
    if custom is not None:
        return text
    return f"sum({text}) or vector(0)" if empty_is_zero else f"sum({text})"


@dataclasses.dataclass(frozen=True)
class AdapterRule:
    """A prometheus-adapter custom-metrics rule (its Helm chart's ``rules.custom`` entry)."""

    series_query: str
    name: str
    metrics_query: str

    def as_values(self) -> dict:
        return {
            "seriesQuery": self.series_query,
            "resources": {"overrides": {NAMESPACE_LABEL: {"resource": "namespace"}, POD_LABEL: {"resource": "pod"}}},
            "name": {"as": self.name},
            "metricsQuery": self.metrics_query,
        }


def metric_name(signal: str) -> str:
    """The custom metric an HPA asks for: triton_queue_time_seconds, ..."""
    return {
        "queueTime": "triton_queue_time_seconds",
        "queueToComputeRatio": "triton_queue_to_compute_ratio",
        "pendingRequests": "triton_pending_requests",
        "requestLatency": "triton_request_latency_seconds",
        "gpuUtilization": "triton_gpu_utilization_percent",
    }[signal]


def adapter_rule(signal: str, window: str = "1m") -> AdapterRule:
    """The adapter's rule: its Go template's <<.LabelMatchers>> selects the pods an HPA asks
    about (``namespace="ns",pod=~"a|b"``), <<.GroupBy>> is ``pod`` (the group-resource label)."""
    series = "nv_gpu_utilization" if signal == "gpuUtilization" else "nv_inference_request_success"
    text = query(signal, "<<.LabelMatchers>>", window, "<<.GroupBy>>")
    return AdapterRule(series_query=f'{series}{{{NAMESPACE_LABEL}!="",{POD_LABEL}!=""}}', name=metric_name(signal),
                       metrics_query=text)


def render_adapter(template: str, label_matchers: str, group_by: str) -> str:
    """What prometheus-adapter sends for a rule: its template with the HPA's pods filled in (the
    adapter's own <<.Series>>, <<.LabelMatchers>> and <<.GroupBy>>)."""
    return template.replace("<<.LabelMatchers>>", label_matchers).replace("<<.GroupBy>>", group_by)
