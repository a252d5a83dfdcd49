"""The rollout view's data (dashboard.py): charts built from status and range queries (pure, with a
recording query function), and its HTTP server with a stand-in for the API server. The real path
(the plugin's process, a real Prometheus, Chromium) is e2e/test_plugin.py."""

from __future__ import annotations

import base64
import json
import socket
import time
import urllib.error
import urllib.request

import pytest

from inference_operator import api, promql
from inference_operator.desired import signals
from inference_operator.kubectl import dashboard
from inference_operator.kubectl.userclient import UserError
from inference_operator.rollout import analysis

from .overview_objects import CANARY, NOW, REV_A, REV_B, canary_objects, isvc
from .servers import metrics_handler, serving

T0 = 1_764_000_000.0 - 600  # the canary started 10 minutes before NOW


class Recording:
    """A Reader answering ``answer(query, x)`` at every step, and ``revisions`` to a label query;
    the queries it was asked."""

    def __init__(self, answer=lambda query, x: 0.5, revisions=()) -> None:
        self.answer, self.revisions = answer, list(revisions)
        self.asked: list[tuple[str, float, float, float]] = []
        self.label_queries: list[tuple[str, float, str]] = []

    def range(self, text: str, start: float, end: float, step: float) -> dict[float, float]:
        self.asked.append((text, start, end, step))
        out, x = {}, start
        while x <= end:
            out[x] = self.answer(text, x)
            x += step
        return out

    def labels(self, query: str, at: float, label: str) -> list[str]:
        self.label_queries.append((query, at, label))
        return self.revisions

    def queries(self) -> list[str]:
        return [a[0] for a in self.asked]


def started_canary(**changes) -> dict:
    return dict(CANARY, startedAt="2025-11-24T15:50:00Z", stepStartedAt="2025-11-24T15:55:00Z", **changes)


def test_each_check_is_drawn_with_the_analysis_own_promql_and_its_bound():
    obj = isvc(started_canary())
    prom = Recording(lambda q, x: 0.004 if "revision=\"" + REV_B in q else 0.003)
    out = dashboard.charts(obj, [], prom, NOW)
    typed = api.parse(obj)
    q = analysis.queries(typed.spec.rollout.canary.analysis, "default", "resnet50", REV_B, REV_A)
    asked_queries = prom.queries()
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
    prom = Recording(lambda q, x: 42.0)
    chart = {c["id"]: c for c in dashboard.charts(obj, samples, prom, NOW)["charts"]}["weight"]
    xs, asked_weight = chart["data"][0], chart["data"][1]
    at = dict(zip(xs, asked_weight))
    assert at[T0 - 60] is None  # nothing known yet
    assert at[T0 - 30] == 0  # sampled before the canary
    assert at[T0] == 25  # the first step's weight, from status.canary.startedAt
    assert at[T0 + 15] is None  # when the first step ended is not in status: a gap
    assert at[T0 + 120] == 25  # what the dashboard saw
    assert at[T0 + 300] == 50 and asked_weight[-1] == 50  # the current step's, from stepStartedAt
    share = next(q for q in prom.queries() if "100 * sum(rate(nv_inference_request_success" in q)
    assert f'revision="{REV_B}"' in share and 'inferenceservice="resnet"' in share
    assert set(chart["data"][3]) == {42.0}


def test_replicas_against_each_autoscaling_signal_and_its_target():
    obj = isvc(started_canary(phase="Promoted"), autoscaling={"engine": "keda", "maxReplicas": 8, "window": "30s",
                                                              "targets": [{"name": "queueTime", "value": "50ms"},
                                                                          {"name": "pendingRequests", "value": "4"}]})
    prom = Recording(lambda q, x: 3.0 if q.startswith("count(") else 0.08, revisions=[REV_A, REV_B])
    out = dashboard.charts(obj, [(T0, {"replicas": 3, "desiredReplicas": 4})], prom, NOW)
    charts = {c["id"]: c for c in out["charts"]}
    queue = charts["autoscaling-queueTime"]
    assert queue["unit2"] == "seconds" and [s["axis"] for s in queue["series"]] == ["y", "y", "y", "y2", "y2"]
    assert set(queue["data"][5]) == {0.05} and set(queue["data"][4]) == {0.08} and set(queue["data"][1]) == {3.0}
    assert queue["data"][3][-1] == 4 and queue["data"][2][-1] == 3
    # The ScaledObject's own query, without `or vector(0)`: no data is drawn as a gap.
    keda = signals.keda_query("queueTime", "default", "resnet", "30s")
    assert keda.endswith(" or vector(0)") and keda.removesuffix(" or vector(0)") in prom.queries()
    pending = charts["autoscaling-pendingRequests"]
    assert pending["series"][3]["label"] == "pendingRequests per replica"
    pending_query = signals.keda_query("pendingRequests", "default", "resnet", "30s", empty_is_zero=False)
    assert any(q.startswith(f"sum({pending_query}) / clamp_min(") for q in prom.queries())
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

    out = dashboard.charts(obj, [], dashboard._Missing("HTTP 503"), NOW)
    assert "errorRate: HTTP 503" in out["errors"]


