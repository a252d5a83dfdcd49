"""Property-based, against the real API server (issue #12): InferenceServices drawn from the CRD's
schema (tests/fuzz_specs.py), valid and not. Each is either refused by the API server (a
server-side dry run) and by `render`'s offline admission, naming the same fields, or accepted by
both and rendered into children the API server accepts too (a server-side dry run of each)."""

from __future__ import annotations

import collections
import json
import os

import pytest
from hypothesis import HealthCheck, Phase, given, settings

from inference_operator import api
from inference_operator.api import validation
from inference_operator.config import OperatorConfig
from inference_operator.desired import autoscaling, render
from tests.fuzz_specs import bodies

from .helpers import Kubectl

SEEN: collections.Counter = collections.Counter()
FULL = os.environ.get("E2E_FAULTS") == "full"  # make faults: four times the cases
DISAGREE: list[str] = []


@pytest.fixture(scope="module")
def server(kubectl: Kubectl, crd: None):
    import kubernetes
    import urllib3

    urllib3.disable_warnings(urllib3.exceptions.InsecureRequestWarning)  # the local cluster's kubeconfig
    client = kubernetes.config.new_client_from_config(config_file=kubectl.kubeconfig)
    served = {name for name in ("httproutes.gateway.networking.k8s.io", "scaledobjects.keda.sh")
              if kubectl.maybe("crd", name)}
    return kubernetes.client.CustomObjectsApi(client), served


def _children(isvc: api.InferenceService, served: set[str]) -> list[dict]:
    config = OperatorConfig()
    out = render.render(isvc, config)
    crds = frozenset({autoscaling.SCALEDOBJECT_CRD}) if "scaledobjects.keda.sh" in served else frozenset()
    out += autoscaling.children(isvc, config, crds)
    if "httproutes.gateway.networking.k8s.io" not in served:
        out = [c for c in out if c["kind"] != "HTTPRoute"]
    return out


@settings(max_examples=600 if FULL else 150, deadline=None, derandomize=True, database=None, phases=(Phase.explicit, Phase.generate),
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                 HealthCheck.function_scoped_fixture])
@given(body=bodies())
def test_the_api_server_and_render_agree_on_fuzzed_specs(kubectl: Kubectl, namespace: str, server, body):
    import kubernetes

    objects, served = server
    body["metadata"]["namespace"] = namespace
    offline = validation.validate(body)
    try:
        objects.create_namespaced_custom_object(api.GROUP, api.VERSION, namespace, api.PLURAL, body,
                                                dry_run="All", field_validation="Strict")
        refusal = None
    except kubernetes.client.ApiException as exc:
        assert exc.status in (400, 422), exc
        refusal = json.loads(exc.body).get("message", exc.body)
    case = json.dumps(body["spec"], sort_keys=True)
    if bool(offline) != bool(refusal):
        DISAGREE.append(f"{'render' if offline else 'API server'} alone refuses {case}: {offline or refusal}")
        return
    if refusal:
        SEEN["refused by both"] += 1
        for violation in offline:
            if violation.path and violation.path not in refusal:
                DISAGREE.append(f"render names {violation.path}, the API server does not: {case}: {refusal}")
        return
    try:
        children = _children(api.parse(validation.defaulted(body)), served)
    except render.SpecError:
        SEEN["accepted, a status condition"] += 1
        return
    applied = kubectl("apply", "--dry-run=server", "-f", "-", check=False,
                      stdin=json.dumps({"apiVersion": "v1", "kind": "List", "items": children}))
    if applied.returncode != 0:
        DISAGREE.append(f"children of an accepted spec are refused: {case}: {applied.stderr}")
        return
    SEEN["accepted, children accepted"] += 1


def test_no_disagreement_was_found():
    """After the property above (file order): the figures, and no case where the two disagreed."""
    print("fuzzed InferenceServices against the API server:", dict(SEEN), f"disagreements: {len(DISAGREE)}")
    for line in DISAGREE[:20]:
        print(" ", line[:2000])
    assert sum(SEEN.values()) + len(DISAGREE) >= 150 and SEEN["refused by both"] and SEEN["accepted, children accepted"]
    assert not DISAGREE
