"""The Triton command line we render, checked against the real tritonserver binary."""

import re

import pytest

from inference_operator import api
from inference_operator.desired import render

from .helpers import isvc_body, load_case
from .triton import require_triton, run_triton


@pytest.fixture(scope="module")
def known_flags():
    result = run_triton(require_triton(), "--help")
    text = result.stdout + result.stderr
    flags = set(re.findall(r"^\s+--([a-z0-9-]+)", text, re.MULTILINE))
    assert "model-repository" in flags, text[:2000]
    return flags


def rendered_flags(body):
    args = render.triton_args(api.parse(body))
    return [a[2:].split("=", 1)[0] for a in args if a.startswith("--")]


@pytest.mark.parametrize(
    "body",
    [isvc_body(), isvc_body(runtime={"responseCache": {"size": "64Mi"}}), load_case("cpu"), load_case("multi-gpu")],
    ids=["default", "response-cache", "cpu", "multi-gpu"],
)
def test_every_rendered_flag_is_a_tritonserver_flag(known_flags, body):
    unknown = [f for f in rendered_flags(body) if f not in known_flags]
    assert unknown == []


def test_managed_flags_named_in_the_api_exist(known_flags):
    # The CRD refuses these in spec.runtime.args; a typo here would let a real flag through.
    assert set(api.MANAGED_TRITON_FLAGS) <= known_flags


def test_tritonserver_accepts_abbreviated_flags_and_the_crd_refuses_them():
    """getopt_long takes unambiguous prefixes: the CRD must refuse --model-repos as --model-repository."""
    import cel

    from inference_operator.api import crd

    off = ["--allow-http=false", "--allow-grpc=false", "--allow-metrics=false"]
    accepted = run_triton(require_triton(), "--model-repos=/nonexistent-repo", *off)
    assert "failed to stat file /nonexistent-repo" in accepted.stdout + accepted.stderr
    unknown = run_triton(require_triton(), "--model-reposxx=/nonexistent-repo", *off)
    assert "failed to stat" not in unknown.stdout + unknown.stderr

    args_schema = crd.openapi_schema()["properties"]["spec"]["properties"]["runtime"]["properties"]["args"]
    (rule,) = args_schema["x-kubernetes-validations"]
    assert not cel.evaluate(rule["rule"], {"self": ["--model-repos=/x"]})
    assert cel.evaluate(rule["rule"], {"self": ["--model-reposxx=/x"]})
