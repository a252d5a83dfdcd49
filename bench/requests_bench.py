"""Requests the operator sends, counted by the API server's own audit log (the operator's
ServiceAccount), on the local control plane: creating N InferenceServices, idle through resyncs,
and across a restart. Prints a table and asserts nothing.

    .venv/bin/python bench/requests_bench.py [--services 30] [--ref GIT_REF] [--json OUT]

--ref runs the operator (and its CRD and RBAC) of another commit, from a temporary git worktree,
on the same kind of cluster: the figures before and after a change, side by side.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import dataclasses
import json
import os
import pathlib
import subprocess
import sys
import tempfile
import time
import urllib.request

import yaml

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from e2e.cluster import OPERATOR_USER, free_port  # noqa: E402
from e2e.helpers import Kubectl, bound_claim, operator_kubeconfig, wait_for  # noqa: E402


def audit_counts(log: pathlib.Path, offset: int) -> tuple[collections.Counter, int]:
    counts: collections.Counter = collections.Counter()
    with open(log, "rb") as f:
        f.seek(offset)
        data = f.read()
    for line in data.splitlines():
        event = json.loads(line)
        if event.get("stage") != "ResponseComplete" or event["user"]["username"] != OPERATOR_USER:
            continue
        ref = event.get("objectRef") or {}
        counts[(event["verb"], ref.get("resource", "?") + ("/" + ref["subresource"] if ref.get("subresource") else ""))] += 1
    return counts, offset + len(data)


def manifest(i: int, ns: str) -> dict:
    return {"apiVersion": "serving.inference-operator.io/v1alpha1", "kind": "InferenceService",
            "metadata": {"name": f"model-{i}", "namespace": ns},
            "spec": {"model": {"name": "resnet50", "storageUri": "pvc://models/triton"},
                     "resources": {"gpu": {"count": 0}, "requests": {"cpu": "10m", "memory": "64Mi"}},
                     "replicas": 1 + i % 2}}


def all_ready(kubectl: Kubectl, ns: str, n: int) -> bool:
    items = kubectl.json("infsvc", "-n", ns)["items"]
    ready = [i for i in items for c in (i.get("status") or {}).get("conditions") or []
             if c["type"] == "Ready" and c["status"] == "True"]
    return len(ready) == n


class OperatorProcess:
    def __init__(self, source: pathlib.Path, kubeconfig: str, log: pathlib.Path, resync: float | None,
                 env: dict[str, str] | None = None) -> None:
        self.source, self.kubeconfig, self.log, self.resync = source, kubeconfig, log, resync
        self.env = env or {}
        self.metrics_port = free_port()
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        env = dict(os.environ, KUBECONFIG=self.kubeconfig, PYTHONPATH=str(self.source / "operator"),
                   PYTHONUNBUFFERED="1", **self.env)
        cmd = [sys.executable, "-m", "inference_operator.cli", "run", "--bind-address=127.0.0.1",
               f"--metrics-port={self.metrics_port}", "--liveness-port=0"]
        helptext = subprocess.run(cmd[:4] + ["--help"], env=env, capture_output=True, text=True).stdout
        if self.resync is not None and "--resync-seconds" in helptext:
            cmd.append(f"--resync-seconds={self.resync}")
        self.proc = subprocess.Popen(cmd, env=env, cwd=self.source, stdout=open(self.log, "ab"),
                                     stderr=subprocess.STDOUT, start_new_session=True)

    def metric(self, name: str) -> float:
        """The sum of a counter of the operator's /metrics over its labels (0 if absent)."""
        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=10) as r:
            text = r.read().decode()
        return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
                   if line.startswith(name + "{") or line.startswith(name + " "))

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()  # by PID
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


@dataclasses.dataclass
class Bench:
    kubectl: Kubectl
    kubeconfig: str
    operator: OperatorProcess
    audit: pathlib.Path
    offset: int  # of the audit log once the operator's initial lists and watches are done


