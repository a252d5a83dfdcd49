"""The kopf layer only translates: outcomes into kopf's retry semantics, and never returns a value."""

import kopf
import pytest

from inference_operator import handlers
from inference_operator.kube import ApiError
from inference_operator.reconcile import Outcome
from inference_operator.status import Problem

from .conftest import isvc_body


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
    monkeypatch.setattr(handlers, "_kube", object())
    return result


def call(**kw):
    return handlers.reconcile_inferenceservice(body=isvc_body(), reason="update", **kw)


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
