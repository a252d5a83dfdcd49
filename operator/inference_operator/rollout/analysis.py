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
import re
from typing import Any, Callable, Optional, Sequence

from inference_operator import api

PASS, FAIL, INCONCLUSIVE, ERROR = "Pass", "Fail", "Inconclusive", "Error"

# Labels of the scraped series (see the README's scrape configuration).
NAMESPACE_LABEL = "namespace"
REVISION_LABEL = "revision"
MODEL_LABEL = "model"  # Triton's own

QUERY_TIMEOUT_SECONDS = 5.0

_UNITS = {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


def seconds(duration: str) -> float:
    """A duration such as 30s, 1m30s, 500ms or 1.5s, in seconds."""
    parts = re.findall(r"([0-9]+(?:\.[0-9]+)?)(us|ms|s|m|h)", duration)
    if not parts or "".join(n + u for n, u in parts) != duration:
        raise ValueError(f"{duration!r} is not a duration")
    return sum(float(n) * _UNITS[u] for n, u in parts)


def promql_duration(value: float) -> str:
    """Seconds as a PromQL range: whole milliseconds (PromQL takes no fractions)."""
    return f"{max(1, round(value * 1000))}ms"


def quoted(value: str) -> str:
    """A label value as a PromQL string literal."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


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


class QueryError(Exception):
    """Prometheus could not be asked, or refused the query."""


# A query's answer: a number, None for no data (an empty vector, NaN, an infinity), or QueryError.
Answer = Optional[float]


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


Query = Callable[[str], Answer]


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


@dataclasses.dataclass(frozen=True)
class Auth:
    token: Optional[str] = None
    username: Optional[str] = None
    password: Optional[str] = None


CREDENTIALS_LABEL = f"{api.GROUP}/prometheus-credentials"


def auth_from_secret(secret: dict, namespace: str, name: str) -> Auth:
    """Prometheus credentials from a Secret as the API server returns it: ``token`` (bearer), or
    ``username`` and ``password`` (basic). Whoever may create an InferenceService names the Secret
    and the address its token goes to: only a Secret labelled for it is used, never a service
    account's token (LookupError says why). Used by the operator and by the dashboard alike."""
    import base64

    labels = (secret.get("metadata") or {}).get("labels") or {}
    if labels.get(CREDENTIALS_LABEL) != "true":
        raise LookupError(f"Secret {namespace}/{name} is not labelled {CREDENTIALS_LABEL}=true")
    if secret.get("type") == "kubernetes.io/service-account-token":
        raise LookupError(f"Secret {namespace}/{name} is a service account token")
    data = {k: base64.b64decode(v).decode("utf-8", "replace") for k, v in (secret.get("data") or {}).items()}
    if not data.get("token") and not data.get("username"):
        raise LookupError(f"Secret {namespace}/{name} holds neither token nor username")
    # Files made with --from-file end in a newline, which no header may hold.
    data = {k: v.strip() for k, v in data.items()}
    return Auth(token=data.get("token") or None, username=data.get("username") or None,
                password=data.get("password") or None)


def prometheus_client(address: str, auth: Auth = Auth(), timeout: float = QUERY_TIMEOUT_SECONDS) -> Any:
    """prometheus-api-client's PrometheusConnect for ``address`` with ``auth``: a timeout on every
    call and no retries (the next analysis, or the dashboard's next refresh, is the retry)."""
    from prometheus_api_client import PrometheusConnect
    from urllib3.util.retry import Retry

    headers = {"Authorization": f"Bearer {auth.token}"} if auth.token else None
    basic = (auth.username, auth.password or "") if auth.username else None
    return PrometheusConnect(url=address.rstrip("/"), headers=headers, auth=basic, disable_ssl=False,
                             retry=Retry(total=0, raise_on_status=False), timeout=timeout)


def redacted(message: str, auth: Auth) -> str:
    """``message`` without the credentials in ``auth``, as they are and as a repr quotes them:
    status and the dashboard's page are read by people who may not read the Secret."""
    for value in (auth.token, auth.password):
        if value:
            message = message.replace(value, "<redacted>").replace(repr(value)[1:-1], "<redacted>")
    return message


def prometheus_query(address: str, auth: Auth = Auth(), at: Optional[float] = None,
                     timeout: float = QUERY_TIMEOUT_SECONDS) -> Query:
    """A ``Query`` against the Prometheus at ``address``: instant queries, all at the same instant
    ``at`` (so the canary and the stable are read over the same window), a timeout on every call
    and no retries (the next analysis is the retry)."""
    from prometheus_api_client.exceptions import PrometheusApiClientException
    import requests

    client = prometheus_client(address, auth, timeout)
    params = {"time": f"{at:.3f}"} if at is not None else None

    def query(text: str) -> Answer:
        try:
            return _answer(text)
        except QueryError as exc:
            raise QueryError(redacted(str(exc), auth)) from exc.__cause__

    def _answer(text: str) -> Answer:
        try:
            result = client.custom_query(text, params=params)
        except requests.exceptions.InvalidHeader as exc:
            raise QueryError("the credentials from the Secret are not a valid HTTP header") from exc
        except requests.Timeout as exc:
            raise QueryError(f"no answer from {address} within {timeout:g}s") from exc
        except requests.ConnectionError as exc:
            # The client's text is mostly the URL with the query: say what went wrong instead.
            cause = re.sub(r"HTTPConnectionPool\(.*?\): Max retries exceeded with url: \S+ ", "", str(exc))
            raise QueryError(_one_line(f"cannot connect to {address}: {cause}")) from exc
        except (PrometheusApiClientException, requests.RequestException, ValueError) as exc:
            raise QueryError(_one_line(str(exc))) from exc
        values = []
        for sample in result:
            try:
                values.append(float(sample["value"][1]))
            except (KeyError, IndexError, TypeError, ValueError) as exc:
                raise QueryError(f"unexpected answer to {text}: {sample!r}") from exc
        if len(values) != 1 or math.isnan(values[0]) or math.isinf(values[0]):
            return None
        return values[0]

    return query


def _one_line(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= 300 else text[:297] + "..."
