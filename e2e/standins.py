"""Stand-ins for what kwok does not run, so that a canary is judged on real metrics end to end:

- ``StandinKubelet``: for each ready, non-terminating pod of an InferenceService, one real
  ``tritonserver`` process on loopback serving the python-backend model of ``tests/canary_model``
  under the InferenceService's model name, behaving as the test chose for the pod's revision
  (latency, failures). A pod that goes away (or starts terminating) has its process stopped, by
  PID. Each process's metrics port is published to Prometheus's file_sd with the labels a
  ``kubernetes_sd`` relabelling of the pod gives: ``namespace``, ``pod``, ``revision``,
  ``inferenceservice``.
- ``Traffic``: bounded load, round-robin over the processes that are ready now (as a Service
  sends to its ready endpoints).
- ``Invariants``: a poller of the pods that records every breach of the rollout's bounds: total
  pods (terminating ones included) above ``replicas + maxSurge``, and ready pods below
  ``replicas - maxUnavailable`` while a canary runs.

Everything here runs in background threads; failures are recorded and raised in the test's thread
by ``check()``.
"""

from __future__ import annotations

import dataclasses
import json
import pathlib
import threading
import time
import traceback
import urllib.error
import urllib.request
from typing import Any, Callable, Optional

from tests.canary_model import BODY, write_model
from tests.prometheus import Prometheus
from tests.triton import TritonServer

GROUP = "serving.inference-operator.io"
ISVC_LABEL = f"{GROUP}/inferenceservice"
REVISION_LABEL = f"{GROUP}/revision"
TRACK_LABEL = f"{GROUP}/track"
ACTIVE = ("Progressing", "Paused", "Holding", "Promoting")
POLL = 0.5


@dataclasses.dataclass(frozen=True)
class Profile:
    """How a revision's model behaves: added latency per request, and the share of failed requests
    (deterministic: 0.5 fails every 2nd request)."""

    delay_ms: float = 30
    failure_rate: float = 0.0


GOOD = Profile()
BAD = Profile(failure_rate=0.5)


def api_client(kubeconfig: str):
    import kubernetes

    client = kubernetes.config.new_client_from_config(config_file=kubeconfig)
    if not client.configuration.verify_ssl:  # the local cluster's kubeconfig skips verification
        import urllib3

        urllib3.disable_warnings(urllib3.exceptions.InsecureRequestWarning)
    return client


def get_json(client, path: str, selector: Optional[str] = None) -> dict[str, Any]:
    """A GET of an API path as plain JSON (no model classes), with a timeout."""
    query = [("labelSelector", selector)] if selector else None
    method, url, headers, _body, _post = client.param_serialize("GET", path, query_params=query,
                                                                auth_settings=["BearerToken"])
    response = client.call_api(method, url, header_params=headers, _request_timeout=20)
    response.read()
    if response.status != 200:
        raise RuntimeError(f"GET {path}: HTTP {response.status}: {response.data[:300]!r}")
    return json.loads(response.data)


def list_pods(client, namespace: str, isvc: str) -> list[dict[str, Any]]:
    return get_json(client, f"/api/v1/namespaces/{namespace}/pods", f"{ISVC_LABEL}={isvc}")["items"]


def pod_ready(pod: dict[str, Any]) -> bool:
    return any(c.get("type") == "Ready" and c.get("status") == "True"
               for c in (pod.get("status") or {}).get("conditions") or [])


def serving(pod: dict[str, Any]) -> bool:
    """What a Service would send to: ready and not terminating."""
    return pod_ready(pod) and not pod["metadata"].get("deletionTimestamp")


class _Background:
    """A polling thread. An AssertionError in a poll is kept for ``check()``; any other exception
    (the API server slow to answer on a loaded machine) only when it happens TRANSIENT_LIMIT times
    in a row."""

    name = "background"
    TRANSIENT_LIMIT = 10

    def __init__(self) -> None:
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None
        self.errors: list[str] = []
        self.transient: list[str] = []
        self.lock = threading.Lock()

    def start(self):
        self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.poll()
                self.transient.clear()
            except AssertionError:
                with self.lock:
                    self.errors.append(traceback.format_exc())
            except Exception:  # noqa: BLE001 -- reported by check(), in the test's thread
                self.transient.append(traceback.format_exc())
                if len(self.transient) >= self.TRANSIENT_LIMIT:
                    with self.lock:
                        self.errors.append(self.transient[-1])
            self._stop.wait(POLL)

    def poll(self) -> None:
        raise NotImplementedError

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=60)

    def check(self) -> None:
        with self.lock:
            if self.errors:
                raise AssertionError(f"{self.name} failed:\n" + "\n".join(self.errors[-3:]))


