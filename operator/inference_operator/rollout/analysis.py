"""A canary's analysis: the PromQL of each check, read from Triton's own metrics, and its verdict.

Building queries and judging values is pure (``queries``, ``judge``); ``run`` is the one place that
asks Prometheus, through prometheus-api-client, with a timeout on every call. Series are told apart
by the labels a ``kubernetes_sd`` scrape puts on them (the README's scrape configuration): the
namespace, the pod's revision label, and Triton's own ``model`` label.

Verdicts, per check and for the whole analysis:
- Pass: every bound of the check was measured and held;
- Fail: a bound was measured and broken (with the value and the bound);
- Inconclusive: not enough to judge: fewer requests than ``minRequests``, no series, NaN. No data
  is never a pass;
- Error: Prometheus could not be reached or answered with an error. Neither a pass nor a failure.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Optional, Sequence

from inference_operator import api
from inference_operator.promql import Answer, Query, QueryError, promql_duration, quoted, seconds

PASS, FAIL, INCONCLUSIVE, ERROR = "Pass", "Fail", "Inconclusive", "Error"

# Labels of the scraped series (see the README's scrape configuration).
NAMESPACE_LABEL = "namespace"
REVISION_LABEL = "revision"
MODEL_LABEL = "model"  # Triton's own


def selector(namespace: str, revision: str, model: str) -> str:
    """The label matchers of one revision's series, without braces (a check's {{selector}})."""
    return (f"{NAMESPACE_LABEL}={quoted(namespace)},{REVISION_LABEL}={quoted(revision)},"
            f"{MODEL_LABEL}={quoted(model)}")


def _increase(metric: str, sel: str, window: str) -> str:
    return f"sum(increase({metric}{{{sel}}}[{window}]))"


def requests_query(sel: str, window: str) -> str:
    """Requests served in the window, failed ones included (none failed: no failure series)."""
    return (f"{_increase('nv_inference_request_success', sel, window)} + "
            f"({_increase('nv_inference_request_failure', sel, window)} or vector(0))")


def _per_request(metrics: Sequence[str], sel: str, window: str) -> str:
    """Average microseconds per successful request, in seconds: the counters' increase over the
    successes' (a rate over a rate, the window cancels)."""
    total = " + ".join(_increase(m, sel, window) for m in metrics)
    return f"({total}) / {_increase('nv_inference_request_success', sel, window)} / 1e6"


def check_query(check: api.Check, sel: str, window: str) -> str:
    """The PromQL of one check for one revision; its value is a fraction (errorRate), seconds (the
    times) or what a custom query returns."""
    if check.query is not None:
        return check.query.replace("{{selector}}", sel)
    if check.name == "errorRate":
        failed = f"({_increase('nv_inference_request_failure', sel, window)} or vector(0))"
        return f"{failed} / ({requests_query(sel, window)})"
    if check.name == "queueTime":
        return _per_request(["nv_inference_queue_duration_us"], sel, window)
    if check.name == "requestLatency":
        return _per_request(["nv_inference_request_duration_us"], sel, window)
    if check.name == "computeTime":
        return _per_request(["nv_inference_compute_input_duration_us", "nv_inference_compute_infer_duration_us",
                             "nv_inference_compute_output_duration_us"], sel, window)
    if check.name == "latencyQuantile":
        # Triton's summaries are per process and cannot be merged: the worst pod's quantile. A
        # summary covers its own span (Triton's, not the window): minRequests keeps a quiet
        # canary from passing on old requests, but the quantile may mix in some from before.
        return f'max(nv_inference_request_summary_us{{{sel},quantile="{check.quantile:g}"}}) / 1e6'
    raise ValueError(f"unknown check {check.name}")


def bound_value(check: api.Check) -> Optional[float]:
    """The absolute bound in the unit the check's query returns."""
    if check.max is None:
        return None
    if check.max.endswith("%"):
        return float(check.max[:-1]) / 100
    if check.query is not None:
        return float(check.max)
    return seconds(check.max)


def increase_value(check: api.Check) -> Optional[float]:
    return None if check.max_increase is None else float(check.max_increase[:-1]) / 100


@dataclasses.dataclass(frozen=True)
class Queries:
    """Everything one analysis asks Prometheus: the canary's requests, and per check the canary's
    query and (for a relative bound) the stable's."""

    requests: str
    canary: dict[str, str]
    stable: dict[str, str]


