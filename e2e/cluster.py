#!/usr/bin/env python3
"""A real Kubernetes control plane on 127.0.0.1 with KWOK fake nodes (some with GPUs).

    python3 e2e/cluster.py up   [--state DIR] [--bin DIR]   # prints the kubeconfig path
    python3 e2e/cluster.py down [--state DIR]
    python3 e2e/cluster.py status [--state DIR]

etcd, kube-apiserver, kube-controller-manager, kube-scheduler and kwok run as this user's
processes on free loopback ports. Every process is recorded by PID in the state directory and
stopped by PID (after checking it is still the binary we started). `up` and `down` are safe to
run twice. Standard library only.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import secrets
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.request

HERE = pathlib.Path(__file__).resolve().parent
REPO = HERE.parent
DEFAULT_STATE = REPO / ".cluster"
NODES = HERE / "nodes.yaml"
KWOK_STAGES = HERE / "kwok-stages.yaml"
SERVICE_CIDR = "10.96.0.0/16"
ISSUER = "https://kubernetes.default.svc.cluster.local"
PORT_ATTEMPTS = 3
CONTROL_PLANE = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kwok")


def say(message: str) -> None:
    print(f"==> {time.strftime('%H:%M:%S')} {message}", file=sys.stderr, flush=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def binaries() -> pathlib.Path:
    """Builds (or finds in the cache) the binaries; the build script prints their directory."""
    out = subprocess.run(
        ["bash", str(HERE / "build-binaries.sh")], check=True, stdout=subprocess.PIPE, text=True
    )
    return pathlib.Path(out.stdout.strip().splitlines()[-1])


# ---- process bookkeeping ---------------------------------------------------------------------


def _pids_file(state: pathlib.Path) -> pathlib.Path:
    return state / "pids.json"


def _load_pids(state: pathlib.Path) -> dict[str, dict]:
    try:
        return json.loads(_pids_file(state).read_text())
    except FileNotFoundError:
        return {}


def start_time(pid: int) -> str | None:
    """The kernel's start time of a process (field 22 of /proc/PID/stat): with the PID, unique."""
    try:
        stat = pathlib.Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]


def alive(entry: dict) -> bool:
    """True if the PID is still the process we started: same start time and binary, not a zombie
    (a recycled PID, or another process of the same binary, is not ours)."""
    pid = entry["pid"]
    if start_time(pid) != entry.get("started"):
        return False
    try:
        exe = os.readlink(f"/proc/{pid}/exe")
    except OSError:
        return False  # a zombie has no exe
    return os.path.realpath(exe) == os.path.realpath(entry["binary"])


def _start(state: pathlib.Path, name: str, argv: list[str]) -> None:
    with open(state / "logs" / f"{name}.log", "ab") as log:  # the child keeps its own descriptor
        proc = subprocess.Popen(
            argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True
        )
    pids = _load_pids(state)
    pids[name] = {"pid": proc.pid, "binary": argv[0], "started": start_time(proc.pid), "argv": argv}
    _pids_file(state).write_text(json.dumps(pids, indent=2))


