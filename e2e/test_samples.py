"""The samples apply as they are: a server-side dry run of each file, as `kubectl apply -f` sends it
(the CRD's schema and CEL rules for InferenceServices, the API server's own checks for the rest).
A dry run creates nothing, so namespace default and resnet.yaml's cluster-scoped PersistentVolume
clash with no other test. tests/test_samples.py checks the same files offline."""

from __future__ import annotations

import pathlib

import pytest
import yaml

from .helpers import Kubectl

REPO = pathlib.Path(__file__).resolve().parents[1]
SAMPLES = sorted((REPO / "manifests" / "samples").glob("*.yaml"))


@pytest.mark.parametrize("sample", SAMPLES, ids=[p.name for p in SAMPLES])
def test_a_sample_applies_as_it_is(kubectl: Kubectl, crd: None, sample: pathlib.Path):
    result = kubectl("apply", "--dry-run=server", "-f", str(sample), check=False)
    assert result.returncode == 0, f"the API server refuses {sample.name}:\n{result.stderr}"
    # One line per object: "<kind>/<name> created (server dry run)", or configured, or unchanged.
    objects = [d for d in yaml.safe_load_all(sample.read_text()) if d]
    applied = [line for line in result.stdout.splitlines() if line.endswith("(server dry run)")]
    assert len(applied) == len(objects), result.stdout
