"""The operator's own Prometheus metrics (reconcile counts, durations, writes)."""

from __future__ import annotations

from prometheus_client import REGISTRY, Counter, Gauge, Histogram, start_http_server

RECONCILES = Counter(
    "inference_operator_reconcile_total",
    "Reconcile passes, by trigger (create, update, resume, child) and result (ok, problem, error).",
    ["trigger", "result"],
)
RECONCILE_SECONDS = Histogram(
    "inference_operator_reconcile_duration_seconds",
    "Duration of one reconcile pass.",
    ["trigger"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
WRITES = Counter(
    "inference_operator_writes_total",
    "Write requests sent to the API server by reconcile passes (children and status), by namespace.",
    ["namespace"],
)

API_REQUESTS = Counter(
    "inference_operator_api_requests_total",
    "Requests the operator's passes sent to the API server (watches are kopf's and not counted), "
    "by verb (get, apply, patch, create, delete), resource and HTTP code.",
    ["verb", "resource", "code"],
)
WATCH_EVENTS = Counter(
    "inference_operator_watch_events_total",
    "Watch events that woke (or would have woken) a pass, by kind; passes coalesce them, so "
    "inference_operator_reconcile_total grows slower than this under pod churn.",
    ["kind"],
)
LEADER = Gauge(
    "inference_operator_leader", "1 while this replica runs passes: it leads (or leader election is off)."
)
QUEUE_DEPTH = Gauge(
    "inference_operator_queue_depth", "InferenceServices waiting for a pass (due now)."
)
RETRIES = Counter(
    "inference_operator_retries_total", "Passes that failed and were put back with backoff, by error class.",
    ["error"],
)


def serve(port: int, address: str = "0.0.0.0") -> None:
    start_http_server(port, addr=address, registry=REGISTRY)


def count_request(verb: str, resource: str, code: str) -> None:
    """RestKube's ``count``: one request the passes sent."""
    API_REQUESTS.labels(verb, resource, code).inc()
