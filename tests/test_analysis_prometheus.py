"""Canary analysis against real processes: four real tritonservers serve the same model as four
revisions (a stable one, a good canary, a slow canary and a failing canary), one real Prometheus
scrapes them with the labels a kubernetes_sd scrape would give (namespace, revision, pod), and
``analysis.run`` asks it through ``prometheus.prometheus_query``, exactly as the operator does.

One module-scoped lab (servers, Prometheus, one bounded load over every revision at once) serves
every test; each test evaluates the analysis at a chosen instant (``at``), so the rate windows cover
the load, or a quiet time after it. ``pytest -s`` prints every measured value.
"""

from __future__ import annotations

import dataclasses
import pathlib
import time

import pytest

from inference_operator import api, prometheus, promql
from inference_operator.rollout import analysis
from inference_operator.rollout.analysis import ERROR, FAIL, INCONCLUSIVE, PASS

from .canary_model import Load, write_model
from .prometheus import Prometheus, require_prometheus
from .triton import TritonServer, python_backend_dir, require_triton

MODEL = "resnet"  # every revision serves the same model: only the revision label tells them apart
NAMESPACE = "prod"
WINDOW = "8s"
WINDOW_S = 8.0
MIN_REQUESTS = 20
LOAD_S = 10.0
SUMMARY = ("--metrics-config=summary_latencies=true",)

# revision: (model knobs, requests per second of the load). One Load thread per revision sends one
# request at a time, so the slow revision (40 ms a request) gets a rate it can keep up with.
REVISIONS = {
    "stable": ({"delay_ms": 5, "failure_rate": 0.0}, 20),
    "good": ({"delay_ms": 5, "failure_rate": 0.0}, 20),
    "slow": ({"delay_ms": 40, "failure_rate": 0.0}, 15),
    "failing": ({"delay_ms": 5, "failure_rate": 0.3}, 20),
}


def spec(checks: list[dict], **fields) -> api.Analysis:
    return api.Analysis.model_validate(
        {"interval": "10s", "window": WINDOW, "minRequests": MIN_REQUESTS, "checks": checks, **fields})


def show(title: str, verdict: analysis.Verdict) -> None:
    """What the analysis measured, for `pytest -s` (and the release note)."""
    print(f"\n[{title}] verdict={verdict.result} requests={verdict.requests}")
    for c in verdict.checks:
        print(f"  {c.name}: {c.result} value={c.value!r} stable={c.stable!r} bound={c.bound!r} -- {c.message}")


@dataclasses.dataclass
class Lab:
    servers: dict[str, TritonServer]
    prom: Prometheus
    loads: dict[str, Load]
    load_end: float  # wall-clock time (time.time()) when every load had finished
    root: pathlib.Path

    def query(self, at: float) -> promql.Query:
        return prometheus.prometheus_query(self.prom.url, at=at)

    def run(self, a: api.Analysis, canary: str, at: float, stable: str | None = "stable") -> analysis.Verdict:
        return analysis.run(a, NAMESPACE, MODEL, canary, stable, self.query(at))

    def wait_scraped_after(self, t: float, timeout: float = 30) -> None:
        """Until every target has a sample later than t (so an evaluation at t reads complete data)."""
        remaining = t - time.time()
        if remaining > 0:
            time.sleep(remaining)
        self.prom.wait_for(f"count(timestamp(up == 1) > {t + 0.5:.3f}) == {len(self.servers)}", timeout=timeout)


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    home = require_triton()
    require_prometheus()
    root = tmp_path_factory.mktemp("analysis")
    backends = python_backend_dir(root, home)  # once per root
    servers: dict[str, TritonServer] = {}
    prom = None
    try:
        for revision, (knobs, _) in REVISIONS.items():
            repository = root / revision / "repo"  # each server logs to <repository>/../tritonserver.log
            write_model(repository, MODEL, **knobs)
            servers[revision] = TritonServer(home, repository, backends, MODEL, extra_args=SUMMARY)
        for server in servers.values():
            server.wait_ready(f"/v2/models/{MODEL}/ready")

        targets = [(f"127.0.0.1:{s.metrics}", {"namespace": NAMESPACE, "revision": r, "pod": f"{MODEL}-{r}-0"})
                   for r, s in servers.items()]
        prom = Prometheus(targets, workdir=root / "prometheus").start()
        # Every revision's request counter is scraped (at 0) before the load starts.
        prom.wait_for(f'count(nv_inference_request_success{{namespace="{NAMESPACE}",model="{MODEL}"}}) == 4',
                      timeout=30)

        loads = {r: Load([servers[r].url("")], MODEL, rate_per_second=rate, duration_s=LOAD_S)
                 for r, (_, rate) in REVISIONS.items()}
        for load in loads.values():
            load.start()
        try:
            for load in loads.values():
                load.join(timeout=LOAD_S + 20)
        finally:
            for load in loads.values():
                load.stop()
        load_end = time.time()
        for r, load in loads.items():
            print(f"\n[load] {r}: sent={load.sent} ok={load.ok} failed={load.failed} errors={load.errors[:3]}")
            assert load.errors == [], f"{r}: {load.errors[:3]}"
            assert load.sent == load.limit, f"{r}: sent {load.sent} of {load.limit}"

        lab = Lab(servers, prom, loads, load_end, root)
        lab.wait_scraped_after(load_end)
        yield lab
    finally:
        if prom is not None:
            prom.stop()
        for server in servers.values():
            server.stop()


