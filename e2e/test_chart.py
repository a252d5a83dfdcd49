"""The Helm chart and manifests/install.yaml on the local control plane (issue #11): helm lint and
template with default and other values; values.schema.json refuses bad values at install; helm
install, upgrade and uninstall (InferenceServices and their workloads stay); kubectl apply of
install.yaml; what the chart's ServiceAccount may and may not do; the operator run with the RBAC of
a namespaced install; and no drift for Argo CD after the operator has reconciled what was applied."""

from __future__ import annotations

import json
import os
import pathlib
import shutil
import subprocess
import uuid

import pytest
import yaml

from . import chart
from .helpers import (
    IDENTITY_KINDS,
    OPERATOR_ACCOUNT,
    OPERATOR_NAMESPACE,
    Kubectl,
    Operator,
    manifest,
    operator_kubeconfig,
    wait_for,
    wait_ready,
)

SA = f"system:serviceaccount:{OPERATOR_NAMESPACE}:{OPERATOR_ACCOUNT}"


class Helm:
    def __init__(self, binary: str, kubeconfig: str, home: pathlib.Path) -> None:
        self.binary = binary
        # Its cache, config and data in a temporary directory, never the user's.
        self.env = dict(os.environ, KUBECONFIG=kubeconfig, HELM_CACHE_HOME=str(home / "cache"),
                        HELM_CONFIG_HOME=str(home / "config"), HELM_DATA_HOME=str(home / "data"))

    def __call__(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        result = subprocess.run([self.binary, *args], env=self.env, capture_output=True, text=True, timeout=300)
        if check and result.returncode != 0:
            raise AssertionError(f"helm {' '.join(args)} failed ({result.returncode}):\n{result.stderr}")
        return result

    def template(self, *args: str, release: str = chart.RELEASE, namespace: str = chart.NAMESPACE) -> list[dict]:
        out = chart.template(self.binary, *args, release=release, namespace=namespace).stdout
        return [d for d in yaml.safe_load_all(out) if d]


@pytest.fixture(scope="module")
def helm(kubectl: Kubectl, tmp_path_factory: pytest.TempPathFactory) -> Helm:
    bin_dir = os.environ.get("E2E_BIN")
    binary = shutil.which("helm", path=bin_dir) if bin_dir else shutil.which("helm")
    if not binary:
        if bin_dir:
            pytest.fail(f"no helm in E2E_BIN={bin_dir} (e2e/build-binaries.sh builds it)")
        pytest.skip("no helm: set E2E_BIN to the directory e2e/build-binaries.sh prints")
    return Helm(binary, kubectl.kubeconfig, tmp_path_factory.mktemp("helm"))


def by_kind(docs: list[dict]) -> dict[tuple[str, str, str], dict]:
    return {(d["kind"], d["metadata"].get("namespace", ""), d["metadata"]["name"]): d for d in docs}


def resources_of(rules: list[dict]) -> set[str]:
    return {r for rule in rules for r in rule["resources"]}


# ---- lint, template, schema ---------------------------------------------------------------------


OTHER_VALUES = """\
replicas: 1
leaderElection: {enabled: false}
watchNamespaces: [team-a, team-b]
triton: {image: registry.example/tritonserver:24.12-py3}
prometheus: {url: "http://prometheus.monitoring:9090"}
logLevel: debug
rbac: {prometheusCredentialsSecrets: true}
metrics:
  serviceMonitor: {enabled: true, labels: {release: kube-prometheus}}
prometheusAdapter: {rulesConfigMap: true, window: 2m}
nodeSelector: {node-role.kubernetes.io/control-plane: ""}
tolerations: [{key: node-role.kubernetes.io/control-plane, operator: Exists, effect: NoSchedule}]
priorityClassName: system-cluster-critical
resources: {requests: {cpu: 200m, memory: 300Mi}, limits: {cpu: "2", memory: 1Gi}}
"""


def test_helm_lint_passes_with_default_and_other_values(helm: Helm, tmp_path):
    values = tmp_path / "values.yaml"
    values.write_text(OTHER_VALUES)
    for extra in ((), ("-f", str(values))):
        result = helm("lint", "--strict", str(chart.CHART), "--kube-version", chart.KUBE_VERSION, *extra)
        assert "1 chart(s) linted, 0 chart(s) failed" in result.stdout, result.stdout


def test_template_with_other_values(helm: Helm, tmp_path):
    values = tmp_path / "values.yaml"
    values.write_text(OTHER_VALUES)
    docs = by_kind(helm.template("-f", str(values)))
    home = chart.NAMESPACE

    # Namespaced: a Role and RoleBinding in each watched namespace, and a ClusterRole for what is
    # cluster-scoped only. Secret access was asked for: `get`, in the watched namespaces only.
    cluster_role = docs[("ClusterRole", "", "inference-operator")]
    assert resources_of(cluster_role["rules"]) == {"customresourcedefinitions", "namespaces"}
    for ns in ("team-a", "team-b"):
        role = docs[("Role", ns, "inference-operator")]
        assert {"deployments", "inferenceservices", "secrets"} <= resources_of(role["rules"])
        assert {"get"} == {v for rule in role["rules"] if "secrets" in rule["resources"] for v in rule["verbs"]}
        binding = docs[("RoleBinding", ns, "inference-operator")]
        assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "inference-operator", "namespace": home}]
    assert ("Role", home, "inference-operator-leader-election") not in docs  # no election, no Lease

    deployment = docs[("Deployment", home, "inference-operator")]
    assert deployment["spec"]["replicas"] == 1 and deployment["spec"]["strategy"] == {"type": "Recreate"}
    pod = deployment["spec"]["template"]["spec"]
    assert pod["nodeSelector"] == {"node-role.kubernetes.io/control-plane": ""}
    assert pod["priorityClassName"] == "system-cluster-critical" and pod["tolerations"][0]["operator"] == "Exists"
    assert "affinity" not in pod  # one replica: nothing to spread
    (container,) = pod["containers"]
    assert container["resources"]["limits"] == {"cpu": "2", "memory": "1Gi"}
    args = container["args"]
    assert "--namespace=team-a" in args and "--namespace=team-b" in args and "--log-level=debug" in args
    assert not [a for a in args if a.startswith("--leader-elect")]
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["INFERENCE_OPERATOR_TRITON_IMAGE"] == "registry.example/tritonserver:24.12-py3"
    assert env["INFERENCE_OPERATOR_PROMETHEUS_URL"] == "http://prometheus.monitoring:9090"
    assert ("PodDisruptionBudget", home, "inference-operator") not in docs  # one replica: no PDB

    monitor = docs[("ServiceMonitor", home, "inference-operator")]
    assert monitor["metadata"]["labels"]["release"] == "kube-prometheus"
    assert monitor["spec"]["endpoints"][0]["port"] == "metrics"

    # prometheus-adapter's own configuration: the generated rules, at the window asked for.
    rules = yaml.safe_load(docs[("ConfigMap", home, "inference-operator-adapter-rules")]["data"]["config.yaml"])
    shipped = yaml.safe_load((chart.CHART / "files" / "prometheus-adapter-values.yaml").read_text())
    assert len(rules["rules"]) == len(shipped["rules"]["custom"]) == 5
    queries = " ".join(r["metricsQuery"] for r in rules["rules"])
    assert "[1m]" not in queries and queries.count("[2m]") == str(shipped).count("[1m]") > 0


