"""The pure builders: golden files for representative InferenceServices, and the rules behind them.

Regenerate the golden files after an intended change with UPDATE_GOLDEN=1 and review the diff.
"""

import os

import pytest
import yaml

from inference_operator import api, naming
from inference_operator.desired import render

from .helpers import CONFIG, HERE, isvc_body, load_case

GOLDEN = HERE / "golden"
CASES = ["gpu", "mig", "multi-gpu", "cpu", "s3"]


def children(body):
    return render.render(api.parse(body), CONFIG)


def by_kind(objs):
    return {o["kind"]: o for o in objs}


def pod_spec(body):
    return by_kind(children(body))["Deployment"]["spec"]["template"]["spec"]


def triton(body):
    return pod_spec(body)["containers"][0]


@pytest.mark.parametrize("case", CASES)
def test_golden(case):
    rendered = yaml.safe_dump_all(children(load_case(case)), sort_keys=False, width=100)
    path = GOLDEN / f"{case}.yaml"
    if os.environ.get("UPDATE_GOLDEN"):
        path.write_text(rendered)
    assert path.read_text() == rendered, f"{path.name} differs; if intended, rerun with UPDATE_GOLDEN=1"


def test_rendering_is_deterministic():
    body = load_case("multi-gpu")
    assert children(body) == children(body)


def test_gpu_pod_requests_gpus_tolerates_the_taint_and_pins_the_product():
    body = load_case("multi-gpu")
    spec = pod_spec(body)
    res = spec["containers"][0]["resources"]
    assert res["limits"]["nvidia.com/gpu"] == 4 and res["requests"]["nvidia.com/gpu"] == 4
    assert res["limits"]["memory"] == "160Gi" and "cpu" not in res["limits"]
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in spec["tolerations"]
    assert {"key": "dedicated", "operator": "Equal", "value": "llm", "effect": "NoSchedule"} in spec["tolerations"]
    assert spec["nodeSelector"] == {
        "topology.kubernetes.io/zone": "zone-a",
        "nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3",
    }
    assert spec["priorityClassName"] == "inference-critical"
    assert spec["serviceAccountName"] == "llm-reader"


def test_image_pull_secrets_reach_the_pods_and_are_absent_unless_set():
    assert "imagePullSecrets" not in pod_spec(isvc_body())
    body = isvc_body(imagePullSecrets=[{"name": "regcred"}, {"name": "mirror"}])
    assert pod_spec(body)["imagePullSecrets"] == [{"name": "regcred"}, {"name": "mirror"}]


@pytest.mark.parametrize(
    "resources,requests",
    [
        ({}, {"cpu": "1", "memory": "2Gi"}),
        ({"limits": {"memory": "1Gi"}}, {"cpu": "1", "memory": "1Gi"}),
        ({"limits": {"cpu": "4", "memory": "8Gi"}, "requests": {"cpu": "2"}}, {"cpu": "2", "memory": "8Gi"}),
    ],
)
def test_unset_requests_take_the_limit_then_the_default(resources, requests):
    res = triton(isvc_body(resources={"gpu": {"count": 0}, **resources}))["resources"]
    assert res["requests"] == requests


def test_mig_requests_the_mig_resource_only():
    res = triton(load_case("mig"))["resources"]
    assert res["limits"] == {"nvidia.com/mig-1g.10gb": 1}
    assert "nvidia.com/gpu" not in res["requests"]


def test_cpu_only_has_no_gpu_resource_toleration_or_gpu_metrics():
    body = load_case("cpu")
    spec = pod_spec(body)
    assert "tolerations" not in spec and "nodeSelector" not in spec
    assert not any("nvidia.com" in k for k in spec["containers"][0]["resources"]["requests"])
    assert "--allow-gpu-metrics=false" in spec["containers"][0]["args"]


def test_triton_flags_probes_and_ports():
    c = triton(isvc_body())
    args = c["args"]
    for flag in ("--model-repository=/mnt/models", "--model-control-mode=explicit", "--load-model=m",
                 "--strict-readiness=true", "--http-port=8000", "--grpc-port=8001", "--metrics-port=8002"):
        assert flag in args
    assert c["livenessProbe"]["httpGet"]["path"] == "/v2/health/live"
    assert c["readinessProbe"]["httpGet"]["path"] == "/v2/health/ready"
    startup = c["startupProbe"]
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 1800
    assert {p["name"]: p["containerPort"] for p in c["ports"]} == {"http": 8000, "grpc": 8001, "metrics": 8002}


