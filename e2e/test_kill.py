"""The operator killed with SIGKILL at seeded kill points (issue #12): during a create, a spec update,
and each phase of a canary (its start, a step, a manual gate, the promotion, an abort).

A kill point is "just before the operator's n-th write in the namespace" (INFERENCE_OPERATOR_KILL_AT_WRITE,
operator/inference_operator/controller/faults.py): the process sends itself SIGKILL there, so it dies between
two given writes, the same on every run. A reference run without kills counts the writes of each
phase; a seeded generator (E2E_FAULT_SEED) picks the points among them. After each kill the
operator starts again, and the namespace must converge to exactly what the reference reached:
the same children (spec, labels, owners, ReplicaSets: no rollout the reference did not make), the
same status (conditions, revision, the canary's phase and step), nothing orphaned or made twice;
the pods that were up at the kill and still wanted are the same pods after it. Convergence times
are printed, never asserted.

E2E_FAULTS=full (make faults) runs three times the points, over several seeds' worth.
"""

from __future__ import annotations

import json
import os
import random
import signal
import time
import uuid
from typing import Any, Callable, Optional

import pytest

from inference_operator.controller.faults import ENV as KILL_ENV

from .helpers import Audit, Kubectl, Operator, condition, drop_namespace, make_namespace, manifest, wait_for

SEED = int(os.environ.get("E2E_FAULT_SEED", "20261125"))
FULL = os.environ.get("E2E_FAULTS") == "full"
NAME = "victim"
PREFIX = "serving.inference-operator.io"
SELECTOR = "app.kubernetes.io/managed-by=inference-operator"
KINDS = "deployments,replicasets,services,poddisruptionbudgets,horizontalpodautoscalers"
CONVERGE = 180  # seconds: a loaded 2-core machine; never asserted on, only reported
FIGURES: list[dict[str, Any]] = []
NOT_REACHED: list[dict[str, Any]] = []

PLAIN = dict(replicas=2, gpu="count: 0", extra="autoscaling: {minReplicas: 2, maxReplicas: 4}\n")
UPDATED = dict(replicas=3, gpu="count: 0", storage="pvc://models/triton-v2",
               extra="autoscaling: {minReplicas: 3, maxReplicas: 5}\n")
CANARY = """\
    rollout:
      maxSurge: 1
      maxUnavailable: 0
      canary:
        steps: [{weight: 25}, {pause: {}}, {weight: 50}]
        analysis:
          prometheus: {address: "http://127.0.0.1:9"}
          interval: 2s
          initialDelay: 1s
    """


@pytest.fixture(scope="module", autouse=True)
def _report():
    yield
    print("\nkill points:", json.dumps(FIGURES, indent=1))
    print("kill points the run did not reach (fewer writes than the reference):", json.dumps(NOT_REACHED))
    if FIGURES:
        seconds = sorted(f["converged_s"] for f in FIGURES)
        print(f"kill points: {len(FIGURES)} SIGKILLs, all converged; seconds from the kill to convergence "
              f"(restart included): median {seconds[len(seconds) // 2]}, max {seconds[-1]}")


# ---- what must be the same as without the kill -----------------------------------------------


