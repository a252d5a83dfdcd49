"""Many InferenceServices on the local control plane: latencies, the operator's requests, memory and
CPU, pod churn and create/update/delete churn. Prints one table beside the targets (issue #8) and
writes it as JSON; with --check, exits 1 when a count is over its budget (never on a time).

    .venv/bin/python bench/scale_bench.py [--services 1000] [--rate 20] [--json OUT] [--check]
    .venv/bin/python bench/scale_bench.py --services 50 --check     # the CI smoke variant

The operator runs as a separate process under its own ServiceAccount (so API Priority and
Fairness applies as in production), on kwok nodes (extra ones are added for N pods). Phases:
1. apply N InferenceServices at --rate per second (the API client, not kubectl, so the load
   generator stays light); apply → Deployment created and apply → Ready are timed from watch
   events (p50, p99, max), and the time until every one is Ready;
2. idle through resyncs (--resync-seconds is the operator's period): requests of any verb;
3. pod churn: the pods of --flap-services InferenceServices flap Ready (their status patched, as a
   kubelet would), and the watch events the operator receives are set beside its passes;
4. a restart with N existing InferenceServices: requests, and how long a new one then waits;
5. create/update/delete churn (--churn-cycles of --churn-services): RSS after each cycle.
Requests are counted by verb from the API server's audit log, filtered by the operator's user;
RSS and CPU from /proc. --memory-profile runs the operator under tracemalloc (its RSS and CPU then
include tracemalloc's own cost) and prints what holds its memory after the create phase.
"""

from __future__ import annotations

import argparse
import collections
import datetime
import json
import os
import pathlib
import signal
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
import yaml  # noqa: E402
from requests_bench import audit_counts, bench_cluster, manifest  # noqa: E402

from e2e.helpers import wait_for  # noqa: E402

GROUP, VERSION, PLURAL = "serving.inference-operator.io", "v1alpha1", "inferenceservices"
PODS_PER_NODE = 250
PASSES = "inference_operator_reconcile_total"
EVENTS = "inference_operator_watch_events_total"
urllib3.disable_warnings(urllib3.exceptions.InsecureRequestWarning)  # the local cluster's own CA

# --check: what may be spent, counted, never timed. A new InferenceService of this benchmark (replicas
# 1 or 2; a PDB with 2) may write: its children's creates (2 or 3), status when created and at each
# change of ready replicas (1 + replicas), and two Events (RollingOut, Ready): 6 or 8, 7.0 on
# average; 6.5 when replicas become ready together, as they mostly do. 0.2 more for status writes
# the API server refused as stale (409) and that were sent again. One more write for every
# InferenceService is over the budget.
BUDGETS = {
    "writes per new InferenceService": 7.2,
    "reads per new InferenceService": 0,
    "requests idle through resyncs (watches aside)": 0,
    "requests across a restart naming an object": 0,
    "HTTP 429 replies to the operator": 0,
}


def replies_429(log: pathlib.Path) -> list[str]:
    """The operator's requests the API server answered with 429 (the audit log holds only its)."""
    found = []
    for line in log.read_bytes().splitlines():
        event = json.loads(line)
        if event.get("stage") == "ResponseComplete" and (event.get("responseStatus") or {}).get("code") == 429:
            found.append(f"{event['requestReceivedTimestamp']} {event['verb']} {event['requestURI']}: "
                         f"{(event.get('responseStatus') or {}).get('message', '')}")
    return found


