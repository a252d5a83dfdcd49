"""Shared helpers of the e2e suite and bench/ (no fixtures: those stay in conftest.py): kubectl,
wait_for, the operator as a child process (and its counters), the API server's audit log, namespaces
with a bound PVC, and another actor's edits of a child."""

from __future__ import annotations

import collections
import json
import os
import pathlib
import socket
import subprocess
import sys
import textwrap
import time
import urllib.request
from typing import Any, Callable, Optional

REPO = pathlib.Path(__file__).resolve().parents[1]
CRD = REPO / "crds" / "inferenceservices.serving.inference-operator.io.yaml"


class Kubectl:
    def __init__(self, kubeconfig: str, binary: str) -> None:
        self.kubeconfig = kubeconfig
        self.binary = binary

    def __call__(self, *args: str, check: bool = True, stdin: Optional[str] = None,
                 timeout: float = 120) -> subprocess.CompletedProcess:
        result = subprocess.run([self.binary, "--kubeconfig", self.kubeconfig, *args], input=stdin,
                                capture_output=True, text=True, timeout=timeout)
        if check and result.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} failed ({result.returncode}):\n{result.stderr}")
        return result

    def json(self, *args: str) -> Any:
        return json.loads(self("get", "-o", "json", *args).stdout)

    def maybe(self, *args: str) -> Optional[dict]:
        result = self("get", "-o", "json", *args, check=False)
        if result.returncode != 0:
            if "NotFound" in result.stderr or "not found" in result.stderr:
                return None
            raise AssertionError(result.stderr)
        return json.loads(result.stdout)

    def apply(self, manifest: str, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        return self("apply", "-f", "-", *args, stdin=manifest, check=check)


def wait_for(predicate: Callable[[], Any], what: str, timeout: float = 120, interval: float = 0.5) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")


class Audit:
    """The API server's audit log of the operator's own requests (the local cluster writes one):
    what the operator sent, counted by the server, not by the operator's own metrics."""

    def __init__(self, path: pathlib.Path) -> None:
        self.path = path

    def offset(self) -> int:
        return self.path.stat().st_size if self.path.exists() else 0

    def _completed(self, offset: int):
        """(event, objectRef, resource[/subresource]) of each request completed since offset."""
        with open(self.path, "rb") as f:
            f.seek(offset)
            lines = f.read().splitlines()
        for line in lines:
            event = json.loads(line)
            if event.get("stage") != "ResponseComplete":
                continue
            ref = event.get("objectRef") or {}
            yield event, ref, ref.get("resource", "") + (f"/{ref['subresource']}" if ref.get("subresource") else "")

    def since(self, offset: int) -> list[tuple[str, str, str, int]]:
        """(verb, resource[/subresource], name, code) of each request completed since offset."""
        return [(event["verb"], resource, ref.get("name", ""), (event.get("responseStatus") or {}).get("code", 0))
                for event, ref, resource in self._completed(offset)]

    def writes(self, offset: int, namespace: Optional[str] = None) -> list[dict]:
        """The operator's writes completed since offset (any verb but get, list and watch), in
        namespace when given: each the audit event itself (verb, objectRef, userAgent, timestamps)."""
        return [event for event, ref, _ in self._completed(offset)
                if event["verb"] not in ("get", "list", "watch")
                and (namespace is None or ref.get("namespace") == namespace)]

    def objects(self, offset: int, resource: str) -> set[tuple[str, str]]:
        """(namespace, name) of each object of resource[/subresource] the operator asked for since offset."""
        return {(ref.get("namespace", ""), ref.get("name", "")) for _, ref, kind in self._completed(offset)
                if kind == resource}

    def usage(self) -> tuple[collections.Counter, collections.Counter]:
        """Every request of the log counted by (verb, group, resource[/subresource]), and those
        refused (403); requests for no resource (discovery) left out."""
        used: collections.Counter = collections.Counter()
        refused: collections.Counter = collections.Counter()
        for event, ref, resource in self._completed(0):
            if not ref.get("resource"):
                continue
            key = (event["verb"], ref.get("apiGroup", ""), resource)
            used[key] += 1
            if (event.get("responseStatus") or {}).get("code") == 403:
                refused[key] += 1
        return used, refused


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# Short, so that tests see resyncs and slow retries happen (and write nothing).
RESYNC_SECONDS = 8
SLOW_RETRY_SECONDS = 2


class Operator:
    """`inference-operator run` as a child process, with its /metrics and /healthz on loopback."""

    def __init__(self, kubeconfig: str, log_dir: pathlib.Path) -> None:
        self.kubeconfig = kubeconfig
        self.log_dir = log_dir
        self.proc: Optional[subprocess.Popen] = None
        self.starts = 0

    def start(self, env: Optional[dict[str, str]] = None, args: tuple[str, ...] = ()) -> None:
        self.metrics_port, self.liveness_port = _free_port(), _free_port()
        self.starts += 1
        self.log_path = self.log_dir / f"operator-{self.starts}.log"
        env = dict(os.environ, KUBECONFIG=self.kubeconfig, PYTHONUNBUFFERED="1", **(env or {}))
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "inference_operator.cli", "run", "--bind-address", "127.0.0.1",
             "--metrics-port", str(self.metrics_port), "--liveness-port", str(self.liveness_port),
             "--resync-seconds", str(RESYNC_SECONDS), "--slow-retry-seconds", str(SLOW_RETRY_SECONDS), *args],
            env=env, stdout=open(self.log_path, "wb"), stderr=subprocess.STDOUT, start_new_session=True,
        )
        wait_for(self._healthy, "the operator's /healthz", timeout=60)

    def _healthy(self) -> bool:
        if self.proc and self.proc.poll() is not None:
            raise AssertionError(f"operator exited ({self.proc.returncode}):\n{self.log()[-3000:]}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.liveness_port}/healthz", timeout=2) as r:
                return r.status == 200
        except OSError:
            return False

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()  # by PID: Popen holds it
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        self.proc = None

    def restart(self, env: Optional[dict[str, str]] = None, args: tuple[str, ...] = ()) -> None:
        self.stop()
        self.start(env, args)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def requests(self) -> dict[str, float]:
        """inference_operator_api_requests_total by 'verb resource code'."""
        result = {}
        for name, value in self.metrics().items():
            if name.startswith("inference_operator_api_requests_total{"):
                labels = dict(part.split("=", 1) for part in name[name.index("{") + 1:-1].split(","))
                key = " ".join(labels[k].strip('"') for k in ("verb", "resource", "code"))
                result[key] = value
        return result

    def metrics(self) -> dict[str, float]:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5) as r:
            text = r.read().decode()
        values: dict[str, float] = {}
        for line in text.splitlines():
            if line.startswith("inference_operator_") and " " in line:
                name, value = line.rsplit(" ", 1)
                values[name] = float(value)
        return values