def test_template_defaults_have_no_optional_objects(helm: Helm):
    kinds = {kind for kind, _, _ in by_kind(helm.template())}
    assert kinds == {"ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding", "Service",
                     "Deployment", "PodDisruptionBudget"}


@pytest.mark.parametrize("values, message", [
    (["--set", "replicas=2", "--set", "leaderElection.enabled=false"], "replicas: 2 needs leaderElection.enabled=true"),
    (["--set", "leaderElection.retrySeconds=12"], "retrySeconds < renewSeconds < leaseSeconds"),
    (["--set", "health.port=8080"], "metrics.port and health.port must differ"),
    (["--set", "serviceAccount.create=false"], "serviceAccount.create=false needs serviceAccount.name"),
    (["--set", "metrics.serviceMonitor.enabled=true", "--set", "metrics.service.enabled=false"],
     "the ServiceMonitor selects that Service"),
], ids=["two-replicas-without-election", "election-timing", "ports", "default-account", "monitor-without-service"])
def test_values_that_contradict_each_other_are_refused(helm: Helm, values, message):
    result = chart.template(helm.binary, *values, check=False)
    assert result.returncode != 0
    assert message in result.stderr, result.stderr


@pytest.mark.parametrize("values, field", [
    (["--set", "logLevel=verbose"], "logLevel"),
    (["--set", "watchNamespaces=team-a"], "watchNamespaces"),
    (["--set", "replica=3"], "replica"),
], ids=["log-level", "namespaces-not-a-list", "typo"])
def test_bad_values_are_refused_with_a_message(helm: Helm, values, field):
    result = chart.template(helm.binary, *values, check=False)
    assert result.returncode != 0
    assert "values don't meet the specifications of the schema" in result.stderr, result.stderr
    assert field in result.stderr, result.stderr
    print(result.stderr.strip().splitlines()[-1])


