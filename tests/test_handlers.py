"""The kopf layer only translates: outcomes into kopf's retry semantics, and never returns a value."""

import kopf
import pytest

from inference_operator import handlers
from inference_operator.kube import ApiError
from inference_operator.reconcile import Outcome
from inference_operator.status import Problem

from .conftest import FakeKube, isvc_body


def outcome(problem=None):
    return Outcome(applied=[], deleted=[], status_written=False, problem=problem)


@pytest.fixture
def fake_pass(monkeypatch):
    result = {}

    def fake(body, kube, config):
        if isinstance(result.get("value"), Exception):
            raise result["value"]
        return result["value"]

    monkeypatch.setattr(handlers, "reconcile", fake)
    kube = FakeKube()
    kube.isvcs[("ns", "demo")] = isvc_body()
    monkeypatch.setattr(handlers, "_kube", kube)
    return result


def call(**kw):
    return handlers.reconcile_inferenceservice(body=isvc_body(), namespace="ns", name="demo", reason="update", **kw)


def test_success_returns_none(fake_pass):
    fake_pass["value"] = outcome()
    assert call() is None


def test_spec_problem_is_permanent(fake_pass):
    fake_pass["value"] = outcome(Problem("InvalidSpec", "bad"))
    with pytest.raises(kopf.PermanentError):
        call()


def test_external_problem_retries_later(fake_pass):
    fake_pass["value"] = outcome(Problem("StorageNotFound", "no claim"))
    with pytest.raises(kopf.TemporaryError) as err:
        call()
    assert err.value.delay == 30


def test_api_error_retries_soon(fake_pass):
    fake_pass["value"] = ApiError(503, "Unavailable", "x")
    with pytest.raises(kopf.TemporaryError) as err:
        call()
    assert err.value.delay == handlers.TRANSIENT_RETRY_SECONDS


def test_child_event_without_owner_label_is_ignored(fake_pass):
    fake_pass["value"] = AssertionError("must not run")
    handlers.child_changed(body={"metadata": {"labels": {}}}, namespace="ns")


def test_startup_settings_apply_to_real_kopf_settings(monkeypatch):
    monkeypatch.setattr(handlers, "kubernetes_login", lambda: None)
    settings = kopf.OperatorSettings()
    handlers.configure(settings=settings)
    assert isinstance(settings.persistence.progress_storage, kopf.AnnotationsProgressStorage)
    assert isinstance(settings.persistence.diffbase_storage, kopf.AnnotationsDiffBaseStorage)
    assert settings.persistence.diffbase_storage.prefix == "serving.inference-operator.io"
    assert settings.watching.server_timeout and settings.watching.client_timeout > settings.watching.server_timeout
    assert settings.posting.enabled is False


def test_handlers_are_registered_with_kopf():
    registry = kopf.get_default_registry()
    ids = {h.id for h in registry._changing.get_all_handlers()}
    assert any("reconcile_inferenceservice" in i for i in ids)
    watching = {h.id for h in registry._watching.get_all_handlers()}
    assert any("child_changed" in i for i in watching)


def test_each_pass_rereads_the_inferenceservice_so_stale_triggers_write_nothing(monkeypatch):
    """Child events queue behind the lock; each must see the status the previous pass wrote."""
    kube = FakeKube()
    kube.isvcs[("ns", "demo")] = isvc_body()
    stale_body = isvc_body()  # what kopf delivered before our first status write
    monkeypatch.setattr(handlers, "_kube", kube)
    stale = {"metadata": {"labels": {"serving.inference-operator.io/inferenceservice": "demo"}}}
    handlers.child_changed(body=stale, namespace="ns")
    first = list(kube.writes)
    assert ("status", "ns/demo") in first
    for _ in range(3):
        handlers.child_changed(body=stale, namespace="ns")
        handlers.reconcile_inferenceservice(body=stale_body, reason="update", namespace="ns", name="demo")
    assert kube.writes == first
    assert [e.reason for e in kube.events].count("RollingOut") == 1


def test_a_deleted_inferenceservice_is_not_reconciled(monkeypatch):
    kube = FakeKube()
    monkeypatch.setattr(handlers, "_kube", kube)
    assert handlers.run_pass("ns", "gone", "child") is None
    assert kube.writes == []