def reconciles(operator: Operator) -> float:
    return sum(v for k, v in operator.metrics().items() if k.startswith("inference_operator_reconcile_total"))


def diff(after: dict[str, float], before: dict[str, float]) -> dict[str, float]:
    return {k: v - before.get(k, 0) for k, v in after.items() if v - before.get(k, 0)}


OPERATOR_MANIFEST = REPO / "manifests" / "install.yaml"
OPERATOR_NAMESPACE, OPERATOR_ACCOUNT = "inference-operator", "inference-operator"
IDENTITY_KINDS = {"Namespace", "ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding"}


def operator_kubeconfig(kubectl: Kubectl, directory: pathlib.Path, manifest: pathlib.Path = OPERATOR_MANIFEST,
                        account: str = OPERATOR_ACCOUNT, account_namespace: str = OPERATOR_NAMESPACE) -> str:
    """A kubeconfig for the operator's own ServiceAccount, with the RBAC of manifests/install.yaml
    (the Helm chart's, with default values): the suite runs the operator as production does, not
    as an admin, so a verb missing from the chart's ClusterRole fails here."""
    import yaml

    docs = [d for d in yaml.safe_load_all(manifest.read_text()) if d and d["kind"] in IDENTITY_KINDS]
    kubectl.apply(yaml.safe_dump_all(docs))
    return account_kubeconfig(kubectl, directory, account, account_namespace)


def account_kubeconfig(kubectl: Kubectl, directory: pathlib.Path, account: str, account_namespace: str,
                       context: str = "operator", namespace: Optional[str] = None) -> str:
    """A kubeconfig whose one context (``context``, in ``namespace`` when given) authenticates as a
    ServiceAccount with a token from the TokenRequest API."""
    token = kubectl("create", "token", account, "-n", account_namespace, "--duration=6h").stdout.strip()
    admin = json.loads(kubectl("config", "view", "--raw", "--minify", "-o", "json").stdout)
    cluster = admin["clusters"][0]["cluster"]
    ctx: dict[str, str] = {"cluster": "local", "user": account}
    if namespace:
        ctx["namespace"] = namespace
    config = {
        "apiVersion": "v1", "kind": "Config", "current-context": context,
        "clusters": [{"name": "local", "cluster": cluster}],
        "users": [{"name": account, "user": {"token": token}}],
        "contexts": [{"name": context, "context": ctx}],
    }
    path = directory / f"{account_namespace}-{account}.kubeconfig"
    path.write_text(json.dumps(config))
    path.chmod(0o600)
    return str(path)


def bound_claim(kubectl: Kubectl, namespace: str, claim: str) -> None:
    """A PVC bound to a static hostPath PV (nothing is mounted: pods run under kwok)."""
    kubectl.apply(f"""
apiVersion: v1
kind: PersistentVolume
metadata:
  name: {namespace}-{claim}
  labels: {{e2e-namespace: {namespace}}}
spec:
  capacity: {{storage: 10Gi}}
  accessModes: [ReadOnlyMany]
  persistentVolumeReclaimPolicy: Retain
  storageClassName: ""
  hostPath: {{path: /srv/{namespace}/{claim}}}
  claimRef: {{namespace: {namespace}, name: {claim}}}
---
apiVersion: v1
kind: PersistentVolumeClaim
metadata: {{name: {claim}, namespace: {namespace}}}
spec:
  accessModes: [ReadOnlyMany]
  storageClassName: ""
  volumeName: {namespace}-{claim}
  resources: {{requests: {{storage: 10Gi}}}}
""")
    wait_for(lambda: kubectl.json("pvc", claim, "-n", namespace)["status"].get("phase") == "Bound",
             f"the {claim} PVC to bind")


