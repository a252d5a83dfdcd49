"""spec.autoscaling: the autoscaler an InferenceService scales with, built from its spec (issue #10),
and what status says of it. Pure builders; the signals' PromQL is signals.py's.

Both engines target the InferenceService's scale subresource, never a Deployment: the autoscaler
writes spec.replicas, and the operator turns it into Deployment replicas (divided between stable
and canary while a canary runs, rollout/split.py). So nothing but the operator writes a Deployment's
replicas, and a canary scales with its InferenceService.

- engine ``hpa``: an autoscaling/v2 HorizontalPodAutoscaler named after the InferenceService, with
  one ``Pods`` metric per target, served by prometheus-adapter with the rules of
  ``adapter_values`` (the README and charts/ carry them).
- engine ``keda``: a KEDA ScaledObject named after the InferenceService, one Prometheus trigger per
  target. An average (queue time, latency, ratio, GPU utilization) is one number over every pod's
  requests, a ``Value``; an additive signal (pending requests) is a sum, an ``AverageValue`` the
  HPA divides by the replicas. minReplicas 0 scales to zero, woken by pending requests.
"""

from __future__ import annotations

import dataclasses
import fractions
import math
import re
from typing import Any, Mapping, Optional

from inference_operator import api, naming
from inference_operator.config import OperatorConfig
from inference_operator.desired import signals
from inference_operator.observed import condition as condition_of

HPA_API_VERSION = "autoscaling/v2"
KEDA_API_VERSION = "keda.sh/v1alpha1"
SCALEDOBJECT_CRD = "scaledobjects.keda.sh"

# The scale-up stabilization window when status has not measured the revision's startup yet, and
# the least it is otherwise: a new replica's metrics settle in about two scrapes anyway.
DEFAULT_SCALE_UP_WINDOW = 60
MIN_SCALE_UP_WINDOW = 30
MAX_SCALE_UP_WINDOW = 900
SCALE_DOWN_WINDOW = 300
KEDA_FALLBACK_FAILURES = 3


def keda_hpa_name(name: str) -> str:
    """The HPA KEDA makes for a ScaledObject (its own naming)."""
    return f"keda-hpa-{name}"


# ---- values ---------------------------------------------------------------------------------------

_TIME = re.compile(r"^([0-9]+(?:\.[0-9]+)?)(us|ms|s)$")
_UNIT = {"us": fractions.Fraction(1, 10**6), "ms": fractions.Fraction(1, 1000), "s": fractions.Fraction(1)}


def value_of(target: api.AutoscalingTarget) -> fractions.Fraction:
    """A target's value in the signal's unit: seconds for times, percent for GPU utilization."""
    text = target.value or "0"
    m = _TIME.match(text)
    if m and target.name in api.TIME_SIGNALS:
        return fractions.Fraction(m.group(1)) * _UNIT[m.group(2)]
    return fractions.Fraction(text.rstrip("%"))


def quantity(value: fractions.Fraction) -> str:
    """A Kubernetes quantity in its canonical form (as the API server stores it): 4, 50m, 800u."""
    for suffix, scale in (("", 1), ("m", 1000), ("u", 10**6), ("n", 10**9)):
        scaled = value * scale
        if scaled.denominator == 1:
            return f"{scaled.numerator}{suffix}"
    return f"{math.ceil(value * 10**9)}n"


def decimal(value: fractions.Fraction) -> str:
    """A KEDA threshold (a float in a string): 0.05, 4."""
    text = f"{float(value):.9f}".rstrip("0").rstrip(".")
    return text or "0"


def additive(target: api.AutoscalingTarget) -> bool:
    """Adds up over pods (a KEDA AverageValue) rather than being an average (a Value)."""
    if target.query is not None:
        return target.per_replica
    return signals.SIGNALS[target.name].additive


def hpa_metric_name(target: api.AutoscalingTarget) -> str:
    """The custom metric the HPA asks prometheus-adapter for: the README rule's name for a signal,
    the target's own name for a query (its adapter rule is the user's)."""
    return signals.metric_name(target.name) if target.query is None else target.name