@contextlib.contextmanager
def bench_cluster(source: pathlib.Path, work: pathlib.Path, namespace: str, resync_seconds: float,
                  operator_env: dict[str, str] | None = None, controller_qps: int | None = None):
    """A local control plane with the CRD and RBAC of `source`, a namespace with a bound `models`
    claim, and `source`'s operator running under its ServiceAccount; all stopped by PID after."""
    binaries = subprocess.run(["bash", str(REPO / "e2e" / "build-binaries.sh")], check=True,
                              capture_output=True, text=True).stdout.strip()
    state = work / "cluster"
    operator = None
    try:
        qps = ["--controller-qps", str(controller_qps)] if controller_qps else []
        kubeconfig = subprocess.run([sys.executable, str(REPO / "e2e" / "cluster.py"), "up", "--state", str(state),
                                     "--bin", binaries, *qps], check=True, capture_output=True, text=True).stdout.strip()
        kubectl = Kubectl(kubeconfig, f"{binaries}/kubectl")
        kubectl("apply", "--server-side", "-f", str(source / "crds"))
        kubectl("wait", "--for=condition=Established", "crd", "--all", "--timeout=60s")
        # Established comes a moment before the new resource's storage serves (until then a list
        # is answered 429 "storage is (re)initializing"): the operator starts once it serves.
        wait_for(lambda: kubectl("get", "inferenceservices", "-A", check=False).returncode == 0, "the CRD's storage")
        manifest = source / "manifests" / "install.yaml"
        if not manifest.exists():  # a checkout from before the Helm chart
            manifest = source / "manifests" / "operator.yaml"
        op_kubeconfig = operator_kubeconfig(kubectl, work, manifest)
        kubectl("create", "namespace", namespace)
        bound_claim(kubectl, namespace, "models")
        operator = OperatorProcess(source, op_kubeconfig, work / "operator.log", resync_seconds, operator_env)
        operator.start()
        audit = state / "audit.log"
        wait_for(lambda: audit.exists(), "the audit log")
        time.sleep(5)  # the operator's initial lists and watches
        _, offset = audit_counts(audit, 0)
        yield Bench(kubectl, kubeconfig, operator, audit, offset)
    finally:
        if operator:
            operator.stop()
        subprocess.run([sys.executable, str(REPO / "e2e" / "cluster.py"), "down", "--state", str(state)],
                       capture_output=True)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--services", type=int, default=30)
    p.add_argument("--ref", help="run the operator of this git ref instead of the working tree")
    p.add_argument("--idle-seconds", type=float, default=30, help="how long to watch the idle operator")
    p.add_argument("--resync-seconds", type=float, default=10, help="the operator's resync period, if it has one")
    p.add_argument("--json", type=pathlib.Path, help="also write the figures here")
    args = p.parse_args()

    work = pathlib.Path(tempfile.mkdtemp(prefix="requests-bench."))
    source = REPO
    if args.ref:
        source = work / "source"
        subprocess.run(["git", "-C", str(REPO), "worktree", "add", "--detach", str(source), args.ref], check=True,
                       capture_output=True)
    ns = "bench"
    try:
        with bench_cluster(source, work, ns, args.resync_seconds) as bench:
            kubectl, operator, audit, offset = bench.kubectl, bench.operator, bench.audit, bench.offset
            rows = _phases(args, kubectl, operator, audit, offset, ns)
            converged = rows.pop("converged")
    finally:
        if args.ref:
            subprocess.run(["git", "-C", str(REPO), "worktree", "remove", "--force", str(source)], capture_output=True)
    return _report(args, rows, converged)


def _phases(args, kubectl, operator, audit, offset, ns) -> dict:
    """Create, idle, restart: the operator's requests in each, from the audit log."""
    rows: dict = {}
    start = time.monotonic()
    kubectl.apply(yaml.safe_dump_all([manifest(i, ns) for i in range(args.services)]))
    wait_for(lambda: all_ready(kubectl, ns, args.services), "every InferenceService Ready", timeout=600,
             interval=1)
    rows["converged"] = time.monotonic() - start
    time.sleep(5)
    rows["create"], offset = audit_counts(audit, offset)

    time.sleep(args.idle_seconds)
    rows["idle"], offset = audit_counts(audit, offset)

    operator.stop()
    _, offset = audit_counts(audit, offset)
    operator.start()
    time.sleep(max(20.0, args.resync_seconds * 2))
    rows["restart"], offset = audit_counts(audit, offset)
    return rows


def _report(args, rows: dict, converged: float) -> int:
    n = args.services
    label = args.ref or "working tree"
    print(f"\nrequests of the operator ({label}), from the API server's audit log; N = {n}, "
          f"converged in {converged:.1f}s; idle {args.idle_seconds:.0f}s\n")
    verbs = sorted({v for counts in rows.values() for v, _ in counts})
    print(f"{'phase':<10}" + "".join(f"{v:>10}" for v in verbs) + f"{'total':>10}{'per isvc':>10}")
    figures = {}
    for phase, counts in rows.items():
        by_verb = collections.Counter()
        for (verb, _), c in counts.items():
            by_verb[verb] += c
        total = sum(by_verb.values())
        figures[phase] = {"by_verb": dict(by_verb), "total": total,
                          "by_resource": {f"{v} {r}": c for (v, r), c in sorted(counts.items())}}
        print(f"{phase:<10}" + "".join(f"{by_verb.get(v, 0):>10}" for v in verbs) + f"{total:>10}{total / n:>10.2f}")
    print("\nby resource:")
    for phase, f in figures.items():
        print(f"  {phase}: " + ", ".join(f"{k}={v}" for k, v in f["by_resource"].items()))
    if args.json:
        args.json.write_text(json.dumps({"ref": label, "services": n, "converged_seconds": converged,
                                         "phases": figures}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