@dataclasses.dataclass
class Process:
    pod: str
    uid: str
    revision: str
    profile: Profile
    server: TritonServer
    ready: bool = False
    started: float = dataclasses.field(default_factory=time.monotonic)

    @property
    def pid(self) -> int:
        return self.server.proc.pid

    @property
    def url(self) -> str:
        return self.server.url("")


class StandinKubelet(_Background):
    """One tritonserver per ready pod of the InferenceService; see the module's docstring."""

    name = "stand-in kubelet"

    def __init__(self, kubeconfig: str, namespace: str, isvc: str, model: str, prometheus: Prometheus,
                 triton_home: pathlib.Path, backends: pathlib.Path, workdir: pathlib.Path,
                 profiles: Optional[dict[str, Profile]] = None, default: Profile = GOOD,
                 startup_timeout: float = 120) -> None:
        super().__init__()
        self.client = api_client(kubeconfig)
        self.namespace, self.isvc, self.model = namespace, isvc, model
        self.prometheus = prometheus
        self.home, self.backends, self.workdir = triton_home, backends, workdir
        self.profiles: dict[str, Profile] = dict(profiles or {})
        self.default = default
        self.startup_timeout = startup_timeout
        self.processes: dict[str, Process] = {}  # by pod UID
        self.history: list[tuple[str, str, str, int, Profile]] = []  # (event, pod, revision, pid, profile)
        self._published: Optional[list] = None

    def profile(self, revision: str) -> Profile:
        return self.profiles.get(revision, self.default)

    def poll(self) -> None:
        pods = list_pods(self.client, self.namespace, self.isvc)
        wanted = {p["metadata"]["uid"]: p for p in pods if serving(p)}
        for uid in [u for u in self.processes if u not in wanted]:
            self._stop_process(uid, "pod gone or terminating")
        for uid, pod in wanted.items():
            if uid not in self.processes:
                self._start_process(pod)
        for process in list(self.processes.values()):
            if process.server.proc.poll() is not None:
                raise AssertionError(f"tritonserver of pod {process.pod} (PID {process.pid}) exited "
                                     f"{process.server.proc.returncode}:\n{process.server.log.read_text()[-2000:]}")
            if not process.ready:
                process.ready = self._model_ready(process)
                if process.ready:
                    self.history.append(("ready", process.pod, process.revision, process.pid, process.profile))
                elif time.monotonic() - process.started > self.startup_timeout:
                    raise AssertionError(f"tritonserver of pod {process.pod} not ready in {self.startup_timeout}s:\n"
                                         f"{process.server.log.read_text()[-2000:]}")
        self._publish()

    def _start_process(self, pod: dict[str, Any]) -> None:
        meta = pod["metadata"]
        revision = (meta.get("labels") or {}).get(REVISION_LABEL, "")
        profile = self.profile(revision)
        directory = self.workdir / f"{meta['name']}-{meta['uid'][:8]}"
        repository = directory / "repo"  # TritonServer logs to <repository>/../tritonserver.log
        write_model(repository, self.model, delay_ms=profile.delay_ms, failure_rate=profile.failure_rate)
        server = TritonServer(self.home, repository, self.backends, self.model,
                              extra_args=("--metrics-config=summary_latencies=true",))
        with self.lock:
            self.processes[meta["uid"]] = Process(meta["name"], meta["uid"], revision, profile, server)
        self.history.append(("start", meta["name"], revision, server.proc.pid, profile))

    def _stop_process(self, uid: str, why: str) -> None:
        with self.lock:
            process = self.processes.pop(uid)
        self._publish()  # out of the scrape before it goes
        process.server.stop()  # by PID
        self.history.append((f"stop ({why})", process.pod, process.revision, process.pid, process.profile))

    def _model_ready(self, process: Process) -> bool:
        try:
            with urllib.request.urlopen(process.server.url(f"/v2/models/{self.model}/ready"), timeout=1) as r:
                return r.status == 200
        except (OSError, urllib.error.URLError):
            return False

    def _publish(self) -> None:
        with self.lock:
            targets = sorted((f"127.0.0.1:{p.server.metrics}",
                              {"namespace": self.namespace, "pod": p.pod, "revision": p.revision,
                               "inferenceservice": self.isvc})
                             for p in self.processes.values())
        if targets != self._published:
            self.prometheus.set_file_targets(targets)
            self._published = targets

    def endpoints(self) -> list[str]:
        """The processes serving now (their model ready), as a Service's ready endpoints."""
        with self.lock:
            return sorted(p.url for p in self.processes.values() if p.ready)

    def serving(self) -> dict[str, Process]:
        """The ready processes by pod UID."""
        with self.lock:
            return {u: p for u, p in self.processes.items() if p.ready}

    def stop(self) -> None:
        """Stops polling, then every process, by PID; the scrape set is emptied."""
        super().stop()
        for uid in list(self.processes):
            try:
                self._stop_process(uid, "test over")
            except Exception:  # noqa: BLE001 -- the others are stopped all the same
                self.errors.append(traceback.format_exc())
        if self.prometheus.file_sd is not None:
            self.prometheus.set_file_targets([])


