"""Many InferenceServices on the local control plane: latencies, the operator's requests, memory and
CPU. Prints one table and asserts nothing (issue #8's benchmark; its CI smoke variant is to come).

    .venv/bin/python bench/scale_bench.py [--services 1000] [--rate 20] [--json OUT]

The operator runs as a separate process under its own ServiceAccount (so API Priority and
Fairness applies as in production), on kwok nodes. Phases:
1. apply N InferenceServices at --rate per second (the API client, not kubectl, so the load
   generator stays light); apply → Deployment created and apply → Ready are timed from watch
   events (p50, p99, max), and the time until every one is Ready;
2. requests of the operator by verb, from the API server's audit log: per new InferenceService,
   idle through resyncs, across a restart; and HTTP 429 replies;
3. the operator's RSS (peak, steady) and CPU seconds per created InferenceService, and idle;
4. a restart with N existing InferenceServices: how long a new one then waits for its Deployment.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import statistics
import sys
import tempfile
import threading
import time

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

import kubernetes  # noqa: E402
import urllib3  # noqa: E402

from e2e.conftest import wait_for  # noqa: E402
from requests_bench import audit_counts, bench_cluster, manifest  # noqa: E402

GROUP, VERSION, PLURAL = "serving.inference-operator.io", "v1alpha1", "inferenceservices"


urllib3.disable_warnings(urllib3.exceptions.InsecureRequestWarning)  # the local cluster's own CA


def count_429(log: pathlib.Path) -> int:
    found = 0
    for line in log.read_bytes().splitlines():
        event = json.loads(line)
        if event.get("stage") == "ResponseComplete" and (event.get("responseStatus") or {}).get("code") == 429:
            found += 1
    return found


def proc_stats(pid: int) -> tuple[float, float, float]:
    """(RSS MiB, peak RSS MiB, CPU seconds) of a process, from /proc."""
    status = pathlib.Path(f"/proc/{pid}/status").read_text()
    fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
    rss = int(fields["VmRSS"].split()[0]) / 1024
    peak = int(fields["VmHWM"].split()[0]) / 1024
    stat = pathlib.Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = __import__("os").sysconf("SC_CLK_TCK")
    cpu = (int(stat[11]) + int(stat[12])) / ticks  # utime + stime
    return rss, peak, cpu


class Watcher:
    """Arrival times of Deployments and of Ready=True InferenceServices, from watch streams."""

    def __init__(self, client: kubernetes.client.ApiClient, namespace: str) -> None:
        self.created: dict[str, float] = {}
        self.ready: dict[str, float] = {}
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._deployments, args=(client, namespace), daemon=True),
            threading.Thread(target=self._isvcs, args=(client, namespace), daemon=True),
        ]
        for t in self._threads:
            t.start()

    def _deployments(self, client, namespace):
        apps = kubernetes.client.AppsV1Api(client)
        while not self._stop.is_set():
            for event in kubernetes.watch.Watch().stream(apps.list_namespaced_deployment, namespace,
                                                          timeout_seconds=30):
                name = event["object"].metadata.name.removesuffix("-predictor")
                self.created.setdefault(name, time.monotonic())

    def _isvcs(self, client, namespace):
        api = kubernetes.client.CustomObjectsApi(client)
        while not self._stop.is_set():
            for event in kubernetes.watch.Watch().stream(api.list_namespaced_custom_object, GROUP, VERSION,
                                                          namespace, PLURAL, timeout_seconds=30):
                obj = event["object"]
                conditions = (obj.get("status") or {}).get("conditions") or []
                if any(c["type"] == "Ready" and c["status"] == "True" for c in conditions):
                    self.ready.setdefault(obj["metadata"]["name"], time.monotonic())

    def stop(self) -> None:
        self._stop.set()


def percentiles(values: list[float]) -> str:
    if not values:
        return "-"
    values = sorted(values)
    p99 = values[min(len(values) - 1, int(len(values) * 0.99))]
    return f"p50 {statistics.median(values):.2f}s  p99 {p99:.2f}s  max {values[-1]:.2f}s"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--services", type=int, default=1000)
    p.add_argument("--rate", type=float, default=20, help="InferenceServices applied per second")
    p.add_argument("--idle-seconds", type=float, default=60)
    p.add_argument("--resync-seconds", type=float, default=30)
    p.add_argument("--json", type=pathlib.Path)
    args = p.parse_args()

    work = pathlib.Path(tempfile.mkdtemp(prefix="scale-bench."))
    figures: dict = {"services": args.services, "rate": args.rate}
    ns = "scale"
    with bench_cluster(REPO, work, ns, args.resync_seconds) as bench:
        kubeconfig, operator, audit, offset = bench.kubeconfig, bench.operator, bench.audit, bench.offset
        _, _, cpu0 = proc_stats(operator.proc.pid)

        client = kubernetes.config.new_client_from_config(config_file=kubeconfig)
        objects = kubernetes.client.CustomObjectsApi(client)
        watcher = Watcher(client, ns)
        applied: dict[str, float] = {}
        start = time.monotonic()
        for i in range(args.services):
            due = start + i / args.rate
            time.sleep(max(0.0, due - time.monotonic()))
            body = manifest(i, ns)
            applied[body["metadata"]["name"]] = time.monotonic()
            objects.create_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, body)
        wait_for(lambda: len(watcher.ready) >= args.services, "every InferenceService Ready", timeout=1800, interval=1)
        converged = max(watcher.ready.values()) - start
        time.sleep(5)
        created_counts, offset = audit_counts(audit, offset)
        rss, peak, cpu1 = proc_stats(operator.proc.pid)
        figures["apply_to_children"] = [watcher.created[n] - t for n, t in applied.items() if n in watcher.created]
        figures["apply_to_ready"] = [watcher.ready[n] - t for n, t in applied.items() if n in watcher.ready]
        figures["converged_seconds"] = converged
        figures["create_requests"] = {f"{v} {r}": c for (v, r), c in created_counts.items()}
        figures["rss_after_create_mib"], figures["peak_rss_mib"] = rss, peak
        figures["cpu_ms_per_created"] = (cpu1 - cpu0) / args.services * 1000

        time.sleep(args.idle_seconds)
        idle_counts, offset = audit_counts(audit, offset)
        rss_idle, _, cpu2 = proc_stats(operator.proc.pid)
        figures["idle_requests"] = {f"{v} {r}": c for (v, r), c in idle_counts.items()}
        figures["idle_cpu_seconds"], figures["idle_seconds"] = cpu2 - cpu1, args.idle_seconds
        figures["steady_rss_mib"] = rss_idle

        operator.stop()
        _, offset = audit_counts(audit, offset)
        operator.start()
        time.sleep(max(20.0, args.resync_seconds))
        restart_counts, offset = audit_counts(audit, offset)
        figures["restart_requests"] = {f"{v} {r}": c for (v, r), c in restart_counts.items()}

        operator.stop()
        operator.start()
        t0 = time.monotonic()
        body = manifest(args.services, ns)
        objects.create_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, body)
        wait_for(lambda: body["metadata"]["name"] in watcher.created, "the new one's Deployment", timeout=600,
                 interval=0.1)
        figures["new_during_restart_seconds"] = watcher.created[body["metadata"]["name"]] - t0
        figures["http_429"] = count_429(audit)
        watcher.stop()

    n = args.services

    def total(counts: dict, skip=("watch",)) -> int:
        return sum(c for k, c in counts.items() if k.split()[0] not in skip)

    print(f"\nscale benchmark, N = {n} applied at {args.rate:g}/s (this checkout's operator)\n")
    rows = [
        ("apply → Deployment created", percentiles(figures["apply_to_children"]), "p50 ≤ 0.5 s, p99 ≤ 2 s"),
        ("apply → Ready", percentiles(figures["apply_to_ready"]), ""),
        ("all Ready after the first apply", f"{figures['converged_seconds']:.1f}s", "≤ 100 s at N = 1000"),
        ("requests per new InferenceService", f"{total(figures['create_requests']) / n:.2f}", "≤ 8"),
        (f"requests idle for {args.idle_seconds:g}s (resyncs every {args.resync_seconds:g}s)",
         f"{total(figures['idle_requests'], skip=('watch', 'list'))}", "0"),
        ("requests across a restart (kopf's lists aside)",
         f"{total(figures['restart_requests'], skip=('watch', 'list'))}", "0 per InferenceService"),
        ("HTTP 429 replies to the operator", f"{figures['http_429']}", "0"),
        ("CPU per created InferenceService", f"{figures['cpu_ms_per_created']:.1f} ms", "≤ 40 ms"),
        ("CPU idle", f"{figures['idle_cpu_seconds']:.2f}s in {args.idle_seconds:g}s", "below KServe's 0.30 s/180 s"),
        ("RSS peak / steady", f"{figures['peak_rss_mib']:.0f} / {figures['steady_rss_mib']:.0f} MiB", "≤ 150 MiB"),
        ("a new one while restarting: apply → Deployment", f"{figures['new_during_restart_seconds']:.2f}s", "≤ 5 s"),
    ]
    width = max(len(r[0]) for r in rows)
    for what, value, target in rows:
        print(f"  {what:<{width}}  {value:<36} {target}")
    print("\nrequests while creating, by verb and resource:")
    print("  " + ", ".join(f"{k}={v}" for k, v in sorted(figures["create_requests"].items())))
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
