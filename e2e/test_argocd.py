"""The Argo CD health check (manifests/argocd/health.lua) on real InferenceServices, as the
operator's status makes them, run by gopher-lua, the interpreter Argo CD embeds
(e2e/build-lua-harness.sh): Progressing while a new one rolls out, Healthy once Ready, Degraded
for a spec that cannot be served, Suspended for a paused canary. tests/test_argocd_health.py
covers the rest of the table."""

from __future__ import annotations

import json
import pathlib
import subprocess

from .helpers import Kubectl, condition, manifest, wait_for, wait_ready

REPO = pathlib.Path(__file__).resolve().parents[1]
SCRIPT = REPO / "manifests" / "argocd" / "health.lua"


def health(obj: dict) -> dict:
    binary = subprocess.run(["bash", str(REPO / "e2e" / "build-lua-harness.sh")], check=True, capture_output=True,
                            text=True).stdout.strip().splitlines()[-1]
    out = subprocess.run([binary, str(SCRIPT)], input=json.dumps(obj) + "\n", capture_output=True, text=True,
                         check=True).stdout
    return json.loads(out)


def test_health_of_real_inferenceservices(kubectl: Kubectl, namespace: str):
    ns = namespace
    seen = []

    def isvc(name: str) -> dict:
        obj = kubectl.json("infsvc", name, "-n", ns)
        seen.append((name, health(obj)["status"]))
        return obj

    kubectl.apply(manifest("served", ns))
    first = health(kubectl.json("infsvc", "served", "-n", ns))
    assert first["status"] == "Progressing", first  # no status yet, or a rollout under way
    wait_ready(kubectl, ns, "served")
    wait_for(lambda: health(isvc("served"))["status"] == "Healthy", "Healthy once Ready")

    kubectl.apply(manifest("unservable", ns, storage="pvc://missing/triton"))
    wait_for(lambda: condition(isvc("unservable"), "Degraded").get("status") == "True", "Degraded")
    result = health(isvc("unservable"))
    assert result["status"] == "Degraded" and "StorageNotFound" in result["message"], result

    # A canary held before its first check (a long initial delay), then paused by hand.
    rollout = """\
        rollout:
          canary:
            steps: [{weight: 50}]
            analysis: {prometheus: {address: "http://127.0.0.1:9"}, initialDelay: 10m}
        """
    kubectl.apply(manifest("canary", ns, extra=rollout))
    wait_ready(kubectl, ns, "canary")
    kubectl.apply(manifest("canary", ns, storage="pvc://models/triton-v2", extra=rollout))
    wait_for(lambda: (isvc("canary")["status"].get("canary") or {}).get("phase") == "Progressing", "a canary")
    assert health(isvc("canary"))["status"] == "Progressing"
    kubectl("annotate", "infsvc/canary", "-n", ns, "serving.inference-operator.io/paused=true")
    wait_for(lambda: health(isvc("canary"))["status"] == "Suspended", "Suspended while paused")
    print("health seen:", sorted(set(seen)))
