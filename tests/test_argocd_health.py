"""The Argo CD health check (manifests/argocd/health.lua), run by gopher-lua, the interpreter Argo
CD embeds (e2e/lua-harness, built by e2e/build-lua-harness.sh). e2e/test_argocd.py runs it on
real InferenceServices; here, a table of statuses the operator writes."""

from __future__ import annotations

import json
import pathlib
import shutil
import subprocess

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
SCRIPT = REPO / "manifests" / "argocd" / "health.lua"


def harness() -> str:
    if shutil.which("go") is None:
        pytest.skip("go is needed to build the Lua harness")
    return subprocess.run(["bash", str(REPO / "e2e" / "build-lua-harness.sh")], check=True, capture_output=True,
                          text=True).stdout.strip().splitlines()[-1]


def health(objects: list[dict]) -> list[dict]:
    out = subprocess.run([harness(), str(SCRIPT)], input="".join(json.dumps(o) + "\n" for o in objects),
                         capture_output=True, text=True, check=True).stdout
    return [json.loads(line) for line in out.splitlines()]


def isvc(generation=2, observed=2, canary=None, **conditions):
    status = {"observedGeneration": observed, "conditions": [
        {"type": t, "status": s, "reason": r, "message": m, "observedGeneration": observed}
        for t, (s, r, m) in conditions.items()]}
    if canary:
        status["canary"] = canary
    return {"apiVersion": "serving.inference-operator.io/v1alpha1", "kind": "InferenceService",
            "metadata": {"name": "m", "generation": generation}, "status": status}


OK = ("False", "AsExpected", "")
CASES = [
    ("no status yet", {"metadata": {"name": "m", "generation": 1}}, "Progressing"),
    ("spec newer than status", isvc(generation=3, observed=2, Ready=("True", "Available", "")), "Progressing"),
    # A fix just applied: the old failure says nothing of the new spec yet.
    ("a fix not yet observed", isvc(generation=3, observed=2, Ready=("False", "StorageNotFound", ""),
                                    Degraded=("True", "StorageNotFound", "")), "Progressing"),
    ("ready", isvc(Ready=("True", "Available", "1/1 ready"), Progressing=("False", "RolloutComplete", ""),
                   Degraded=OK, Stalled=OK), "Healthy"),
    ("rolling out", isvc(Ready=("False", "RolloutInProgress", ""), Progressing=("True", "RollingOut", "0/1 updated"),
                         Degraded=OK, Stalled=OK), "Progressing"),
    ("canary running", isvc(Ready=("True", "CanaryInProgress", ""), Progressing=("True", "CanaryProgressing", ""),
                            Degraded=OK, Stalled=OK, canary={"phase": "Progressing", "revision": "b"}), "Progressing"),
    ("canary paused", isvc(Ready=("True", "CanaryInProgress", ""), Progressing=("True", "CanaryPaused", ""),
                           Degraded=OK, Stalled=OK, canary={"phase": "Paused", "revision": "b"}), "Suspended"),
    ("rolled back", isvc(Ready=("True", "StableServing", ""), Progressing=("False", "AnalysisFailed", ""),
                         Degraded=("True", "AnalysisFailed", "errorRate 50% > 1%"), Stalled=("True", "AnalysisFailed", ""),
                         canary={"phase": "RolledBack"}), "Degraded"),
    ("bad storage", isvc(Ready=("False", "StorageNotFound", ""), Progressing=("False", "StorageNotFound", ""),
                         Degraded=("True", "StorageNotFound", "claim x missing"), Stalled=("True", "StorageNotFound", "")),
     "Degraded"),
    ("scaled to zero", isvc(Ready=("False", "ScaledToZero", ""), Progressing=("False", "RolloutComplete", ""),
                            Degraded=OK, Stalled=OK), "Healthy"),
    ("replicas starting", isvc(Ready=("False", "ReplicasUnavailable", "1/2"), Progressing=("False", "RolloutComplete", ""),
                               Degraded=OK, Stalled=OK), "Progressing"),
]


def test_health_of_each_status():
    results = health([case[1] for case in CASES])
    assert [(case[0], r["status"]) for case, r in zip(CASES, results)] == [(case[0], case[2]) for case in CASES]
    assert results[-3]["message"].startswith("StorageNotFound: claim x missing")
