#!/usr/bin/env python3
"""The real KEDA (its operator `keda` and its metrics API server `keda-adapter`, built by
e2e/keda-build.sh) as local processes against a cluster such as e2e/cluster.py's, so that the HPA
controller in kube-controller-manager reads KEDA's external metrics through the aggregation layer.

    python3 e2e/keda.py up   --kubeconfig K --state DIR --keda-bin DIR [--kubectl PATH]  # runs until ^C
    python3 e2e/keda.py down --state DIR        # stops what a previous `up` left running (by PID)

From Python: ``with keda.start(kubeconfig, state_dir, bin_dir) as k: ...`` (or ``k.stop()``).

What it does:
- KEDA's CRDs (server-side apply) and its own RBAC (config/rbac and config/metrics-server of the
  module, copied beside the binaries), the `keda` namespace and the `keda-operator` ServiceAccount;
  both processes run as that ServiceAccount (a token in their own kubeconfig), as in a real install.
- One CA and one certificate (SANs: the KEDA Services' names, localhost, 127.0.0.1), written to a
  cert dir in KEDA's layout (ca.crt, tls.crt, tls.key) and to the `kedaorg-certs` Secret: the
  operator's gRPC metrics service and the adapter use them for mutual TLS, the adapter also to serve
  HTTPS. KEDA's own certificate rotation is off.
- `keda` with its gRPC metrics service, /metrics and probes on free 127.0.0.1 ports; then
  `keda-adapter` on 127.0.0.1, pointed at that gRPC address.
- The Service `keda/keda-metrics-apiserver` of type ExternalName `127.0.0.1` (as kwokctl wires a
  local metrics-server), and the APIService `v1beta1.external.metrics.k8s.io` on it with the
  adapter's port and the CA as caBundle. kube-apiserver's aggregator resolves an ExternalName
  Service to `externalName:port` (it must run without --enable-aggregator-routing), verifies the
  serving certificate for `keda-metrics-apiserver.keda.svc`, and presents its front-proxy client
  certificate, which the adapter trusts through the extension-apiserver-authentication ConfigMap.

Known wart: keda-adapter serves its own Prometheus /metrics on ":<--port>", all interfaces; KEDA
has no flag for that address. Everything else listens on 127.0.0.1 only.

Every process is started in its own session and stopped by its PID (checked to still be the binary
started, with e2e/cluster.py's bookkeeping); PIDs, ports and logs live in the state directory.
Standard library only.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import pathlib
import shutil
import signal
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.request
from typing import Optional

# The local cluster's process bookkeeping (a PID is ours while its start time and binary match).
if __package__:
    from .cluster import alive as _alive
    from .cluster import free_port
    from .cluster import start_time as _start_time
    from .cluster import stop_process
else:  # run as a script: e2e/ is on sys.path
    from cluster import alive as _alive
    from cluster import free_port
    from cluster import start_time as _start_time
    from cluster import stop_process

NAMESPACE = "keda"
ACCOUNT = "keda-operator"
SERVICE = "keda-metrics-apiserver"
APISERVICE = "v1beta1.external.metrics.k8s.io"
CERT_SECRET = "kedaorg-certs"
CRDS = ("keda.sh_scaledobjects.yaml", "keda.sh_scaledjobs.yaml", "keda.sh_triggerauthentications.yaml",
        "keda.sh_clustertriggerauthentications.yaml", "eventing.keda.sh_cloudeventsources.yaml",
        "eventing.keda.sh_clustercloudeventsources.yaml")
TOKEN_DURATION = "24h"
STOP_GRACE = 15.0  # seconds from SIGTERM to SIGKILL


def say(message: str) -> None:
    print(f"==> {time.strftime('%H:%M:%S')} keda: {message}", file=sys.stderr, flush=True)


class Keda:
    """KEDA's operator and metrics adapter as child processes; see the module docstring."""

    def __init__(self, kubeconfig: str | os.PathLike, state_dir: str | os.PathLike, bin_dir: str | os.PathLike,
                 kubectl: Optional[str] = None) -> None:
        self.kubeconfig = pathlib.Path(kubeconfig).resolve()
        self.dir = pathlib.Path(state_dir).resolve()
        self.bin = pathlib.Path(bin_dir).resolve()
        self.kubectl_binary = kubectl or os.environ.get("E2E_KUBECTL") or shutil.which("kubectl") or "kubectl"
        self.certs = self.dir / "certs"
        self.ports: dict[str, int] = {}
        self.applied = False

    # ---- small helpers ------------------------------------------------------------------------

    @property
    def pids_file(self) -> pathlib.Path:
        return self.dir / "pids.json"

    def _pids(self) -> dict[str, dict]:
        try:
            return json.loads(self.pids_file.read_text())
        except FileNotFoundError:
            return {}

    def log_path(self, name: str) -> pathlib.Path:
        return self.dir / f"{name}.log"

    def log(self, name: str = "keda", n: int = 4000) -> str:
        try:
            return self.log_path(name).read_text(errors="replace")[-n:]
        except OSError:
            return ""

    def kubectl(self, *args: str, stdin: Optional[str] = None, check: bool = True,
                kubeconfig: Optional[pathlib.Path] = None) -> subprocess.CompletedProcess:
        result = subprocess.run([self.kubectl_binary, "--kubeconfig", str(kubeconfig or self.kubeconfig), *args],
                                input=stdin, capture_output=True, text=True, timeout=120)
        if check and result.returncode != 0:
            raise RuntimeError(f"kubectl {' '.join(args)} failed ({result.returncode}):\n{result.stderr}")
        return result

    def _apply(self, objects: list[dict]) -> None:
        self.kubectl("apply", "-f", "-", stdin=json.dumps({"apiVersion": "v1", "kind": "List", "items": objects}))

    def _spawn(self, name: str, argv: list[str], env: dict[str, str]) -> None:
        with open(self.log_path(name), "ab") as log:
            proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                    env=env, cwd=self.dir, start_new_session=True)
        pids = self._pids()
        pids[name] = {"pid": proc.pid, "binary": argv[0], "started": _start_time(proc.pid)}
        self.pids_file.write_text(json.dumps(pids, indent=2))

    def _wait_http(self, url: str, name: str, timeout: float) -> None:
        ctx = ssl.create_default_context(cafile=str(self.certs / "ca.crt"))
        deadline = time.monotonic() + timeout
        last = ""
        while time.monotonic() < deadline:
            entry = self._pids().get(name)
            if entry and not _alive(entry):
                raise RuntimeError(f"{name} exited while starting; log tail:\n{self.log(name)}")
            try:
                with urllib.request.urlopen(url, context=ctx if url.startswith("https") else None, timeout=5) as r:
                    if r.status == 200:
                        return
            except Exception as exc:  # not up yet
                last = str(exc)
            time.sleep(0.5)
        raise RuntimeError(f"{name} did not answer {url} in {timeout:.0f}s ({last}); log tail:\n{self.log(name)}")

    def _wait(self, predicate, what: str, timeout: float, interval: float = 0.5):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for name, entry in self._pids().items():
                if not _alive(entry):
                    raise RuntimeError(f"{name} exited; log tail:\n{self.log(name)}")
            result = predicate()
            if result:
                return result
            time.sleep(interval)
        raise RuntimeError(f"timed out after {timeout:.0f}s waiting for {what}")

    # ---- the steps ------------------------------------------------------------------------------

    def _generate_certs(self) -> None:
        """KEDA's layout (what its cert rotation writes): ca.crt, tls.crt, tls.key; one certificate
        for both ends of the gRPC link and the adapter's HTTPS, so server and client auth."""
        self.certs.mkdir(parents=True, exist_ok=True)
        ca, ca_key, crt, key = (self.certs / n for n in ("ca.crt", "ca.key", "tls.crt", "tls.key"))
        ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
        run = lambda *a: subprocess.run(["openssl", *a], check=True, capture_output=True)  # noqa: E731
        run("req", "-x509", *ec, "-keyout", str(ca_key), "-out", str(ca), "-days", "3650", "-subj",
            "/O=KEDAORG/CN=KEDA", "-addext", "basicConstraints=critical,CA:TRUE",
            "-addext", "keyUsage=critical,keyCertSign,cRLSign")
        names = []
        for svc in ("keda-operator", SERVICE, "keda-admission-webhooks"):
            names += [svc, f"{svc}.{NAMESPACE}", f"{svc}.{NAMESPACE}.svc", f"{svc}.{NAMESPACE}.svc.cluster.local"]
        san = ",".join([f"DNS:{n}" for n in names] + ["DNS:localhost", "IP:127.0.0.1"])
        ext = self.certs / "tls.ext"
        ext.write_text(f"basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\n"
                       f"extendedKeyUsage=serverAuth,clientAuth\nsubjectAltName={san}\n")
        run("req", "-new", *ec, "-keyout", str(key), "-out", str(self.certs / "tls.csr"), "-subj",
            "/O=KEDAORG/CN=keda-operator")
        run("x509", "-req", "-in", str(self.certs / "tls.csr"), "-CA", str(ca), "-CAkey", str(ca_key),
            "-CAcreateserial", "-days", "3650", "-extfile", str(ext), "-out", str(crt))
        for private in (ca_key, key):
            private.chmod(0o600)

    def _apply_manifests(self) -> None:
        say("applying KEDA's CRDs, namespace, ServiceAccount and RBAC")
        crds = [self.bin / name for name in CRDS]
        missing = [str(p) for p in crds if not p.exists()]
        if missing:
            raise RuntimeError(f"KEDA's CRDs are missing (run e2e/keda-build.sh): {missing}")
        args = ["apply", "--server-side", "--force-conflicts", "--field-manager=e2e-keda"]
        for crd in crds:
            args += ["-f", str(crd)]
        self.kubectl(*args)
        self._apply([{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}}])
        rbac = self.bin / "rbac"
        if not rbac.is_dir():
            raise RuntimeError(f"{rbac} is missing (run e2e/keda-build.sh)")
        self.kubectl("apply", "-f", str(rbac))
        self.kubectl("wait", "--for=condition=Established", "--timeout=60s",
                     *[f"crd/{p.name.split('_', 1)[1][:-len('.yaml')]}.{p.name.split('_', 1)[0]}" for p in crds])
        b64 = lambda p: base64.b64encode(p.read_bytes()).decode()  # noqa: E731
        self._apply([{
            "apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/tls",
            "metadata": {"name": CERT_SECRET, "namespace": NAMESPACE},
            "data": {"ca.crt": b64(self.certs / "ca.crt"), "tls.crt": b64(self.certs / "tls.crt"),
                     "tls.key": b64(self.certs / "tls.key")},
        }])
        self.applied = True

    def _account_kubeconfig(self) -> pathlib.Path:
        """A kubeconfig for the keda-operator ServiceAccount: KEDA runs with its own RBAC."""
        token = self.kubectl("create", "token", ACCOUNT, "-n", NAMESPACE, f"--duration={TOKEN_DURATION}").stdout.strip()
        admin = json.loads(self.kubectl("config", "view", "--raw", "--minify", "-o", "json").stdout)
        path = self.dir / "keda.kubeconfig"
        path.write_text(json.dumps({
            "apiVersion": "v1", "kind": "Config", "current-context": "keda",
            "clusters": [{"name": "local", "cluster": admin["clusters"][0]["cluster"]}],
            "users": [{"name": ACCOUNT, "user": {"token": token}}],
            "contexts": [{"name": "keda", "context": {"cluster": "local", "user": ACCOUNT}}],
        }))
        path.chmod(0o600)
        return path

    def _register(self) -> None:
        """The Service (ExternalName 127.0.0.1) and APIService through which kube-apiserver proxies
        external.metrics.k8s.io to the adapter's port."""
        self._apply([
            {"apiVersion": "v1", "kind": "Service",
             "metadata": {"name": SERVICE, "namespace": NAMESPACE, "labels": {"app": SERVICE}},
             "spec": {"type": "ExternalName", "externalName": "127.0.0.1"}},
            {"apiVersion": "apiregistration.k8s.io/v1", "kind": "APIService",
             "metadata": {"name": APISERVICE, "labels": {"app.kubernetes.io/part-of": "keda-operator"}},
             "spec": {"group": "external.metrics.k8s.io", "version": "v1beta1",
                      "groupPriorityMinimum": 100, "versionPriority": 100,
                      "service": {"name": SERVICE, "namespace": NAMESPACE, "port": self.ports["adapter"]},
                      "caBundle": base64.b64encode((self.certs / "ca.crt").read_bytes()).decode()}},
        ])

        def available() -> bool:
            conds = json.loads(self.kubectl("get", "apiservice", APISERVICE, "-o", "json").stdout)
            return any(c["type"] == "Available" and c["status"] == "True"
                       for c in conds.get("status", {}).get("conditions", []))

        self._wait(available, f"APIService {APISERVICE} to become Available", timeout=120)
        self._wait(lambda: self.kubectl("get", "--raw", "/apis/external.metrics.k8s.io/v1beta1",
                                        check=False).returncode == 0,
                   "external.metrics.k8s.io to be served", timeout=60)

    # ---- start / stop ---------------------------------------------------------------------------

    def start(self, timeout: float = 180) -> "Keda":
        for binary in ("keda", "keda-adapter"):
            if not os.access(self.bin / binary, os.X_OK):
                raise RuntimeError(f"{self.bin / binary} is missing (run e2e/keda-build.sh)")
        running = {n: _alive(e) for n, e in self._pids().items()}
        if any(running.values()):
            raise RuntimeError(f"KEDA already runs from {self.dir}: {running}; stop it first")
        self.dir.mkdir(parents=True, exist_ok=True)
        self.pids_file.unlink(missing_ok=True)
        try:
            self._start(timeout)
        except BaseException:
            for name in ("keda", "keda-adapter"):
                if self.log_path(name).exists():
                    print(f"--- {name} log tail ---\n{self.log(name, 2000)}", file=sys.stderr)
            self.stop()
            raise
        return self

    def _start(self, timeout: float) -> None:
        t0 = time.monotonic()
        self._generate_certs()
        self._apply_manifests()
        account = self._account_kubeconfig()
        self.ports = {k: free_port() for k in ("grpc", "metrics", "probes", "adapter", "adapter-metrics")}
        (self.dir / "ports.json").write_text(json.dumps(self.ports, indent=2))
        (self.dir / "ca").mkdir(exist_ok=True)  # --ca-dir: no extra CAs for scalers
        env = {k: v for k, v in os.environ.items() if k != "KUBECONFIG"}
        env.update({
            "KUBECONFIG": str(account),
            "WATCH_NAMESPACE": "",  # all namespaces
            "POD_NAMESPACE": NAMESPACE,
            "KEDA_CLUSTER_OBJECT_NAMESPACE": NAMESPACE,  # else read from an in-cluster token mount
        })
        say(f"starting the operator (gRPC metrics service on 127.0.0.1:{self.ports['grpc']}; "
            f"log {self.log_path('keda')})")
        self._spawn("keda", [
            str(self.bin / "keda"),
            "--leader-elect=false",
            "--zap-log-level=info", "--zap-encoder=console", "--zap-time-encoding=rfc3339",
            f"--metrics-bind-address=127.0.0.1:{self.ports['metrics']}",
            f"--health-probe-bind-address=127.0.0.1:{self.ports['probes']}",
            f"--metrics-service-bind-address=127.0.0.1:{self.ports['grpc']}",
            f"--cert-dir={self.certs}",
            "--enable-cert-rotation=false", "--enable-webhook-patching=false", "--enable-apiservice-patching=false",
            f"--ca-dir={self.dir / 'ca'}",
        ], env)
        self._wait_http(f"http://127.0.0.1:{self.ports['probes']}/readyz", "keda", timeout)
        say(f"starting the metrics adapter on https://127.0.0.1:{self.ports['adapter']} "
            f"(log {self.log_path('keda-adapter')})")
        self._spawn("keda-adapter", [
            str(self.bin / "keda-adapter"),
            f"--secure-port={self.ports['adapter']}", "--bind-address=127.0.0.1",
            f"--cert-dir={self.certs}", f"--tls-cert-file={self.certs / 'tls.crt'}",
            f"--tls-private-key-file={self.certs / 'tls.key'}",
            # As KEDA's own manifests: client certificates are checked against KEDA's CA (without
            # it the adapter wants the client-ca-file of the extension-apiserver-authentication
            # ConfigMap, which this kube-apiserver, authenticating by token, does not publish).
            f"--client-ca-file={self.certs / 'ca.crt'}",
            f"--lister-kubeconfig={account}", f"--authentication-kubeconfig={account}",
            f"--authorization-kubeconfig={account}",
            f"--metrics-service-address=127.0.0.1:{self.ports['grpc']}",
            f"--port={self.ports['adapter-metrics']}",
            "--zap-log-level=info", "--zap-encoder=console", "--zap-time-encoding=rfc3339",
        ], env)
        self._wait_http(f"https://127.0.0.1:{self.ports['adapter']}/readyz", "keda-adapter", timeout)
        say("registering the adapter as " + APISERVICE)
        self._register()
        say(f"KEDA up in {time.monotonic() - t0:.0f}s")

    def running(self) -> dict[str, bool]:
        return {name: _alive(entry) for name, entry in self._pids().items()}

    def stop(self, cleanup: bool = True) -> None:
        """Unregisters the APIService (an unavailable one makes discovery of every client fail),
        then stops the adapter and the operator by PID. CRDs and the namespace stay."""
        if cleanup and self.applied:
            self.kubectl("delete", "apiservice", APISERVICE, "--ignore-not-found", "--wait=false", check=False)
        stop(self.dir)

    def __enter__(self) -> "Keda":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def start(kubeconfig: str | os.PathLike, state_dir: str | os.PathLike, bin_dir: str | os.PathLike,
          kubectl: Optional[str] = None, timeout: float = 180) -> Keda:
    """Starts KEDA (see the module docstring) and returns it; ``.stop()`` or ``with`` stops it."""
    return Keda(kubeconfig, state_dir, bin_dir, kubectl).start(timeout)


