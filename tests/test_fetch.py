"""Model fetching against real servers on loopback: moto (S3), gcp-storage-emulator (GCS), HTTP."""

from __future__ import annotations

import hashlib
import io
import pathlib
import subprocess
import sys
import tarfile
import zipfile

import pytest

from inference_operator.modelrepo import fetch as storage

from .helpers import tar_gz
from .servers import gcs_emulator, http_server, moto_server

CONFIG = 'name: "m"\nbackend: "onnxruntime"\nmax_batch_size: 4\n'
MODEL_BYTES = b"\x08\x07fake-onnx-model" * 1000


@pytest.fixture(autouse=True)
def aws_env(monkeypatch):
    # Credentials the way a referenced Secret provides them: environment variables.
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    for var in ("AWS_PROFILE", "AWS_ENDPOINT_URL"):
        monkeypatch.delenv(var, raising=False)


def model_files(prefix: str = "") -> dict[str, bytes]:
    return {f"{prefix}config.pbtxt": CONFIG.encode(), f"{prefix}1/model.onnx": MODEL_BYTES}


def tar_with_link() -> bytes:
    """A model whose version directory holds a relative link that is harmless where it is
    unpacked and points outside the repository once the model is moved into place."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as t:
        for name, data in model_files("a/b/repo/m/").items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            t.addfile(info, io.BytesIO(data))
        link = tarfile.TarInfo("a/b/repo/m/1/leak")
        link.type = tarfile.SYMTYPE
        link.linkname = "../../../../../etc/hostname"
        t.addfile(link)
    return buf.getvalue()


def zip_bytes(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for name, data in files.items():
            z.writestr(name, data)
    return buf.getvalue()


def assert_served_layout(repo: pathlib.Path, model: str = "m") -> None:
    assert (repo / model / "1" / "model.onnx").read_bytes() == MODEL_BYTES
    config = (repo / model / "config.pbtxt").read_text()
    assert config.startswith(f'name: "{model}"\n')
    assert_clean(repo, model)


def assert_clean(repo: pathlib.Path, model: str = "m") -> None:
    leftovers = [p.name for p in repo.iterdir() if p.name.startswith(".")] if repo.exists() else []
    assert leftovers == [], f"temporary directories left behind: {leftovers}"


def fetch(uri, repo, **kw):
    kw.setdefault("retries", 1)
    return storage.fetch(uri, repo, kw.pop("model", "m"), **kw)


# ---- S3 ------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def s3():
    import boto3

    with moto_server() as url:
        client = boto3.client("s3", endpoint_url=url, region_name="us-east-1",
                              aws_access_key_id="testing", aws_secret_access_key="testing")
        client.create_bucket(Bucket="models")
        objects = {
            **{f"team/repo/m/{k}": v for k, v in model_files().items()},
            "team/repo/other/1/model.onnx": b"another model",
            **{f"deep/a/b/c/{k}": v for k, v in model_files().items()},
            "archives/m.tar.gz": tar_gz(model_files("m/")),
            "junk/readme.txt": b"not a model",
        }
        for key, data in objects.items():
            client.put_object(Bucket="models", Key=key, Body=data)
        yield url


@pytest.mark.parametrize("uri", ["s3://models/team/repo", "s3://models/team/repo/m", "s3://models/deep/a/b/c",
                                 "s3://models/archives/m.tar.gz"],
                         ids=["repository", "model-dir", "nested-prefix", "archive"])
def test_s3_layouts(s3, tmp_path, uri):
    fetch(uri, tmp_path / "repo", endpoint=s3)
    assert_served_layout(tmp_path / "repo")
    assert not (tmp_path / "repo" / "other").exists()  # only the model asked for


def test_a_repository_root_downloads_only_the_model(s3, tmp_path):
    lines = []
    storage.fetch("s3://models/team/repo", tmp_path / "repo", "m", endpoint=s3, report=lines.append)
    assert any("team/repo/m/1/model.onnx" in line for line in lines)
    assert not any("team/repo/other" in line for line in lines)


def test_no_credentials_are_an_unsigned_request_and_a_private_bucket_says_access_denied(s3, tmp_path, monkeypatch):
    for var in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.delenv(var)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    lines = []
    with pytest.raises(storage.FetchError) as err:
        storage.fetch("s3://models/team/repo", tmp_path / "repo", "m", endpoint=s3, retries=3, report=lines.append)
    assert err.value.reason == "AccessDenied" and not err.value.transient
    assert not any("retry" in line for line in lines)  # not retried as if the store were down


def test_s3_checksum_ok_and_mismatch_leaves_nothing(s3, tmp_path):
    # gzip embeds a timestamp: hash what the bucket holds instead of rebuilding the archive.
    import boto3

    body = boto3.client("s3", endpoint_url=s3).get_object(Bucket="models", Key="archives/m.tar.gz")["Body"].read()
    digest = hashlib.sha256(body).hexdigest()
    fetch("s3://models/archives/m.tar.gz", tmp_path / "ok", endpoint=s3, checksum=f"sha256:{digest}")
    assert_served_layout(tmp_path / "ok")
    with pytest.raises(storage.FetchError) as err:
        fetch("s3://models/archives/m.tar.gz", tmp_path / "bad", endpoint=s3, checksum="sha256:" + "0" * 64)
    assert err.value.reason == "ChecksumMismatch"
    assert not (tmp_path / "bad" / "m").exists()
    assert_clean(tmp_path / "bad")


@pytest.mark.parametrize("uri,reason", [("s3://no-such-bucket/x", "NoSuchBucket"),
                                        ("s3://models/nothing/here", "ModelNotFound"),
                                        ("s3://models/junk", "NotAModelRepository")])
def test_s3_errors(s3, tmp_path, uri, reason):
    with pytest.raises(storage.FetchError) as err:
        fetch(uri, tmp_path / "repo", endpoint=s3)
    assert err.value.reason == reason
    assert not (tmp_path / "repo" / "m").exists()
    assert_clean(tmp_path / "repo")


def test_s3_wrong_credentials(tmp_path):
    with moto_server(auth=True) as url:
        with pytest.raises(storage.FetchError) as err:
            fetch("s3://models/team/repo", tmp_path / "repo", endpoint=url)
    assert err.value.reason == "AccessDenied" and "credentials" in err.value.message


# ---- HTTP ----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def web(tmp_path_factory):
    root = tmp_path_factory.mktemp("web")
    (root / "model.onnx").write_bytes(MODEL_BYTES)
    (root / "m.tar.gz").write_bytes(tar_gz(model_files("m/")))
    (root / "m.zip").write_bytes(zip_bytes(model_files("export-2026/")))
    (root / "evil.tar.gz").write_bytes(tar_gz({"../../escape.txt": b"x", "m/config.pbtxt": CONFIG.encode()}))
    (root / "junk.tar.gz").write_bytes(tar_gz({"notes/readme.md": b"x", "data.csv": b"1,2"}))
    (root / "link.tar.gz").write_bytes(tar_with_link())
    (root / "evil.zip").write_bytes(zip_bytes({"../escape.txt": b"x", "m/config.pbtxt": CONFIG.encode()}))
    (root / "big.bin").write_bytes(b"0" * (4 << 20))
    with http_server(root, truncate=("big.bin",)) as url:
        yield url


def test_http_single_file_gets_a_generated_config(web, tmp_path):
    fetch(f"{web}/model.onnx", tmp_path / "repo", fmt="onnx")
    assert (tmp_path / "repo" / "m" / "1" / "model.onnx").read_bytes() == MODEL_BYTES
    assert (tmp_path / "repo" / "m" / "config.pbtxt").read_text() == (
        'name: "m"\nbackend: "onnxruntime"\nmax_batch_size: 0\n')
    with pytest.raises(storage.FetchError) as err:
        fetch(f"{web}/model.onnx", tmp_path / "nofmt")
    assert err.value.reason == "NotAModelRepository" and "spec.model.format" in err.value.message


@pytest.mark.parametrize("name", ["m.tar.gz", "m.zip"])
def test_http_archives(web, tmp_path, name):
    fetch(f"{web}/{name}", tmp_path / "repo")
    assert_served_layout(tmp_path / "repo")


@pytest.mark.parametrize("name,reason", [("evil.tar.gz", "BadArchive"), ("junk.tar.gz", "NotAModelRepository"),
                                         ("missing.tar.gz", "ModelNotFound"), ("link.tar.gz", "BadArchive"),
                                         ("evil.zip", "UnsafePath")])
def test_http_refusals(web, tmp_path, name, reason):
    with pytest.raises(storage.FetchError) as err:
        fetch(f"{web}/{name}", tmp_path / "repo")
    assert err.value.reason == reason
    assert not (tmp_path / "repo" / "m").exists()
    assert not (tmp_path / "escape.txt").exists() and not (tmp_path / "repo" / "escape.txt").exists()
    assert_clean(tmp_path / "repo")


def test_interrupted_download_is_retried_then_fails_leaving_nothing(web, tmp_path):
    lines = []
    with pytest.raises(storage.FetchError) as err:
        storage.fetch(f"{web}/big.bin", tmp_path / "repo", "m", fmt="onnx", retries=2, report=lines.append)
    assert err.value.reason in ("IncompleteDownload", "ConnectionFailed")
    assert sum("retry" in line for line in lines) == 2
    assert not (tmp_path / "repo" / "m").exists()
    assert_clean(tmp_path / "repo")


def test_what_a_killed_attempt_left_is_removed(web, tmp_path):
    repo = tmp_path / "repo"
    for leftover in (repo / ".fetch-m-dead0001" / "download", repo / ".stale-m-dead0002"):
        leftover.mkdir(parents=True)
    fetch(f"{web}/m.tar.gz", repo)
    assert_served_layout(repo)


def test_urls_in_messages_carry_no_secrets(web, tmp_path):
    with pytest.raises(storage.FetchError) as err:
        fetch(f"{web}/missing.tar.gz?X-Amz-Signature=s3cr3t", tmp_path / "repo")
    assert "s3cr3t" not in err.value.message
    assert storage.redact("https://user:pw@host:8443/p/m.tgz?sig=x") == "https://host:8443/p/m.tgz"


def test_an_ensemble_without_a_version_directory_gets_one(tmp_path):
    source = tmp_path / "src" / "ens"
    source.mkdir(parents=True)
    (source / "config.pbtxt").write_text('name: "ens"\nplatform: "ensemble"\n')
    storage.fetch(f"file://{source}", tmp_path / "repo", "ens", fmt="ensemble")
    assert (tmp_path / "repo" / "ens" / "1").is_dir()


def test_overrides_merge_and_a_rerun_is_a_no_op(web, tmp_path):
    repo = tmp_path / "repo"
    extra = "max_batch_size: 8\ndynamic_batching {\n  max_queue_delay_microseconds: 100\n}\n"
    fetch(f"{web}/m.tar.gz", repo, config_overrides=extra)
    config = (repo / "m" / "config.pbtxt").read_text()
    assert "max_batch_size: 8" in config and "max_batch_size: 4" not in config and "dynamic_batching" in config
    lines = []
    storage.fetch(f"{web}/m.tar.gz", repo, "m", config_overrides=extra, report=lines.append)
    assert any("nothing to fetch" in line for line in lines)
    # Another source replaces the model whole.
    fetch(f"{web}/model.onnx", repo, fmt="onnx")
    assert "backend: \"onnxruntime\"\nmax_batch_size: 0" in (repo / "m" / "config.pbtxt").read_text()
    assert_clean(repo)


# ---- GCS -----------------------------------------------------------------------------------------


def test_gcs_repository_prefix(tmp_path, monkeypatch):
    from google.cloud import storage as gcs

    with gcs_emulator() as url:
        monkeypatch.setenv("STORAGE_EMULATOR_HOST", url)
        client = gcs.Client.create_anonymous_client()
        bucket = client.create_bucket("models")
        for key, data in model_files("prod/triton/m/").items():
            bucket.blob(key).upload_from_string(data)
        fetch("gs://models/prod/triton", tmp_path / "repo")
        assert_served_layout(tmp_path / "repo")
        with pytest.raises(storage.FetchError) as err:
            fetch("gs://models/prod/none", tmp_path / "missing")
        assert err.value.reason == "ModelNotFound"


# ---- the command an init container runs --------------------------------------------------------------


def test_cli_failure_is_one_line_and_lands_in_the_termination_log(web, tmp_path):
    log = tmp_path / "termination-log"
    result = subprocess.run(
        [sys.executable, "-m", "inference_operator.cli", "fetch-model", "--uri", f"{web}/missing.tar.gz",
         "--repository", str(tmp_path / "repo"), "--model", "m", "--retries", "0", "--termination-log", str(log)],
        capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 1
    failure = [line for line in result.stderr.splitlines() if line.startswith("fetch-model failed")]
    assert failure == [f"fetch-model failed: {log.read_text()}"]
    assert log.read_text().startswith("ModelNotFound: ") and "\n" not in log.read_text()


def test_a_1gb_artifact_streams_with_bounded_memory(tmp_path):
    """The real CLI in a child process; its peak RSS must stay far below the artifact's size."""
    web = tmp_path / "web"
    web.mkdir()
    artifact = web / "big.onnx"
    with open(artifact, "wb") as f:  # 1 GiB, written in chunks (sparse files would be too easy on disk)
        block = hashlib.sha256(b"seed").digest() * (1 << 15)  # 1 MiB
        for _ in range(1024):
            f.write(block)
    digest = storage.sha256_of(artifact)
    probe = (
        "import resource, subprocess, sys; "
        "rc = subprocess.call(sys.argv[1:]); "
        "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss); sys.exit(rc)"
    )
    with http_server(web) as url:
        result = subprocess.run(
            [sys.executable, "-c", probe, sys.executable, "-m", "inference_operator.cli", "fetch-model",
             "--uri", f"{url}/big.onnx", "--repository", str(tmp_path / "repo"), "--model", "m",
             "--format", "onnx", "--checksum", f"sha256:{digest}"],
            capture_output=True, text=True, timeout=600,
        )
    assert result.returncode == 0, result.stderr[-2000:]
    peak_mib = int(result.stdout.strip().splitlines()[-1]) / 1024
    assert (tmp_path / "repo" / "m" / "1" / "model.onnx").stat().st_size == 1 << 30
    print(f"peak RSS of fetch-model for a 1 GiB artifact: {peak_mib:.0f} MiB")
    assert peak_mib < 256, f"peak RSS {peak_mib:.0f} MiB"


