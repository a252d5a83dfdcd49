"""The canary suite's harness, shared with the plugin suite: the InferenceService it rolls out (NAME,
MODEL, its manifest) and Harness, the stand-ins of one test with a wait that checks them."""

from __future__ import annotations

import json
import time
from typing import Any, Callable, Optional

from .helpers import Kubectl, condition
from .helpers import manifest as e2e_manifest
from .standins import ISVC_LABEL, REVISION_LABEL, Invariants, StandinKubelet, Traffic

NAME, MODEL = "demo", "resnet50"
REPLICAS, MAX_SURGE, MAX_UNAVAILABLE = 2, 1, 0
WAIT = 180  # seconds: a loaded 2-core machine; never asserted on


class Harness:
    """The stand-ins of one test: kubelet, traffic and invariants, and a wait that checks them."""

    def __init__(self, kubectl: Kubectl, namespace: str, kubelet: StandinKubelet, traffic: Traffic,
                 invariants: Invariants) -> None:
        self.kubectl, self.ns = kubectl, namespace
        self.kubelet, self.traffic, self.invariants = kubelet, traffic, invariants

    def check(self) -> None:
        self.invariants.check()
        self.kubelet.check()

    def wait(self, predicate: Callable[[], Any], what: str, timeout: float = WAIT) -> Any:
        deadline = time.monotonic() + timeout
        while True:
            self.check()
            result = predicate()
            if result:
                self.check()
                return result
            if time.monotonic() >= deadline:
                raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}; status.canary: "
                                     f"{json.dumps(self.isvc().get('status', {}).get('canary'), indent=1)}")
            time.sleep(0.5)

    def isvc(self) -> dict:
        return self.kubectl.json("infsvc", NAME, "-n", self.ns)

    def canary_state(self) -> dict:
        return (self.isvc().get("status") or {}).get("canary") or {}

    def wait_phase(self, phase: str, seen: Optional[list] = None, also: Callable[[dict], bool] = lambda s: True,
                   on_each: Callable[[dict], None] = lambda i: None) -> dict:
        """The InferenceService once status.canary.phase is ``phase`` (and ``also``); the phases met on
        the way are appended to ``seen``."""

        def reached():
            isvc = self.isvc()
            on_each(isvc)
            state = (isvc.get("status") or {}).get("canary") or {}
            if seen is not None and state.get("phase") and (not seen or seen[-1] != state["phase"]):
                seen.append(state["phase"])
            return isvc if state.get("phase") == phase and also(state) else None

        return self.wait(reached, f"status.canary.phase {phase}")

    def wait_serving(self, revision: str) -> list[dict]:
        """Pods once exactly `replicas` are left, all ready at ``revision``, none terminating, and a
        ready tritonserver runs for each."""

        def settled():
            pods = self.pods()
            if len(pods) != REPLICAS or any(p["metadata"].get("deletionTimestamp") for p in pods):
                return None
            if {p["metadata"]["labels"][REVISION_LABEL] for p in pods} != {revision}:
                return None
            if not all(condition(p, "Ready").get("status") == "True" for p in pods):
                return None
            if set(self.kubelet.serving()) != {p["metadata"]["uid"] for p in pods}:
                return None
            return pods

        return self.wait(settled, f"{REPLICAS} ready pods of revision {revision}, each served")

    def pods(self) -> list[dict]:
        return self.kubectl.json("pods", "-n", self.ns, "-l", f"{ISVC_LABEL}={NAME}")["items"]

    def deployment(self, name: str) -> Optional[dict]:
        return self.kubectl.maybe("deployment", name, "-n", self.ns)

    def events(self) -> list[dict]:
        items = self.kubectl.json("events", "-n", self.ns, "--field-selector",
                                  f"involvedObject.kind=InferenceService,involvedObject.name={NAME}")["items"]
        return sorted(items, key=event_time)

    def apply(self, **kwargs) -> None:
        self.kubectl.apply(manifest(self.ns, prometheus_url=self._prometheus_url, **kwargs))

    def annotate(self, action: str) -> str:
        token = str(time.time_ns())
        self.kubectl("annotate", "--overwrite", f"infsvc/{NAME}", "-n", self.ns,
                     f"serving.inference-operator.io/{action}={token}")
        return token

    def start_first_revision(self, **kwargs) -> str:
        """The first revision rolls out plainly (no canary) and serves, under load; its revision."""
        self.apply(**kwargs)
        self.kubectl("wait", "--for=condition=Ready", f"infsvc/{NAME}", "-n", self.ns, f"--timeout={WAIT}s",
                     timeout=WAIT + 10)
        isvc = self.isvc()
        assert "canary" not in isvc["status"], isvc["status"]["canary"]
        first = isvc["status"]["revision"]
        self.invariants.arm()
        self.wait_serving(first)
        # The stable revision's series are in Prometheus before any canary is compared with it.
        self.wait(lambda: self.prometheus_has(first), "the stable revision's traffic in Prometheus")
        return first

    def prometheus_has(self, revision: str) -> bool:
        result = self._prometheus.query(
            f'sum(nv_inference_request_success{{namespace="{self.ns}",revision="{revision}",model="{MODEL}"}}) > 0')
        return bool(result)


def manifest(ns: str, *, prometheus_url: str, version: Optional[int] = None,
             steps: str = "[{weight: 50}]") -> str:
    """test_e2e's manifest with this suite's rollout; a version is another path on the claim."""
    storage = "pvc://models/triton" + (f"-v{version}" if version is not None else "")
    return e2e_manifest(NAME, ns, replicas=REPLICAS, storage=storage, extra=f"""\
        rollout:
          maxSurge: {MAX_SURGE}
          maxUnavailable: {MAX_UNAVAILABLE}
          canary:
            steps: {steps}
            analysis:
              prometheus: {{address: "{prometheus_url}"}}
              interval: 2s
              window: 4s
              initialDelay: 2s
              checksPerStep: 2
              minRequests: 10
              failureLimit: 2
              inconclusiveLimit: 10
              checks:
              - {{name: errorRate, max: 5%}}
              - {{name: requestLatency, maxIncrease: 50%}}
        """)


def event_time(event: dict) -> str:
    return event.get("eventTime") or event.get("firstTimestamp") or event["metadata"]["creationTimestamp"]