def view(kubectl: Kubectl, ns: str) -> dict[str, Any]:
    """The namespace as the comparison sees it: every object with our label (children, their
    ReplicaSets), owners by kind and name, the InferenceService's status without its clocks, the
    ready pods by revision and track; the namespace's name replaced, so two namespaces compare."""
    isvc = kubectl.maybe("infsvc", NAME, "-n", ns) or {"metadata": {}}
    uid = isvc["metadata"].get("uid")
    objects = {}
    for obj in kubectl.json(KINDS, "-n", ns, "-l", SELECTOR)["items"]:
        meta = obj["metadata"]
        owners = sorted(("ISVC" if o["uid"] == uid else o["kind"] + "/" + o["name"], bool(o.get("controller")))
                        for o in meta.get("ownerReferences") or [])
        annotations = {k: v for k, v in (meta.get("annotations") or {}).items()
                       if k in ("deployment.kubernetes.io/revision",)}
        spec = dict(obj["spec"])
        if obj["kind"] == "Service":
            spec = {k: v for k, v in spec.items() if k not in ("clusterIP", "clusterIPs")}
        if obj["kind"] == "HorizontalPodAutoscaler":  # its scale-up window follows the pods' measured startup
            spec["behavior"]["scaleUp"].pop("stabilizationWindowSeconds", None)
        objects[f"{obj['kind']}/{meta['name']}"] = {"labels": meta.get("labels"), "annotations": annotations,
                                                   "owners": owners, "spec": spec}
    status = isvc.get("status") or {}
    canary = status.get("canary") or {}
    pods: dict[str, int] = {}
    for pod in kubectl.json("pods", "-n", ns, "-l", SELECTOR)["items"]:
        labels = pod["metadata"]["labels"]
        ready = any(c["type"] == "Ready" and c["status"] == "True" for c in pod["status"].get("conditions") or [])
        if ready and not pod["metadata"].get("deletionTimestamp"):
            key = f"{labels.get(f'{PREFIX}/revision')}/{labels.get(f'{PREFIX}/track', 'stable')}"
            pods[key] = pods.get(key, 0) + 1
    seen = {
        "objects": objects,
        "pods": pods,
        "status": {
            "observed": status.get("observedGeneration") == isvc["metadata"].get("generation"),
            # Autoscaling reports the HPA controller's word, which comes when it comes: its presence only.
            "conditions": sorted((c["type"], c["status"], c["reason"]) if c["type"] != "Autoscaling" else (c["type"],)
                                 for c in status.get("conditions") or []),
            **{k: status.get(k) for k in ("url", "replicas", "readyReplicas", "revision", "selector")},
            "canary": {k: canary.get(k) for k in ("phase", "revision", "stableRevision", "stableTrack", "stepIndex",
                                                  "weight", "failedRevision", "reason")},
        },
    }
    return json.loads(json.dumps(seen).replace(ns, "NS"))


def settled(kubectl: Kubectl, audit: Audit, ns: str, done: Callable[[dict], bool], quiet: float = 4) -> dict:
    """The reference run's state once `done` holds, the view stays the same, and the operator has
    written nothing in the namespace for `quiet` seconds (a holding canary writes as its analysis
    fails: there the view alone must hold still)."""
    last: dict[str, Any] = {"view": None, "since": time.monotonic(), "offset": audit.offset()}

    def still() -> Optional[dict]:
        now = view(kubectl, ns)
        isvc = kubectl.json("infsvc", NAME, "-n", ns)
        if now != last["view"] or not done(isvc) or \
                (audit.writes(last["offset"], ns) and not phase("Holding")(isvc)):
            last.update(view=now, since=time.monotonic(), offset=audit.offset())
            return None
        last["status"] = isvc.get("status")
        return now if time.monotonic() - last["since"] >= quiet else None

    try:
        return wait_for(still, f"{ns} to settle", timeout=CONVERGE)
    except AssertionError:
        print("last status:", json.dumps(last.get("status"), indent=1))
        raise


def quiet(kubectl: Kubectl, audit: Audit, ns: str, seconds: float = 3) -> None:
    """Until the operator has written nothing in ns for `seconds` (what follows convergence: an
    Event, a measured startup time), so that the next kill point counts the next action's writes
    only. A holding canary writes at each failed analysis: not waited for."""
    mark = {"offset": audit.offset(), "since": time.monotonic()}

    def still() -> bool:
        if phase("Holding")(kubectl.json("infsvc", NAME, "-n", ns)):
            return True
        if audit.writes(mark["offset"], ns):
            mark.update(offset=audit.offset(), since=time.monotonic())
        return time.monotonic() - mark["since"] >= seconds

    wait_for(still, f"the operator to stop writing in {ns}", timeout=60)


def ready(isvc: dict) -> bool:
    return condition(isvc, "Ready").get("status") == "True" and \
        isvc["status"].get("observedGeneration") == isvc["metadata"]["generation"]


def phase(name: str, step: Optional[int] = None) -> Callable[[dict], bool]:
    def reached(isvc: dict) -> bool:
        state = isvc["status"].get("canary") or {}
        return state.get("phase") == name and (step is None or state.get("stepIndex") == step)
    return reached


# ---- the scenario: actions, each with its end state ------------------------------------------


def act(kubectl: Kubectl, ns: str, action: str) -> None:
    """One user action of a scenario; the same in the reference and the killed runs."""
    kinds = {
        "create": lambda: kubectl.apply(manifest(NAME, ns, **PLAIN)),
        "update": lambda: kubectl.apply(manifest(NAME, ns, **UPDATED)),
        "canary-create": lambda: kubectl.apply(manifest(NAME, ns, replicas=4, gpu="count: 0", extra=CANARY)),
        "canary-start": lambda: kubectl.apply(manifest(NAME, ns, replicas=4, gpu="count: 0",
                                                       storage="pvc://models/triton-v2", extra=CANARY)),
    }
    if action in kinds:
        kinds[action]()
    else:  # promote-1, promote-2, promote-3, abort-1: a manual action with a fixed token
        verb, token = action.rsplit("-", 1)
        kubectl("annotate", "--overwrite", f"infsvc/{NAME}", "-n", ns, f"{PREFIX}/{verb}=t{token}")


