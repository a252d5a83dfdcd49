"""The command line, as a user runs it (a subprocess of the installed entry point)."""

import subprocess
import sys

import yaml

from .conftest import CASES

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
    assert "iris is invalid" in result.stderr and "replicas" in result.stderr


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