def test_no_canary_shows_the_last_15_minutes_of_replicas():
    out = dashboard.charts(isvc(), [], Recording(), NOW)
    assert [c["id"] for c in out["charts"]] == ["replicas"] and out["range"] == [NOW - 900, NOW]
    young = isvc()
    young["metadata"]["creationTimestamp"] = "2025-11-24T15:58:00Z"  # two minutes before NOW
    assert dashboard.charts(young, [], Recording(), NOW)["range"] == [NOW - 180, NOW]
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
        return deps, pods, None, None


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
                 "/isvc/default", "/api/isvc/..%2F..%2F..%2Fapi%2Fv1%2Fnamespaces%2Fkube-system%2Fsecrets%2Fx/y",
                 "/api/isvc/default/x%3FlabelSelector%3Da", "/api/isvc/Default/resnet", "/isvc/default/a_b"):
        assert get(served + path)[0] == 404, path
    code, _, body = get(served + "/api/isvc/default/absent")
    assert code == 502 and json.loads(body) == {"error": 'Error from server (NotFound): inferenceservices "absent" not found'}


def test_a_page_that_is_not_the_dashboard_s_own_is_refused(served):
    """DNS rebinding: a page elsewhere whose name now points at 127.0.0.1 still sends its own Host."""
    request = urllib.request.Request(served + "/api/isvc/default/resnet", headers={"Host": "evil.example"})
    try:
        urllib.request.urlopen(request, timeout=10)
        raise AssertionError("served")
    except urllib.error.HTTPError as e:
        assert e.code == 403
    port = served.rsplit(":", 1)[1]
    request = urllib.request.Request(served + "/", headers={"Host": f"localhost:{port}"})
    with urllib.request.urlopen(request, timeout=10) as r:
        assert r.status == 200
    for host in ("127.0.0.1:1", "localhost", "127.0.0.1"):
        request = urllib.request.Request(served + "/", headers={"Host": host})
        try:
            urllib.request.urlopen(request, timeout=10)
            raise AssertionError(f"served to Host {host}")
        except urllib.error.HTTPError as e:
            assert e.code == 403
    with socket.create_connection(("127.0.0.1", int(port)), timeout=10) as conn:  # HTTP/1.0, no Host at all
        conn.sendall(b"GET / HTTP/1.0\r\n\r\n")
        assert conn.recv(64).startswith(b"HTTP/1.0 403")


def test_a_failure_of_the_dashboard_is_one_line_to_the_page(served, monkeypatch, capsys):
    monkeypatch.setattr(dashboard.Dashboard, "data", lambda self, ns, name: 1 / 0)
    code, _, body = get(served + "/api/isvc/default/resnet")
    assert code == 500 and json.loads(body) == {"error": "the dashboard failed: ZeroDivisionError: division by zero"}
    assert "Traceback" in capsys.readouterr().err


def test_a_promoted_canary_is_still_drawn_against_the_revision_it_replaced():
    promoted = started_canary(phase="Promoted", stableRevision=REV_B)  # status names the canary as stable now
    obj = isvc(promoted)
    # The dashboard saw the canary run: its memory names the stable.
    seen = [(T0 + 5, {"revision": REV_B, "stableRevision": REV_A})]
    prom = Recording()
    out = dashboard.charts(obj, seen, prom, NOW)
    lat = {c["id"]: c for c in out["charts"]}["check-requestLatency"]
    assert [s["label"] for s in lat["series"]] == [f"canary {REV_B}", f"stable {REV_A}", "stable +20%"]
    assert prom.label_queries == []
    # It did not: Prometheus names the other revision it saw at the last analysis.
    prom = Recording(revisions=[REV_A, REV_B])
    lat = {c["id"]: c for c in dashboard.charts(obj, [], prom, NOW)["charts"]}["check-requestLatency"]
    assert [s["label"] for s in lat["series"]][1] == f"stable {REV_A}"
    [(query, at, label)] = prom.label_queries
    assert label == "revision" and at == dashboard.canary.parse_time(CANARY["lastAnalysisAt"])
    # Neither: said, and the canary drawn alone.
    out = dashboard.charts(obj, [], Recording(revisions=[REV_B]), NOW)
    lat = {c["id"]: c for c in out["charts"]}["check-requestLatency"]
    assert [s["role"] for s in lat["series"]] == ["value"]
    assert any(e.startswith("the stable revision's line:") for e in out["errors"]), out["errors"]