def test_install_yaml_is_the_chart_rendered(helm: Helm):
    assert chart.install_yaml(helm.binary) == chart.INSTALL.read_text(), "manifests/install.yaml is stale: make manifests"


# ---- helm install, upgrade, uninstall ------------------------------------------------------------


def _ready_replicas(kubectl: Kubectl, ns: str, name: str) -> int:
    return (kubectl.json("deployment", name, "-n", ns).get("status") or {}).get("readyReplicas") or 0


def test_helm_install_upgrade_uninstall(kubectl: Kubectl, helm: Helm, namespace: str):
    # Another release name than the suite's own RBAC ("inference-operator"), in a namespace of its own.
    release, home = "io-helm", f"{namespace}-op"
    full = f"{release}-inference-operator"
    kubectl.apply(manifest("kept", namespace))
    wait_ready(kubectl, namespace, "kept")
    try:
        result = helm("install", release, str(chart.CHART), "-n", home, "--create-namespace", "--wait",
                      "--timeout", "180s")
        assert "kubectl -n %s rollout status deployment/%s" % (home, full) in result.stdout  # NOTES.txt
        assert _ready_replicas(kubectl, home, full) == 2  # kwok runs the pods: Ready, on the CPU nodes
        pods = kubectl.json("pods", "-n", home, "-l", f"app.kubernetes.io/instance={release}")["items"]
        assert len(pods) == 2 and {p["spec"]["nodeName"] for p in pods} <= {"cpu-0", "cpu-1"}
        for kind, ns, name in (("serviceaccount", home, full), ("service", home, f"{full}-metrics"),
                               ("pdb", home, full), ("role", home, f"{full}-leader-election"),
                               ("clusterrole", "", full), ("clusterrolebinding", "", full)):
            assert kubectl.maybe(kind, name, *(["-n", ns] if ns else [])), (kind, name)

        # Changed values apply: three replicas, debug logs, one watched namespace (a Role there).
        helm("upgrade", release, str(chart.CHART), "-n", home, "--wait", "--timeout", "180s", "--set", "replicas=3",
             "--set", "logLevel=debug", "--set", f"watchNamespaces={{{namespace}}}")
        deployment = kubectl.json("deployment", full, "-n", home)
        args = deployment["spec"]["template"]["spec"]["containers"][0]["args"]
        assert deployment["spec"]["replicas"] == 3 and "--log-level=debug" in args and f"--namespace={namespace}" in args
        wait_for(lambda: _ready_replicas(kubectl, home, full) == 3, "three ready replicas")
        assert kubectl.maybe("role", full, "-n", namespace)
        cluster_role = kubectl.json("clusterrole", full)
        assert resources_of(cluster_role["rules"]) == {"customresourcedefinitions", "namespaces"}

        helm("uninstall", release, "-n", home, "--wait", "--timeout", "120s")
        for kind, ns, name in (("deployment", home, full), ("serviceaccount", home, full), ("clusterrole", "", full),
                               ("clusterrolebinding", "", full), ("role", namespace, full)):
            assert kubectl.maybe(kind, name, *(["-n", ns] if ns else [])) is None, (kind, name)
        # What it did not install stays: the CRD (Helm keeps crds/), the InferenceService, its workload.
        assert kubectl.maybe("crd", "inferenceservices.serving.inference-operator.io")
        assert kubectl.maybe("infsvc", "kept", "-n", namespace)
        assert kubectl.maybe("deployment", "kept-predictor", "-n", namespace)
    finally:
        helm("uninstall", release, "-n", home, check=False)
        kubectl("delete", "namespace", home, "--wait=false", check=False)