# ---- behavior -------------------------------------------------------------------------------------


def scale_up_window(startup_seconds: Optional[int]) -> int:
    """The default scale-up stabilization: as long as a new replica of this revision took to become
    ready (so replicas still loading are not asked for twice), rounded up to 10 s, within bounds."""
    if startup_seconds is None:
        return DEFAULT_SCALE_UP_WINDOW
    return min(MAX_SCALE_UP_WINDOW, max(MIN_SCALE_UP_WINDOW, -(-startup_seconds // 10) * 10))


def _rules(rules: api.ScalingRules, window: int, policies: list[dict[str, Any]]) -> dict[str, Any]:
    chosen = [p.model_dump(by_alias=True) for p in rules.policies] if rules.policies else policies
    return {
        "stabilizationWindowSeconds": window if rules.stabilization_window_seconds is None
        else rules.stabilization_window_seconds,
        "selectPolicy": rules.select_policy or "Max",
        "policies": chosen,
    }


def behavior(spec: api.Autoscaling, startup_seconds: Optional[int]) -> dict[str, Any]:
    """The HPA's behavior, every field set (so the API server stores it as sent): up fast, down slowly."""
    return {
        "scaleUp": _rules(spec.behavior.scale_up, scale_up_window(startup_seconds), [
            {"type": "Percent", "value": 100, "periodSeconds": 60},
            {"type": "Pods", "value": 4, "periodSeconds": 60}]),
        "scaleDown": _rules(spec.behavior.scale_down, SCALE_DOWN_WINDOW, [
            {"type": "Pods", "value": 1, "periodSeconds": 120}]),
    }


# ---- the autoscaler -------------------------------------------------------------------------------


def _meta(isvc: api.InferenceService) -> dict[str, Any]:
    return {"name": naming.names(isvc.name).autoscaler, "namespace": isvc.namespace,
            "labels": naming.labels(isvc.name)}


def _target_ref(isvc: api.InferenceService) -> dict[str, Any]:
    return {"apiVersion": api.API_VERSION, "kind": api.KIND, "name": isvc.name}


def hpa(isvc: api.InferenceService, startup_seconds: Optional[int]) -> dict[str, Any]:
    spec = isvc.spec.autoscaling
    assert spec is not None
    metrics = [{
        "type": "Pods",
        "pods": {"metric": {"name": hpa_metric_name(t)},
                 "target": {"type": "AverageValue", "averageValue": quantity(value_of(t))}},
    } for t in spec.targets]
    return {
        "apiVersion": HPA_API_VERSION,
        "kind": "HorizontalPodAutoscaler",
        "metadata": _meta(isvc),
        "spec": {
            "scaleTargetRef": _target_ref(isvc),
            "minReplicas": spec.min_replicas,
            "maxReplicas": spec.max_replicas,
            "metrics": metrics,
            "behavior": behavior(spec, startup_seconds),
        },
    }


def server_address(spec: api.Autoscaling, config: OperatorConfig) -> Optional[str]:
    return spec.keda.server_address or config.prometheus_url


def _trigger(isvc: api.InferenceService, target: api.AutoscalingTarget, address: str,
             activation: Optional[int]) -> dict[str, Any]:
    spec = isvc.spec.autoscaling
    assert spec is not None
    metadata = {
        "serverAddress": address,
        "query": signals.keda_query(target.name, isvc.namespace, isvc.name, spec.window, custom=target.query),
        "threshold": decimal(value_of(target)),
    }
    if activation is not None:
        metadata["activationThreshold"] = str(activation)
    trigger: dict[str, Any] = {
        "type": "prometheus",
        "name": target.name,
        "metricType": "AverageValue" if additive(target) else "Value",
        "metadata": metadata,
    }
    if spec.keda.authentication_ref:
        trigger["authenticationRef"] = {"name": spec.keda.authentication_ref}
    return trigger


def scaled_object(isvc: api.InferenceService, address: str, startup_seconds: Optional[int]) -> dict[str, Any]:
    """The ScaledObject. With minReplicas 0, pending requests above keda.activationPendingRequests
    wake the InferenceService (a pendingRequests trigger is added when it is not a target)."""
    spec = isvc.spec.autoscaling
    assert spec is not None
    to_zero = spec.min_replicas == 0
    targets = list(spec.targets)
    if to_zero and not any(t.name == "pendingRequests" for t in targets):
        # A value no queue reaches: this trigger only wakes, the targets scale.
        targets.append(api.AutoscalingTarget(name="pendingRequests", value="1000000"))
    triggers = [_trigger(isvc, t, address, spec.keda.activation_pending_requests
                         if to_zero and t.name == "pendingRequests" else None) for t in targets]
    result = {
        "apiVersion": KEDA_API_VERSION,
        "kind": "ScaledObject",
        "metadata": _meta(isvc),
        "spec": {
            "scaleTargetRef": _target_ref(isvc),
            "minReplicaCount": spec.min_replicas,
            "maxReplicaCount": spec.max_replicas,
            "pollingInterval": spec.keda.polling_interval,
            "cooldownPeriod": spec.keda.cooldown_period,
            # scalingModifiers as KEDA's operator writes it back (empty), so the object reads as sent.
            "advanced": {"horizontalPodAutoscalerConfig": {"behavior": behavior(spec, startup_seconds)},
                         "scalingModifiers": {}},
            "triggers": triggers,
        },
    }
    if spec.keda.fallback_replicas is not None:
        # behavior as KEDA's CRD defaults it, so that the stored object reads as sent (no drift).
        result["spec"]["fallback"] = {"failureThreshold": KEDA_FALLBACK_FAILURES,
                                      "replicas": spec.keda.fallback_replicas, "behavior": "static"}
    return result


def children(isvc: api.InferenceService, config: OperatorConfig, crds: frozenset[str]) -> list[dict[str, Any]]:
    """The autoscaler of ``isvc``, unstamped: none without spec.autoscaling, nor for the keda engine
    where KEDA is not installed or no Prometheus is known (the condition says which)."""
    spec = isvc.spec.autoscaling
    if spec is None:
        return []
    startup = isvc.status.startup_seconds.get(isvc.status.revision or "")
    if spec.engine == "hpa":
        return [hpa(isvc, startup)]
    address = server_address(spec, config)
    if SCALEDOBJECT_CRD not in crds or not address:
        return []
    return [scaled_object(isvc, address, startup)]


# ---- status ---------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Observation:
    """What a pass knows of its autoscaler: the object the operator wrote (HPA or ScaledObject), the
    HPA that does the scaling (the same HPA, or KEDA's own), and a write the API server refused."""

    autoscaler: Optional[Mapping[str, Any]] = None
    hpa: Optional[Mapping[str, Any]] = None
    rejected: Optional[str] = None


def replicas_of(hpa_obj: Optional[Mapping[str, Any]]) -> tuple[Optional[int], Optional[int]]:
    status = (hpa_obj or {}).get("status") or {}
    return status.get("currentReplicas"), status.get("desiredReplicas")


def condition(isvc: api.InferenceService, config: OperatorConfig, crds: frozenset[str],
              seen: Observation) -> Optional[tuple[str, str, str]]:
    """The Autoscaling condition (status, reason, message), None without spec.autoscaling. True
    when the autoscaler exists and can scale (the HPA's AbleToScale and ScalingActive, KEDA's
    Ready); False says why not, and the Deployments keep their replicas meanwhile."""
    spec = isvc.spec.autoscaling
    if spec is None:
        return None
    keeps = f"spec.replicas ({isvc.spec.replicas}) is kept meanwhile."
    if spec.engine == "keda" and SCALEDOBJECT_CRD not in crds:
        return ("False", "KEDANotInstalled",
                f"autoscaling.engine is keda, but the CRD {SCALEDOBJECT_CRD} is not installed in this cluster; {keeps}")
    if spec.engine == "keda" and not server_address(spec, config):
        return ("False", "NoPrometheus", "autoscaling.engine is keda, but no Prometheus is known: set "
                "autoscaling.keda.serverAddress, or INFERENCE_OPERATOR_PROMETHEUS_URL for the operator; " + keeps)
    kind = "HorizontalPodAutoscaler" if spec.engine == "hpa" else "ScaledObject"
    name = naming.names(isvc.name).autoscaler
    if seen.rejected:
        return ("False", "AutoscalerRejected", f"the API server refused {kind} {name}: {seen.rejected}; {keeps}")
    if seen.autoscaler is None:
        return ("Unknown", "AutoscalerPending", f"{kind} {name} is being created.")
    current, desired = replicas_of(seen.hpa)
    counts = f"{current if current is not None else '?'} current, {desired if desired is not None else '?'} desired"
    activity = ""
    if spec.engine == "keda":
        ready = condition_of(seen.autoscaler, "Ready")
        if ready is None:
            return ("Unknown", "AutoscalerPending", f"KEDA has not reconciled ScaledObject {name} yet.")
        if ready.get("status") != "True":
            return ("False", ready.get("reason") or "NotReady", f"ScaledObject {name}: {ready.get('message', '')}")
        fallback = condition_of(seen.autoscaler, "Fallback") or {}
        if fallback.get("status") == "True":
            return ("False", "Fallback", f"ScaledObject {name} cannot query Prometheus and holds "
                    f"{spec.keda.fallback_replicas} replicas (fallback): {fallback.get('message', '')}")
        active = condition_of(seen.autoscaler, "Active") or {}
        if spec.min_replicas == 0 and active.get("status") == "False" and isvc.spec.replicas == 0:
            return ("True", "ScaledToZero", f"ScaledObject {name} is inactive: scaled to zero.")
        # KEDA's Active: some trigger is above its activation threshold (with minReplicas 0, what
        # keeps the InferenceService from scaling to zero).
        activity = {"True": "; active", "False": "; inactive (no trigger above its activation threshold)"}.get(
            active.get("status") or "", "")
    hpa_obj = seen.hpa or {}
    for ctype in ("AbleToScale", "ScalingActive"):
        c = condition_of(hpa_obj, ctype)
        if c is not None and c.get("status") == "False":
            return ("False", c.get("reason") or ctype, f"{kind} {name} ({counts}): {c.get('message', '')}")
    if condition_of(hpa_obj, "ScalingActive") is None:
        return ("Unknown", "AutoscalerPending", f"{kind} {name} exists; its HPA has not computed a scale yet.")
    limited = condition_of(hpa_obj, "ScalingLimited") or {}
    why = f"; {limited.get('message', '')}" if limited.get("status") == "True" else ""
    return ("True", "ScalingActive", f"{kind} {name}: scaling between {spec.min_replicas} and {spec.max_replicas} "
            f"replicas ({counts}){activity}{why}.")


# ---- prometheus-adapter ---------------------------------------------------------------------------


def adapter_values(window: str = "1m", isvcs: tuple[api.InferenceService, ...] = ()) -> dict[str, Any]:
    """The prometheus-adapter Helm chart's values for every named signal (``rules.custom``), and a
    rule for each query target of ``isvcs`` with the HPA engine: exposed under the target's name
    on Triton's pods, its {{selector}} the pods the HPA asks about (it must group ``by (pod)``).
    Raises ValueError for two queries under one name (the adapter's metric names are global)."""
    rules = [signals.adapter_rule(s, window).as_values() for s in signals.SIGNALS]
    custom: dict[str, str] = {}
    for isvc in isvcs:
        spec = isvc.spec.autoscaling
        for target in (spec.targets if spec is not None and spec.engine == "hpa" else []):
            if target.query is None:
                continue
            query = target.query.replace("{{selector}}", "<<.LabelMatchers>>")
            if custom.setdefault(target.name, query) != query:
                raise ValueError(f"two autoscaling queries are named {target.name}: the adapter's metric names are "
                                 "cluster-wide; name them apart")
    for name, query in custom.items():
        rules.append(signals.AdapterRule(series_query=signals.adapter_rule("queueTime").series_query, name=name,
                                         metrics_query=query).as_values())
    return {"rules": {"default": False, "custom": rules}}