def stop(state_dir: str | os.PathLike) -> None:
    """Stops, by PID, the processes recorded in state_dir (adapter first)."""
    path = pathlib.Path(state_dir) / "pids.json"
    try:
        pids = json.loads(path.read_text())
    except FileNotFoundError:
        return
    for name in reversed(list(pids)):
        stop_process(pids[name], name, grace=STOP_GRACE)


def main(argv: Optional[list[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("command", choices=["up", "down"])
    p.add_argument("--state", type=pathlib.Path, help="KEDA's state directory (default: a temporary one for up)")
    p.add_argument("--kubeconfig", help="the cluster's admin kubeconfig (default: $KUBECONFIG)")
    p.add_argument("--keda-bin", help="where keda-build.sh put KEDA (default: $E2E_KEDA_BIN)")
    p.add_argument("--kubectl", help="kubectl binary (default: $E2E_KUBECTL, else PATH)")
    args = p.parse_args(argv)
    if args.command == "down":
        if not args.state:
            p.error("down needs --state")
        stop(args.state)
        return 0
    kubeconfig = args.kubeconfig or os.environ.get("KUBECONFIG")
    bin_dir = args.keda_bin or os.environ.get("E2E_KEDA_BIN")
    if not kubeconfig or not bin_dir:
        p.error("up needs --kubeconfig (or KUBECONFIG) and --keda-bin (or E2E_KEDA_BIN)")
    state = args.state or pathlib.Path(tempfile.mkdtemp(prefix="keda-"))
    keda = start(kubeconfig, state, bin_dir, args.kubectl)
    print(f"KEDA is up; state and logs in {state}. ^C stops it.", file=sys.stderr)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    try:
        while all(keda.running().values()):
            time.sleep(1)
        print(f"a KEDA process exited: {keda.running()}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0
    finally:
        keda.stop()


if __name__ == "__main__":
    sys.exit(main())