def make_namespace(kubectl: Kubectl, name: str) -> str:
    """A namespace holding a bound PVC named `models` (a static hostPath PV)."""
    kubectl("create", "namespace", name)
    bound_claim(kubectl, name, "models")
    return name


def drop_namespace(kubectl: Kubectl, name: str) -> None:
    """The namespace and its PV, deleted without waiting."""
    kubectl("delete", "namespace", name, "--wait=false", check=False)
    kubectl("delete", "pv", "-l", f"e2e-namespace={name}", "--wait=false", check=False)


def granted(manifest: pathlib.Path = OPERATOR_MANIFEST) -> set[tuple[str, str, str]]:
    import yaml

    grants = set()
    for doc in yaml.safe_load_all(manifest.read_text()):
        if doc and doc["kind"] in ("ClusterRole", "Role"):
            for rule in doc["rules"]:
                grants |= {(verb, group, resource) for verb in rule["verbs"] for group in rule["apiGroups"]
                           for resource in rule["resources"]}
    return grants


# ---- InferenceServices: a manifest, and waiting for what the operator reports -------------------


ISVC_LABEL = "serving.inference-operator.io/inferenceservice"


def manifest(name: str, ns: str, *, replicas: int = 1, gpu: str = "count: 1", storage: str = "pvc://models/triton",
             extra: str = "") -> str:
    return textwrap.dedent(f"""\
        apiVersion: serving.inference-operator.io/v1alpha1
        kind: InferenceService
        metadata:
          name: {name}
          namespace: {ns}
        spec:
          model:
            name: resnet50
            storageUri: {storage}
          resources:
            gpu: {{{gpu}}}
            requests: {{cpu: 500m, memory: 1Gi}}
          replicas: {replicas}
        """) + textwrap.indent(textwrap.dedent(extra), "  ")


def condition(isvc: dict, ctype: str) -> dict:
    for c in (isvc.get("status") or {}).get("conditions") or []:
        if c["type"] == ctype:
            return c
    return {}


def pods_of(kubectl: Kubectl, ns: str, name: str) -> list[dict]:
    return kubectl.json("pods", "-n", ns, "-l", f"{ISVC_LABEL}={name}")["items"]


def wait_condition(kubectl: Kubectl, ns: str, name: str, ctype: str, reason: str, timeout: int = 120) -> dict:
    """The InferenceService once its condition `ctype` has `reason`."""

    def reached():
        isvc = kubectl.json("infsvc", name, "-n", ns)
        return isvc if condition(isvc, ctype).get("reason") == reason else None

    return wait_for(reached, f"{ctype} reason {reason}", timeout=timeout)


def wait_ready(kubectl: Kubectl, ns: str, name: str, timeout: int = 120) -> dict:
    kubectl("wait", "--for=condition=Ready", f"infsvc/{name}", "-n", ns, f"--timeout={timeout}s",
            timeout=timeout + 10)
    return kubectl.json("infsvc", name, "-n", ns)


def settled(snapshot, quiet: float = 3.0, timeout: float = 60.0):
    """The snapshot once two readings `quiet` seconds apart agree (the last status writes are in)."""
    deadline = time.monotonic() + timeout
    last = snapshot()
    while time.monotonic() < deadline:
        time.sleep(quiet)
        now = snapshot()
        if now == last:
            return now
        last = now
    raise AssertionError("the InferenceService and its children kept changing")


# ---- another actor's edits: its own label and annotation, a merge patch -------------------------


FOREIGN_LABEL, FOREIGN_NOTE = "team.example.com/owner", "tools.example.com/scanned-at"


def mark_foreign(kubectl: Kubectl, kind: str, name: str, ns: str) -> None:
    """What another tool adds: a label and an annotation of its own."""
    kubectl("label", kind, name, "-n", ns, f"{FOREIGN_LABEL}=ml-platform")
    kubectl("annotate", kind, name, "-n", ns, f"{FOREIGN_NOTE}=2026-11-24")


def marked_foreign(obj: dict) -> bool:
    meta = obj["metadata"]
    return (meta.get("labels") or {}).get(FOREIGN_LABEL) == "ml-platform" and \
        (meta.get("annotations") or {}).get(FOREIGN_NOTE) == "2026-11-24"


def merge_patch(kubectl: Kubectl, kind: str, name: str, ns: str, body: dict) -> None:
    kubectl("patch", kind, name, "-n", ns, "--type=merge", "-p", json.dumps(body))
