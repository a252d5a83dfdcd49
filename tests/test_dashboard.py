"""The rollout view's data (dashboard.py): charts built from status and range queries (pure, with a
recording query function), and its HTTP server with a stand-in for the API server. The real path
(the plugin's process, a real Prometheus, Chromium) is e2e/test_plugin.py."""

from __future__ import annotations

import json
import urllib.error
import urllib.request

import pytest

from inference_operator import analysis, api, dashboard, signals
from inference_operator.userclient import UserError

from .servers import serving
from .test_overview import CANARY, NOW, REV_A, REV_B, canary_objects, isvc

T0 = 1_764_000_000.0 - 600  # the canary started 10 minutes before NOW


def recording(answer=lambda query, x: 0.5):
    """A RangeQuery answering ``answer(query, x)`` at every step, and the queries it was asked."""
    asked: list[tuple[str, float, float, float]] = []

    def query(text: str, start: float, end: float, step: float) -> dict[float, float]:
        asked.append((text, start, end, step))
        out, x = {}, start
        while x <= end:
            out[x] = answer(text, x)
            x += step
        return out

    return query, asked


def started_canary(**changes) -> dict:
    return dict(CANARY, startedAt="2025-11-24T15:50:00Z", stepStartedAt="2025-11-24T15:55:00Z", **changes)


def test_each_check_is_drawn_with_the_analysis_own_promql_and_its_bound():
    obj = isvc(started_canary())
    query, asked = recording(lambda q, x: 0.004 if "revision=\"" + REV_B in q else 0.003)
    out = dashboard.charts(obj, [], query, NOW)
    typed = api.parse(obj)
    q = analysis.queries(typed.spec.rollout.canary.analysis, "default", "resnet50", REV_B, REV_A)
    asked_queries = [a[0] for a in asked]
    assert q.canary["errorRate"] in asked_queries and q.canary["requestLatency"] in asked_queries
    assert q.stable["requestLatency"] in asked_queries
    charts = {c["id"]: c for c in out["charts"]}
    err = charts["check-errorRate"]
    assert [s["label"] for s in err["series"]] == [f"canary {REV_B}", "max 1%"]
    assert set(err["data"][2]) == {0.01} and set(err["data"][1]) == {0.004}
    lat = charts["check-requestLatency"]
    assert [s["role"] for s in lat["series"]] == ["value", "stable", "bound"]
    assert all(b == pytest.approx(s * 1.2) for s, b in zip(lat["data"][2], lat["data"][3]))
    # One grid for every chart: from a minute before the start to now, at the analysis interval (at
    # most 15 s).
    xs = err["data"][0]
    assert xs[0] == T0 - 60 and xs[-1] <= NOW and xs[1] - xs[0] == 15
    assert all(c["data"][0] == xs for c in out["charts"])
    assert out["active"] and out["errors"] == []


def test_the_weight_asked_comes_from_status_and_samples_and_the_share_from_prometheus():
    obj = isvc(started_canary(stepIndex=2, weight=50, effectiveWeight=50))
    samples = [(T0 - 30, {"weight": 0}), (T0 + 120, {"weight": 25, "effectiveWeight": 25})]
    query, asked = recording(lambda q, x: 42.0)
    chart = {c["id"]: c for c in dashboard.charts(obj, samples, query, NOW)["charts"]}["weight"]
    xs, asked_weight = chart["data"][0], chart["data"][1]
    at = dict(zip(xs, asked_weight))
    assert at[T0 - 60] is None  # nothing known yet
    assert at[T0 - 30] == 0  # sampled before the canary
    assert at[T0] == 25 and at[T0 + 120] == 25  # the first step's weight, from status.canary.startedAt
    assert at[T0 + 300] == 50 and asked_weight[-1] == 50  # the current step's, from stepStartedAt
    share = next(a[0] for a in asked if "100 * sum(rate(nv_inference_request_success" in a[0])
    assert f'revision="{REV_B}"' in share and 'inferenceservice="resnet"' in share
    assert set(chart["data"][3]) == {42.0}


def test_replicas_against_each_autoscaling_signal_and_its_target():
    obj = isvc(started_canary(phase="Promoted"), autoscaling={"engine": "keda", "maxReplicas": 8, "window": "30s",
                                                              "targets": [{"name": "queueTime", "value": "50ms"},
                                                                          {"name": "pendingRequests", "value": "4"}]})
    query, asked = recording(lambda q, x: 3.0 if q.startswith("count(") else 0.08)
    out = dashboard.charts(obj, [(T0, {"replicas": 3, "desiredReplicas": 4})], query, NOW)
    charts = {c["id"]: c for c in out["charts"]}
    queue = charts["autoscaling-queueTime"]
    assert queue["unit2"] == "seconds" and [s["axis"] for s in queue["series"]] == ["y", "y", "y", "y2", "y2"]
    assert set(queue["data"][5]) == {0.05} and set(queue["data"][4]) == {0.08} and set(queue["data"][1]) == {3.0}
    assert queue["data"][3][-1] == 4 and queue["data"][2][-1] == 3
    keda = signals.keda_query("queueTime", "default", "resnet", "30s")
    assert keda in [a[0] for a in asked]
    pending = charts["autoscaling-pendingRequests"]
    assert pending["series"][3]["label"] == "pendingRequests per replica"
    assert any(a[0].startswith("(" + signals.keda_query("pendingRequests", "default", "resnet", "30s"))
               for a in asked)
    # A finished canary: the range ends a minute after its last analysis, not now.
    assert not out["active"] and out["range"][1] == pytest.approx(dashboard.canary.parse_time(
        CANARY["lastAnalysisAt"]) + 60)


