"""The rollout view (``kubectl inference dashboard``): a page per InferenceService on 127.0.0.1 with
plots drawn in the browser by uPlot, served from this package (no CDN: ``static/``).

The plots, each on one time grid:
- per canary check: the canary's value over the rollout, the stable's (a relative bound), and the
  bound it is held to, from the same Prometheus and the same PromQL as the analysis (``analysis.
  queries``) evaluated at every step of the grid, with the check's own window;
- the traffic weight: the weight status asks for (the first step's from the start, the current
  step's from its start, and every change the dashboard saw while it ran; between the first and
  the current step, nothing else is known) against the canary's measured share of the requests;
- per autoscaling target: the replicas (pods reporting to Prometheus, and the autoscaler's desired
  count from status) against the signal the autoscaler reads (``signals.keda_query``) and its target.

Building the charts is pure (``charts``) given a ``Reader`` of Prometheus; ``serve`` does the I/O.
The page asks for new data every ``refresh`` seconds while a canary is active, every 5 s otherwise.
"""

from __future__ import annotations

import dataclasses
import datetime
import html
import http.server
import json
import math
import os
import pathlib
import sys
import threading
import time
import urllib.parse
from typing import Any, Callable, Optional, Protocol

from inference_operator import api, prometheus, promql
from inference_operator.desired import signals
from inference_operator.desired.autoscaling import additive, value_of
from inference_operator.kubectl import overview
from inference_operator.kubectl.userclient import EXIT_OK, Cluster, UserError, valid_name, valid_namespace
from inference_operator.rollout import analysis, canary

Obj = dict[str, Any]
STATIC = pathlib.Path(__file__).with_name("static")
STATIC_FILES = frozenset(p.name for p in STATIC.iterdir() if p.is_file())  # served; nothing else is
STATIC_TYPES = {".js": "text/javascript", ".css": "text/css", ".html": "text/html"}
MAX_POINTS = 600  # per series: the grid's step grows with the range
IDLE_RANGE_SECONDS = 900  # the range shown when no canary has run
IDLE_REFRESH_SECONDS = 5.0


class QueryFailed(Exception):
    pass


class Reader(Protocol):
    """What the charts ask Prometheus."""

    def range(self, query: str, start: float, end: float, step: float) -> dict[float, float]:
        """The one series of a range query, by instant (none: empty; several: QueryFailed)."""

    def labels(self, query: str, at: float, label: str) -> list[str]:
        """The values of ``label`` over the series of an instant query at ``at``."""


# ---- samples of status, kept while the dashboard runs ------------------------------------------------


@dataclasses.dataclass
class Recorder:
    """Per InferenceService, what status said at each look: the weight asked for, the replicas, the
    autoscaler's desired count, and which revision a canary was compared with. Status holds only
    the present; this is the dashboard's memory of it (bounded)."""

    limit: int = 5000
    samples: dict[tuple[str, str], list[tuple[float, Obj]]] = dataclasses.field(default_factory=dict)
    lock: threading.Lock = dataclasses.field(default_factory=threading.Lock)

    def record(self, isvc: Obj, at: float) -> list[tuple[float, Obj]]:
        status = isvc.get("status") or {}
        state = status.get("canary") or {}
        active = state.get("phase") in canary.ACTIVE
        sample = {
            "weight": (state.get("weight") or 0) if active else (100 if state.get("phase") == canary.PROMOTED
                                                                 and state.get("revision") else 0),
            "effectiveWeight": state.get("effectiveWeight") if active else None,
            "revision": state.get("revision") if active else None,
            "stableRevision": state.get("stableRevision") if active else None,
            "replicas": status.get("replicas"),
            "desiredReplicas": (status.get("autoscaler") or {}).get("desiredReplicas"),
        }
        meta = isvc["metadata"]
        key = (meta["namespace"], meta["name"])
        with self.lock:
            series = self.samples.setdefault(key, [])
            if not series or series[-1][1] != sample or at - series[-1][0] > 30:
                series.append((at, sample))
                del series[:-self.limit]
            return list(series)