class Traffic:
    """``rate`` requests per second, round-robin over ``endpoints()`` at each request, from one thread
    (one request in flight), never more than ``limit`` in all. Connection errors (a process stopped
    between the look-up and the request) are counted apart from the model's answers."""

    def __init__(self, endpoints: Callable[[], list[str]], model: str, rate: float = 20, limit: int = 20 * 900) -> None:
        self.endpoints, self.model, self.rate, self.limit = endpoints, model, rate, limit
        self.sent = self.ok = self.failed = self.unreachable = 0
        self.by_endpoint: dict[str, list[int]] = {}  # url: [ok, failed]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="traffic", daemon=True)
        self._next = 0

    def start(self) -> "Traffic":
        self._thread.start()
        return self

    def _run(self) -> None:
        at = time.monotonic()
        while self.sent < self.limit and not self._stop.is_set():
            at = max(at + 1 / self.rate, time.monotonic() - 1)  # paced; no burst after a stall
            if self._stop.wait(max(at - time.monotonic(), 0)):
                return
            targets = self.endpoints()
            if not targets:
                continue
            target = targets[self._next % len(targets)]
            self._next += 1
            self.sent += 1
            counts = self.by_endpoint.setdefault(target, [0, 0])
            request = urllib.request.Request(f"{target}/v2/models/{self.model}/infer", data=BODY, method="POST",
                                             headers={"Content-Type": "application/json"})
            try:
                with urllib.request.urlopen(request, timeout=5) as r:
                    r.read()
                self.ok += 1
                counts[0] += 1
            except urllib.error.HTTPError as e:
                e.read()
                e.close()
                self.failed += 1
                counts[1] += 1
            except OSError:
                self.unreachable += 1

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=30)