ALL_CHECKS = [
    {"name": "errorRate", "max": "1%"},
    {"name": "requestLatency", "maxIncrease": "50%"},
    {"name": "queueTime", "max": "50ms"},
    {"name": "computeTime", "max": "50ms"},
    {"name": "latencyQuantile", "quantile": 0.99, "max": "100ms"},
]


def test_good_canary_passes_every_check(lab):
    verdict = lab.run(spec(ALL_CHECKS), "good", at=lab.load_end)
    show("good canary vs stable", verdict)
    assert verdict.result == PASS, verdict.message
    assert [c.name for c in verdict.checks] == [c["name"] for c in ALL_CHECKS]
    assert all(c.result == PASS for c in verdict.checks), verdict.message
    by_name = {c.name: c for c in verdict.checks}
    assert all(c.value is not None for c in verdict.checks)
    # About 8 s of 20 requests a second in the window.
    assert MIN_REQUESTS <= verdict.requests <= 20 * (WINDOW_S + 2)
    assert by_name["errorRate"].value == 0
    # The model sleeps 5 ms per request: the canary and the stable measure about that.
    latency = by_name["requestLatency"]
    assert 0.004 <= latency.value <= 0.05
    assert latency.stable is not None and 0.004 <= latency.stable <= 0.05
    assert by_name["computeTime"].value >= 0.004
    assert by_name["latencyQuantile"].value >= 0.004
    assert by_name["queueTime"].value >= 0


def test_slow_canary_fails_request_latency(lab):
    a = spec([{"name": "requestLatency", "max": "20ms", "maxIncrease": "50%"}])
    verdict = lab.run(a, "slow", at=lab.load_end)
    show("slow canary vs stable", verdict)
    assert verdict.result == FAIL, verdict.message
    (check,) = verdict.checks
    assert check.result == FAIL
    # 40 ms a request against the stable's 5 ms.
    assert 0.035 <= check.value <= 0.2
    assert 0.004 <= check.stable <= 0.03
    assert check.value > 1.5 * check.stable
    failed = verdict.failed()
    print(f"  failed(): {failed}")
    assert failed.startswith("requestLatency: ")
    assert "> max 20ms" in failed and "+ 50%" in failed
    assert check.bound == "max 20ms, maxIncrease 50%"
    # The same window judges the good canary a pass on the same check: the bound tells them apart.
    assert lab.run(a, "good", at=lab.load_end).result == PASS


