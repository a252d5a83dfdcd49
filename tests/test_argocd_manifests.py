"""manifests/argocd: the Applications point at what this repository holds and carry the fields Argo
CD requires, and argocd-cm.yaml carries health.lua unchanged (tests/test_argocd_health.py runs it)."""

from __future__ import annotations

import fnmatch
import json
import pathlib
import shutil
import subprocess

import pytest
import yaml

from inference_operator import api

ROOT = pathlib.Path(__file__).resolve().parents[1]
ARGOCD = ROOT / "manifests" / "argocd"
HEALTH_KEY = f"resource.customizations.health.{api.GROUP}_{api.KIND}"
# What users put beside their InferenceServices; nothing of the operator's own (its chart has those).
USER_KINDS = {api.KIND, "Secret", "PersistentVolumeClaim", "PersistentVolume", "ConfigMap"}


def load(name: str) -> dict:
    (doc,) = [d for d in yaml.safe_load_all((ARGOCD / name).read_text()) if d]
    return doc


def applications() -> dict[str, dict]:
    return {name: load(name) for name in ("operator.yaml", "inferenceservices.yaml")}


def test_argocd_cm_carries_health_lua_byte_for_byte():
    cm = load("argocd-cm.yaml")
    assert (cm["apiVersion"], cm["kind"]) == ("v1", "ConfigMap")
    assert cm["metadata"]["name"] == "argocd-cm" and cm["metadata"]["namespace"] == "argocd"
    assert cm["metadata"]["labels"]["app.kubernetes.io/part-of"] == "argocd"
    assert list(cm["data"]) == [HEALTH_KEY]
    assert cm["data"][HEALTH_KEY] == (ARGOCD / "health.lua").read_text()


@pytest.mark.parametrize("name", ["operator.yaml", "inferenceservices.yaml"])
def test_an_application_has_what_argo_cd_requires(name: str):
    app = applications()[name]
    assert (app["apiVersion"], app["kind"]) == ("argoproj.io/v1alpha1", "Application")
    assert app["metadata"]["name"] and app["metadata"]["namespace"] == "argocd"
    spec = app["spec"]
    assert spec["project"]
    source, destination = spec["source"], spec["destination"]
    assert source["repoURL"].endswith(".git") and source["targetRevision"] and source["path"]
    assert destination.get("server") or destination.get("name")
    assert destination["namespace"]
    sync = spec["syncPolicy"]
    assert sync["automated"] == {"prune": True, "selfHeal": True}
    assert "ServerSideApply=true" in sync["syncOptions"]


def test_both_applications_follow_the_same_repository():
    sources = {(a["spec"]["source"]["repoURL"], a["spec"]["source"]["targetRevision"]) for a in applications().values()}
    assert len(sources) == 1, sources


def test_the_operator_application_installs_the_chart_of_this_repository():
    """charts/inference-operator, with the CRD in its crds/ (which the comment about Argo CD applying
    crds/ on every sync is about)."""
    spec = applications()["operator.yaml"]["spec"]
    chart = ROOT / spec["source"]["path"]
    assert (chart / "Chart.yaml").is_file(), f"{chart} holds no Chart.yaml"
    assert yaml.safe_load((chart / "Chart.yaml").read_text())["name"] == spec["source"]["helm"]["releaseName"]
    crds = [d for f in sorted((chart / "crds").glob("*.yaml")) for d in yaml.safe_load_all(f.read_text()) if d]
    assert f"{api.PLURAL}.{api.GROUP}" in {d["metadata"]["name"] for d in crds}
    assert not spec["source"]["helm"].get("skipCrds")
    assert spec["destination"]["namespace"] == "inference-operator"
    assert "CreateNamespace=true" in spec["syncPolicy"]["syncOptions"]
    # Deleting the Application must not cascade to the CRD, and with it to every InferenceService.
    assert "resources-finalizer.argocd.argoproj.io" not in applications()["operator.yaml"]["metadata"].get("finalizers", [])


def synced_files(spec: dict) -> list[pathlib.Path]:
    """The files a directory source syncs: .yaml, .yml and .json at the top (recurse: false),
    less those matching `exclude` (a glob; {a,b} for several)."""
    directory = spec["source"].get("directory") or {}
    assert directory.get("recurse") is False
    root = ROOT / spec["source"]["path"]
    exclude = directory.get("exclude", "")
    patterns = exclude.strip("{}").split(",") if exclude else []
    for pattern in patterns:  # a pattern that matches nothing is a stale exclude
        assert any(fnmatch.fnmatch(p.name, pattern) for p in root.iterdir()), pattern
    return [p for p in sorted(root.iterdir()) if p.is_file() and p.suffix in (".yaml", ".yml", ".json")
            and not any(fnmatch.fnmatch(p.name, pattern) for pattern in patterns)]


def test_the_inferenceservices_application_syncs_only_what_users_apply_each_once():
    spec = applications()["inferenceservices.yaml"]["spec"]
    assert (ROOT / spec["source"]["path"]).is_dir()
    files = synced_files(spec)
    assert files
    seen: dict[tuple, str] = {}
    kinds = set()
    for path in files:
        for doc in yaml.safe_load_all(path.read_text()):
            if not doc:
                continue
            assert doc["kind"] in USER_KINDS, f"{path.name}: {doc['kind']}"
            kinds.add(doc["kind"])
            meta = doc["metadata"]
            key = (doc["kind"], meta.get("namespace") or spec["destination"]["namespace"], meta["name"])
            assert key not in seen, f"{key} in {seen.get(key)} and {path.name}: Argo CD would sync it twice"
            seen[key] = path.name
    assert api.KIND in kinds


def inference_services_synced() -> list[dict]:
    spec = applications()["inferenceservices.yaml"]["spec"]
    return [d for p in synced_files(spec) for d in yaml.safe_load_all(p.read_text()) if d and d["kind"] == api.KIND]


@pytest.mark.skipif(shutil.which("jq") is None, reason="jq evaluates the ignoreDifferences expression")
def test_a_sync_leaves_spec_replicas_to_the_autoscaler_and_only_there():
    """Argo CD deletes del(<expression>) from the live and the desired object before it compares
    (and, with RespectIgnoreDifferences, before it syncs): spec.replicas of an autoscaled
    InferenceService goes, every other field and every other InferenceService's stays."""
    spec = applications()["inferenceservices.yaml"]["spec"]
    (ignore,) = [i for i in spec["ignoreDifferences"] if i["kind"] == api.KIND]
    assert ignore["group"] == api.GROUP
    assert "RespectIgnoreDifferences=true" in spec["syncPolicy"]["syncOptions"]
    isvcs = inference_services_synced()
    assert any("autoscaling" in d["spec"] for d in isvcs) and any("autoscaling" not in d["spec"] for d in isvcs)
    for doc in isvcs:
        live = json.loads(json.dumps(doc))
        live["spec"]["replicas"] = 3  # as the autoscaler (or the user) set it
        for expression in ignore["jqPathExpressions"]:
            out = subprocess.run(["jq", "-c", f"del({expression})"], input=json.dumps(live), capture_output=True,
                                 text=True, check=True, timeout=30).stdout
            normalized = json.loads(out)
            expected = json.loads(json.dumps(live))
            if "autoscaling" in doc["spec"]:
                del expected["spec"]["replicas"]
            assert normalized == expected, doc["metadata"]["name"]
