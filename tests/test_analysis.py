"""The analysis of a canary, pure: the PromQL of each check, and the verdict on its answers."""

import pytest

from inference_operator import api, prometheus, promql
from inference_operator.rollout import analysis
from inference_operator.rollout.analysis import ERROR, FAIL, INCONCLUSIVE, PASS


def make(checks, **fields) -> api.Analysis:
    return api.Analysis(checks=[api.Check(**c) for c in checks], **fields)


SEL = 'namespace="prod",revision="abc",model="resnet"'


def test_selector_quotes_values():
    assert analysis.selector("prod", "abc", "resnet") == SEL
    assert analysis.selector("a", 'x"y', "m\\n") == 'namespace="a",revision="x\\"y",model="m\\\\n"'


@pytest.mark.parametrize("duration,expected", [
    ("30s", 30), ("1m30s", 90), ("500ms", 0.5), ("2h", 7200), ("1.5s", 1.5), ("800us", 0.0008),
])
def test_seconds(duration, expected):
    assert promql.seconds(duration) == pytest.approx(expected)


@pytest.mark.parametrize("bad", ["", "30", "s", "1x", "30s garbage"])
def test_seconds_refuses(bad):
    with pytest.raises(ValueError):
        promql.seconds(bad)


@pytest.mark.parametrize("check,expected", [
    ({"name": "errorRate", "max": "1%"},
     f"(sum(increase(nv_inference_request_failure{{{SEL}}}[30000ms])) or vector(0)) / "
     f"(sum(increase(nv_inference_request_success{{{SEL}}}[30000ms])) + "
     f"(sum(increase(nv_inference_request_failure{{{SEL}}}[30000ms])) or vector(0)))"),
    ({"name": "queueTime", "max": "10ms"},
     f"(sum(increase(nv_inference_queue_duration_us{{{SEL}}}[30000ms]))) / "
     f"sum(increase(nv_inference_request_success{{{SEL}}}[30000ms])) / 1e6"),
    ({"name": "requestLatency", "max": "10ms"},
     f"(sum(increase(nv_inference_request_duration_us{{{SEL}}}[30000ms]))) / "
     f"sum(increase(nv_inference_request_success{{{SEL}}}[30000ms])) / 1e6"),
    ({"name": "computeTime", "max": "10ms"},
     f"(sum(increase(nv_inference_compute_input_duration_us{{{SEL}}}[30000ms])) + "
     f"sum(increase(nv_inference_compute_infer_duration_us{{{SEL}}}[30000ms])) + "
     f"sum(increase(nv_inference_compute_output_duration_us{{{SEL}}}[30000ms]))) / "
     f"sum(increase(nv_inference_request_success{{{SEL}}}[30000ms])) / 1e6"),
    ({"name": "latencyQuantile", "quantile": 0.99, "max": "10ms"},
     f'max(nv_inference_request_summary_us{{{SEL},quantile="0.99"}}) / 1e6'),
    ({"name": "gpu", "query": "avg(nv_gpu_utilization{ {{selector}} })", "max": "0.9"},
     f"avg(nv_gpu_utilization{{ {SEL} }})"),
])
def test_the_promql_of_each_check(check, expected):
    assert analysis.check_query(api.Check(**check), SEL, "30000ms") == expected


def test_queries_ask_the_stable_only_for_relative_bounds():
    a = make([{"name": "errorRate", "max": "1%"}, {"name": "queueTime", "maxIncrease": "20%"}], interval="15s")
    q = analysis.queries(a, "prod", "resnet", "new", "old")
    assert set(q.canary) == {"errorRate", "queueTime"}
    assert set(q.stable) == {"queueTime"}
    assert 'revision="new"' in q.canary["queueTime"] and 'revision="old"' in q.stable["queueTime"]
    assert "[15000ms]" in q.requests  # the window defaults to the interval
    assert "[1000ms]" in analysis.queries(a.model_copy(update={"window": "1s"}), "p", "m", "n", "o").requests


@pytest.mark.parametrize("check,value,stable,result", [
    ({"name": "errorRate", "max": "1%"}, 0.005, None, PASS),
    ({"name": "errorRate", "max": "1%"}, 0.02, None, FAIL),
    ({"name": "errorRate", "max": "1%"}, 0.01, None, PASS),  # the bound itself holds
    ({"name": "queueTime", "max": "50ms"}, 0.049, None, PASS),
    ({"name": "queueTime", "max": "50ms"}, 0.051, None, FAIL),
    ({"name": "requestLatency", "maxIncrease": "20%"}, 0.119, 0.1, PASS),
    ({"name": "requestLatency", "maxIncrease": "20%"}, 0.121, 0.1, FAIL),
    ({"name": "requestLatency", "maxIncrease": "20%"}, 0.1, None, INCONCLUSIVE),  # no stable to compare with
    ({"name": "requestLatency", "maxIncrease": "20%", "max": "50ms"}, 0.06, None, FAIL),  # a broken max decides
    ({"name": "errorRate", "maxIncrease": "10%"}, 0.0, 0.0, PASS),
    ({"name": "errorRate", "maxIncrease": "10%"}, 0.01, 0.0, FAIL),
    ({"name": "requestLatency", "max": "1s"}, None, None, INCONCLUSIVE),  # no data is never a pass
    ({"name": "x", "query": "q{ {{selector}} }", "max": "3"}, 3.5, None, FAIL),
    ({"name": "x", "query": "q{ {{selector}} }", "max": "-1"}, -2, None, PASS),
])
def test_judge_a_check(check, value, stable, result):
    a = make([check], min_requests=10)
    verdict = analysis.judge(a, 100, {check["name"]: value}, {check["name"]: stable})
    assert verdict.result == result, verdict
    assert verdict.checks[0].result == result
    if result == FAIL:
        assert verdict.checks[0].value == value and verdict.checks[0].bound
        assert check["name"] in verdict.failed()