def test_failing_canary_fails_error_rate(lab):
    a = spec([{"name": "errorRate", "max": "1%"}, {"name": "requestLatency", "maxIncrease": "50%"}])
    verdict = lab.run(a, "failing", at=lab.load_end)
    show("failing canary", verdict)
    assert verdict.result == FAIL, verdict.message
    check, latency = verdict.checks
    assert check.result == FAIL
    assert 0.15 <= check.value <= 0.45  # the model fails 30% of requests
    assert verdict.failed().startswith("errorRate: ") and "> max 1%" in verdict.failed()
    # Its failures are fast (5 ms, as the stable's successes): errorRate alone fails it.
    assert latency.result == PASS, latency.message
    # The client saw the same 30%.
    load = lab.loads["failing"]
    assert load.failed == pytest.approx(0.3 * load.sent, abs=2)
    # The stable revision, read through the same queries, has no errors.
    stable = lab.run(spec([{"name": "errorRate", "max": "1%"}]), "stable", at=lab.load_end, stable=None)
    show("stable revision, errorRate", stable)
    assert stable.result == PASS, stable.message


def test_no_traffic_is_inconclusive_never_a_pass(lab):
    a = spec(ALL_CHECKS)

    # A revision that never served a request: no series at all.
    verdict = lab.run(a, "never-deployed", at=lab.load_end)
    show("revision with no series", verdict)
    assert verdict.result == INCONCLUSIVE, verdict.message
    assert verdict.requests is None
    assert all(c.result == INCONCLUSIVE for c in verdict.checks)
    assert "fewer than minRequests" in verdict.message

    # Traffic during the window, but fewer requests than minRequests asks.
    verdict = lab.run(spec(ALL_CHECKS, minRequests=100_000), "good", at=lab.load_end)
    show("good canary, minRequests 100000", verdict)
    assert verdict.result == INCONCLUSIVE, verdict.message
    assert verdict.requests is not None and verdict.requests >= MIN_REQUESTS
    assert all(c.result == INCONCLUSIVE for c in verdict.checks)

    # The good canary once its traffic has stopped: its series are there, but the window ending
    # well after the load saw no request.
    quiet = lab.load_end + WINDOW_S + 3
    lab.wait_scraped_after(quiet)
    verdict = lab.run(a, "good", at=quiet)
    show(f"good canary, {WINDOW_S + 3:g}s after its load", verdict)
    assert verdict.result == INCONCLUSIVE, verdict.message
    assert verdict.requests == 0
    assert all(c.result == INCONCLUSIVE for c in verdict.checks)
    assert "0 requests to the canary in the window, fewer than minRequests 20" in verdict.message


def test_prometheus_unreachable_or_refusing_is_an_error(lab):
    a = spec([{"name": "errorRate", "max": "1%"}, {"name": "requestLatency", "maxIncrease": "50%"}])

    # A Prometheus of its own (the lab's keeps serving the other tests), answering, then stopped.
    stable = lab.servers["stable"]
    own = Prometheus([(f"127.0.0.1:{stable.metrics}", {"namespace": NAMESPACE, "revision": "stable",
                                                       "pod": f"{MODEL}-stable-0"})],
                     workdir=lab.root / "prometheus-stopped").start()
    try:
        query = prometheus.prometheus_query(own.url, at=time.time())
        answered = analysis.run(a, NAMESPACE, MODEL, "good", "stable", query)
        show("own Prometheus, up", answered)
        assert answered.result != ERROR, answered.message
    finally:
        own.stop()
    verdict = analysis.run(a, NAMESPACE, MODEL, "good", "stable", query)
    show("own Prometheus, stopped", verdict)
    assert verdict.result == ERROR
    assert verdict.message.startswith("Prometheus could not be queried: ")
    assert verdict.requests is None
    assert [c.result for c in verdict.checks] == [ERROR, ERROR]
    assert all(c.message == verdict.message and c.value is None for c in verdict.checks)

    # A Prometheus that answers with an error (a query it cannot parse) is an error too, not a failure.
    bad = spec([{"name": "errorRate", "max": "1%"}, {"name": "broken", "query": "sum(", "max": "1"}])
    verdict = lab.run(bad, "good", at=lab.load_end)
    show("query Prometheus refuses", verdict)
    assert verdict.result == ERROR
    assert verdict.message.startswith("Prometheus could not be queried: ")
    assert "400" in verdict.message