ENDS: dict[str, Callable[[dict], bool]] = {
    "create": ready, "update": ready, "canary-create": ready,
    "canary-start": phase("Holding", 0),
    "promote-1": phase("Holding", 1),  # a manual gate; Prometheus unreachable: held, and says why
    "promote-2": phase("Holding", 2),
    "promote-3": lambda isvc: phase("Promoted")(isvc) and ready(isvc),
    "abort-1": phase("Aborted"),
}
# Each walk: its actions in order; the killed ones are killed at a seeded point each.
WALKS = {
    "plain": (["create", "update"], ["create", "update"]),
    "canary": (["canary-create", "canary-start", "promote-1", "promote-2", "promote-3"],
               ["canary-start", "promote-1", "promote-2", "promote-3"]),
    "abort": (["canary-create", "canary-start", "abort-1"], ["canary-start", "abort-1"]),
}
# How many times each walk runs killed: 24 kill points in CI; E2E_FAULTS=full: three times as many.
RUNS = {"plain": 6, "canary": 2, "abort": 2}


class Namespaces:
    def __init__(self, kubectl: Kubectl) -> None:
        self.kubectl, self.made = kubectl, []

    def new(self, tag: str) -> str:
        self.made.append(make_namespace(self.kubectl, f"kill-{tag}-{uuid.uuid4().hex[:6]}"))
        return self.made[-1]

    def drop(self) -> None:
        for ns in self.made:
            drop_namespace(self.kubectl, ns)


def reference(kubectl: Kubectl, audit: Audit, ns: str, actions: list[str]) -> dict[str, tuple[dict, int]]:
    """Each action's settled view and how many writes the operator made for it, without kills."""
    result = {}
    for action in actions:
        offset = audit.offset()
        act(kubectl, ns, action)
        seen = settled(kubectl, audit, ns, ENDS[action])
        result[action] = (seen, len(audit.writes(offset, ns)))
    return result


def _converge(kubectl: Kubectl, ns: str, want: dict, after: str) -> None:
    last: dict[str, Any] = {}

    def converged() -> bool:
        last["view"] = view(kubectl, ns)
        return last["view"] == want

    try:
        wait_for(converged, f"{ns} to converge after {after}", timeout=CONVERGE)
    except AssertionError:
        print("want:", json.dumps(want, indent=1, sort_keys=True))
        print("got:", json.dumps(last.get("view"), indent=1, sort_keys=True))
        raise


def pods_up(kubectl: Kubectl, ns: str) -> dict[str, str]:
    """uid -> ReplicaSet of each pod not terminating, ready or not."""
    return {pod["metadata"]["uid"]: next((o["name"] for o in pod["metadata"].get("ownerReferences") or []), "")
            for pod in kubectl.json("pods", "-n", ns, "-l", SELECTOR)["items"]
            if not pod["metadata"].get("deletionTimestamp")}


def killed_write(operator: Operator) -> str:
    """The write the operator died before, from its log (faults.py says it): 'verb-ish path'."""
    lines = [line for line in operator.log().splitlines() if line.startswith(KILL_ENV)]
    return lines[-1].rsplit("(", 1)[-1].rstrip(")") if lines else "?"