def _step_lookup(samples: list[tuple[float, Obj]], key: str, xs: list[float]) -> list[Optional[float]]:
    """A sampled field on the grid: the last sample at or before each x (status is a level)."""
    out: list[Optional[float]] = []
    i, value = 0, None
    for x in xs:
        while i < len(samples) and samples[i][0] <= x:
            value = samples[i][1].get(key)
            i += 1
        out.append(None if value is None else float(value))
    return out


# ---- the charts (pure) ----------------------------------------------------------------------------------


def grid(start: float, end: float, minimum_step: float) -> tuple[list[float], float]:
    """Whole-second instants from start to end, at least ``minimum_step`` apart, at most MAX_POINTS."""
    start, end = math.floor(start), math.ceil(end)
    end = max(start, end)  # a clock behind the API server's: one point, not none
    step = max(1.0, float(math.ceil(minimum_step)), float(math.ceil((end - start) / MAX_POINTS)))
    n = int((end - start) // step) + 1
    return [start + i * step for i in range(n)], step


def _on_grid(values: dict[float, float], xs: list[float]) -> list[Optional[float]]:
    out = []
    for x in xs:
        v = values.get(x)
        out.append(None if v is None or math.isnan(v) or math.isinf(v) else v)
    return out


def _chart(chart_id: str, title: str, xs: list[float], series: list[tuple[str, str, str, list]],
           unit: str, unit2: Optional[str] = None) -> Obj:
    """One chart as the page draws it: uPlot's columns (x first) and a label, role and axis per series."""
    return {"id": chart_id, "title": title, "unit": unit, "unit2": unit2,
            "series": [{"label": label, "role": role, "axis": axis} for label, role, axis, _ in series],
            "data": [xs] + [values for *_, values in series]}


def time_range(isvc: Obj, now: float) -> tuple[float, float]:
    """The rollout's span: from a minute before the canary started to now (active) or a minute
    after its last analysis; when no canary ever ran, the last 15 minutes (from a minute before the
    InferenceService was made, when that is later)."""
    state = (isvc.get("status") or {}).get("canary") or {}
    started = canary.parse_time(state.get("startedAt"))
    if started is None:
        created = canary.parse_time((isvc.get("metadata") or {}).get("creationTimestamp"))
        return max(now - IDLE_RANGE_SECONDS, (created or 0) - 60), now
    if state.get("phase") in canary.ACTIVE:
        return started - 60, now
    last = max(t for t in (canary.parse_time(state.get("lastAnalysisAt")), canary.parse_time(state.get("stepStartedAt")),
                           started) if t is not None)
    return started - 60, min(now, last + 60)


def _model_selector(isvc: api.InferenceService) -> str:
    """The label matchers of the InferenceService's series of its model, every revision."""
    return f"{signals.matchers(isvc.namespace, isvc.name)},{analysis.MODEL_LABEL}={promql.quoted(isvc.spec.model.name)}"


def compared_with(isvc: api.InferenceService, state: Obj, samples: list[tuple[float, Obj]],
                  prom: Reader) -> tuple[Optional[str], Optional[str]]:
    """The revision the canary was compared with, and why it is unknown. After a promotion status
    names the canary as the stable: the one before is the dashboard's memory, or else the other
    revision of this InferenceService Prometheus saw at the last analysis."""
    if state.get("stableRevision") and state.get("stableRevision") != state.get("revision"):
        return state["stableRevision"], None
    for _, sample in reversed(samples):
        if sample.get("revision") == state.get("revision") and sample.get("stableRevision"):
            return sample["stableRevision"], None
    at = canary.parse_time(state.get("lastAnalysisAt"))
    if at is None:
        return None, "no analysis ran"
    try:
        others = [r for r in prom.labels(f"nv_inference_request_success{{{_model_selector(isvc)}}}", at,
                                         analysis.REVISION_LABEL)
                  if r != state.get("revision")]
    except QueryFailed as exc:
        return None, str(exc)
    if len(others) != 1:
        return None, f"the revision it replaced is not in status, and Prometheus saw {len(others)} others"
    return others[0], None


def canary_charts(isvc: api.InferenceService, state: Obj, samples: list[tuple[float, Obj]], xs: list[float],
                  step: float, prom: Reader) -> tuple[list[Obj], list[str]]:
    """Per check: the canary's value, the stable's, and the bound, on the grid."""
    cfg = isvc.spec.rollout.canary
    if cfg is None or not state.get("revision"):
        return [], []
    errors = []
    stable, unknown = (compared_with(isvc, state, samples, prom)
                       if any(c.max_increase is not None for c in cfg.analysis.checks) else (None, None))
    if unknown:
        errors.append(f"the stable revision's line: {unknown}")
    q = analysis.queries(cfg.analysis, isvc.namespace, isvc.spec.model.name, state["revision"], stable)
    start, end = xs[0], xs[-1]
    charts = []
    for check in cfg.analysis.checks:
        unit = overview.check_unit(check, check.name)
        try:
            value = _on_grid(prom.range(q.canary[check.name], start, end, step), xs)
            stable_values = (_on_grid(prom.range(q.stable[check.name], start, end, step), xs)
                             if check.name in q.stable else None)
        except QueryFailed as exc:
            errors.append(f"{check.name}: {exc}")
            continue
        series: list[tuple[str, str, str, list]] = [(f"canary {state['revision']}", "value", "y", value)]
        bound = analysis.bound_value(check)
        if bound is not None:
            series.append((f"max {check.max}", "bound", "y", [bound] * len(xs)))
        increase = analysis.increase_value(check)
        if stable_values is not None and increase is not None:
            series.append((f"stable {stable}", "stable", "y", stable_values))
            series.append((f"stable +{check.max_increase}", "bound", "y",
                           [None if s is None else s * (1 + increase) for s in stable_values]))
        charts.append(_chart(f"check-{check.name}", f"{check.name}: canary against its bound", xs, series, unit))
    return charts, errors


def known_weights(isvc: api.InferenceService, state: Obj) -> list[tuple[float, Obj]]:
    """What status alone tells of the weight's history while a canary runs: the first step's weight
    from the start, and the current step's from when it started. Between them (steps 2 and on)
    nothing: a gap, unless the dashboard saw it."""
    cfg = isvc.spec.rollout.canary
    if cfg is None or state.get("phase") not in canary.ACTIVE:
        return []
    out: list[tuple[float, Obj]] = []
    started, step_started = canary.parse_time(state.get("startedAt")), canary.parse_time(state.get("stepStartedAt"))
    # Steps begun so far (promoting counts as one more: its start is stepStartedAt, its weight 100).
    begun = (state.get("stepIndex") or 0) + (1 if state.get("phase") == canary.PROMOTING else 0)
    if started is not None:
        out.append((started, {"weight": canary.step_weight(cfg.steps, 0)}))
        if begun > 1:
            out.append((started + 1, {"weight": None}))  # the first step's end is not in status
    if step_started is not None and state.get("weight") is not None:
        out.append((step_started, {"weight": state["weight"]}))
    return out


def weight_chart(isvc: api.InferenceService, state: Obj, samples: list[tuple[float, Obj]], xs: list[float],
                 step: float, prom: Reader) -> tuple[Obj, list[str]]:
    """The weight status asks for, and the canary's share of the requests Prometheus counted."""
    planned = sorted(samples + known_weights(isvc, state), key=lambda s: s[0])
    series: list[tuple[str, str, str, list]] = [
        ("weight asked (status)", "planned", "y", _step_lookup(planned, "weight", xs)),
        ("effective weight (status)", "effective", "y", _step_lookup(samples, "effectiveWeight", xs)),
    ]
    errors = []
    revision = state.get("revision")
    cfg = isvc.spec.rollout.canary
    if revision and cfg is not None:
        window = promql.promql_duration(max(2 * step, promql.seconds(cfg.analysis.window or cfg.analysis.interval)))
        base = _model_selector(isvc)
        share = (f'100 * sum(rate(nv_inference_request_success{{{base},{analysis.REVISION_LABEL}='
                 f'{promql.quoted(revision)}}}[{window}])) / sum(rate(nv_inference_request_success{{{base}}}[{window}]))')
        try:
            series.append(("canary's share of requests (Prometheus)", "measured", "y",
                           _on_grid(prom.range(share, xs[0], xs[-1], step), xs)))
        except QueryFailed as exc:
            errors.append(f"traffic share: {exc}")
    return _chart("weight", "traffic weight of the canary, %", xs, series, "percent"), errors


def autoscaling_charts(isvc: api.InferenceService, samples: list[tuple[float, Obj]], xs: list[float], step: float,
                       prom: Reader) -> tuple[list[Obj], list[str]]:
    """Per target: replicas (pods reporting, desired by the autoscaler) against the signal and its target."""
    sel = signals.matchers(isvc.namespace, isvc.name)
    pods_query = f"count(count by ({signals.POD_LABEL}) (nv_inference_request_success{{{sel}}}))"
    errors: list[str] = []
    try:
        pods = _on_grid(prom.range(pods_query, xs[0], xs[-1], step), xs)
    except QueryFailed as exc:
        errors.append(f"replicas: {exc}")
        pods = [None] * len(xs)
    replicas = [("pods reporting (Prometheus)", "replicas", "y", pods),
                ("replicas (status)", "replicas-status", "y", _step_lookup(samples, "replicas", xs))]
    spec = isvc.spec.autoscaling
    if spec is None:
        return [_chart("replicas", "replicas", xs, replicas, "number")], errors
    replicas.append(("desired (autoscaler)", "desired", "y", _step_lookup(samples, "desiredReplicas", xs)))
    charts = []
    for target in spec.targets:
        unit = overview.signal_unit(target)
        # The ScaledObject's query, without its `or vector(0)`: no data is a gap here, not a zero.
        text = signals.keda_query(target.name, isvc.namespace, isvc.name, spec.window, custom=target.query,
                                  empty_is_zero=False)
        per = ""
        if additive(target):
            # One number over the pods reporting (sum: a custom query may keep labels the count has not).
            text = f"sum({text}) / clamp_min(({pods_query}), 1)"
            per = " per replica"
        try:
            values = _on_grid(prom.range(text, xs[0], xs[-1], step), xs)
        except QueryFailed as exc:
            errors.append(f"{target.name}: {exc}")
            continue
        series = replicas + [(f"{target.name}{per}", "signal", "y2", values),
                             (f"target {target.value}{per}", "target", "y2", [float(value_of(target))] * len(xs))]
        charts.append(_chart(f"autoscaling-{target.name}", f"replicas against {target.name}", xs, series,
                             "number", unit2=unit))
    return charts, errors


class _Missing:
    """The Reader when there is no Prometheus: every query fails, saying why."""

    def __init__(self, why: str) -> None:
        self.why = why

    def range(self, *_: Any) -> dict[float, float]:
        raise QueryFailed(self.why)

    def labels(self, *_: Any) -> list[str]:
        raise QueryFailed(self.why)


def charts(isvc_obj: Obj, samples: list[tuple[float, Obj]], prom: Optional[Reader], now: float) -> Obj:
    """Everything the page draws for one InferenceService."""
    state = (isvc_obj.get("status") or {}).get("canary") or {}
    errors: list[str] = []
    try:
        isvc = api.parse(isvc_obj)
    except Exception:  # noqa: BLE001 -- shown, not raised (and not echoed: it may quote the object)
        return {"charts": [], "errors": ["the InferenceService's spec does not parse"], "active": False}
    start, end = time_range(isvc_obj, now)
    # The analysis interval (at most 15 s) with a canary; 5 s without (the range is then at most 15 minutes).
    interval = promql.seconds(isvc.spec.rollout.canary.analysis.interval) if isvc.spec.rollout.canary else 5.0
    xs, step = grid(start, end, min(interval, 15.0))
    reader = prom or _Missing("no Prometheus: pass --prometheus or set the analysis address")
    out: list[Obj] = []
    if state:
        check_charts, errs = canary_charts(isvc, state, samples, xs, step, reader)
        out += check_charts
        errors += errs
        chart, errs = weight_chart(isvc, state, samples, xs, step, reader)
        out.append(chart)
        errors += errs
    auto, errs = autoscaling_charts(isvc, samples, xs, step, reader)
    out += auto
    errors += errs
    return {"charts": out, "errors": errors, "active": state.get("phase") in canary.ACTIVE,
            "range": [start, end], "step": step}


# ---- Prometheus -------------------------------------------------------------------------------------------


class PrometheusReader:
    """A Reader over prometheus-api-client, a timeout on every call, no retries (the page's next
    refresh is the retry)."""

    def __init__(self, address: str, auth: promql.Auth = promql.Auth(),
                 timeout: float = promql.QUERY_TIMEOUT_SECONDS) -> None:
        self.auth = auth
        self.client = prometheus.prometheus_client(address, auth, timeout)

    def _failed(self, exc: Exception) -> QueryFailed:
        import requests

        if isinstance(exc, requests.exceptions.InvalidHeader):  # its text quotes the header
            return QueryFailed("the credentials are not a valid HTTP header")
        return QueryFailed(promql.redacted(" ".join(str(exc).split()), self.auth)[:300])

    def range(self, query: str, start: float, end: float, step: float) -> dict[float, float]:
        utc = datetime.timezone.utc
        try:
            result = self.client.custom_query_range(query, datetime.datetime.fromtimestamp(start, utc),
                                                    datetime.datetime.fromtimestamp(end, utc), f"{step:g}s")
        except Exception as exc:  # noqa: BLE001 -- the client raises several kinds; all mean no data
            raise self._failed(exc) from exc
        # As the analysis: one number at an instant, or no verdict there. Series may follow one
        # another (a pod replaced); where several have a value at once, the plot has a gap.
        at: dict[float, list[float]] = {}
        for series in result:
            for x, v in series.get("values") or []:
                at.setdefault(float(x), []).append(float(v))
        values = {x: vs[0] for x, vs in at.items() if len(vs) == 1}
        if at and not values:
            raise QueryFailed(f"the query gives {len(result)} series at once, not one number")
        return values

    def labels(self, query: str, at: float, label: str) -> list[str]:
        try:
            result = self.client.custom_query(f"group by ({label}) ({query})", params={"time": f"{at:.3f}"})
        except Exception as exc:  # noqa: BLE001
            raise self._failed(exc) from exc
        return sorted({(s.get("metric") or {}).get(label, "") for s in result} - {""})


def _analysis_prometheus(isvc: Obj) -> Obj:
    spec = isvc.get("spec") or {}
    return ((((spec.get("rollout") or {}).get("canary") or {}).get("analysis") or {}).get("prometheus") or {})


def analysis_address(isvc: Obj) -> Optional[str]:
    return _analysis_prometheus(isvc).get("address")


def prometheus_address(isvc: Obj, override: Optional[str]) -> Optional[str]:
    """--prometheus, the analysis's address, KEDA's, then INFERENCE_OPERATOR_PROMETHEUS_URL here
    (the operator's own default is not known from outside: pass --prometheus)."""
    keda_address = ((((isvc.get("spec") or {}).get("autoscaling") or {}).get("keda") or {}).get("serverAddress"))
    return override or analysis_address(isvc) or keda_address or os.environ.get("INFERENCE_OPERATOR_PROMETHEUS_URL")


def credentials_secret(isvc: Obj) -> Optional[str]:
    return _analysis_prometheus(isvc).get("secretName")


# ---- the server ---------------------------------------------------------------------------------------------


PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>{title}</title>
<link rel="stylesheet" href="/static/uPlot.min.css"><link rel="stylesheet" href="/static/dashboard.css">
</head><body data-namespace="{namespace}" data-name="{name}" data-refresh="{refresh}" data-updates="0">
<header><a href="/">InferenceServices</a> / {namespace} / <b>{name}</b> <span id="phase"></span>
<span id="updated"></span></header>
<div id="errors"></div><div id="charts"></div><pre id="tree"></pre>
<script src="/static/uPlot.iife.min.js"></script><script src="/static/dashboard.js"></script>
</body></html>
"""

INDEX = """<!doctype html>
<html><head><meta charset="utf-8"><title>InferenceServices</title>
<link rel="stylesheet" href="/static/dashboard.css"></head><body>
<header><b>InferenceServices</b> ({where})</header>
<table><tr><th>namespace</th><th>name</th><th>ready</th><th>revision</th><th>canary</th><th>weight</th></tr>
{rows}</table></body></html>
"""


class Dashboard:
    def __init__(self, cluster: Cluster, prometheus: Optional[str] = None, refresh: float = 2.0,
                 all_namespaces: bool = False, clock: Callable[[], float] = time.time,
                 token: Optional[str] = None) -> None:
        self.cluster, self.prometheus, self.refresh = cluster, prometheus, refresh
        self.all_namespaces, self.clock, self.token = all_namespaces, clock, token
        self.recorder = Recorder()

    def reader(self, isvc: Obj) -> tuple[Optional[Reader], list[str]]:
        """Prometheus for this InferenceService, and with which credentials: the token file's only
        for the --prometheus given with it; the analysis's Secret (read as the user, and used only
        when labelled for it, as the operator does) only for the analysis's own address or the
        --prometheus given; none for a fallback address."""
        address = prometheus_address(isvc, self.prometheus)
        if not address:
            return None, []
        if self.token and self.prometheus:
            return PrometheusReader(address, promql.Auth(token=self.token)), []
        secret = credentials_secret(isvc)
        spec_address = analysis_address(isvc)
        if not secret or address not in (self.prometheus, spec_address):
            return PrometheusReader(address), []
        namespace = isvc["metadata"]["namespace"]
        try:
            auth = promql.auth_from_secret(self.cluster.secret(namespace, secret), namespace, secret)
        except UserError as exc:
            return PrometheusReader(address), [f"Prometheus credentials (Secret {secret}) not readable as you: "
                                               f"{exc.line}; pass --prometheus-token-file with --prometheus"]
        except LookupError as exc:
            return PrometheusReader(address), [f"Prometheus credentials not used: {exc}"]
        return PrometheusReader(address, auth), []

    def data(self, namespace: str, name: str) -> Obj:
        isvc = self.cluster.isvc(name, namespace)
        deployments, pods, hpa, route = self.cluster.children(isvc)
        now = self.clock()
        samples = self.recorder.record(isvc, now)
        reader, problems = self.reader(isvc)
        out = charts(isvc, samples, reader, now)
        out["errors"] = problems + out["errors"]
        view = overview.overview(isvc, deployments, pods, hpa, now=now, route=route)
        out.update(overview=view, tree=overview.tree(view), prometheus=prometheus_address(isvc, self.prometheus),
                   now=now, refresh=self.refresh if out["active"] else max(self.refresh, IDLE_REFRESH_SECONDS))
        return out

    def index(self) -> str:
        if self.all_namespaces:
            items = self.cluster.request("GET", f"/apis/{api.GROUP}/{api.VERSION}/{api.PLURAL}").get("items") or []
        else:
            items = self.cluster.isvcs()
        rows = []
        for isvc in sorted(items, key=lambda i: (i["metadata"]["namespace"], i["metadata"]["name"])):
            meta, status = isvc["metadata"], isvc.get("status") or {}
            state = status.get("canary") or {}
            ready = next((c.get("status") for c in status.get("conditions") or [] if c.get("type") == "Ready"), "")
            link = f"/isvc/{urllib.parse.quote(meta['namespace'])}/{urllib.parse.quote(meta['name'])}"
            cells = [html.escape(str(c)) for c in (
                meta["namespace"], meta["name"], ready or "", status.get("revision") or "", state.get("phase") or "",
                "" if state.get("phase") not in canary.ACTIVE else f"{state.get('weight')}%")]
            cells[1] = f'<a href="{html.escape(link)}">{cells[1]}</a>'
            rows.append("<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
        where = "all namespaces" if self.all_namespaces else f"namespace {self.cluster.namespace}"
        return INDEX.format(where=html.escape(where), rows="\n".join(rows))

    def page(self, namespace: str, name: str) -> str:
        e = html.escape
        return PAGE.format(title=e(f"{name} ({namespace})"), namespace=e(namespace), name=e(name),
                           refresh=self.refresh)


class _Handler(http.server.BaseHTTPRequestHandler):
    dashboard: Dashboard
    server_version = "inference-dashboard"

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 -- the base class's name
        pass  # quiet: the page polls

    def _send(self, code: int, body: bytes, content_type: str) -> None:
        self.send_response(code)
        self.send_header("Content-Type", content_type + "; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        self.end_headers()
        self.wfile.write(body)

    def _error(self, code: int, line: str) -> None:
        self._send(code, json.dumps({"error": line}).encode(), "application/json")

    def _local_host(self) -> bool:
        """Only what the dashboard printed reaches it: a page elsewhere that renames itself to
        127.0.0.1 (DNS rebinding) still sends its own Host."""
        port = self.server.server_address[1]
        return self.headers.get("Host", "") in (f"127.0.0.1:{port}", f"localhost:{port}")

    def do_GET(self) -> None:  # noqa: N802 -- the base class's name
        if not self._local_host():
            self._error(403, "only http://127.0.0.1:PORT/ is served")
            return
        parts = [urllib.parse.unquote(p) for p in urllib.parse.urlsplit(self.path).path.split("/") if p]
        try:
            if not parts:
                self._send(200, self.dashboard.index().encode(), "text/html")
            elif parts[0] == "static" and len(parts) == 2 and parts[1] in STATIC_FILES:
                path = STATIC / parts[1]
                self._send(200, path.read_bytes(), STATIC_TYPES.get(path.suffix, "application/octet-stream"))
            elif parts[0] == "isvc" and len(parts) == 3 and _named(parts[1], parts[2]):
                self._send(200, self.dashboard.page(parts[1], parts[2]).encode(), "text/html")
            elif parts[:2] == ["api", "isvc"] and len(parts) == 4 and _named(parts[2], parts[3]):
                body = json.dumps(self.dashboard.data(parts[2], parts[3]), allow_nan=False)
                self._send(200, body.encode(), "application/json")
            else:
                self._send(404, b"not found\n", "text/plain")
        except UserError as exc:
            self._error(502, exc.line)
        except Exception as exc:  # noqa: BLE001 -- one line to the page, the trace to the terminal
            import traceback

            traceback.print_exc(file=sys.stderr)
            self._error(500, f"the dashboard failed: {type(exc).__name__}: {exc}"[:300])


def _named(namespace: str, name: str) -> bool:
    """A namespace (a DNS label) and a name (a DNS subdomain): nothing else reaches the API server."""
    return valid_namespace(namespace) and valid_name(name)


def server(dashboard: Dashboard, port: int) -> http.server.ThreadingHTTPServer:
    handler = type("Handler", (_Handler,), {"dashboard": dashboard})
    return http.server.ThreadingHTTPServer(("127.0.0.1", port), handler)


def serve(cluster: Cluster, port: int = 3100, prometheus: Optional[str] = None, refresh: float = 2.0,
          all_namespaces: bool = False, token: Optional[str] = None) -> int:
    cluster.isvcs() if not all_namespaces else None  # fails early, in one line, without access
    try:
        httpd = server(Dashboard(cluster, prometheus, refresh, all_namespaces, token=token), port)
    except OSError as exc:
        raise UserError(f"error: cannot listen on 127.0.0.1:{port}: {exc.strerror or exc}") from exc
    print(f"Serving the rollout view at http://127.0.0.1:{httpd.server_address[1]}/ (Ctrl-C stops)", flush=True)
    try:
        httpd.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        httpd.server_close()
    return EXIT_OK