def queries(analysis: api.Analysis, namespace: str, model: str, canary: str, stable: Optional[str]) -> Queries:
    window = promql_duration(seconds(analysis.window or analysis.interval))
    canary_sel = selector(namespace, canary, model)
    stable_sel = selector(namespace, stable, model) if stable else None
    return Queries(
        requests=requests_query(canary_sel, window),
        canary={c.name: check_query(c, canary_sel, window) for c in analysis.checks},
        stable={c.name: check_query(c, stable_sel, window)
                for c in analysis.checks if c.max_increase is not None and stable_sel is not None},
    )


def _shown(check: api.Check, value: float) -> str:
    if check.name == "errorRate":
        return f"{value * 100:.3g}%"
    if check.query is None:
        return f"{value * 1000:.4g}ms"
    return f"{value:.4g}"


@dataclasses.dataclass(frozen=True)
class Verdict:
    result: str
    checks: tuple[api.CheckResult, ...]
    requests: Optional[float] = None
    message: str = ""

    def failed(self) -> str:
        """The failed checks with their values and bounds, for an Event."""
        return "; ".join(f"{c.name}: {c.message}" for c in self.checks if c.result == FAIL)


def _bounds(check: api.Check) -> str:
    return ", ".join(b for b in (check.max and f"max {check.max}",
                                 check.max_increase and f"maxIncrease {check.max_increase}") if b)


def _judge_check(check: api.Check, value: Answer, stable: Answer) -> api.CheckResult:
    bound_text = _bounds(check)
    if value is None:
        return api.CheckResult(name=check.name, result=INCONCLUSIVE, bound=bound_text, stable=stable,
                               message="no data for the canary")
    broken, unknown = [], []
    limit = bound_value(check)
    if limit is not None and value > limit:
        broken.append(f"{_shown(check, value)} > max {check.max}")
    increase = increase_value(check)
    if increase is not None:
        if stable is None:
            unknown.append("no data for the stable revision")
        elif value > stable * (1 + increase) and not math.isclose(value, stable):
            broken.append(f"{_shown(check, value)} > stable {_shown(check, stable)} + {check.max_increase}")
    if broken:
        return api.CheckResult(name=check.name, result=FAIL, value=value, stable=stable, bound=bound_text,
                               message="; ".join(broken))
    if unknown:
        return api.CheckResult(name=check.name, result=INCONCLUSIVE, value=value, bound=bound_text,
                               message="; ".join(unknown))
    held = f"{_shown(check, value)}" + (f" (stable {_shown(check, stable)})" if stable is not None else "")
    return api.CheckResult(name=check.name, result=PASS, value=value, stable=stable, bound=bound_text,
                           message=f"{held} within {bound_text}")


def judge(analysis: api.Analysis, requests: Answer, canary: dict[str, Answer], stable: dict[str, Answer]) -> Verdict:
    """The verdict from the answers (pure). Fewer requests than minRequests makes every check
    inconclusive, whatever its value: a few requests say nothing of a model."""
    if requests is None or requests < analysis.min_requests:
        n = 0 if requests is None else round(requests)
        message = f"{n} requests to the canary in the window, fewer than minRequests {analysis.min_requests}"
        return Verdict(INCONCLUSIVE, tuple(
            api.CheckResult(name=c.name, result=INCONCLUSIVE, value=canary.get(c.name), stable=stable.get(c.name),
                            bound=_bounds(c), message=message)
            for c in analysis.checks), requests, message)
    results = tuple(_judge_check(c, canary.get(c.name), stable.get(c.name)) for c in analysis.checks)
    if any(r.result == FAIL for r in results):
        overall = FAIL
    elif any(r.result == INCONCLUSIVE for r in results):
        overall = INCONCLUSIVE
    else:
        overall = PASS
    message = "; ".join(f"{r.name} {r.result.lower()}: {r.message}" for r in results)
    return Verdict(overall, results, requests, message)


def run(analysis: api.Analysis, namespace: str, model: str, canary: str, stable: Optional[str],
        query: Query) -> Verdict:
    """Ask every query of one analysis through ``query`` and judge the answers. A QueryError on
    any of them makes the whole analysis an Error: half an answer is not judged."""
    q = queries(analysis, namespace, model, canary, stable)
    try:
        requests = query(q.requests)
        canary_values = {name: query(text) for name, text in q.canary.items()}
        stable_values = {name: query(text) for name, text in q.stable.items()}
    except QueryError as exc:
        return error(analysis, f"Prometheus could not be queried: {exc}")
    return judge(analysis, requests, canary_values, stable_values)


def error(analysis: api.Analysis, message: str) -> Verdict:
    """An analysis that could not be made (Prometheus unanswering, unknown, its credentials
    unreadable): every check an Error, neither a pass nor a failure."""
    return Verdict(ERROR, tuple(api.CheckResult(name=c.name, result=ERROR, bound=_bounds(c), message=message)
                                for c in analysis.checks), None, message)


