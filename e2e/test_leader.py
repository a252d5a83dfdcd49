"""Leader election (issue #11, first step): two operator processes against one cluster, each with
the operator's ServiceAccount (a Role for its Lease), only the leader writes; a leader killed
with SIGKILL is replaced once its Lease runs out, one stopped cleanly hands over at once. The
takeover times are printed (never asserted: a shared 2-core machine)."""

from __future__ import annotations

import json
import signal
import time

from .conftest import OPERATOR_NAMESPACE, Kubectl, Operator, wait_for
from .test_e2e import manifest, wait_ready

LEASE, RENEW, RETRY = 6, 4, 1  # seconds; the defaults are 15, 10 and 2
ARGS = ("--leader-elect", f"--leader-elect-namespace={OPERATOR_NAMESPACE}", f"--leader-elect-lease-seconds={LEASE}",
        f"--leader-elect-renew-seconds={RENEW}", f"--leader-elect-retry-seconds={RETRY}")


def leads(op: Operator) -> bool:
    return op.metrics().get("inference_operator_leader") == 1.0


def writes(op: Operator) -> float:
    return sum(v for k, v in op.requests().items() if k.split()[0] in ("apply", "create", "patch", "delete"))


def test_only_the_leader_writes_and_a_follower_takes_over(kubectl: Kubectl, namespace: str, operator: Operator,
                                                         tmp_path):
    ns = namespace
    kubeconfig = operator.kubeconfig
    operator.stop()  # the suite's operator runs without election: none but these two for now
    a, b, c = (Operator(kubeconfig, tmp_path / name) for name in "abc")
    for op in (a, b, c):
        op.log_dir.mkdir()
    figures: dict[str, float] = {}
    try:
        a.start(args=ARGS)
        b.start(args=ARGS)
        first = wait_for(lambda: next((op for op in (a, b) if leads(op)), None), "a leader", timeout=60)
        second = b if first is a else a
        kubectl.apply(manifest("elected", ns, replicas=1))
        wait_ready(kubectl, ns, "elected")
        assert not leads(second) and writes(second) == 0, second.requests()
        assert writes(first) >= 2, first.requests()
        lease = kubectl.json("lease", "inference-operator", "-n", OPERATOR_NAMESPACE)
        print("Lease:", json.dumps(lease["spec"]))

        # SIGKILL: no release. The follower waits out the lease, then acts.
        first.proc.send_signal(signal.SIGKILL)
        first.proc.wait(timeout=10)
        killed = time.monotonic()
        wait_for(lambda: leads(second), "the follower to take over", timeout=60)
        figures["takeover after SIGKILL (s)"] = round(time.monotonic() - killed, 1)
        kubectl("scale", "infsvc/elected", "-n", ns, "--replicas=2")
        wait_for(lambda: kubectl.json("deployment", "elected-predictor", "-n", ns)["spec"]["replicas"] == 2,
                 "the new leader to act")
        figures["takeover after SIGKILL, to the change applied (s)"] = round(time.monotonic() - killed, 1)

        # A clean stop (SIGTERM, as a rolling update sends) releases the Lease: a quick handover.
        c.start(args=ARGS)
        time.sleep(2 * RETRY)  # c follows
        assert leads(second) and not leads(c)
        second.proc.send_signal(signal.SIGTERM)
        stopped = time.monotonic()
        wait_for(lambda: leads(c), "the third to take over after a clean stop", timeout=60)
        figures["handover after a clean stop (s)"] = round(time.monotonic() - stopped, 1)
        second.proc.wait(timeout=30)
        kubectl("scale", "infsvc/elected", "-n", ns, "--replicas=1")
        wait_for(lambda: kubectl.json("deployment", "elected-predictor", "-n", ns)["spec"]["replicas"] == 1,
                 "the third to act")
    finally:
        print("leader election:", json.dumps(figures))
        for op in (a, b, c):
            op.stop()  # by PID
        operator.start()