def test_the_effective_weight_is_drawn_from_the_samples():
    obj = isvc(started_canary())
    chart = {c["id"]: c for c in dashboard.charts(obj, [(T0 + 1, {"weight": 25, "effectiveWeight": 20})],
                                                  Recording(), NOW)["charts"]}["weight"]
    assert chart["series"][1]["label"] == "effective weight (status)" and chart["data"][2][-1] == 20


def test_the_real_prometheus_one_series_per_plot_and_the_revisions_it_saw(tmp_path):
    import http.server

    from .prometheus import Prometheus, require_prometheus

    require_prometheus()
    Metrics = metrics_handler(b'# TYPE nv_inference_request_success counter\nnv_inference_request_success{model="m"} 7\n')

    with serving(http.server.ThreadingHTTPServer(("127.0.0.1", 0), Metrics)) as a, \
            serving(http.server.ThreadingHTTPServer(("127.0.0.1", 0), Metrics)) as b, \
            Prometheus([], workdir=tmp_path / "prometheus", file_sd=True) as prom:
        prom.set_file_targets([(a.removeprefix("http://"), {"namespace": "ns", "inferenceservice": "s", "revision": "r1"}),
                               (b.removeprefix("http://"), {"namespace": "ns", "inferenceservice": "s", "revision": "r2"})])
        prom.wait_for('count(nv_inference_request_success{namespace="ns"}) == 2', timeout=30)
        reader = dashboard.PrometheusReader(prom.url)
        now = float(int(time.time()) + 1)  # a whole second after both were seen
        time.sleep(max(0.0, now - time.time()) + 0.1)
        values = reader.range('sum(nv_inference_request_success{namespace="ns"})', now - 10, now, 2)
        assert values and set(values) <= {now - 10 + 2 * i for i in range(6)} and values[now] == 14
        with pytest.raises(dashboard.QueryFailed, match="gives 2 series at once, not one number"):
            reader.range('nv_inference_request_success{namespace="ns"}', now - 10, now, 2)
        assert reader.labels('nv_inference_request_success{namespace="ns"}', now, "revision") == ["r1", "r2"]
        with pytest.raises(dashboard.QueryFailed):
            reader.range("sum(", now - 10, now, 2)
    with pytest.raises(dashboard.QueryFailed):
        dashboard.PrometheusReader(prom.url, timeout=2).range("up", now - 10, now, 2)  # stopped


class Scripted(FakeCluster):
    """A cluster whose InferenceService is given, and whose Secret reads are recorded or refused."""

    def __init__(self, obj, secret=None):
        super().__init__(obj)
        self.secret_data, self.secret_reads = secret, []

    def secret(self, namespace, name):
        self.secret_reads.append((namespace, name))
        if self.secret_data is None:
            raise UserError(f'Error from server (Forbidden): secrets "{name}" is forbidden')
        return self.secret_data


def _secret(data: dict, labelled: bool = True, kind: str = "Opaque") -> dict:
    labels = {"serving.inference-operator.io/prometheus-credentials": "true"} if labelled else {}
    return {"metadata": {"name": "prom-creds", "labels": labels}, "type": kind,
            "data": {k: base64.b64encode(v.encode()).decode() for k, v in data.items()}}


def _with_secret_name(address: str = "http://prom.example:9090") -> dict:
    obj = isvc(started_canary())
    obj["spec"]["rollout"]["canary"]["analysis"]["prometheus"] = {"address": address, "secretName": "prom-creds"}
    return obj


def test_the_analysis_credentials_are_read_as_the_user_and_used_as_the_operator_uses_them():
    obj = _with_secret_name()
    reader, problems = dashboard.Dashboard(Scripted(obj, _secret({"token": "s3cret\n"}))).reader(obj)
    assert problems == [] and reader.client.headers == {"Authorization": "Bearer s3cret"}  # stripped
    reader, problems = dashboard.Dashboard(Scripted(obj, _secret({"username": "u", "password": "p"}))).reader(obj)
    assert problems == [] and reader.client.auth == ("u", "p")


