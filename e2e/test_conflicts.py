"""Conflicts (issue #12): the InferenceService is changed again and again while the operator
reconciles it (by two writers at once). No error loop follows, and what serves at the end is the
last spec: its revision, its replicas, its environment, with status for its generation."""

from __future__ import annotations

import threading
import time

from .helpers import RESYNC_SECONDS, Kubectl, Operator, manifest, wait_for, wait_ready

EDITS = 12  # each writer's; bounded in count, no timing


def retries(op: Operator) -> float:
    return sum(v for k, v in op.metrics().items() if k.startswith("inference_operator_retries_total"))


def test_concurrent_updates_end_in_the_last_spec_without_an_error_loop(kubectl: Kubectl, namespace: str,
                                                                      operator: Operator):
    ns = namespace
    kubectl.apply(manifest("busy", ns, replicas=1))
    wait_ready(kubectl, ns, "busy")
    failures: list[str] = []

    def writer(name: str, field: str) -> None:
        for i in range(1, EDITS + 1):
            if field == "replicas":
                patch = f'{{"spec": {{"replicas": {2 + i % 3}}}}}'
            else:
                patch = f'{{"spec": {{"runtime": {{"env": [{{"name": "EDIT", "value": "{name}-{i}"}}]}}}}}}'
            result = kubectl("patch", "infsvc", "busy", "-n", ns, "--type=merge", "-p", patch, check=False)
            if result.returncode != 0:
                failures.append(result.stderr)

    threads = [threading.Thread(target=writer, args=("a", "replicas")), threading.Thread(target=writer, args=("b", "env"))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not failures, failures
    # The last spec: the last of each writer's edits (2 replicas, not the first spec's 1).
    last_replicas = 2 + EDITS % 3

    def served() -> bool:
        isvc = kubectl.json("infsvc", "busy", "-n", ns)
        status = isvc.get("status") or {}
        if status.get("observedGeneration") != isvc["metadata"]["generation"]:
            return False
        d = kubectl.json("deployment", "busy-predictor", "-n", ns)
        env = {e["name"]: e.get("value") for e in d["spec"]["template"]["spec"]["containers"][0].get("env", [])}
        return d["spec"]["replicas"] == last_replicas and env.get("EDIT") == f"b-{EDITS}" \
            and (d.get("status") or {}).get("readyReplicas") == last_replicas
    wait_for(served, "the last spec served, status for its generation", timeout=180)
    wait_ready(kubectl, ns, "busy")
    # No error loop: once settled, resyncs bring no retry and no write.
    before_retries, before = retries(operator), operator.requests()
    time.sleep(RESYNC_SECONDS * 2)
    after = operator.requests()
    written = {k: after[k] - before.get(k, 0) for k in after if after[k] != before.get(k, 0)
               and k.split()[0] in ("apply", "create", "patch", "delete") and not k.split()[1].endswith("/status")
               and k.split()[1] != "events"}
    assert retries(operator) == before_retries and not written, written
    # Exactly one revision is left serving: no canary, no second Deployment.
    deployments = kubectl.json("deployments", "-n", ns, "-l", "serving.inference-operator.io/inferenceservice=busy")
    assert [d["metadata"]["name"] for d in deployments["items"]] == ["busy-predictor"]
