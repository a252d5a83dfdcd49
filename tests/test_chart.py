"""The Helm chart without helm (the e2e suite runs helm itself): its CRD is the code's, its values
pass its schema, and manifests/install.yaml (the chart rendered) grants exactly what the code uses
and runs the operator hardened, with flags and settings the operator knows."""

from __future__ import annotations

import copy
import json
import pathlib

import jsonschema
import pytest
import yaml

from inference_operator import cli, config, kinds
from inference_operator.api import crd
from inference_operator.desired import children

ROOT = pathlib.Path(__file__).resolve().parents[1]
CHART = ROOT / "charts" / "inference-operator"
CRD_NAME = "inferenceservices.serving.inference-operator.io.yaml"
INSTALL = ROOT / "manifests" / "install.yaml"


def test_the_charts_crd_is_the_codes():
    assert (CHART / "crds" / CRD_NAME).read_text() == crd.crd_yaml(), "run `make crd`"
    assert (ROOT / "crds" / CRD_NAME).read_text() == (CHART / "crds" / CRD_NAME).read_text(), "run `make crd`"


@pytest.fixture(scope="module")
def validator():
    schema = json.loads((CHART / "values.schema.json").read_text())
    jsonschema.Draft7Validator.check_schema(schema)
    return jsonschema.Draft7Validator(schema)


@pytest.fixture(scope="module")
def values():
    return yaml.safe_load((CHART / "values.yaml").read_text())


def test_the_default_values_pass_the_schema(validator, values):
    assert not list(validator.iter_errors(values))


@pytest.mark.parametrize("change, where", [
    ({"logLevel": "verbose"}, "logLevel"),
    ({"watchNamespaces": "team-a"}, "watchNamespaces"),
    ({"watchNamespaces": ["Team_A"]}, "watchNamespaces.0"),
    ({"replica": 3}, "replica"),  # a typo is refused, not ignored
    ({"resources": {"limits": {"memory": "lots"}}}, "resources.limits.memory"),
    ({"prometheus": {"url": "prometheus:9090"}}, "prometheus.url"),
])
def test_bad_values_fail_the_schema(validator, values, change, where):
    merged = copy.deepcopy(values)
    for key, value in change.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = {**merged[key], **value}
        else:
            merged[key] = value
    errors = list(validator.iter_errors(merged))
    assert errors
    paths = {".".join(str(p) for p in e.absolute_path) for e in errors}
    assert where in paths or any(where in e.message for e in errors), [e.message for e in errors]


# ---- manifests/install.yaml: the chart with default values ----------------------------------


@pytest.fixture(scope="module")
def install():
    docs = [d for d in yaml.safe_load_all(INSTALL.read_text()) if d]
    return {(d["kind"], d["metadata"]["name"]): d for d in docs}


def test_install_yaml_carries_the_crd_and_a_namespace(install):
    assert install[("CustomResourceDefinition", "inferenceservices.serving.inference-operator.io")] == crd.build_crd()
    assert ("Namespace", "inference-operator") in install
    namespaced = [d for (kind, _), d in install.items() if kind not in (
        "Namespace", "CustomResourceDefinition", "ClusterRole", "ClusterRoleBinding")]
    assert {d["metadata"]["namespace"] for d in namespaced} == {"inference-operator"}


CHILD_VERBS = {"get", "list", "watch", "create", "patch", "delete"}
# What the operator reads or writes beyond its children, and why (the README's RBAC table).
OTHER_RULES = {
    ("serving.inference-operator.io", "inferenceservices"): {"list", "watch", "patch"},
    ("serving.inference-operator.io", "inferenceservices/status"): {"patch"},
    ("serving.inference-operator.io", "inferenceservices/finalizers"): {"update"},
    ("", "pods"): {"list", "watch"},
    ("apps", "replicasets"): {"list", "watch", "patch", "delete"},
    ("", "persistentvolumeclaims"): {"list", "watch"},
    ("events.k8s.io", "events"): {"create"},
    ("apiextensions.k8s.io", "customresourcedefinitions"): {"list", "watch"},
    ("", "namespaces"): {"list", "watch"},
}


def granted(rules: list[dict]) -> dict[tuple[str, str], set[str]]:
    out: dict[tuple[str, str], set[str]] = {}
    for rule in rules:
        assert "*" not in rule["verbs"] and "*" not in rule["resources"] and "*" not in rule["apiGroups"], rule
        assert "resourceNames" not in rule, rule
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                out.setdefault((group, resource), set()).update(rule["verbs"])
    return out


def test_the_cluster_role_grants_exactly_what_the_code_uses(install):
    rules = granted(install[("ClusterRole", "inference-operator")]["rules"])
    expected = dict(OTHER_RULES)
    for child in children.REGISTRY:
        expected[(child.kind.group, child.kind.plural)] = CHILD_VERBS
    assert rules == expected
    # No Secret access by default: a canary naming Prometheus credentials needs an opt-in value.
    assert (kinds.SECRET.group, kinds.SECRET.plural) not in rules


def test_the_lease_role_is_the_operators_lease_only(install):
    from inference_operator.controller import leader

    rules = install[("Role", "inference-operator-leader-election")]["rules"]
    assert rules == [
        {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "verbs": ["create"]},
        {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "resourceNames": [leader.LEASE_NAME],
         "verbs": ["get", "update"]},
    ]
    binding = install[("RoleBinding", "inference-operator-leader-election")]
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "inference-operator",
                                    "namespace": "inference-operator"}]


def test_the_operator_runs_hardened_with_two_replicas_and_leader_election(install):
    deployment = install[("Deployment", "inference-operator")]
    assert deployment["spec"]["replicas"] == 2
    assert deployment["spec"]["strategy"]["type"] == "RollingUpdate"
    pod = deployment["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == "inference-operator"
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    (container,) = pod["containers"]
    sc = container["securityContext"]
    assert sc["readOnlyRootFilesystem"] is True and sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"] == {"drop": ["ALL"]}
    assert {"cpu", "memory"} <= container["resources"]["requests"].keys()
    assert {"cpu", "memory"} <= container["resources"]["limits"].keys()
    health = {p["name"]: p["containerPort"] for p in container["ports"]}["healthz"]
    for probe in ("livenessProbe", "readinessProbe"):
        assert container[probe]["httpGet"] == {"path": "/healthz", "port": "healthz"}
    # The flags are the operator's own: they parse, and they wire up what the probes ask.
    args = cli.parser().parse_args(container["args"])
    assert args.command == "run" and args.leader_elect and args.liveness_port == health
    assert args.log_level == "info" and not args.namespace
    # Every setting in the environment is one the operator reads.
    source = pathlib.Path(config.__file__).read_text()
    for env in container["env"]:
        assert env["name"] == "POD_NAMESPACE" or f'"{env["name"]}"' in source, env["name"]
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["INFERENCE_OPERATOR_IMAGE"] == container["image"]  # the fetcher init container's image


def test_the_metrics_service_selects_the_operator(install):
    service = install[("Service", "inference-operator-metrics")]
    deployment = install[("Deployment", "inference-operator")]
    assert service["spec"]["selector"] == deployment["spec"]["selector"]["matchLabels"]
    assert service["spec"]["ports"][0]["targetPort"] == "metrics"