def proc_stats(pid: int) -> tuple[float, float, float]:
    """(RSS MiB, peak RSS MiB, CPU seconds) of a process, from /proc."""
    status = pathlib.Path(f"/proc/{pid}/status").read_text()
    fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
    rss = int(fields["VmRSS"].split()[0]) / 1024
    peak = int(fields["VmHWM"].split()[0]) / 1024
    stat = pathlib.Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    cpu = (int(stat[11]) + int(stat[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime
    return rss, peak, cpu


class Watcher:
    """Arrival times of Deployments and of Ready=True InferenceServices, from watch streams."""

    def __init__(self, client: kubernetes.client.ApiClient, namespace: str) -> None:
        self.created: dict[str, float] = {}
        self.ready: dict[str, float] = {}
        self._stop = threading.Event()
        for target in (self._deployments, self._isvcs):
            threading.Thread(target=self._watch, args=(target, client, namespace), daemon=True).start()

    def _watch(self, target, client, namespace):
        while not self._stop.is_set():
            try:
                target(client, namespace)
            except Exception:  # a stream cut short (the cluster stopping): watch again, or stop
                if not self._stop.is_set():
                    time.sleep(0.5)

    def _deployments(self, client, namespace):
        apps = kubernetes.client.AppsV1Api(client)
        for event in kubernetes.watch.Watch().stream(apps.list_namespaced_deployment, namespace, timeout_seconds=30):
            name = event["object"].metadata.name.removesuffix("-predictor")
            self.created.setdefault(name, time.monotonic())

    def _isvcs(self, client, namespace):
        api = kubernetes.client.CustomObjectsApi(client)
        for event in kubernetes.watch.Watch().stream(api.list_namespaced_custom_object, GROUP, VERSION,
                                                      namespace, PLURAL, timeout_seconds=30):
            if ready(event["object"]):
                self.ready.setdefault(event["object"]["metadata"]["name"], time.monotonic())

    def stop(self) -> None:
        self._stop.set()


def ready(obj: dict) -> bool:
    status = obj.get("status") or {}
    return status.get("observedGeneration") == obj["metadata"].get("generation") and any(
        c["type"] == "Ready" and c["status"] == "True" for c in status.get("conditions") or [])


def percentiles(values: list[float]) -> str:
    if not values:
        return "-"
    values = sorted(values)
    p99 = values[min(len(values) - 1, int(len(values) * 0.99))]
    return f"p50 {statistics.median(values):.2f}s  p99 {p99:.2f}s  max {values[-1]:.2f}s"


def add_nodes(kubectl, pods: int) -> None:
    """kwok nodes enough for `pods` (the cluster's own few hold about 500)."""
    docs = []
    for i in range(pods // PODS_PER_NODE + 1):
        capacity = {"cpu": "64", "memory": "256Gi", "pods": str(PODS_PER_NODE), "ephemeral-storage": "500Gi"}
        docs.append({"apiVersion": "v1", "kind": "Node",
                     "metadata": {"name": f"scale-{i}", "labels": {"kubernetes.io/hostname": f"scale-{i}",
                                                                   "kubernetes.io/os": "linux", "type": "kwok"},
                                  "annotations": {"kwok.x-k8s.io/node": "fake", "node.alpha.kubernetes.io/ttl": "0"}},
                     "status": {"capacity": capacity, "allocatable": capacity}})
    kubectl.apply(yaml.safe_dump_all(docs))


class Bench:
    def __init__(self, args, cluster, ns: str) -> None:
        self.args, self.ns = args, ns
        self.kubectl, self.operator, self.audit, self.offset = (cluster.kubectl, cluster.operator, cluster.audit,
                                                                cluster.offset)
        self.client = kubernetes.config.new_client_from_config(config_file=cluster.kubeconfig)
        self.objects = kubernetes.client.CustomObjectsApi(self.client)
        self.core = kubernetes.client.CoreV1Api(self.client)
        self.watcher = Watcher(self.client, ns)
        self.figures: dict = {"services": args.services, "rate": args.rate}

    def requests(self) -> dict[str, int]:
        counts, self.offset = audit_counts(self.audit, self.offset)
        return {f"{v} {r}": c for (v, r), c in counts.items()}

    def stats(self) -> tuple[float, float, float]:
        return proc_stats(self.operator.proc.pid)

    def apply_at_rate(self, bodies: list[dict]) -> dict[str, float]:
        applied: dict[str, float] = {}
        start = time.monotonic()
        for i, body in enumerate(bodies):
            time.sleep(max(0.0, start + i / self.args.rate - time.monotonic()))
            applied[body["metadata"]["name"]] = time.monotonic()
            self.objects.create_namespaced_custom_object(GROUP, VERSION, self.ns, PLURAL, body)
        return applied

    def listed(self, selector: str) -> list[dict]:
        return self.objects.list_namespaced_custom_object(GROUP, VERSION, self.ns, PLURAL,
                                                          label_selector=selector)["items"]

    # ---- phases ---------------------------------------------------------------------------------

    def create(self) -> None:
        f, n = self.figures, self.args.services
        _, _, cpu0 = self.stats()
        passes0 = self.operator.metric(PASSES)
        start = time.monotonic()
        applied = self.apply_at_rate([manifest(i, self.ns) for i in range(n)])
        wait_for(lambda: len(self.watcher.ready) >= n, "every InferenceService Ready", timeout=1800, interval=1)
        f["converged_seconds"] = max(self.watcher.ready.values()) - start
        f["children_converged_seconds"] = max(self.watcher.created.values()) - start
        time.sleep(5)
        f["create_requests"] = self.requests()
        rss, peak, cpu1 = self.stats()
        f["apply_to_children"] = [self.watcher.created[k] - t for k, t in applied.items() if k in self.watcher.created]
        f["apply_to_ready"] = [self.watcher.ready[k] - t for k, t in applied.items() if k in self.watcher.ready]
        f["rss_after_create_mib"], f["peak_rss_mib"] = rss, peak
        f["cpu_ms_per_created"] = (cpu1 - cpu0) / n * 1000
        f["passes_per_created"] = (self.operator.metric(PASSES) - passes0) / n
        if self.args.memory_profile:
            f["memory_profile"] = self.memory_profile()

    def memory_profile(self) -> str:
        profile = self.args.work / "memory-profile.txt"
        profile.unlink(missing_ok=True)
        os.kill(self.operator.proc.pid, signal.SIGUSR2)
        wait_for(profile.exists, "the memory profile", timeout=120)
        return profile.read_text()

    def idle(self) -> None:
        f = self.figures
        _, _, cpu1 = self.stats()
        passes0 = self.operator.metric(PASSES)
        time.sleep(self.args.idle_seconds)
        f["idle_requests"] = self.requests()
        rss, _, cpu2 = self.stats()
        f["idle_cpu_seconds"], f["idle_seconds"], f["steady_rss_mib"] = cpu2 - cpu1, self.args.idle_seconds, rss
        f["idle_passes"] = self.operator.metric(PASSES) - passes0

    def flap(self) -> None:
        """Pods flap Ready (False, then True a moment later), as a failing probe makes them."""
        f, m = self.figures, min(self.args.flap_services, self.args.services)
        names = {f"model-{i}" for i in range(m)}
        pods = [p.metadata.name for p in self.core.list_namespaced_pod(self.ns).items
                if p.metadata.labels.get("serving.inference-operator.io/inferenceservice") in names]
        events0, passes0 = self.operator.metric(EVENTS), self.operator.metric(PASSES)
        patches = 0
        deadline = time.monotonic() + self.args.flap_seconds
        while time.monotonic() < deadline:
            for value in ("False", "True"):
                for pod in pods:
                    self.core.patch_namespaced_pod_status(pod, self.ns, {"status": {"conditions": [
                        {"type": t, "status": value, "lastTransitionTime": now()} for t in ("Ready", "ContainersReady")]}})
                    patches += 1
                time.sleep(0.5)
        wait_for(lambda: all(ready(o) for o in self.listed("")), "every InferenceService Ready again", timeout=600,
                 interval=1)
        time.sleep(3)
        f["flap_pods"], f["flap_pod_changes"] = len(pods), patches
        f["flap_events"] = self.operator.metric(EVENTS) - events0
        f["flap_passes"] = self.operator.metric(PASSES) - passes0
        f["flap_requests"] = self.requests()

    def restart(self) -> None:
        f, n = self.figures, self.args.services
        self.operator.stop()
        self.requests()
        self.operator.start()
        time.sleep(max(20.0, self.args.resync_seconds))
        f["restart_requests"] = self.requests()
        self.operator.stop()
        self.operator.start()
        t0 = time.monotonic()
        body = manifest(n, self.ns)
        self.objects.create_namespaced_custom_object(GROUP, VERSION, self.ns, PLURAL, body)
        name = body["metadata"]["name"]
        wait_for(lambda: name in self.watcher.created, "the new one's Deployment", timeout=600, interval=0.1)
        f["new_during_restart_seconds"] = self.watcher.created[name] - t0
        wait_for(lambda: all(ready(o) for o in self.listed("")), "every InferenceService Ready", timeout=600,
                 interval=1)
        self.requests()

    def quiet(self) -> None:
        """Idle at the operator's default resync period: CPU with nothing to do, as a cluster runs it."""
        f = self.figures
        self.operator.stop()
        self.operator.resync = None  # the operator's default
        self.operator.start()
        time.sleep(75)  # the start's lists, its first passes, and the heap trim once they are over
        _, _, cpu0 = self.stats()
        time.sleep(self.args.quiet_seconds)
        rss, _, cpu1 = self.stats()
        f["quiet_cpu_per_180s"] = (cpu1 - cpu0) / self.args.quiet_seconds * 180
        f["quiet_rss_mib"] = rss
        f["quiet_requests"] = self.requests()
        if self.args.memory_profile:
            f["memory_profile_after_restart"] = self.memory_profile()

    def single(self) -> None:
        """One InferenceService at a time on the idle cluster (N existing): apply → Deployment."""
        f, latencies = self.figures, []
        for i in range(self.args.single_services):
            body = manifest(self.args.services + 1 + i, self.ns)
            name = body["metadata"]["name"]
            t0 = time.monotonic()
            self.objects.create_namespaced_custom_object(GROUP, VERSION, self.ns, PLURAL, body)
            wait_for(lambda: name in self.watcher.created, "its Deployment", timeout=120, interval=0.01)
            latencies.append(self.watcher.created[name] - t0)
            time.sleep(1)
        f["single_apply_to_children"] = latencies
        wait_for(lambda: all(ready(o) for o in self.listed("")), "every InferenceService Ready", timeout=600,
                 interval=1)
        self.requests()

    def churn(self) -> None:
        """Create, update (a new model path: a rollout) and delete a batch, --churn-cycles times."""
        f, k = self.figures, self.args.churn_services
        f["churn_rss_mib"] = [self.stats()[0]]
        for cycle in range(self.args.churn_cycles):
            selector = f"bench-batch=churn-{cycle}"
            bodies = []
            for i in range(k):
                body = manifest(i, self.ns)
                body["metadata"].update(name=f"churn-{cycle}-{i}", labels={"bench-batch": f"churn-{cycle}"})
                bodies.append(body)
            self.apply_at_rate(bodies)
            wait_for(lambda: sum(ready(o) for o in self.listed(selector)) == k, "the batch Ready", timeout=900,
                     interval=1)
            for body in bodies:
                self.objects.patch_namespaced_custom_object(
                    GROUP, VERSION, self.ns, PLURAL, body["metadata"]["name"],
                    {"spec": {"model": {"storageUri": "pvc://models/triton-v2"}}})
            wait_for(lambda: sum(ready(o) for o in self.listed(selector)) == k, "the batch rolled out", timeout=900,
                     interval=1)
            self.objects.delete_collection_namespaced_custom_object(GROUP, VERSION, self.ns, PLURAL,
                                                                    label_selector=selector)
            wait_for(lambda: not self.listed(selector), "the batch gone", timeout=600, interval=1)
            time.sleep(5)  # the children's deletions reach the operator's cache
            f["churn_rss_mib"].append(self.stats()[0])
        f["churn_requests"] = self.requests()


def now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def total(counts: dict, skip=("watch",)) -> int:
    return sum(c for k, c in counts.items() if k.split()[0] not in skip)


def by_verb(counts: dict) -> str:
    verbs: collections.Counter = collections.Counter()
    for k, c in counts.items():
        verbs[k.split()[0]] += c
    return ", ".join(f"{v} {c}" for v, c in sorted(verbs.items())) or "none"


def counts_checked(f: dict, n: int) -> dict[str, float]:
    created = f["create_requests"]
    writes = total(created, skip=("watch", "list", "get"))
    return {
        "writes per new InferenceService": writes / n,
        "reads per new InferenceService": sum(c for k, c in created.items() if k.split()[0] == "get") / n,
        "requests idle through resyncs (watches aside)": total(f["idle_requests"]),
        # API discovery (kopf's, at start) names no resource: "?"
        "requests across a restart naming an object": sum(c for k, c in f["restart_requests"].items()
                                                          if k.split()[0] not in ("watch", "list") and k.split()[1] != "?"),
        "HTTP 429 replies to the operator": f["http_429"],
    }


def report(args, f: dict) -> int:
    n = args.services
    checked = counts_checked(f, n)
    rss = f["churn_rss_mib"]
    growth = (rss[-1] - rss[1]) / rss[1] * 100 if len(rss) > 2 else 0.0
    print(f"\nscale benchmark, N = {n} applied at {args.rate:g}/s (this checkout's operator)\n")
    rows = [
        ("one at a time, idle cluster: apply → Deployment", percentiles(f["single_apply_to_children"]),
         "p50 ≤ 0.5 s, p99 ≤ 2 s"),
        (f"{n} at {args.rate:g}/s: apply → Deployment created", percentiles(f["apply_to_children"]), ""),
        ("apply → Ready", percentiles(f["apply_to_ready"]), ""),
        ("every Deployment created after the first apply", f"{f['children_converged_seconds']:.1f}s",
         f"(applying takes {n / args.rate:.0f} s)"),
        ("all Ready after the first apply", f"{f['converged_seconds']:.1f}s", "≤ 100 s at N = 1000"),
        ("requests per new InferenceService", f"{total(f['create_requests']) / n:.2f}", "≤ 8"),
        ("  of which writes", f"{checked['writes per new InferenceService']:.2f}", "creates, 2 status, 2 Events"),
        ("  of which reads", f"{checked['reads per new InferenceService']:.0f}", "0"),
        ("passes per new InferenceService", f"{f['passes_per_created']:.2f}", ""),
        (f"requests idle {args.idle_seconds:g}s (resync every {args.resync_seconds:g}s)",
         f"{checked['requests idle through resyncs (watches aside)']} ({f['idle_passes']:.0f} passes)", "0"),
        ("requests across a restart (lists aside)",
         f"{checked['requests across a restart naming an object']} "
         f"(lists {total(f['restart_requests'], skip=('watch', 'get', 'patch', 'apply', 'create', 'delete'))})",
         "0 per InferenceService"),
        ("HTTP 429 replies to the operator", f"{f['http_429']}", "0"),
        ("CPU per created InferenceService", f"{f['cpu_ms_per_created']:.1f} ms", "≤ 40 ms"),
        (f"CPU idle, resyncing every {args.resync_seconds:g}s", f"{f['idle_cpu_seconds']:.2f}s in {args.idle_seconds:g}s",
         ""),
        ("CPU idle at the default resync (1 h), per 180 s", f"{f['quiet_cpu_per_180s']:.2f}s",
         "< KServe's 0.30 s"),
        ("RSS after a restart, settled", f"{f['quiet_rss_mib']:.0f} MiB", "≤ 150 MiB"),
        ("RSS peak / steady", f"{f['peak_rss_mib']:.0f} / {f['steady_rss_mib']:.0f} MiB", "≤ 150 MiB"),
        ("a new one while restarting: apply → Deployment", f"{f['new_during_restart_seconds']:.2f}s", "≤ 5 s"),
        (f"pod churn: {f['flap_pods']} pods flapping, changes → events → passes",
         f"{f['flap_pod_changes']} → {f['flap_events']:.0f} → {f['flap_passes']:.0f}", "passes < events"),
        (f"churn: RSS before, after each of {args.churn_cycles} cycles of {args.churn_services}",
         " / ".join(f"{r:.0f}" for r in rss) + " MiB", "flat (≤ 10 %)"),
        ("  growth from the first cycle to the last", f"{growth:+.1f} %", "≤ 10 %"),
    ]
    width = max(len(r[0]) for r in rows)
    for what, value, target in rows:
        print(f"  {what:<{width}}  {value:<38} {target}")
    print("\nrequests by verb:")
    for phase in ("create", "idle", "flap", "restart", "quiet", "churn"):
        print(f"  {phase:<8} {by_verb(f[phase + '_requests'])}")
    for reply in f["replies_429"]:
        print(f"  429: {reply}")
    for key, when in (("memory_profile", "the create phase"), ("memory_profile_after_restart", "a restart")):
        if key in f:
            print(f"\nmemory profile after {when} (tracemalloc):\n" + f[key][:6000])
    f["checked"], f["budgets"] = checked, BUDGETS
    if args.json:
        args.json.write_text(json.dumps(f, indent=2))
    over = {k: v for k, v in checked.items() if v > BUDGETS[k]}
    if args.check:
        print("\ncount budgets (--check): " + ("all met" if not over else
              "; ".join(f"{k}: {v:g} > {BUDGETS[k]:g}" for k, v in over.items())))
        return 1 if over else 0
    return 0


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--services", type=int, default=1000)
    p.add_argument("--rate", type=float, default=20, help="InferenceServices applied per second")
    p.add_argument("--idle-seconds", type=float, default=60)
    p.add_argument("--quiet-seconds", type=float, default=60, help="idle at the default resync period")
    p.add_argument("--single-services", type=int, default=20, help="applied one at a time on the idle cluster")
    p.add_argument("--resync-seconds", type=float, default=30, help="the operator's resync period")
    p.add_argument("--flap-services", type=int, default=100, help="InferenceServices whose pods flap")
    p.add_argument("--flap-seconds", type=float, default=20)
    p.add_argument("--churn-cycles", type=int, default=3)
    p.add_argument("--churn-services", type=int, default=200, help="InferenceServices per churn cycle")
    p.add_argument("--memory-profile", action="store_true", help="run the operator under tracemalloc")
    p.add_argument("--operator-env", action="append", default=[], metavar="NAME=VALUE",
                   help="set in the operator's environment (e.g. PYTHONMALLOC=pymalloc to compare allocators)")
    p.add_argument("--controller-qps", type=int, default=200,
                   help="the local kube-controller-manager's and scheduler's API rate limit (theirs: 20/s, "
                        "which alone takes minutes to make a thousand Deployments' pods)")
    p.add_argument("--check", action="store_true", help="exit 1 when a count is over its budget")
    p.add_argument("--json", type=pathlib.Path)
    args = p.parse_args()

    args.work = pathlib.Path(tempfile.mkdtemp(prefix="scale-bench."))
    env = {"INFERENCE_OPERATOR_TRACEMALLOC": str(args.work / "memory-profile.txt")} if args.memory_profile else {}
    env.update(item.split("=", 1) for item in args.operator_env)
    ns = "scale"
    with bench_cluster(REPO, args.work, ns, args.resync_seconds, operator_env=env,
                       controller_qps=args.controller_qps) as cluster:
        add_nodes(cluster.kubectl, 2 * (args.services + args.churn_services))
        bench = Bench(args, cluster, ns)
        for phase in (bench.create, bench.idle, bench.flap, bench.restart, bench.quiet, bench.single, bench.churn):
            print(f"==> {time.strftime('%H:%M:%S')} {phase.__name__}", flush=True)
            phase()
        bench.figures["replies_429"] = replies_429(cluster.audit)
        bench.figures["http_429"] = len(bench.figures["replies_429"])
        bench.watcher.stop()
    return report(args, bench.figures)


if __name__ == "__main__":
    sys.exit(main())
