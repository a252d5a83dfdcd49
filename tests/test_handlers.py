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


def test_external_problem_is_left_to_the_retry_timer(fake_pass):
    # No TemporaryError: kopf would write its progress annotations on every retry.
    fake_pass["value"] = outcome(Problem("StorageNotFound", "no claim"))
    assert call() is None


@pytest.mark.parametrize("reason,retried", [("StorageNotFound", True), ("ChildConflict", True),
                                            ("ApplyFailed", True), ("Available", False), ("InvalidSpec", False)])
def test_retry_timer_only_acts_on_external_problems(monkeypatch, reason, retried):
    calls = []
    monkeypatch.setattr(handlers, "run_pass", lambda ns, name, trigger, wait=True: calls.append(trigger))
    status = {"conditions": [{"type": "Ready", "status": "False", "reason": reason}]}
    handlers.recheck_external_problem(namespace="ns", name="demo", status=status)
    assert calls == (["retry"] if retried else [])


def test_api_error_retries_soon(fake_pass):
    fake_pass["value"] = ApiError(503, "Unavailable", "x")
    with pytest.raises(kopf.TemporaryError) as err:
        call()
    assert err.value.delay == handlers.TRANSIENT_RETRY_SECONDS


def test_child_event_without_owner_label_is_ignored(fake_pass):
    fake_pass["value"] = AssertionError("must not run")
    handlers.child_changed(body={"metadata": {"labels": {}}}, namespace="ns")


def test_transport_errors_become_transient_api_errors():
    import kubernetes

    from inference_operator.kube import RestKube

    config = kubernetes.client.Configuration()
    config.host = "http://127.0.0.1:9"  # discard port: nothing listens
    with pytest.raises(ApiError) as err:
        RestKube(kubernetes.client.ApiClient(config)).get_isvc("ns", "x")
    assert err.value.status == 0 and err.value.transient


def test_triggers_during_a_pass_coalesce_into_one_more_pass(monkeypatch):
    import threading

    started, release = threading.Event(), threading.Event()
    calls = []

    def slow_pass(namespace, name, trigger):
        calls.append(trigger)
        if len(calls) == 1:
            started.set()
            release.wait(10)
        return outcome()

    monkeypatch.setattr(handlers, "_one_pass", slow_pass)
    first = threading.Thread(target=handlers.run_pass, args=("ns", "demo", "child", False))
    first.start()
    assert started.wait(10)
    # Ten child events while the first pass runs: none blocks, one more pass is owed.
    for _ in range(10):
        assert handlers.run_pass("ns", "demo", "child", wait=False) is None
    waiter = threading.Thread(target=handlers.run_pass, args=("ns", "demo", "update", True))
    waiter.start()
    release.set()
    first.join(10)
    waiter.join(10)
    assert calls == ["child", "child", "update"]
    assert handlers._keys == {}


def test_startup_settings_apply_to_real_kopf_settings(monkeypatch):
    monkeypatch.setattr(handlers, "kubernetes_login", lambda: None)
    settings = kopf.OperatorSettings()
    handlers.configure(settings=settings)
    assert isinstance(settings.persistence.progress_storage, kopf.AnnotationsProgressStorage)
    assert isinstance(settings.persistence.diffbase_storage, kopf.AnnotationsDiffBaseStorage)
    assert settings.persistence.diffbase_storage.prefix == "serving.inference-operator.io"
    assert settings.watching.server_timeout and settings.watching.client_timeout > settings.watching.server_timeout
    assert settings.posting.enabled is False
    assert len(list(settings.watching.label_selectors)) == 4


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