def test_no_prometheus_or_a_failing_one_is_said_and_status_is_still_drawn():
    obj = isvc(started_canary())
    out = dashboard.charts(obj, [(T0 + 1, {"weight": 25, "replicas": 4})], None, NOW)
    assert any("no Prometheus" in e for e in out["errors"])
    charts = {c["id"]: c for c in out["charts"]}
    assert set(charts) == {"weight", "replicas"}  # the checks need Prometheus; status's series do not
    assert charts["weight"]["data"][1][-1] == 25

    def failing(*_):
        raise dashboard.QueryFailed("HTTP 503")

    out = dashboard.charts(obj, [], failing, NOW)
    assert "errorRate: HTTP 503" in out["errors"]


def test_no_canary_shows_the_last_15_minutes_of_replicas():
    out = dashboard.charts(isvc(), [], recording()[0], NOW)
    assert [c["id"] for c in out["charts"]] == ["replicas"] and out["range"] == [NOW - 900, NOW]
    assert len(out["charts"][0]["data"][0]) <= dashboard.MAX_POINTS + 1


def test_the_grid_never_exceeds_its_points():
    xs, step = dashboard.grid(0, 86400 * 7, 2)
    assert len(xs) <= dashboard.MAX_POINTS + 1 and step >= 2 and xs[0] == 0
    xs, step = dashboard.grid(10.4, 20.2, 2)
    assert xs == [10, 12, 14, 16, 18, 20] and step == 2


def test_the_recorder_keeps_changes_and_a_heartbeat_and_is_bounded():
    rec = dashboard.Recorder(limit=3)
    obj = isvc(started_canary())
    assert len(rec.record(obj, 1.0)) == 1
    assert len(rec.record(obj, 2.0)) == 1  # unchanged: not kept
    assert len(rec.record(obj, 40.0)) == 2  # a heartbeat every 30 s
    for t in range(3):
        rec.record(isvc(started_canary(weight=10 + t)), 50.0 + t)
    kept = rec.record(obj, 60.0)
    assert len(kept) == 3 and kept[-1][1]["weight"] == 25


# ---- the server -------------------------------------------------------------------------------------------


class FakeCluster:
    namespace = "default"

    def __init__(self, obj: dict | None) -> None:
        self.obj = obj

    def isvc(self, name: str, namespace: str | None = None) -> dict:
        if self.obj is None or name != self.obj["metadata"]["name"]:
            raise UserError(f'Error from server (NotFound): inferenceservices "{name}" not found')
        return self.obj

    def isvcs(self, namespace: str | None = None) -> list[dict]:
        return [self.obj] if self.obj else []

    def children(self, obj):
        deps, pods = canary_objects()
        return deps, pods, None


@pytest.fixture
def served():
    board = dashboard.Dashboard(FakeCluster(isvc(started_canary())), prometheus=None, refresh=1.0,
                                clock=lambda: NOW)
    with serving(dashboard.server(board, 0)) as url:
        yield url


def get(url: str) -> tuple[int, str, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=10) as r:
            return r.status, r.headers["Content-Type"], r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.headers["Content-Type"], e.read()


def test_the_server_binds_loopback_only():
    httpd = dashboard.server(dashboard.Dashboard(FakeCluster(None)), 0)
    try:
        assert httpd.server_address[0] == "127.0.0.1"
    finally:
        httpd.server_close()


def test_the_server_serves_pages_data_and_its_own_scripts(served):
    code, kind, body = get(served + "/")
    assert code == 200 and b'href="/isvc/default/resnet"' in body
    code, kind, body = get(served + "/isvc/default/resnet")
    assert code == 200 and b'src="/static/uPlot.iife.min.js"' in body and b'data-name="resnet"' in body
    assert b"http" not in body.replace(b"http-equiv", b"")  # nothing from elsewhere: no CDN
    code, kind, body = get(served + "/api/isvc/default/resnet")
    data = json.loads(body)
    assert code == 200 and data["active"] and data["refresh"] == 1.0
    assert data["overview"]["canary"]["phase"] == "Progressing" and "⟳ resnet" in data["tree"]
    code, kind, body = get(served + "/static/uPlot.iife.min.js")
    assert code == 200 and kind.startswith("text/javascript") and body.startswith(b"/*! https://github.com/leeoniya/uPlot")


def test_the_server_serves_nothing_else(served):
    for path in ("/static/..%2Fplugin.py", "/static/../plugin.py", "/static/dashboard.py", "/etc/passwd",
                 "/isvc/default"):
        assert get(served + path)[0] == 404, path
    code, _, body = get(served + "/api/isvc/default/absent")
    assert code == 502 and json.loads(body) == {"error": 'Error from server (NotFound): inferenceservices "absent" not found'}