@pytest.mark.parametrize("secret,why", [
    (_secret({"token": "t"}, labelled=False), "is not labelled serving.inference-operator.io/prometheus-credentials=true"),
    (_secret({"token": "t"}, kind="kubernetes.io/service-account-token"), "is a service account token"),
    (_secret({"other": "x"}), "holds neither token nor username"),
])
def test_a_secret_the_operator_would_not_use_is_not_sent_either(secret, why):
    """Whoever writes the spec names the Secret and the address: only a Secret labelled for
    Prometheus goes there, never a service account's token (as the operator, controller/analyzer.py)."""
    obj = _with_secret_name("https://attacker.example")
    reader, problems = dashboard.Dashboard(Scripted(obj, secret)).reader(obj)
    assert reader.client.headers is None and reader.client.auth is None
    assert problems == [f"Prometheus credentials not used: Secret default/prom-creds {why}"]


def test_credentials_go_only_to_the_analysis_address_or_the_one_given():
    obj = isvc(started_canary(), autoscaling={"engine": "keda", "maxReplicas": 3,
                                              "keda": {"serverAddress": "http://keda-prom.example"}})
    obj["spec"]["rollout"]["canary"]["analysis"]["prometheus"] = {"secretName": "prom-creds"}  # no address
    cluster = Scripted(obj, _secret({"token": "t"}))
    reader, _ = dashboard.Dashboard(cluster).reader(obj)  # the KEDA address, a fallback: no credentials
    assert reader.client.url == "http://keda-prom.example" and reader.client.headers is None
    assert cluster.secret_reads == []
    reader, _ = dashboard.Dashboard(cluster, prometheus="http://127.0.0.1:9090").reader(obj)  # given: yes
    assert reader.client.headers == {"Authorization": "Bearer t"}


def test_the_analysis_credentials_not_readable_as_the_user_are_said():
    obj = _with_secret_name()
    reader, problems = dashboard.Dashboard(Scripted(obj, None)).reader(obj)
    assert reader.client.headers is None
    assert problems == ['Prometheus credentials (Secret prom-creds) not readable as you: Error from server '
                        '(Forbidden): secrets "prom-creds" is forbidden; pass --prometheus-token-file with --prometheus']
    cluster = Scripted(obj, None)
    reader, problems = dashboard.Dashboard(cluster, prometheus="http://127.0.0.1:9090", token="t").reader(obj)
    assert problems == [] and reader.client.headers == {"Authorization": "Bearer t"} and cluster.secret_reads == []
    assert reader.client.url == "http://127.0.0.1:9090"


def test_an_invalid_header_is_said_without_quoting_it():
    reader = dashboard.PrometheusReader("http://127.0.0.1:9", promql.Auth(token="bad\ntoken"))
    with pytest.raises(dashboard.QueryFailed) as exc:
        reader.range("up", 0, 10, 5)
    assert str(exc.value) == "the credentials are not a valid HTTP header"


def test_a_promotion_from_a_later_step_leaves_the_steps_between_as_a_gap():
    obj = isvc(started_canary(phase="Promoting", stepIndex=1, weight=100))
    obj["spec"]["rollout"]["canary"]["steps"] = [{"weight": 10}, {"weight": 50}]
    at = dict(zip(*[c for c in dashboard.charts(obj, [], Recording(), NOW)["charts"]
                    if c["id"] == "weight"][0]["data"][:2]))
    assert at[T0] == 10 and at[T0 + 15] is None and at[T0 + 300] == 100  # step 2 (50%) was not seen


def test_a_clock_behind_the_api_server_draws_one_point_not_a_failure():
    obj = isvc(started_canary())
    out = dashboard.charts(obj, [], Recording(), T0 - 600)  # "now" before the canary started
    assert all(len(c["data"][0]) == 1 for c in out["charts"]) and out["charts"]


def test_an_idle_page_refreshes_less_often():
    board = dashboard.Dashboard(FakeCluster(isvc(started_canary(phase="Promoted"))), refresh=1.0, clock=lambda: NOW)
    assert board.data("default", "resnet")["refresh"] == dashboard.IDLE_REFRESH_SECONDS


def test_the_index_escapes_what_status_says():
    obj = isvc(started_canary(phase="<script>alert(1)</script>"))
    page = dashboard.Dashboard(FakeCluster(obj)).index()
    assert "<script>" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
