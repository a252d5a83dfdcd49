"""The canary process harness end to end: a real Prometheus scrapes two real tritonservers, a good
revision (20 ms per request) and a bad one (every 2nd request fails), under a bounded load, and the
PromQL that canary analysis relies on sees each revision apart."""

from .canary_model import Load, infer, write_model
from .prometheus import Prometheus, require_prometheus
from .triton import TritonServer, python_backend_dir, require_triton

MODEL = "canary"


def value(result: list[dict]) -> float:
    (sample,) = result
    return float(sample["value"][1])


def test_prometheus_sees_failures_and_latency_per_revision(tmp_path):
    home = require_triton()
    require_prometheus()
    backends = python_backend_dir(tmp_path, home)
    servers = {}
    try:
        for revision, knobs in (("good", {"delay_ms": 20}), ("bad", {"failure_rate": 0.5})):
            repository = tmp_path / revision / "repo"  # each server logs to <repository>/../tritonserver.log
            write_model(repository, MODEL, **knobs)
            servers[revision] = TritonServer(home, repository, backends, MODEL)
        for server in servers.values():
            server.wait_ready(f"/v2/models/{MODEL}/ready")

        # The model itself: the bad revision fails exactly every 2nd request, with an HTTP error.
        bad = servers["bad"].url("")
        assert [infer(bad, MODEL) for _ in range(4)] == [True, False, True, False]
        assert infer(servers["good"].url(""), MODEL)

        targets = [(f"127.0.0.1:{s.metrics}", {"namespace": "ns", "pod": f"{MODEL}-{r}-0", "revision": r})
                   for r, s in servers.items()]
        with Prometheus(targets, workdir=tmp_path / "prometheus") as prom:
            prom.wait_for("count(up == 1) == 2", timeout=20)
            load = Load([servers["good"].url(""), bad], MODEL, rate_per_second=10, duration_s=6)
            with load:
                # rate() over a 5 s window needs the load still running, so this is asked during it.
                failing = prom.wait_for('sum(rate(nv_inference_request_failure{revision="bad"}[5s])) > 0', timeout=15)
                assert value(failing) > 0
                load.join(timeout=20)
            assert load.errors == []
            assert load.sent == 60 and load.ok + load.failed == load.sent
            # 30 requests to each; the bad revision's running count started at 4 above, so 15 of them fail.
            assert load.failed == 15

            # Once the last scrape is in, Prometheus' counters equal what the client saw.
            prom.wait_for(f'sum(nv_inference_request_failure{{revision="bad"}}) == {load.failed + 2}', timeout=10)
            prom.wait_for('sum(nv_inference_request_success{revision="good"}) == 31', timeout=10)
            reasons = prom.query('sum by (reason) (nv_inference_request_failure{revision="bad"})')
            assert {r["metric"].get("reason") for r in reasons if float(r["value"][1]) > 0} == {"BACKEND"}
            assert value(prom.query('sum(nv_inference_request_failure{revision="good"})')) == 0

            successes = prom.query("sum by (revision) (nv_inference_request_success)")
            by_revision = {r["metric"]["revision"]: float(r["value"][1]) for r in successes}
            assert by_revision == {"good": 31, "bad": 17}

            duration = prom.wait_for('sum(nv_inference_request_duration_us{revision="good"}) > 0', timeout=10)
            # 31 requests of at least 20 ms each.
            assert value(duration) >= 31 * 20_000
    finally:
        for server in servers.values():
            server.stop()


def test_file_sd_targets_follow_the_file(tmp_path):
    """file_sd: a target named in the file is scraped with its labels; rewritten, the file's new set
    replaces the old one (no restart)."""
    import http.server
    import threading

    from .servers import metrics_handler

    require_prometheus()
    Metrics = metrics_handler(b"# TYPE demo_total counter\ndemo_total 7\n")
    servers = [http.server.ThreadingHTTPServer(("127.0.0.1", 0), Metrics) for _ in range(2)]
    threads = [threading.Thread(target=s.serve_forever, daemon=True) for s in servers]
    for t in threads:
        t.start()
    try:
        with Prometheus([], workdir=tmp_path / "prometheus", file_sd=True) as prom:
            a, b = (f"127.0.0.1:{s.server_address[1]}" for s in servers)
            prom.set_file_targets([(a, {"namespace": "ns", "pod": "p-a", "revision": "r1"})])
            (sample,) = prom.wait_for('demo_total{job="file-sd",pod="p-a",revision="r1",namespace="ns"}', timeout=20)
            assert float(sample["value"][1]) == 7
            prom.set_file_targets([(b, {"namespace": "ns", "pod": "p-b", "revision": "r2"})])
            prom.wait_for('demo_total{pod="p-b",revision="r2"}', timeout=20)
            # The old target is dropped: its series goes stale.
            prom.wait_for('absent(demo_total{pod="p-a"})', timeout=20)
    finally:
        for s in servers:
            s.shutdown()
            s.server_close()