def test_user_args_come_after_managed_flags():
    args = triton(isvc_body(runtime={"args": ["--log-verbose=1"]}))["args"]
    assert args[-1] == "--log-verbose=1"


def test_response_cache_sizes_the_server_cache_in_bytes():
    # Rendered once the model's config can enable response_cache (see unsupported_settings).
    args = render.triton_args(api.parse(isvc_body(runtime={"responseCache": {"size": "512Mi"}})))
    assert f"--cache-config=local,size={512 * 2**20}" in args


def test_security_context_is_restricted():
    spec = pod_spec(isvc_body())
    assert spec["securityContext"]["runAsNonRoot"] is True
    assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    c = spec["containers"][0]["securityContext"]
    assert c["allowPrivilegeEscalation"] is False and c["capabilities"]["drop"] == ["ALL"]


def test_shm_and_model_repository_volumes():
    spec = pod_spec(isvc_body(model={"name": "m", "storageUri": "pvc://models/a/b"}))
    volumes = {v["name"]: v for v in spec["volumes"]}
    assert volumes["dshm"]["emptyDir"] == {"medium": "Memory", "sizeLimit": "1Gi"}
    assert volumes["model-repository"]["persistentVolumeClaim"] == {"claimName": "models", "readOnly": True}
    mounts = {m["name"]: m for m in spec["containers"][0]["volumeMounts"]}
    assert mounts["model-repository"] == {"name": "model-repository", "mountPath": "/mnt/models",
                                          "readOnly": True, "subPath": "a/b"}
    root = pod_spec(isvc_body(model={"name": "m", "storageUri": "pvc://models"}))
    assert "subPath" not in {m["name"]: m for m in root["containers"][0]["volumeMounts"]}["model-repository"]


def test_a_rollout_never_takes_serving_capacity_down_by_default():
    deployment = by_kind(children(isvc_body()))["Deployment"]
    assert deployment["spec"]["strategy"]["rollingUpdate"] == {"maxSurge": 1, "maxUnavailable": 0}


def test_max_surge_0_replaces_in_place():
    deployment = by_kind(children(isvc_body(rollout={"maxSurge": 0, "maxUnavailable": 1})))["Deployment"]
    assert deployment["spec"]["strategy"]["rollingUpdate"] == {"maxSurge": 0, "maxUnavailable": 1}