def test_too_few_requests_is_inconclusive_even_with_good_values():
    a = make([{"name": "errorRate", "max": "1%"}], min_requests=20)
    for requests in (None, 0, 19.4):
        verdict = analysis.judge(a, requests, {"errorRate": 0.0}, {})
        assert verdict.result == INCONCLUSIVE and "fewer than minRequests 20" in verdict.message
    assert analysis.judge(a, 20, {"errorRate": 0.0}, {}).result == PASS


def test_a_failure_outweighs_an_inconclusive_check():
    a = make([{"name": "errorRate", "max": "1%"}, {"name": "queueTime", "maxIncrease": "5%"}], min_requests=1)
    assert analysis.judge(a, 50, {"errorRate": 0.5, "queueTime": None}, {}).result == FAIL
    assert analysis.judge(a, 50, {"errorRate": 0.0, "queueTime": None}, {}).result == INCONCLUSIVE


def test_run_asks_every_query_and_an_error_is_neither_pass_nor_fail():
    a = make([{"name": "errorRate", "max": "1%"}, {"name": "queueTime", "maxIncrease": "20%"}], min_requests=1)
    q = analysis.queries(a, "prod", "m", "new", "old")
    table = {q.requests: 100.0, q.canary["errorRate"]: 0.0, q.canary["queueTime"]: 0.0011,
             q.stable["queueTime"]: 0.001}
    asked = []

    def answers(text):
        asked.append(text)
        return table[text]

    verdict = analysis.run(a, "prod", "m", "new", "old", answers)
    assert verdict.result == PASS and sorted(asked) == sorted(table)
    table[q.stable["queueTime"]] = 0.0009  # the canary now 22% slower than the stable
    verdict = analysis.run(a, "prod", "m", "new", "old", answers)
    assert verdict.result == FAIL and "queueTime" in verdict.failed() and "errorRate" not in verdict.failed()

    def down(text):
        raise promql.QueryError("connection refused")

    verdict = analysis.run(a, "prod", "m", "new", "old", down)
    assert verdict.result == ERROR and "connection refused" in verdict.message
    assert {c.result for c in verdict.checks} == {ERROR}


def test_prometheus_query_maps_what_prometheus_says(tmp_path):
    """Through prometheus-api-client against a tiny HTTP server: numbers, NaN, empty vectors,
    several series, an error status and a closed port."""
    import http.server
    import json
    import threading

    replies = {
        "one": {"status": "success", "data": {"resultType": "vector", "result": [{"metric": {}, "value": [1, "0.25"]}]}},
        "nan": {"status": "success", "data": {"resultType": "vector", "result": [{"metric": {}, "value": [1, "NaN"]}]}},
        "inf": {"status": "success", "data": {"resultType": "vector", "result": [{"metric": {}, "value": [1, "+Inf"]}]}},
        "empty": {"status": "success", "data": {"resultType": "vector", "result": []}},
        "two": {"status": "success", "data": {"resultType": "vector", "result": [
            {"metric": {"a": "1"}, "value": [1, "1"]}, {"metric": {"a": "2"}, "value": [1, "2"]}]}},
    }
    seen = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def do_GET(self):
            from urllib.parse import parse_qs, urlparse
            qs = parse_qs(urlparse(self.path).query)
            seen.append((qs["query"][0], qs.get("time", [None])[0], self.headers.get("Authorization")))
            body = replies.get(qs["query"][0])
            self.send_response(200 if body else 400)
            self.end_headers()
            self.wfile.write(json.dumps(body or {"status": "error", "error": "parse error"}).encode())

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}"
        query = prometheus.prometheus_query(url, promql.Auth(token="t0k"), at=1000.5)
        assert query("one") == 0.25
        assert query("nan") is None and query("inf") is None and query("empty") is None and query("two") is None
        with pytest.raises(promql.QueryError, match="400"):
            query("bad")
        assert seen[0] == ("one", "1000.500", "Bearer t0k")
    finally:
        server.shutdown()
        server.server_close()
    with pytest.raises(promql.QueryError):
        prometheus.prometheus_query(url, timeout=1)("one")


def test_no_credential_reaches_a_message():
    for auth in (promql.Auth(token="s3cr3t\n"), promql.Auth(username="u", password="pa\nss")):
        with pytest.raises(promql.QueryError) as err:
            prometheus.prometheus_query("http://127.0.0.1:9", auth, timeout=1)("up")
        assert "s3cr3t" not in str(err.value) and "pa\nss" not in str(err.value)