def stop_process(entry: dict, name: str, grace: float = 10.0) -> None:
    if not alive(entry):
        return
    say(f"stopping {name} (pid {entry['pid']})")
    os.kill(entry["pid"], signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and alive(entry):
        time.sleep(0.1)
    if alive(entry):
        os.kill(entry["pid"], signal.SIGKILL)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and alive(entry):
            time.sleep(0.1)
    # Reap it if it is our child (it is not when `down` runs in another process; init reaps then).
    try:
        os.waitpid(entry["pid"], os.WNOHANG)
    except ChildProcessError:
        pass


def outage(state: pathlib.Path, name: str, seconds: float) -> None:
    """Fault injection: stop one component (etcd or kube-apiserver) by PID, leave it down for
    `seconds`, start it again with the same command line and wait until it serves."""
    entry = _load_pids(state)[name]
    stop_process(entry, name)
    time.sleep(seconds)
    say(f"starting {name} again after {seconds:.0f}s down")
    _start(state, name, entry["argv"])
    ports = json.loads((state / "ports.json").read_text())
    token = (state / "tokens.csv").read_text().split(",", 1)[0]
    _wait_http(f"https://127.0.0.1:{ports['apiserver']}/readyz", "kube-apiserver", state, "kube-apiserver",
               token=token, timeout=180)


# ---- health ------------------------------------------------------------------------------------


def _wait_http(url: str, what: str, state: pathlib.Path, name: str, token: str | None = None,
               timeout: float = 120.0) -> None:
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    deadline = time.monotonic() + timeout
    last = ""
    while time.monotonic() < deadline:
        entry = _load_pids(state).get(name)
        if entry and not alive(entry):
            tail = (state / "logs" / f"{name}.log").read_text(errors="replace")[-3000:]
            raise RuntimeError(f"{name} exited while starting; log tail:\n{tail}")
        try:
            req = urllib.request.Request(url, headers=headers)
            with urllib.request.urlopen(req, context=ctx, timeout=5) as resp:
                if resp.status == 200:
                    return
        except Exception as exc:  # not up yet
            last = str(exc)
        time.sleep(0.5)
    raise RuntimeError(f"{what} did not become healthy at {url} in {timeout:.0f}s: {last}")


def kubectl(state: pathlib.Path, bin_dir: pathlib.Path, *args: str, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(bin_dir / "kubectl"), "--kubeconfig", str(state / "kubeconfig"), *args],
        check=True, text=True, capture_output=True, **kw,
    )


# ---- up / down -----------------------------------------------------------------------------------


def status(state: pathlib.Path) -> dict[str, bool]:
    return {name: alive(entry) for name, entry in _load_pids(state).items()}


OPERATOR_USER = "system:serviceaccount:inference-operator:inference-operator"


def _audit_policy(state: pathlib.Path) -> pathlib.Path:
    path = state / "audit-policy.yaml"
    path.write_text(json.dumps({
        "apiVersion": "audit.k8s.io/v1", "kind": "Policy", "omitStages": ["RequestReceived"],
        "rules": [{"level": "Metadata", "users": [OPERATOR_USER]}, {"level": "None"}],
    }))
    return path


def _front_proxy_pki(pki: pathlib.Path) -> list[str]:
    """The aggregation layer's front proxy: a CA, and a client certificate (CN front-proxy-client)
    that kube-apiserver presents to aggregated API servers (KEDA's metrics adapter) with the user in
    X-Remote-* headers; they trust it through the extension-apiserver-authentication ConfigMap that
    kube-apiserver publishes from these flags. Returns kube-apiserver's flags."""
    ca, ca_key = pki / "front-proxy-ca.crt", pki / "front-proxy-ca.key"
    crt, key, csr = pki / "front-proxy-client.crt", pki / "front-proxy-client.key", pki / "front-proxy-client.csr"
    ext = pki / "front-proxy-client.ext"
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    subprocess.run(["openssl", "req", "-x509", *ec, "-keyout", str(ca_key), "-out", str(ca), "-days", "3650",
                    "-subj", "/CN=front-proxy-ca", "-addext", "basicConstraints=critical,CA:TRUE",
                    "-addext", "keyUsage=critical,keyCertSign,cRLSign"], check=True, capture_output=True)
    subprocess.run(["openssl", "req", "-new", *ec, "-keyout", str(key), "-out", str(csr),
                    "-subj", "/CN=front-proxy-client"], check=True, capture_output=True)
    ext.write_text("basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\n"
                   "extendedKeyUsage=clientAuth\n")
    subprocess.run(["openssl", "x509", "-req", "-in", str(csr), "-CA", str(ca), "-CAkey", str(ca_key),
                    "-CAcreateserial", "-days", "3650", "-extfile", str(ext), "-out", str(crt)],
                   check=True, capture_output=True)
    for private in (ca_key, key):
        os.chmod(private, 0o600)
    return [
        f"--requestheader-client-ca-file={ca}", "--requestheader-allowed-names=front-proxy-client",
        "--requestheader-username-headers=X-Remote-User", "--requestheader-group-headers=X-Remote-Group",
        "--requestheader-extra-headers-prefix=X-Remote-Extra-",
        f"--proxy-client-cert-file={crt}", f"--proxy-client-key-file={key}",
    ]


def _qps(qps: int | None) -> list[str]:
    """The controllers' client rate limit (their default, 20/s with bursts of 30, when None): what
    bounds how fast a thousand Deployments get their pods here, not the operator."""
    return [] if qps is None else [f"--kube-api-qps={qps}", f"--kube-api-burst={qps * 2}"]