def test_helm_installs_the_crd_on_a_cluster_without_one_and_uninstall_keeps_it(kubectl: Kubectl, helm: Helm,
                                                                              tmp_path):
    """On a fresh control plane of its own (the suite's has the CRD already): helm install puts
    the chart's crds/ in place; helm uninstall leaves the CRD and the InferenceServices."""
    import sys

    sys.path.insert(0, str(pathlib.Path(__file__).parent))
    import cluster

    state = tmp_path / "cluster"
    try:
        fresh = Kubectl(str(cluster.up(state, pathlib.Path(os.environ["E2E_BIN"]))), kubectl.binary)
        crd_name = "inferenceservices.serving.inference-operator.io"
        assert fresh.maybe("crd", crd_name) is None
        own = Helm(helm.binary, fresh.kubeconfig, tmp_path / "helm")
        own("install", "inference-operator", str(chart.CHART), "-n", "inference-operator", "--create-namespace",
            "--wait", "--timeout", "180s")
        crd = fresh.json("crd", crd_name)
        assert crd["metadata"]["annotations"]["argocd.argoproj.io/sync-options"] == "Prune=false"
        wait_for(lambda: any(c["type"] == "Established" and c["status"] == "True"
                             for c in fresh.json("crd", crd_name)["status"].get("conditions", [])), "the CRD")
        assert _ready_replicas(fresh, "inference-operator", "inference-operator") == 2
        wait_for(lambda: fresh("get", "infsvc", "-A", check=False).returncode == 0, "the CRD's storage")
        fresh("create", "namespace", "models")
        fresh.apply(manifest("kept", "models"))
        own("uninstall", "inference-operator", "-n", "inference-operator", "--wait", "--timeout", "120s")
        assert fresh.maybe("deployment", "inference-operator", "-n", "inference-operator") is None
        assert fresh.maybe("crd", crd_name) and fresh.maybe("infsvc", "kept", "-n", "models")
    finally:
        cluster.down(state)


def test_kubectl_apply_install_yaml(kubectl: Kubectl):
    path = str(chart.INSTALL)
    kubectl("apply", "--server-side", "-f", path)
    try:
        wait_for(lambda: _ready_replicas(kubectl, OPERATOR_NAMESPACE, "inference-operator") == 2,
                 "the operator's two replicas to be ready")
        assert kubectl.maybe("service", "inference-operator-metrics", "-n", OPERATOR_NAMESPACE)
        # Applied again, nothing would change.
        diff = kubectl("diff", "--server-side", "-f", path, check=False)
        assert diff.returncode == 0, diff.stdout + diff.stderr
        # The README's uninstall, as a server-side dry run: everything of the release, but neither
        # the CRD (and so every InferenceService) nor the namespace.
        gone = kubectl("delete", "--dry-run=server", "-f", path, "-l", "app.kubernetes.io/instance=inference-operator")
        # Lines read: deployment.apps "inference-operator" deleted (server dry run)
        deleted = {"/".join((line.split()[0], line.split()[1].strip('"'))) for line in gone.stdout.splitlines()
                   if line.strip()}
        assert "deployment.apps/inference-operator" in deleted and "serviceaccount/inference-operator" in deleted
        assert "clusterrole.rbac.authorization.k8s.io/inference-operator" in deleted, deleted
        assert not [d for d in deleted if d.startswith(("customresourcedefinition", "namespace/"))], deleted
    finally:
        # The RBAC stays: the suite's own operator runs with it. The rest goes.
        for kind in ("deployment", "service", "pdb"):
            name = "inference-operator-metrics" if kind == "service" else "inference-operator"
            kubectl("delete", kind, name, "-n", OPERATOR_NAMESPACE, "--ignore-not-found", check=False)


# ---- the operator's identity ---------------------------------------------------------------------


def can(kubectl: Kubectl, *args: str, who: str = SA) -> bool:
    result = kubectl("auth", "can-i", *args, f"--as={who}", check=False)
    assert result.stdout.strip() in ("yes", "no"), result.stdout + result.stderr
    return result.stdout.strip() == "yes"


@pytest.mark.parametrize("args, allowed", [
    (("get", "secrets", "-A"), False),
    (("list", "secrets", "-n", "default"), False),
    (("get", "configmaps", "-n", "default"), False),
    (("create", "pods", "-n", "default"), False),
    (("update", "deployments", "-n", "default"), False),
    (("delete", "inferenceservices", "-n", "default"), False),
    (("create", "clusterroles"), False),
    (("delete", "nodes"), False),
    (("get", "leases", "-n", "default"), False),
    (("update", "leases/another", "-n", OPERATOR_NAMESPACE), False),
    (("patch", "deployments", "-n", "default"), True),
    (("patch", "inferenceservices", "--subresource=status", "-n", "default"), True),
    (("update", "leases/inference-operator", "-n", OPERATOR_NAMESPACE), True),
    (("list", "namespaces"), True),
])
def test_what_the_charts_service_account_may_do(kubectl: Kubectl, operator: Operator, args, allowed):
    assert can(kubectl, *args) is allowed