def test_service_ports_and_selector():
    svc = by_kind(children(isvc_body()))["Service"]
    ports = {p["name"]: p for p in svc["spec"]["ports"]}
    assert ports["grpc"]["appProtocol"] == "grpc" and ports["grpc"]["port"] == 8001
    assert set(ports) == {"http", "grpc", "metrics"}
    assert svc["metadata"]["name"] == "demo"
    deployment = by_kind(children(isvc_body()))["Deployment"]
    # The Service selects every track (a canary serves too); the Deployment its own track only.
    assert svc["spec"]["selector"].items() < deployment["spec"]["selector"]["matchLabels"].items()
    assert deployment["spec"]["selector"]["matchLabels"][naming.TRACK_LABEL] == "stable"
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert deployment["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()


def test_the_revision_is_the_same_whatever_the_track():
    """A Deployment made before tracks keeps its selector; its pods must not change (no fleet roll)."""
    isvc = api.parse(isvc_body())
    new = render.render(isvc, CONFIG)[0]
    legacy = render.render(isvc, CONFIG, track=None)[0]
    assert naming.revision_of(new) == naming.revision_of(legacy)
    assert naming.TRACK_LABEL not in legacy["spec"]["selector"]["matchLabels"]
    assert naming.TRACK_LABEL not in legacy["spec"]["template"]["metadata"]["labels"]
    assert legacy["spec"]["selector"]["matchLabels"] == naming.selector("demo")


def test_a_pod_template_can_be_carried_by_two_workloads_side_by_side():
    isvc = api.parse(isvc_body())
    ctx = render.context(isvc, CONFIG)
    template = render.pod_template(ctx)
    stable = render.deployment(ctx, template, render.Workload("demo-predictor", "stable", 3))
    canary = render.deployment(ctx, template, render.Workload("demo-predictor-canary", "canary", 1))
    assert naming.revision_of(stable) == naming.revision_of(canary) == template.revision
    assert stable["spec"]["selector"] != canary["spec"]["selector"]
    assert (stable["spec"]["replicas"], canary["spec"]["replicas"]) == (3, 1)


@pytest.mark.parametrize("replicas", [0, 1, 7])
def test_replicas_are_always_sent(replicas):
    """Server-side apply without spec.replicas would reset what an autoscaler set through /scale."""
    assert by_kind(children(isvc_body(replicas=replicas)))["Deployment"]["spec"]["replicas"] == replicas


@pytest.mark.parametrize("replicas,has_pdb", [(0, False), (1, False), (2, True), (5, True)])
def test_pdb_only_with_more_than_one_replica(replicas, has_pdb):
    kinds = by_kind(children(isvc_body(replicas=replicas)))
    assert ("PodDisruptionBudget" in kinds) == has_pdb
    if has_pdb:
        assert kinds["PodDisruptionBudget"]["spec"]["maxUnavailable"] == 1


def revision(body):
    return naming.revision_of(by_kind(children(body))["Deployment"])


def test_revision_follows_the_pod_template_not_the_replica_count():
    base = revision(isvc_body())
    assert base and len(base) == 10
    assert revision(isvc_body(replicas=4)) == base
    assert revision(isvc_body(rollout={"maxSurge": 1})) == base
    assert revision(isvc_body(model={"name": "m", "storageUri": "pvc://models/v2"})) != base
    assert revision(isvc_body(runtime={"image": "other:1"})) != base
    assert revision(isvc_body(resources={"gpu": {"count": 2}})) != base


def test_default_image_comes_from_operator_config():
    assert triton(isvc_body())["image"] == CONFIG.default_image
    assert triton(isvc_body(runtime={"image": "mine:1"}))["image"] == "mine:1"


def test_children_carry_standard_labels_and_namespace():
    for obj in children(isvc_body()):
        labels = obj["metadata"]["labels"]
        assert labels["app.kubernetes.io/managed-by"] == "inference-operator"
        assert labels["app.kubernetes.io/instance"] == "demo"
        assert labels[naming.ISVC_LABEL] == "demo"
        assert obj["metadata"]["namespace"] == "ns"


@pytest.mark.parametrize(
    "spec",
    [
        {"model": {"name": "m", "storageUri": "pvc://models/a/b", "version": 2}},
        {"model": {"name": "m", "storageUri": "pvc://models/a/b"}, "runtime": {"modelConfig": {"maxBatchSize": 8}}},
        {"model": {"name": "m", "storageUri": "pvc://models/a/b"}, "runtime": {"responseCache": {"size": "64Mi"}}},
    ],
    ids=["version", "model-config", "response-cache"],
)
def test_a_claim_needing_a_generated_config_is_linked_into_an_empty_dir(spec):
    pod = pod_spec(isvc_body(**spec))
    (init,) = pod["initContainers"]
    assert "--uri=file:///mnt/source" in init["args"]
    assert any(a.startswith("--config-overrides=") for a in init["args"])
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["model-repository"] == {"name": "model-repository", "emptyDir": {}}
    assert volumes["model-source"]["persistentVolumeClaim"] == {"claimName": "models", "readOnly": True}
    source = {"name": "model-source", "mountPath": "/mnt/source", "readOnly": True, "subPath": "a/b"}
    assert source in init["volumeMounts"]
    assert source in pod["containers"][0]["volumeMounts"]  # the links resolve in Triton too


@pytest.mark.parametrize(
    "quantity,expected",
    [("1", 1), ("1Ki", 1024), ("256Mi", 256 * 2**20), ("1.5Gi", 3 * 2**29), ("2G", 2 * 10**9), ("0.5k", 500), (".5Ki", 512)],
)
def test_quantity_bytes(quantity, expected):
    assert render.quantity_bytes(quantity) == expected


def test_quantity_bytes_rejects_cpu_style_units():
    with pytest.raises(render.SpecError):
        render.quantity_bytes("100m")


def init_containers(body):
    return pod_spec(body).get("initContainers", [])


def test_a_claim_is_mounted_not_fetched():
    assert init_containers(isvc_body()) == []


@pytest.mark.parametrize("uri", ["s3://bucket/team/repo", "gs://bucket/repo", "https://host/m.tar.gz"])
def test_remote_storage_is_fetched_by_an_init_container_into_an_empty_dir(uri):
    spec = pod_spec(isvc_body(model={"name": "m", "storageUri": uri}))
    (init,) = spec["initContainers"]
    assert init["name"] == "storage-initializer" and init["image"] == CONFIG.operator_image
    assert init["args"][:5] == ["fetch-model", f"--uri={uri}", "--repository=/mnt/models", "--model=m",
                                "--termination-log=/dev/termination-log"]
    assert init["terminationMessagePolicy"] == "FallbackToLogsOnError"
    assert init["securityContext"]["capabilities"]["drop"] == ["ALL"]
    volumes = {v["name"]: v for v in spec["volumes"]}
    assert volumes["model-repository"] == {"name": "model-repository", "emptyDir": {}}
    assert init["volumeMounts"] == [{"name": "model-repository", "mountPath": "/mnt/models"}]
    triton_mount = {m["name"]: m for m in spec["containers"][0]["volumeMounts"]}["model-repository"]
    assert triton_mount == {"name": "model-repository", "mountPath": "/mnt/models", "readOnly": True}


def test_s3_credentials_come_from_the_secret_never_inline():
    body = isvc_body(model={"name": "m", "storageUri": "s3://b/m", "checksum": "sha256:" + "a" * 64,
                            "storage": {"secretName": "s3-creds", "endpoint": "http://minio:9000", "region": "eu-1"}})
    (init,) = init_containers(body)
    assert init["envFrom"] == [{"secretRef": {"name": "s3-creds"}}]
    assert "--endpoint=http://minio:9000" in init["args"] and "--region=eu-1" in init["args"]
    assert f"--checksum=sha256:{'a' * 64}" in init["args"]
    assert not any("SECRET" in str(e) for e in init["env"])


def test_gcs_key_is_a_mounted_secret_file():
    body = isvc_body(model={"name": "m", "storageUri": "gs://b/m", "storage": {"secretName": "gcs-key"}})
    spec = pod_spec(body)
    (init,) = spec["initContainers"]
    assert {"name": "GOOGLE_APPLICATION_CREDENTIALS",
            "value": "/var/run/secrets/inference-operator/storage/key.json"} in init["env"]
    assert {"name": "storage-credentials", "secret": {"secretName": "gcs-key"}} in spec["volumes"]
    assert "envFrom" not in init


def test_settings_travel_to_the_fetcher_as_config_overrides():
    body = isvc_body(model={"name": "m", "storageUri": "s3://b/m", "version": 3, "format": "onnx"},
                     runtime={"modelConfig": {"maxBatchSize": 8}, "responseCache": {"size": "64Mi"}})
    (init,) = init_containers(body)
    (overrides,) = [a for a in init["args"] if a.startswith("--config-overrides=")]
    assert "max_batch_size: 8" in overrides and "versions: [ 3 ]" in overrides and "response_cache" in overrides
    assert "--format=onnx" in init["args"]
    assert f"--cache-config=local,size={64 * 2**20}" in triton(body)["args"]


def test_characters_beyond_the_bmp_and_control_characters_render_as_written():
    """The templates write values as JSON, which YAML reads, but for UTF-16 surrogate pairs: a
    character beyond the BMP must become YAML's \\U escape (tests/test_fuzz.py found the crash)."""
    values = ["😀 emoji", "\U00066f6a", "tab\tand\x1d\x87 controls", "quote \" and \\ backslash", "<&>"]
    body = isvc_body(runtime={"env": [{"name": f"V{i}", "value": v} for i, v in enumerate(values)]})
    deployment = render.render(api.parse(body), CONFIG)[0]
    env = deployment["spec"]["template"]["spec"]["containers"][0]["env"]
    assert [e["value"] for e in env if e["name"].startswith("V")] == values