def up(state: pathlib.Path = DEFAULT_STATE, bin_dir: pathlib.Path | None = None,
       controller_qps: int | None = None) -> pathlib.Path:
    running = {k: v for k, v in status(state).items() if k in CONTROL_PLANE}
    if len(running) == len(CONTROL_PLANE) and all(running.values()) and (state / "kubeconfig").exists():
        say("cluster already up")
        return state / "kubeconfig"
    if running:
        say("a previous cluster is half up; tearing it down first")
        down(state)
    bin_dir = bin_dir or binaries()
    for attempt in range(1, PORT_ATTEMPTS + 1):
        try:
            return _up(state, bin_dir, controller_qps)
        except BaseException as exc:
            # A free port is chosen, then bound by another process: another process (even an
            # outgoing connection) can take it in between. Such a start-up is simply tried again.
            raced = "address already in use" in str(exc)
            if not raced or attempt == PORT_ATTEMPTS:
                say("start-up failed; stopping what was started")
                for name in _load_pids(state):
                    log = state / "logs" / f"{name}.log"
                    if log.exists():
                        print(f"--- {name} log tail ---\n{log.read_text(errors='replace')[-1500:]}",
                              file=sys.stderr)
                down(state)
                raise
            say(f"a chosen port was taken meanwhile; starting again with new ports ({attempt}/{PORT_ATTEMPTS})")
            down(state)
    raise AssertionError("unreachable")