def test_the_chart_grants_no_secrets_anywhere(kubectl: Kubectl, operator: Operator, namespace: str):
    listing = kubectl("auth", "can-i", "--list", "-n", namespace, f"--as={SA}").stdout
    rows = [line.split()[0] for line in listing.splitlines()[1:] if line.strip()]
    assert "deployments.apps" in rows and not [r for r in rows if r.startswith("secrets")], listing


def test_the_operator_works_with_the_rbac_of_a_namespaced_install(kubectl: Kubectl, helm: Helm, operator: Operator,
                                                                    namespace: str, tmp_path):
    """Installed for one namespace: a Role there, nothing elsewhere. The operator, run with that
    ServiceAccount's token and --namespace, serves that namespace and leaves another alone."""
    release, home = "io-scoped", f"{namespace}-scoped"
    other = f"e2e-{uuid.uuid4().hex[:8]}"
    account = f"{release}-inference-operator"
    docs = [d for d in helm.template("--set", f"watchNamespaces={{{namespace}}}", release=release, namespace=home)
            if d["kind"] in IDENTITY_KINDS]
    rbac = tmp_path / "rbac.yaml"
    rbac.write_text(yaml.safe_dump_all(docs))
    kubectl("create", "namespace", home)
    kubectl("create", "namespace", other)
    scoped = Operator(operator_kubeconfig(kubectl, tmp_path, rbac, account, home), tmp_path)
    operator.stop()  # the suite's operator watches everything: only the scoped one for now
    try:
        who = f"system:serviceaccount:{home}:{account}"
        assert can(kubectl, "patch", "deployments", "-n", namespace, who=who)
        assert not can(kubectl, "patch", "deployments", "-n", other, who=who)
        assert not can(kubectl, "list", "inferenceservices", "-A", who=who)
        scoped.start(args=("--namespace", namespace))
        kubectl.apply(manifest("inside", namespace))
        kubectl.apply(manifest("outside", other))
        wait_ready(kubectl, namespace, "inside")
        assert kubectl.maybe("deployment", "inside-predictor", "-n", namespace)
        # The pass for `inside` ran after `outside` was created; `outside` was never looked at.
        assert "status" not in kubectl.json("infsvc", "outside", "-n", other)
        assert kubectl.maybe("deployment", "outside-predictor", "-n", other) is None
        refused = {k: v for k, v in scoped.requests().items() if k.split()[-1] == "403"}
        assert not refused, refused
        assert "Forbidden" not in scoped.log(), scoped.log()[-3000:]
    finally:
        scoped.stop()
        operator.start()
        for ns in (home, other):
            kubectl("delete", "namespace", ns, "--wait=false", check=False)
        for kind in ("clusterrole", "clusterrolebinding"):
            kubectl("delete", kind, account, "--ignore-not-found", check=False)


# ---- GitOps: no drift after the operator reconciled ------------------------------------------------


def test_no_drift_after_the_operator_reconciled(kubectl: Kubectl, operator: Operator, namespace: str, tmp_path):
    """Argo CD compares what is in Git with what is live. The operator writes status only: a
    server-side dry-run diff of the applied manifest is empty once it has reconciled, and its
    field manager owns nothing in metadata or spec."""
    path = tmp_path / "isvc.yaml"
    path.write_text(manifest("gitops", namespace, replicas=2, extra="""\
        rollout:
          maxSurge: 0
          maxUnavailable: 1
          canary:
            steps: [{weight: 50}]
            analysis:
              prometheus: {address: "http://prometheus.monitoring:9090"}
              checks: [{name: errorRate, max: 1%}]
        """))
    kubectl("apply", "--server-side", "-f", str(path))
    isvc = wait_ready(kubectl, namespace, "gitops")
    assert isvc["status"]["observedGeneration"] == isvc["metadata"]["generation"]
    diff = kubectl("diff", "--server-side", "-f", str(path), check=False)
    assert diff.returncode == 0 and not diff.stdout, diff.stdout + diff.stderr

    from inference_operator.config import FIELD_MANAGER

    live = json.loads(kubectl("get", "infsvc", "gitops", "-n", namespace, "-o", "json", "--show-managed-fields").stdout)
    mine = [m for m in live["metadata"]["managedFields"] if m["manager"] == FIELD_MANAGER]
    assert mine and all(m.get("subresource") == "status" for m in mine), live["metadata"]["managedFields"]
    assert live["metadata"]["generation"] == isvc["metadata"]["generation"]