def kill_at(kubectl: Kubectl, operator: Operator, audit: Audit, ns: str, action: str, at: int, want: dict,
            walk: str, before: dict) -> None:
    """The action with the operator set to die before its `at`-th write in ns; then a plain
    restart, and the namespace must reach `want` (`before`: what it held before the action)."""
    try:
        operator.restart(env={KILL_ENV: f"{ns}:{at}"})
    except AssertionError:
        # Killed by the pass every start runs (a holding canary's analysis falls due): a kill in
        # the phase before the action. That phase must resume as it was; then the action, unkilled.
        if operator.proc is None or operator.proc.returncode != -signal.SIGKILL:
            raise
        killed, where = time.monotonic(), killed_write(operator)
        operator.proc = None
        operator.start()
        _converge(kubectl, ns, before, f"a kill at start, before write {at} ahead of {action}")
        FIGURES.append({"walk": walk, "action": f"before {action}", "killed_before_write": at,
                        "write": where, "converged_s": round(time.monotonic() - killed, 1)})
        act(kubectl, ns, action)
        _converge(kubectl, ns, want, f"{action} after a kill at start")
        quiet(kubectl, audit, ns)
        return
    act(kubectl, ns, action)
    proc = operator.proc
    assert proc is not None
    # Dead at the point; or, writing fewer times than the reference did (the status writes that
    # follow pods becoming ready vary), converged without reaching it: counted as not reached.
    calm: dict[str, float] = {}

    def dead_or_done() -> Optional[str]:
        if proc.poll() is not None:
            return "dead"
        if view(kubectl, ns) != want:
            calm.clear()
        elif time.monotonic() - calm.setdefault("since", time.monotonic()) > 5:
            return "done"
        return None

    ended = wait_for(dead_or_done, f"the operator to die before write {at} in {ns}, or {ns} to converge",
                     timeout=CONVERGE)
    if ended == "done":
        NOT_REACHED.append({"walk": walk, "action": action, "write": at})
        operator.restart()
        quiet(kubectl, audit, ns)
        return
    assert proc.returncode == -signal.SIGKILL, (proc.returncode, operator.log()[-2000:])
    killed = time.monotonic()
    where = killed_write(operator)
    up = pods_up(kubectl, ns)
    operator.proc = None
    operator.start()
    _converge(kubectl, ns, want, f"a kill before write {at} of {action}")
    seconds = round(time.monotonic() - killed, 1)
    # The pods up at the kill whose ReplicaSet still wants at least as many are the same pods.
    after = pods_up(kubectl, ns)
    sets = {name.split("/", 1)[1]: o["spec"]["replicas"] for name, o in want["objects"].items()
            if name.startswith("ReplicaSet/")}
    kept = 0
    for rs in set(up.values()):
        earlier = [uid for uid, owner in up.items() if owner == rs]
        if sets.get(rs.replace(ns, "NS"), 0) >= len(earlier):
            assert set(earlier) <= set(after), f"{walk}/{action} kill at write {at}: pods of {rs} were replaced"
            kept += len(earlier)
    FIGURES.append({"walk": walk, "action": action, "killed_before_write": at, "write": where,
                    "converged_s": seconds, "pods_kept": kept})
    quiet(kubectl, audit, ns)


def test_sigkill_at_seeded_points_converges_to_what_no_kill_reaches(kubectl: Kubectl, operator: Operator,
                                                                   audit: Optional[Audit]):
    if audit is None:
        pytest.skip("needs the local cluster's audit log (E2E_AUDIT_LOG) to count the operator's writes")
    rng = random.Random(SEED)
    spaces = Namespaces(kubectl)
    try:
        chosen = os.environ.get("E2E_KILL_WALKS")  # e.g. canary,abort: a subset, when debugging
        for walk, (actions, killed) in WALKS.items():
            if chosen and walk not in chosen.split(","):
                continue
            ref_ns = spaces.new(f"{walk}-ref")
            ref = reference(kubectl, audit, ref_ns, actions)
            print(f"{walk}: writes per action without kills:", {a: n for a, (_, n) in ref.items()})
            for run in range(RUNS[walk] * (3 if FULL else 1)):
                ns = spaces.new(f"{walk}-{run}")
                before: dict = {}
                for action in actions:
                    want, writes = ref[action]
                    if action in killed and writes:
                        # Among the first two thirds: the children's writes and the first status,
                        # where the reference's count is the same run after run.
                        at = rng.randint(1, max(1, writes * 2 // 3))
                        kill_at(kubectl, operator, audit, ns, action, at, want, walk, before)
                    else:
                        act(kubectl, ns, action)
                        _converge(kubectl, ns, want, action)
                        quiet(kubectl, audit, ns)
                    before = want
            spaces.drop()
            spaces.made.clear()
    finally:
        spaces.drop()
        if operator.proc is not None and operator.proc.poll() is not None:
            operator.proc = None
        operator.restart()  # plain: no kill point
    if not chosen:
        assert len(FIGURES) >= 20, FIGURES
        # Every phase got a kill: in its action's writes, or in the pass a start runs while the
        # phase before it holds (counted as "before <action>").
        hit = {f["action"].removeprefix("before ") for f in FIGURES}
        assert {a for _, killed in WALKS.values() for a in killed} <= hit, hit