def _up(state: pathlib.Path, bin_dir: pathlib.Path, controller_qps: int | None = None) -> pathlib.Path:
    t0 = time.monotonic()
    (state / "logs").mkdir(parents=True, exist_ok=True)
    (state / "pki").mkdir(exist_ok=True)
    ports = {k: free_port() for k in ("etcd", "etcd-peer", "apiserver", "kcm", "scheduler", "kwok")}
    (state / "ports.json").write_text(json.dumps(ports, indent=2))

    say("generating the service-account key and an admin token")
    subprocess.run(["openssl", "genrsa", "-out", str(state / "sa.key"), "2048"], check=True, capture_output=True)
    subprocess.run(["openssl", "rsa", "-in", str(state / "sa.key"), "-pubout", "-out", str(state / "sa.pub")],
                   check=True, capture_output=True)
    token = secrets.token_hex(24)
    (state / "tokens.csv").write_text(f'{token},admin,admin,"system:masters"\n')
    os.chmod(state / "tokens.csv", 0o600)

    etcd_url = f"http://127.0.0.1:{ports['etcd']}"
    say(f"starting etcd on {etcd_url}")
    _start(state, "etcd", [
        str(bin_dir / "etcd"), "--name=local", f"--data-dir={state / 'etcd'}",
        f"--listen-client-urls={etcd_url}", f"--advertise-client-urls={etcd_url}",
        f"--listen-peer-urls=http://127.0.0.1:{ports['etcd-peer']}",
        f"--initial-advertise-peer-urls=http://127.0.0.1:{ports['etcd-peer']}",
        f"--initial-cluster=local=http://127.0.0.1:{ports['etcd-peer']}",
        "--listen-metrics-urls=", "--log-level=warn", "--quota-backend-bytes=2147483648",
    ])
    _wait_http(f"{etcd_url}/health", "etcd", state, "etcd")

    api_url = f"https://127.0.0.1:{ports['apiserver']}"
    say(f"starting kube-apiserver on {api_url}")
    _start(state, "kube-apiserver", [
        str(bin_dir / "kube-apiserver"),
        f"--etcd-servers={etcd_url}",
        "--bind-address=127.0.0.1", "--advertise-address=127.0.0.1", f"--secure-port={ports['apiserver']}",
        # No Endpoints for the 'kubernetes' Service: its only address would be loopback.
        "--endpoint-reconciler-type=none",
        f"--cert-dir={state / 'pki'}",
        f"--token-auth-file={state / 'tokens.csv'}",
        "--authorization-mode=RBAC",
        f"--service-account-issuer={ISSUER}",
        f"--service-account-key-file={state / 'sa.pub'}",
        f"--service-account-signing-key-file={state / 'sa.key'}",
        f"--service-cluster-ip-range={SERVICE_CIDR}",
        "--allow-privileged=true",
        "--enable-admission-plugins=NamespaceLifecycle,LimitRanger,ServiceAccount,DefaultStorageClass,"
        "DefaultTolerationSeconds,MutatingAdmissionWebhook,ValidatingAdmissionWebhook,"
        "ValidatingAdmissionPolicy,ResourceQuota,Priority,PodSecurity,StorageObjectInUseProtection,"
        "RuntimeClass,PersistentVolumeClaimResize",
        "--profiling=false", "--event-ttl=1h", "--v=1",
        # The aggregation layer (APIServices such as KEDA's external metrics), reached through
        # Services resolved to their ClusterIP or ExternalName (no --enable-aggregator-routing).
        *_front_proxy_pki(state / "pki"),
        # Every request of the operator's ServiceAccount, for request-counting tests and benchmarks.
        f"--audit-policy-file={_audit_policy(state)}", f"--audit-log-path={state / 'audit.log'}",
        "--audit-log-maxsize=200", "--audit-log-format=json",
    ])
    _wait_http(f"{api_url}/readyz", "kube-apiserver", state, "kube-apiserver", token=token, timeout=180)

    kubeconfig = state / "kubeconfig"
    kubeconfig.write_text(json.dumps({
        "apiVersion": "v1", "kind": "Config",
        "clusters": [{"name": "local", "cluster": {"server": api_url, "insecure-skip-tls-verify": True}}],
        "users": [{"name": "admin", "user": {"token": token}}],
        "contexts": [{"name": "local", "context": {"cluster": "local", "user": "admin"}}],
        "current-context": "local",
    }, indent=2))
    os.chmod(kubeconfig, 0o600)

    say("starting kube-controller-manager and kube-scheduler")
    _start(state, "kube-controller-manager", [
        str(bin_dir / "kube-controller-manager"), f"--kubeconfig={kubeconfig}",
        "--bind-address=127.0.0.1", f"--secure-port={ports['kcm']}", "--leader-elect=false",
        f"--service-account-private-key-file={state / 'sa.key'}",
        "--use-service-account-credentials=false", "--controllers=*", "--v=1", *_qps(controller_qps),
        # The HPA controller's loop every 5 s, not 15 s, so that autoscaling tests wait less; the
        # stabilization windows keep their defaults (a test sets its own per HPA, in spec.behavior).
        "--horizontal-pod-autoscaler-sync-period=5s",
        # kwok's fake nodes never fail, but their leases cannot be renewed while etcd is down:
        # test_outage's 30 s without etcd, plus the API server's catch-up, once outlasted the
        # default grace and the node lifecycle controller marked a node NotReady and its pod
        # unready (kwok does not make it ready again), failing a test of the operator's reconnect.
        "--node-monitor-grace-period=120s",
    ])
    _start(state, "kube-scheduler", [
        str(bin_dir / "kube-scheduler"), f"--kubeconfig={kubeconfig}",
        "--bind-address=127.0.0.1", f"--secure-port={ports['scheduler']}", "--leader-elect=false", "--v=1",
        *_qps(controller_qps),
    ])
    _wait_http(f"https://127.0.0.1:{ports['kcm']}/healthz", "kube-controller-manager", state,
               "kube-controller-manager")
    _wait_http(f"https://127.0.0.1:{ports['scheduler']}/healthz", "kube-scheduler", state, "kube-scheduler")

    say("starting kwok (fake kubelets for nodes annotated kwok.x-k8s.io/node=fake)")
    _start(state, "kwok", [
        str(bin_dir / "kwok"), f"--kubeconfig={kubeconfig}", f"--config={KWOK_STAGES}",
        "--manage-all-nodes=false", "--manage-nodes-with-annotation-selector=kwok.x-k8s.io/node=fake",
        "--manage-nodes-with-label-selector=", "--manage-single-node=",
        "--cidr=10.0.0.0/24", "--node-ip=10.0.0.1", "--node-lease-duration-seconds=40",
        f"--server-address=127.0.0.1:{ports['kwok']}",
    ])
    _wait_http(f"http://127.0.0.1:{ports['kwok']}/healthz", "kwok", state, "kwok")

    say("creating fake nodes: CPU, A100 and H100 GPU nodes, and a MIG node")
    kubectl(state, bin_dir, "apply", "-f", str(NODES))
    kubectl(state, bin_dir, "wait", "--for=condition=Ready", "node", "--all", "--timeout=120s")
    # Pods are refused until the service-account controller has made the namespace's 'default'.
    deadline = time.monotonic() + 60
    while subprocess.run([str(bin_dir / "kubectl"), "--kubeconfig", str(kubeconfig), "get", "serviceaccount",
                          "default", "-n", "default"], capture_output=True).returncode != 0:
        if time.monotonic() > deadline:
            raise RuntimeError("the default service account never appeared")
        time.sleep(0.5)
    (state / "bin").write_text(str(bin_dir))
    say(f"cluster up in {time.monotonic() - t0:.0f}s; export KUBECONFIG={kubeconfig}")
    return kubeconfig