def test_the_rendered_init_container_fetches_for_real(s3, tmp_path):
    """Render an s3:// InferenceService, then run its storage-initializer's exact command and env."""
    import os

    from inference_operator import api
    from inference_operator.config import OperatorConfig
    from inference_operator.desired import render

    from .helpers import isvc_body

    body = isvc_body(model={"name": "m", "storageUri": "s3://models/archives/m.tar.gz",
                            "storage": {"secretName": "creds", "endpoint": s3, "region": "us-east-1"}},
                     runtime={"modelConfig": {"maxBatchSize": 8}})
    deployment = render.render(api.parse(body), OperatorConfig())[0]
    (init,) = deployment["spec"]["template"]["spec"]["initContainers"]
    repo, log = tmp_path / "mnt-models", tmp_path / "termination-log"
    args = [a.replace("=/mnt/models", f"={repo}").replace("=/dev/termination-log", f"={log}") for a in init["args"]]
    env = {**os.environ, **{e["name"]: e["value"] for e in init["env"]}}
    # What envFrom would inject from the Secret named in the spec.
    env.update(AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing")
    result = subprocess.run([sys.executable, "-m", "inference_operator.cli", *args], env=env,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert (repo / "m" / "1" / "model.onnx").read_bytes() == MODEL_BYTES
    config = (repo / "m" / "config.pbtxt").read_text()
    assert "max_batch_size: 8" in config and "max_batch_size: 4" not in config
    assert not log.exists()


def test_a_mounted_repository_is_linked_not_copied(tmp_path):
    source = tmp_path / "claim"
    for name, data in model_files("triton/m/").items():
        (source / name).parent.mkdir(parents=True, exist_ok=True)
        (source / name).write_bytes(data)
    for p in sorted(source.rglob("*"), reverse=True):
        p.chmod(0o555 if p.is_dir() else 0o444)  # a read-only mount
    source.chmod(0o555)
    repo = tmp_path / "repo"
    try:
        fetch(f"file://{source}/triton", repo, config_overrides="max_batch_size: 8\n")
    finally:
        for p in [source, *source.rglob("*")]:
            p.chmod(0o755 if p.is_dir() else 0o644)
    version = repo / "m" / "1"
    assert version.is_symlink() and version.resolve() == (source / "triton" / "m" / "1").resolve()
    assert (version / "model.onnx").read_bytes() == MODEL_BYTES
    assert "max_batch_size: 8" in (repo / "m" / "config.pbtxt").read_text()
    assert (source / "triton" / "m" / "config.pbtxt").read_text() == CONFIG  # the claim is untouched
    assert_clean(repo)
