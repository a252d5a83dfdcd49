"""An operator upgrade that changes a default rolls nothing until an InferenceService's spec changes."""

import dataclasses

from inference_operator import naming
from inference_operator.controller.reconcile import reconcile
from inference_operator.desired import defaults

from .helpers import CONFIG, DEP, clock, finish_rollout, isvc_body

UPGRADED = dataclasses.replace(CONFIG, default_image="tritonserver:upgraded", operator_image="operator:upgraded")


def run(kube, body, config):
    outcome = reconcile(kube.observe(body), kube, config, now=clock)
    if outcome.status_written:
        body["status"] = kube.last_status
    return outcome


def image(kube):
    return kube.objects[DEP]["spec"]["template"]["spec"]["containers"][0]["image"]


def settled(kube, body, config=CONFIG):
    run(kube, body, config)
    finish_rollout(kube)
    run(kube, body, config)
    assert body["status"]["revision"] == naming.revision_of(kube.objects[DEP])


def test_the_defaults_a_revision_was_made_with_are_recorded(fake_kube):
    body = isvc_body()
    settled(fake_kube, body)
    recorded = body["status"]["operatorDefaults"]
    assert recorded["tritonImage"] == "tritonserver:test" and recorded["specHash"]


def test_an_upgrade_that_changes_a_default_rolls_nothing(fake_kube):
    body = isvc_body()
    settled(fake_kube, body)
    fake_kube.writes.clear()
    outcome = run(fake_kube, body, UPGRADED)
    assert outcome.writes == 0 and image(fake_kube) == "tritonserver:test"


def test_a_replica_change_is_not_a_spec_change_for_the_defaults(fake_kube):
    body = isvc_body()
    settled(fake_kube, body)
    body["spec"]["replicas"] = 3
    body["metadata"]["generation"] = 2
    run(fake_kube, body, UPGRADED)
    assert image(fake_kube) == "tritonserver:test"
    assert fake_kube.objects[DEP]["spec"]["replicas"] == 3


def test_a_spec_change_takes_the_current_defaults(fake_kube):
    body = isvc_body()
    settled(fake_kube, body)
    body["spec"]["model"]["storageUri"] = "pvc://models/v2"
    body["metadata"]["generation"] = 2
    run(fake_kube, body, UPGRADED)
    assert image(fake_kube) == "tritonserver:upgraded"
    assert body["status"]["operatorDefaults"]["tritonImage"] == "tritonserver:upgraded"


def test_an_inferenceservice_from_a_version_that_recorded_nothing_keeps_what_runs(fake_kube):
    body = isvc_body()
    settled(fake_kube, body)
    del body["status"]["operatorDefaults"]  # what an older operator left
    fake_kube.writes.clear()
    run(fake_kube, body, UPGRADED)
    assert ("apply", "Deployment/demo-predictor") not in fake_kube.writes
    assert image(fake_kube) == "tritonserver:test"
    assert body["status"]["operatorDefaults"]["tritonImage"] == "tritonserver:test"


def test_the_spec_hash_ignores_replicas_only():
    from inference_operator import api

    a = api.parse(isvc_body(replicas=1))
    assert defaults.spec_hash(a) == defaults.spec_hash(api.parse(isvc_body(replicas=9)))
    assert defaults.spec_hash(a) != defaults.spec_hash(api.parse(isvc_body(runtime={"args": ["--log-verbose=1"]})))


def test_spelling_out_a_default_is_no_spec_change():
    from inference_operator import api

    implicit = api.parse(isvc_body())
    explicit = api.parse(isvc_body(runtime={"startupTimeoutSeconds": 1800}, resources={"gpu": {"count": 1}}))
    assert defaults.spec_hash(implicit) == defaults.spec_hash(explicit)