def start_operator(state: pathlib.Path, bin_dir: pathlib.Path) -> None:
    """The operator of this checkout, in the background, recorded like the control plane."""
    entry = _load_pids(state).get("inference-operator")
    if entry and alive(entry):
        say("the operator is already running")
        return
    crd = REPO / "crds" / "inferenceservices.serving.inference-operator.io.yaml"
    kubectl(state, bin_dir, "apply", "--server-side", "--force-conflicts", "-f", str(crd))
    kubectl(state, bin_dir, "wait", "--for=condition=Established",
            "crd/inferenceservices.serving.inference-operator.io", "--timeout=60s")
    ports = json.loads((state / "ports.json").read_text())
    ports.setdefault("operator-metrics", free_port())
    ports.setdefault("operator-healthz", free_port())
    (state / "ports.json").write_text(json.dumps(ports, indent=2))
    say(f"starting the operator (log: {state / 'logs' / 'inference-operator.log'})")
    os.environ["KUBECONFIG"] = str(state / "kubeconfig")
    _start(state, "inference-operator", [
        sys.executable, "-m", "inference_operator.cli", "run", "--bind-address=127.0.0.1",
        f"--metrics-port={ports['operator-metrics']}", f"--liveness-port={ports['operator-healthz']}",
    ])
    _wait_http(f"http://127.0.0.1:{ports['operator-healthz']}/healthz", "the operator", state,
               "inference-operator", timeout=60)


def down(state: pathlib.Path = DEFAULT_STATE) -> None:
    pids = _load_pids(state)
    # Reverse start order: nothing writes to etcd once it is stopped last.
    for name in reversed(list(pids)):
        stop_process(pids[name], name)
    if state.exists():
        shutil.rmtree(state)
        say(f"removed {state}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("command", choices=["up", "down", "status"])
    p.add_argument("--state", type=pathlib.Path, default=DEFAULT_STATE, help="state directory")
    p.add_argument("--bin", type=pathlib.Path, default=None, help="directory of prebuilt binaries")
    p.add_argument("--with-operator", action="store_true", help="also run this checkout's operator")
    p.add_argument("--controller-qps", type=int, help="kube-controller-manager's and kube-scheduler's client "
                   "rate limit (default theirs: 20/s)")
    p.add_argument("--sample", type=pathlib.Path, help="a manifest to apply once the operator runs")
    args = p.parse_args(argv)
    if args.command == "up":
        state = args.state.resolve()
        kubeconfig = up(state, args.bin, args.controller_qps)
        bin_dir = pathlib.Path((state / "bin").read_text())
        if args.with_operator:
            start_operator(state, bin_dir)
        if args.sample:
            kubectl(state, bin_dir, "apply", "-f", str(args.sample))
            print(f"""
The local cluster, the operator and the sample are up. Look at them with:

  export KUBECONFIG={kubeconfig} PATH={bin_dir}:$PATH
  kubectl get nodes -L nvidia.com/gpu.product
  kubectl get infsvc -o wide
  kubectl describe infsvc resnet
  kubectl get deploy,svc,pods -l serving.inference-operator.io/inferenceservice=resnet -o wide

Stop everything with: make down
""", file=sys.stderr)
        print(kubeconfig)
    elif args.command == "down":
        down(args.state.resolve())
    else:
        st = status(args.state.resolve())
        for name, running in st.items():
            print(f"{name}: {'running' if running else 'stopped'}")
        return 0 if st and all(st.values()) else 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
