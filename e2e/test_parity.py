"""`render` and the API server agree, case by case: what one refuses the other refuses, with the same
field path and message; and what `render` prints, kubectl applies with every value as written."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import yaml

from inference_operator.api import validation
from tests.validation_cases import CASES, case_body

from .helpers import Kubectl


@pytest.mark.parametrize("change,expect", [(c, e) for _, c, e in CASES], ids=[i for i, _, _ in CASES])
def test_render_refuses_exactly_what_the_api_server_refuses(kubectl: Kubectl, namespace: str, change, expect):
    body = case_body(change)
    body["metadata"]["namespace"] = namespace
    server = kubectl("apply", "--dry-run=server", "-f", "-", stdin=json.dumps(body), check=False)
    offline = validation.validate(body)
    if not offline:
        assert server.returncode == 0, f"render accepts, the API server refuses:\n{server.stderr}"
        return
    assert server.returncode != 0, f"render refuses ({offline}), the API server accepts"
    for violation in offline:
        # Same field path, same words (the API server may add others, e.g. strict decoding's prefix).
        text = str(violation) if not violation.message.startswith("unknown field") else violation.message
        assert text in server.stderr, f"\nrender:     {text}\nAPI server: {server.stderr}"
    if expect:
        assert expect in server.stderr
    # And the other way round: every field the API server names, render names too (the server's
    # own echoes of the scale subresource's accessor and of a type check aside).
    ours = {v.path or "<nil>" for v in offline}
    for error in server_errors(server.stderr):
        if "accessor error" in error or "Checked value must be of type" in error or error.startswith(".spec.replicas"):
            continue  # the scale subresource's own checks of spec.replicas echo the schema's
        path = error.split(": ", 1)[0]
        assert path in ours or error.startswith("strict decoding error"), f"only the API server says: {error}"


def server_errors(stderr: str) -> list[str]:
    """The individual errors of kubectl's 'is invalid: ...' (one, or a '* ' list)."""
    text = stderr.strip()
    if " is invalid: " in text:
        text = text.split(" is invalid: ", 1)[1]
    elif "strict decoding error: " in text:
        return ["strict decoding error: " + text.split("strict decoding error: ", 1)[1]]
    items = [line[2:] for line in text.splitlines() if line.startswith("* ")]
    return items or [text]


def test_rendered_yaml_round_trips_through_kubectl(kubectl: Kubectl, namespace: str):
    tricky = ["1e3", "0o17", "0x1F", "1_000", "12:30", "yes", "off", "~", "null", "", ".inf", "007", "y"]
    body = case_body(lambda b: b["spec"].update(runtime={"env": [{"name": f"V{i}", "value": v}
                                                                 for i, v in enumerate(tricky)]}))
    body["metadata"]["namespace"] = namespace
    rendered = subprocess.run([sys.executable, "-m", "inference_operator.cli", "render", "-f", "-"],
                              input=yaml.safe_dump(body), capture_output=True, text=True, timeout=60)
    assert rendered.returncode == 0, rendered.stderr
    deployment = rendered.stdout.split("\n---\n")[0]
    applied = json.loads(kubectl("apply", "--dry-run=server", "-o", "json", "-f", "-", stdin=deployment).stdout)
    env = applied["spec"]["template"]["spec"]["containers"][0]["env"]
    assert [e.get("value", "") for e in env] == tricky
