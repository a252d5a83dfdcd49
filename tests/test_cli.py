"""The command line, as a user runs it (a subprocess of the installed entry point)."""

import subprocess
import sys

import yaml

from .helpers import CASES

CLI = [sys.executable, "-m", "inference_operator.cli"]


def cli(*args, stdin=None):
    return subprocess.run([*CLI, *args], capture_output=True, text=True, input=stdin, timeout=60)


def test_crd_prints_the_crd():
    result = cli("crd")
    assert result.returncode == 0, result.stderr
    doc = yaml.safe_load(result.stdout)
    assert doc["kind"] == "CustomResourceDefinition"


def test_render_prints_children_without_a_cluster():
    result = cli("render", "-f", str(CASES / "mig.yaml"))
    assert result.returncode == 0, result.stderr
    kinds = [d["kind"] for d in yaml.safe_load_all(result.stdout)]
    assert kinds == ["Deployment", "Service", "PodDisruptionBudget"]


def test_render_reads_stdin_and_skips_other_kinds():
    text = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\n---\n" + (CASES / "cpu.yaml").read_text()
    result = cli("render", "-f", "-", stdin=text)
    assert result.returncode == 0, result.stderr
    assert [d["kind"] for d in yaml.safe_load_all(result.stdout)] == ["Deployment", "Service"]


def test_render_explains_an_invalid_spec():
    text = (CASES / "cpu.yaml").read_text().replace("replicas: 1", "replicas: -1")
    result = cli("render", "-f", "-", stdin=text)
    assert result.returncode == 1
    assert 'InferenceService "iris" is invalid' in result.stderr
    assert "spec.replicas: Invalid value: -1: spec.replicas in body should be greater than or equal to 0" in result.stderr


def test_render_refuses_what_a_cel_rule_refuses_with_the_api_servers_words():
    text = (CASES / "cpu.yaml").read_text().replace("replicas: 1", "replicas: 1\n  rollout: {maxSurge: 0, maxUnavailable: 0}")
    result = cli("render", "-f", "-", stdin=text)
    assert result.returncode == 1 and result.stdout == ""
    assert ('spec.rollout: Invalid value: rollout.maxSurge and rollout.maxUnavailable cannot both be 0'
            in result.stderr), result.stderr


TRICKY = ["1e3", "0o17", "0x1F", "1_000", "12:30", "yes", "off", "~", "null", "", ".inf", "+1", "1.", "007", "y"]


def test_render_output_round_trips_every_string_as_a_string():
    env = "".join(f"\n      - {{name: V{i}, value: '{v}'}}" for i, v in enumerate(TRICKY))
    text = (CASES / "cpu.yaml").read_text().replace("  replicas: 1", "  replicas: 1\n  runtime:\n    env:" + env)
    result = cli("render", "-f", "-", stdin=text)
    assert result.returncode == 0, result.stderr
    deployment = next(yaml.safe_load_all(result.stdout))
    values = [e["value"] for e in deployment["spec"]["template"]["spec"]["containers"][0]["env"]]
    assert values == TRICKY
    for v in TRICKY:  # quoted for YAML 1.2 and Go readers too, not only for PyYAML's 1.1 resolver
        assert f'value: "{v}"' in result.stdout, v


def test_render_a_claim_with_a_version_composes_the_repository():
    text = (CASES / "cpu.yaml").read_text().replace("format: python", "format: python\n    version: 2")
    result = cli("render", "-f", "-", stdin=text)
    assert result.returncode == 0, result.stderr
    deployment = next(yaml.safe_load_all(result.stdout))
    (init,) = deployment["spec"]["template"]["spec"]["initContainers"]
    assert "--uri=file:///mnt/source" in init["args"]


def test_run_help():
    result = cli("run", "--help")
    assert result.returncode == 0 and "--namespace" in result.stdout and "--metrics-port" in result.stdout
