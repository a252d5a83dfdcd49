"""The samples in manifests/samples: each is refused by nothing `render` refuses (the CRD's schema
and CEL rules, offline, as the API server applies them) and renders its children; what they name
(claims, Secrets) they hold; together they show each way to serve a model. e2e/test_samples.py
applies them to a real API server."""

from __future__ import annotations

import pathlib
import re

import pytest
import yaml

from inference_operator import api, cli
from inference_operator.api import validation
from inference_operator.desired import autoscaling, render

from .helpers import CONFIG

ROOT = pathlib.Path(__file__).resolve().parents[1]
SAMPLES = sorted((ROOT / "manifests" / "samples").glob("*.yaml"))
# What a sample may hold besides InferenceServices: what they need, and nothing of the operator's own.
SUPPORTING = {("v1", "Secret"), ("v1", "PersistentVolumeClaim"), ("v1", "PersistentVolume")}
CLUSTER_SCOPED = {"PersistentVolume"}


def documents(path: pathlib.Path) -> list[dict]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def inference_services(path: pathlib.Path) -> list[dict]:
    return [d for d in documents(path) if d.get("kind") == api.KIND]


def admitted(doc: dict) -> api.InferenceService:
    """As `render` admits it (cli._admitted): refused by nothing the API server refuses, then parsed
    from the body the API server would store (defaults filled in)."""
    refused = validation.validate(doc)
    assert not refused, "\n".join(str(v) for v in refused)
    return api.parse(validation.defaulted(doc))


def all_admitted() -> list[api.InferenceService]:
    return [admitted(d) for path in SAMPLES for d in inference_services(path)]


def test_there_are_samples():
    assert len(SAMPLES) >= 5, SAMPLES


@pytest.mark.parametrize("path", SAMPLES, ids=[p.name for p in SAMPLES])
def test_a_sample_is_admitted_and_renders(path: pathlib.Path):
    docs = inference_services(path)
    assert docs, f"{path.name} holds no {api.KIND}"
    for doc in docs:
        isvc = admitted(doc)
        children = render.render(isvc, CONFIG)
        children += autoscaling.children(isvc, CONFIG, frozenset({autoscaling.SCALEDOBJECT_CRD}))
        kinds = [c["kind"] for c in children]
        assert kinds[:2] == ["Deployment", "Service"], kinds
        if isvc.spec.autoscaling is not None:
            assert kinds[-1] in ("HorizontalPodAutoscaler", "ScaledObject"), kinds


@pytest.mark.parametrize("path", SAMPLES, ids=[p.name for p in SAMPLES])
def test_render_prints_a_samples_children(path: pathlib.Path, capsys: pytest.CaptureFixture[str]):
    """The command itself, as a user previews a sample."""
    assert cli.main(["render", "-f", str(path)]) == 0, capsys.readouterr().err
    printed = [d for d in yaml.safe_load_all(capsys.readouterr().out) if d]
    names = {d["metadata"]["name"] for d in printed if d["kind"] == "Service"}
    assert names == {d["metadata"]["name"] for d in inference_services(path)}


@pytest.mark.parametrize("path", SAMPLES, ids=[p.name for p in SAMPLES])
def test_a_sample_applies_as_it_is(path: pathlib.Path):
    """Comments first (what it shows, what it needs), then objects kubectl applies to namespace default."""
    assert path.read_text().startswith("# "), f"{path.name} does not open with a comment"
    for doc in documents(path):
        assert (doc.get("apiVersion"), doc.get("kind")) in SUPPORTING | {(api.API_VERSION, api.KIND)}, doc.get("kind")
        meta = doc.get("metadata") or {}
        assert re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", meta.get("name", "")), meta
        if doc["kind"] in CLUSTER_SCOPED:
            assert "namespace" not in meta
        else:
            assert meta.get("namespace", "default") == "default", meta


def key(doc: dict) -> tuple[str, str, str]:
    meta = doc["metadata"]
    return doc["kind"], meta.get("namespace") or "default", meta["name"]


def test_what_a_sample_names_the_samples_hold():
    """The claim behind pvc:// and the Secret behind storage.secretName are in the samples, in the
    InferenceService's namespace: in the same file, or in one its comment names."""
    holder = {key(d): path.name for path in SAMPLES for d in documents(path)}
    secrets = {key(d): d for path in SAMPLES for d in documents(path) if d["kind"] == "Secret"}
    for path in SAMPLES:
        for doc in inference_services(path):
            isvc = admitted(doc)
            namespace = isvc.metadata.namespace or "default"
            needed = []
            uri = isvc.spec.model.storage_uri
            if uri.startswith("pvc://"):
                needed.append(("PersistentVolumeClaim", namespace, uri[len("pvc://"):].split("/")[0]))
            storage = isvc.spec.model.storage
            if storage is not None and storage.secret_name:
                needed.append(("Secret", namespace, storage.secret_name))
                if uri.startswith("s3://"):
                    secret = secrets.get(needed[-1], {})
                    keys = set(secret.get("stringData") or {}) | set(secret.get("data") or {})
                    assert {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"} <= keys, (path.name, keys)
            for wanted in needed:
                assert wanted in holder, f"{path.name} needs {wanted}, which no sample holds"
                assert holder[wanted] == path.name or holder[wanted] in path.read_text(), \
                    f"{path.name} needs {wanted} from {holder[wanted]} and does not say so"


def test_the_samples_cover_each_way_to_serve_a_model():
    isvcs = all_admitted()
    gpu = [i for i in isvcs if i.spec.resources.gpu.count > 0 and i.spec.resources.gpu.resource_name == "nvidia.com/gpu"]
    mig = [i for i in isvcs if i.spec.resources.gpu.count > 0
           and i.spec.resources.gpu.resource_name.startswith("nvidia.com/mig-")]
    s3 = [i for i in isvcs if i.spec.model.storage_uri.startswith("s3://")
          and i.spec.model.storage is not None and i.spec.model.storage.secret_name]
    autoscaled = [i for i in isvcs if i.spec.autoscaling is not None]
    canary = [i for i in isvcs if i.spec.rollout.canary is not None]
    shown = {"GPU": gpu, "MIG": mig, "S3 with a Secret": s3, "autoscaling": autoscaled, "canary": canary}
    assert all(shown.values()), [k for k, v in shown.items() if not v]
    assert any(i.spec.model.storage_uri.startswith("pvc://") for i in gpu)
    hpa = [i for i in autoscaled if i.spec.autoscaling.engine == "hpa"]
    assert hpa and any(t.name == "queueTime" for i in hpa for t in i.spec.autoscaling.targets)


def test_an_autoscaled_sample_leaves_spec_replicas_to_the_autoscaler():
    """In Git, spec.replicas of an autoscaled InferenceService fights the autoscaler on every sync
    (README: Who owns spec.replicas)."""
    for path in SAMPLES:
        for doc in inference_services(path):
            if "autoscaling" in doc["spec"]:
                assert "replicas" not in doc["spec"], path.name


def test_names_are_unique_but_for_the_canary_revision():
    """Every sample is its own InferenceService except resnet-canary.yaml, the next revision of
    resnet.yaml (applied over it, it is rolled out as a canary)."""
    seen: dict[tuple[str, str, str], str] = {}
    for path in SAMPLES:
        for doc in documents(path):
            if key(doc) in seen:
                pair = {seen[key(doc)], path.name}
                assert pair == {"resnet.yaml", "resnet-canary.yaml"}, (key(doc), pair)
            seen[key(doc)] = path.name