class Invariants(_Background):
    """Polls the InferenceService's pods, then its Deployments, then the InferenceService itself, and
    records each breach of the rollout's bounds (``violations``):

    - total pods, terminating ones included (they still hold their GPU), above ``replicas + maxSurge``,
      at any time: in each poll, and after every event of a watch of the pods (``PodWatch``), which
      sees every state the API server went through, however brief;
    - once ``arm()``ed (the first revision served), ready non-terminating pods below
      ``replicas - maxUnavailable``, unless the canary was rolled back or aborted: its pods then go at
      once by design. A rollback deletes the canary's Deployment before it writes status, so a
      reading whose Deployment list (taken after the pods) lacks the canary's Deployment while
      status still says a canary runs is that rollback under way, not a breach.
    """

    name = "invariants"

    def __init__(self, kubeconfig: str, namespace: str, isvc: str, replicas: int, max_surge: int,
                 max_unavailable: int) -> None:
        super().__init__()
        self.client = api_client(kubeconfig)
        self.namespace, self.isvc = namespace, isvc
        self.ceiling = replicas + max_surge
        self.floor = replicas - max_unavailable
        self.armed = False
        self.violations: list[str] = []
        self.samples = 0
        self.max_total = 0
        self.min_ready: Optional[int] = None  # while armed and checked
        self.watch = PodWatch(kubeconfig, namespace, isvc, self._watched)

    def arm(self) -> None:
        self.armed = True

    def start(self):
        self.watch.start()
        return super().start()

    def stop(self) -> None:
        super().stop()
        self.watch.stop()

    def _watched(self, pods: dict[str, dict[str, Any]], what: str) -> None:
        self.max_total = max(self.max_total, len(pods))
        if len(pods) > self.ceiling:
            names = ", ".join(f"{p['name']}[{p['track']}{' terminating' if p['terminating'] else ''}]"
                              for p in pods.values())
            with self.lock:
                self.violations.append(f"{len(pods)} pods > replicas + maxSurge = {self.ceiling} after {what}: "
                                       f"{names}")

    def poll(self) -> None:
        pods = list_pods(self.client, self.namespace, self.isvc)
        deployments = get_json(self.client, f"/apis/apps/v1/namespaces/{self.namespace}/deployments",
                               f"{ISVC_LABEL}={self.isvc}")["items"]
        isvcs = get_json(self.client, f"/apis/{GROUP}/v1alpha1/namespaces/{self.namespace}/inferenceservices",
                         None)["items"]
        isvc = next((i for i in isvcs if i["metadata"]["name"] == self.isvc), {})
        state = (isvc.get("status") or {}).get("canary") or {}
        phase = state.get("phase")
        total = len(pods)
        ready = sum(serving(p) for p in pods)
        self.samples += 1
        self.max_total = max(self.max_total, total)

        def describe() -> str:
            return (f"{time.strftime('%H:%M:%S')} phase={phase} stableTrack={state.get('stableTrack')} "
                    f"pods=" + ", ".join(
                        f"{p['metadata']['name']}[{(p['metadata'].get('labels') or {}).get(TRACK_LABEL)}"
                        f"/{(p['metadata'].get('labels') or {}).get(REVISION_LABEL)}"
                        f"{' ready' if pod_ready(p) else ''}{' terminating' if p['metadata'].get('deletionTimestamp') else ''}]"
                        for p in pods)
                    + " deployments=" + ", ".join(f"{d['metadata']['name']}={d['spec'].get('replicas')}"
                                                  for d in deployments))

        if total > self.ceiling:
            with self.lock:
                self.violations.append(f"{total} pods > replicas + maxSurge = {self.ceiling}: {describe()}")
        if not self.armed or phase in ("RolledBack", "Aborted"):
            return
        if phase in ACTIVE:
            canary_track = "canary" if (state.get("stableTrack") or "stable") == "stable" else "stable"
            names = {d["metadata"]["name"] for d in deployments if not d["metadata"].get("deletionTimestamp")}
            canary_name = f"{self.isvc}-predictor" + ("-canary" if canary_track == "canary" else "")
            if canary_name not in names:
                return  # a rollback or abort under way (see the docstring)
        self.min_ready = ready if self.min_ready is None else min(self.min_ready, ready)
        if ready < self.floor:
            with self.lock:
                self.violations.append(f"{ready} ready pods < replicas - maxUnavailable = {self.floor}: {describe()}")

    def check(self) -> None:
        super().check()
        self.watch.check()
        with self.lock:
            if self.violations:
                raise AssertionError("rollout bounds broken:\n" + "\n".join(self.violations[:5]))


class PodWatch(_Background):
    """A list, then a watch, of the InferenceService's pods; ``on_change(pods, what)`` after each
    event with every pod that exists then (terminating ones included), by UID. Each watch lasts up
    to 60 s; the next list puts right anything missed in between."""

    name = "pod watch"

    def __init__(self, kubeconfig: str, namespace: str, isvc: str,
                 on_change: Callable[[dict[str, dict[str, Any]], str], None]) -> None:
        super().__init__()
        self.kubeconfig, self.namespace, self.isvc = kubeconfig, namespace, isvc
        self.on_change = on_change
        self.events = 0

    @staticmethod
    def _brief(pod) -> dict[str, Any]:
        labels = pod.metadata.labels or {}
        return {"name": pod.metadata.name, "track": labels.get(TRACK_LABEL),
                "terminating": pod.metadata.deletion_timestamp is not None}

    def poll(self) -> None:
        import kubernetes

        core = kubernetes.client.CoreV1Api(api_client(self.kubeconfig))
        selector = f"{ISVC_LABEL}={self.isvc}"
        listed = core.list_namespaced_pod(self.namespace, label_selector=selector, _request_timeout=20)
        pods = {p.metadata.uid: self._brief(p) for p in listed.items}
        self.on_change(pods, "a list")
        watch = kubernetes.watch.Watch()
        try:
            for event in watch.stream(core.list_namespaced_pod, self.namespace, label_selector=selector,
                                      resource_version=listed.metadata.resource_version, timeout_seconds=60,
                                      _request_timeout=90):
                if self._stop.is_set():
                    return
                pod = event["object"]
                if event["type"] == "DELETED":
                    pods.pop(pod.metadata.uid, None)
                elif event["type"] in ("ADDED", "MODIFIED"):
                    pods[pod.metadata.uid] = self._brief(pod)
                else:
                    return  # ERROR (e.g. a resourceVersion too old): list again
                self.events += 1
                self.on_change(pods, f"{event['type']} {pod.metadata.name}")
        finally:
            watch.stop()

    def stop(self) -> None:
        self._stop.set()  # the stream notices at its next event, or at its timeout; not waited for
