"""Fetches a model into a Triton model repository, from S3, GCS or HTTP(S), safely.

The result is ``<repo>/<model>/config.pbtxt`` and ``<repo>/<model>/<version>/...``. Everything is
downloaded and laid out in a temporary directory beside the target and renamed into place only
when complete, so an interrupted or failed fetch never leaves a repository Triton would load.
Downloads stream to disk in fixed-size chunks: memory stays flat whatever the model's size.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import http.client
import logging
import os
import pathlib
import random
import shutil
import tarfile
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
import zipfile
from typing import Callable, Iterator, Optional

from inference_operator.modelrepo import model_config

log = logging.getLogger(__name__)

CHUNK = 1 << 20  # 1 MiB
ARCHIVE_SUFFIXES = (".tar.gz", ".tgz", ".tar", ".zip")
COMPLETE_MARKER = ".inference-operator-complete"


class FetchError(Exception):
    """A failure with a CamelCase reason and a one-line message, for logs and status."""

    def __init__(self, reason: str, message: str, transient: bool = False) -> None:
        super().__init__(f"{reason}: {message}")
        self.reason = reason
        self.message = message
        self.transient = transient


@dataclasses.dataclass(frozen=True)
class Location:
    scheme: str  # s3 | gs | https | http
    bucket: str = ""
    key: str = ""  # object key or prefix, no leading slash
    url: str = ""

    @property
    def name(self) -> str:
        """The last path segment (a file name, for single-object sources)."""
        path = urllib.parse.urlparse(self.url).path if self.url else self.key
        return path.rstrip("/").rsplit("/", 1)[-1]


def redact(url: str) -> str:
    """A URL fit for logs and status: no user:password, no query (presigned and SAS tokens)."""
    parts = urllib.parse.urlsplit(url)
    host = parts.hostname or ""
    if parts.port:
        host += f":{parts.port}"
    return urllib.parse.urlunsplit((parts.scheme, host, parts.path, "", ""))


def parse_uri(uri: str) -> Location:
    scheme, sep, rest = uri.partition("://")
    if not sep:
        raise FetchError("InvalidStorageUri", f"{uri!r} has no scheme")
    if scheme in ("s3", "gs"):
        bucket, _, key = rest.partition("/")
        if not bucket:
            raise FetchError("InvalidStorageUri", f"{uri!r} has no bucket")
        return Location(scheme, bucket=bucket, key=key.strip("/"))
    if scheme in ("http", "https"):
        return Location(scheme, url=uri)
    if scheme == "file":
        return Location(scheme, key=rest)
    raise FetchError("InvalidStorageUri", f"{scheme}:// cannot be fetched (pvc:// is mounted, not fetched)")


# ---- a download that streams, hashes, retries and reports progress ---------------------------


@dataclasses.dataclass
class Progress:
    total: Optional[int]
    label: str
    report: Callable[[str], None]
    done: int = 0
    started: float = dataclasses.field(default_factory=time.monotonic)
    last: float = 0.0

    def add(self, n: int) -> None:
        self.done += n
        now = time.monotonic()
        if now - self.last >= 5 or (self.total and self.done >= self.total):
            self.last = now
            rate = self.done / max(now - self.started, 1e-6) / 2**20
            size = f" of {self.total / 2**20:.1f} MiB" if self.total else ""
            self.report(f"{self.label}: {self.done / 2**20:.1f} MiB{size} ({rate:.1f} MiB/s)")


def _write_stream(chunks: Iterator[bytes], target: pathlib.Path, progress: Progress) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(target, "wb") as out:
        for chunk in chunks:
            out.write(chunk)
            progress.add(len(chunk))


def with_retries(what: str, attempt: Callable[[], None], retries: int, report: Callable[[str], None],
                 base_delay: float = 1.0) -> None:
    for n in range(retries + 1):
        try:
            return attempt()
        except FetchError as exc:
            if not exc.transient or n == retries:
                raise
            delay = min(base_delay * 2**n, 30) * (0.5 + random.random() / 2)
            report(f"{what}: {exc.message}; retry {n + 1}/{retries} in {delay:.1f}s")
            time.sleep(delay)


# ---- sources ---------------------------------------------------------------------------------


def _safe_relative(root: pathlib.Path, relative: str) -> pathlib.Path:
    target = (root / relative).resolve()
    if not target.is_relative_to(root.resolve()):
        raise FetchError("UnsafePath", f"{relative!r} would be written outside the model directory")
    return target


def _fetch_http(loc: Location, dest: pathlib.Path, report, retries: int) -> pathlib.Path:
    target = dest / (loc.name or "download")
    shown = redact(loc.url)

    def attempt() -> None:
        request = urllib.request.Request(loc.url, headers={"User-Agent": "inference-operator"})
        try:
            with urllib.request.urlopen(request, timeout=60) as response:
                length = response.headers.get("Content-Length")
                progress = Progress(int(length) if length else None, f"GET {shown}", report)
                _write_stream(iter(lambda: response.read(CHUNK), b""), target, progress)
                if length and target.stat().st_size != int(length):
                    raise FetchError("IncompleteDownload", f"got {target.stat().st_size} of {length} bytes",
                                     transient=True)
        except urllib.error.HTTPError as exc:
            reason = {401: "AccessDenied", 403: "AccessDenied", 404: "ModelNotFound"}.get(exc.code, "HTTPError")
            raise FetchError(reason, f"{shown}: HTTP {exc.code} {exc.reason}", transient=exc.code >= 500 or
                             exc.code == 429) from exc
        except (urllib.error.URLError, http.client.HTTPException, OSError) as exc:
            # Refused, reset, TLS errors, a chunked body cut short: all worth another try.
            raise FetchError("ConnectionFailed", f"{shown}: {getattr(exc, 'reason', exc)}",
                             transient=True) from exc

    with_retries(f"GET {shown}", attempt, retries, report)
    return target


def _s3_error(exc: Exception, loc: Location) -> FetchError:
    from botocore.exceptions import ClientError, EndpointConnectionError, NoCredentialsError

    where = f"s3://{loc.bucket}/{loc.key}"
    if isinstance(exc, NoCredentialsError):
        return FetchError("AccessDenied", f"{where}: no credentials: set storage.secretName or a pod identity")
    if isinstance(exc, ClientError):
        code = exc.response.get("Error", {}).get("Code", "")
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
        if code in ("NoSuchBucket",):
            return FetchError("NoSuchBucket", f"bucket {loc.bucket} does not exist")
        if code in ("AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "403", "Forbidden"):
            return FetchError("AccessDenied", f"{where}: {code}: check the credentials Secret or the pod identity")
        if code in ("NoSuchKey", "404", "NotFound"):
            return FetchError("ModelNotFound", f"{where} does not exist")
        transient = status >= 500 or code in ("SlowDown", "Throttling", "RequestTimeout")
        return FetchError("StorageError", f"{where}: {code or status}: {exc}", transient=transient)
    if isinstance(exc, EndpointConnectionError):
        return FetchError("ConnectionFailed", str(exc), transient=True)
    return FetchError("StorageError", f"{where}: {exc}", transient=True)


def _only_the_model(names: list[str], prefix: str, model: Optional[str]) -> list[str]:
    """From a repository root, only <model>/ is downloaded, not every model beside it."""
    base = f"{prefix}/" if prefix else ""
    mine = [n for n in names if model and n.startswith(f"{base}{model}/")]
    return mine or names


def _placement(loc: Location, root: pathlib.Path, names: list[str]) -> tuple[list[pathlib.Path], pathlib.Path]:
    """Where each listed object is written, and what the fetch found: the one object the URI
    names (a file or an archive), or the folder holding a prefix's objects."""
    single = len(names) == 1 and names[0] == loc.key
    targets = [_safe_relative(root, loc.name if single else n[len(loc.key):].lstrip("/")) for n in names]
    return targets, (root / loc.name if single else root)


def _fetch_s3(loc: Location, dest: pathlib.Path, report, retries: int, endpoint: Optional[str],
              region: Optional[str], model: Optional[str] = None) -> pathlib.Path:
    import boto3
    import botocore
    import botocore.config
    from botocore.exceptions import BotoCoreError, ClientError

    session = boto3.session.Session()
    # No credentials anywhere (Secret, identity): a public bucket, read with unsigned requests.
    unsigned = {"signature_version": botocore.UNSIGNED} if session.get_credentials() is None else {}
    client = session.client(
        "s3", endpoint_url=endpoint or None, region_name=region or None,
        # Our retries report progress and reasons; botocore's own stay few and quick.
        config=botocore.config.Config(retries={"max_attempts": 2, "mode": "standard"}, connect_timeout=10,
                                      read_timeout=60, **unsigned),
    )
    keys: list[tuple[str, int]] = []

    def listing() -> None:
        keys.clear()
        try:
            paginator = client.get_paginator("list_objects_v2")
            prefix = loc.key + "/" if loc.key else ""
            for page in paginator.paginate(Bucket=loc.bucket, Prefix=prefix):
                keys.extend((o["Key"], o["Size"]) for o in page.get("Contents", []) if not o["Key"].endswith("/"))
            if not keys and loc.key:  # the URI names one object (a file or an archive)
                head = client.head_object(Bucket=loc.bucket, Key=loc.key)
                keys.append((loc.key, head["ContentLength"]))
        except (ClientError, BotoCoreError) as exc:
            raise _s3_error(exc, loc) from exc

    with_retries(f"list s3://{loc.bucket}/{loc.key}", listing, retries, report)
    if not keys:
        raise FetchError("ModelNotFound", f"nothing under s3://{loc.bucket}/{loc.key}")
    sizes = dict(keys)
    names = _only_the_model(list(sizes), loc.key, model)
    targets, found = _placement(loc, dest / "objects", names)
    for key, target in zip(names, targets):
        size = sizes[key]

        def attempt(key: str = key, size: int = size, target: pathlib.Path = target) -> None:
            try:
                with contextlib.closing(client.get_object(Bucket=loc.bucket, Key=key)["Body"]) as body:
                    _write_stream(body.iter_chunks(CHUNK), target,
                                  Progress(size, f"s3://{loc.bucket}/{key}", report))
            except (ClientError, BotoCoreError, OSError) as exc:
                raise _s3_error(exc, loc) from exc
            if target.stat().st_size != size:
                raise FetchError("IncompleteDownload", f"{key}: got {target.stat().st_size} of {size} bytes",
                                 transient=True)

        with_retries(f"s3://{loc.bucket}/{key}", attempt, retries, report)
    return found


def _fetch_gs(loc: Location, dest: pathlib.Path, report, retries: int, model: Optional[str] = None) -> pathlib.Path:
    from google.api_core import exceptions as gexc
    from google.auth.exceptions import DefaultCredentialsError, GoogleAuthError, TransportError
    from google.cloud import storage as gcs

    where = f"gs://{loc.bucket}/{loc.key}"

    def error(exc: Exception) -> FetchError:
        if isinstance(exc, gexc.NotFound):
            return FetchError("ModelNotFound" if loc.key else "NoSuchBucket", f"{where}: {exc.message}")
        if isinstance(exc, (gexc.Forbidden, gexc.Unauthorized)) or (
                isinstance(exc, GoogleAuthError) and not isinstance(exc, TransportError)):
            return FetchError("AccessDenied", f"{where}: check the credentials Secret or workload identity")
        transient = isinstance(exc, (gexc.ServerError, gexc.TooManyRequests, TransportError, OSError))
        return FetchError("StorageError", f"{where}: {exc}", transient=transient)

    if os.environ.get("STORAGE_EMULATOR_HOST"):
        client = gcs.Client.create_anonymous_client()
    else:
        try:
            client = gcs.Client()
        except DefaultCredentialsError:
            # No key and no workload identity: a public bucket, read anonymously.
            client = gcs.Client.create_anonymous_client()
    blobs: list = []

    def listing() -> None:
        blobs.clear()
        try:
            bucket = client.bucket(loc.bucket)
            prefix = loc.key + "/" if loc.key else ""
            blobs.extend(b for b in client.list_blobs(bucket, prefix=prefix) if not b.name.endswith("/"))
            if not blobs and loc.key:
                blob = bucket.get_blob(loc.key)
                if blob is not None:
                    blobs.append(blob)
        except (gexc.GoogleAPIError, GoogleAuthError, OSError) as exc:
            raise error(exc) from exc

    with_retries(f"list {where}", listing, retries, report)
    if not blobs:
        raise FetchError("ModelNotFound", f"nothing under {where}")
    by_name = {b.name: b for b in blobs}
    names = _only_the_model(list(by_name), loc.key, model)
    targets, found = _placement(loc, dest / "objects", names)
    for name, target in zip(names, targets):
        blob = by_name[name]

        def attempt(blob=blob, target=target) -> None:
            try:
                with blob.open("rb", chunk_size=CHUNK) as stream:
                    _write_stream(iter(lambda: stream.read(CHUNK), b""), target,
                                  Progress(blob.size, f"gs://{loc.bucket}/{blob.name}", report))
            except (gexc.GoogleAPIError, GoogleAuthError, OSError) as exc:
                raise error(exc) from exc
            if blob.size is not None and target.stat().st_size != blob.size:
                raise FetchError("IncompleteDownload", f"{blob.name}: got {target.stat().st_size} of {blob.size} bytes",
                                 transient=True)

        with_retries(f"gs://{loc.bucket}/{blob.name}", attempt, retries, report)
    return found


# ---- layout ----------------------------------------------------------------------------------


def sha256_of(path: pathlib.Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _unpack(archive: pathlib.Path, into: pathlib.Path) -> pathlib.Path:
    into.mkdir(parents=True)
    name = archive.name.lower()
    try:
        if name.endswith(".zip"):
            with zipfile.ZipFile(archive) as z:
                for member in z.namelist():
                    _safe_relative(into, member)
                z.extractall(into)
        else:
            with tarfile.open(archive) as t:
                t.extractall(into, filter="data")  # refuses absolute paths, '..', device files, escaping links
    except (tarfile.TarError, zipfile.BadZipFile, EOFError) as exc:
        raise FetchError("BadArchive", f"{archive.name}: {exc}") from exc
    # A relative link that is safe inside the unpack folder can point elsewhere once the model
    # is moved into place: archives may not carry links at all.
    links = [p for p in into.rglob("*") if p.is_symlink()]
    if links:
        raise FetchError("BadArchive", f"{archive.name}: links are not allowed ({links[0].relative_to(into)})")
    archive.unlink()
    return into


def _is_version_dir(p: pathlib.Path) -> bool:
    return p.is_dir() and p.name.isdigit()


def _model_dir(found: pathlib.Path, model: str, fmt: Optional[str], work: pathlib.Path) -> pathlib.Path:
    """Where the model directory is in what was fetched: a repository root holding <model>/, the
    model directory itself, or a single model file (placed as <model>/1/<default name>)."""
    if found.is_file():
        filename = model_config.DEFAULT_FILENAMES.get(fmt or "")
        if not filename:
            raise FetchError(
                "NotAModelRepository",
                f"a single file ({found.name}) is placed in a repository only with spec.model.format onnx or "
                "tensorrt_plan (Triton completes their config); ship other formats with their config.pbtxt",
            )
        target = work / "single" / model / "1" / filename
        target.parent.mkdir(parents=True)
        found.rename(target)
        return target.parents[1]
    entries = [p for p in found.iterdir() if not p.name.startswith(".")]
    if (found / model).is_dir():
        return found / model
    if (found / "config.pbtxt").exists() or any(_is_version_dir(p) for p in entries):
        return found
    if len(entries) == 1 and entries[0].is_dir():  # an archive with one top-level folder
        return _model_dir(entries[0], model, fmt, work)
    names = ", ".join(sorted(p.name for p in entries)[:5]) or "nothing"
    raise FetchError("NotAModelRepository",
                     f"expected {model}/ (a repository), config.pbtxt or version directories; found {names}")


def _linked(model_dir: pathlib.Path, work: pathlib.Path) -> pathlib.Path:
    """A model directory made of links into a read-only one (a mounted claim): nothing is copied
    but config.pbtxt, which the overrides rewrite."""
    linked = work / "linked" / model_dir.name
    linked.mkdir(parents=True)
    for entry in model_dir.iterdir():
        if entry.name == "config.pbtxt":
            shutil.copyfile(entry, linked / entry.name)
        elif not entry.name.startswith("."):
            (linked / entry.name).symlink_to(entry.resolve())
    return linked


def fetch(
    uri: str,
    repository: pathlib.Path,
    model: str,
    *,
    fmt: Optional[str] = None,
    checksum: Optional[str] = None,
    config_overrides: str = "",
    endpoint: Optional[str] = None,
    region: Optional[str] = None,
    retries: int = 5,
    report: Callable[[str], None] = log.info,
) -> pathlib.Path:
    """Fetch ``uri`` into ``repository/model``; returns that directory. Raises FetchError."""
    loc = parse_uri(uri)
    repository.mkdir(parents=True, exist_ok=True)
    final = repository / model
    marker = "\n".join([uri, checksum or "", fmt or "", endpoint or "", region or "", config_overrides]) + "\n"
    if (final / COMPLETE_MARKER).exists() and (final / COMPLETE_MARKER).read_text() == marker:
        report(f"{final} is already complete: nothing to fetch")
        return final
    # What a killed earlier attempt left (an OOM kill, a node drain) is removed first.
    for leftover in [*repository.glob(f".fetch-{model}-*"), *repository.glob(f".stale-{model}-*")]:
        shutil.rmtree(leftover, ignore_errors=True)
    # Beside the target (same filesystem: the final rename is atomic), hidden from Triton.
    work = repository / f".fetch-{model}-{uuid.uuid4().hex[:8]}"
    work.mkdir()
    try:
        if loc.scheme == "file":
            found = pathlib.Path(loc.key)
            if not found.is_dir():
                raise FetchError("ModelNotFound", f"{loc.key} is not a directory of the mounted claim")
        elif loc.scheme == "s3":
            found = _fetch_s3(loc, work / "download", report, retries, endpoint, region, model)
        elif loc.scheme == "gs":
            found = _fetch_gs(loc, work / "download", report, retries, model)
        else:
            found = _fetch_http(loc, work / "download", report, retries)
        if checksum:
            if not found.is_file():
                raise FetchError("ChecksumNotApplicable", "a checksum needs a single file or archive, not a prefix")
            algorithm, _, expected = checksum.partition(":")
            actual = sha256_of(found)
            if algorithm != "sha256" or actual != expected.lower():
                raise FetchError("ChecksumMismatch", f"{found.name}: sha256 is {actual}, expected {expected}")
        if found.is_file() and found.name.lower().endswith(ARCHIVE_SUFFIXES):
            found = _unpack(found, work / "unpacked")
        model_dir = _model_dir(found, model, fmt, work)
        if loc.scheme == "file":
            model_dir = _linked(model_dir, work)
        versions = [p for p in model_dir.iterdir() if _is_version_dir(p)]
        if not versions and fmt == "ensemble":
            # Triton wants a version directory even for an ensemble; object stores drop empty ones.
            (model_dir / "1").mkdir()
            versions = [model_dir / "1"]
        if not versions:
            raise FetchError("NotAModelRepository", f"{model}/ has no numeric version directory (e.g. {model}/1/)")
        config = model_dir / "config.pbtxt"
        existing = config.read_text() if config.exists() else None
        try:
            config.write_text(model_config.build(model, fmt, existing, config_overrides))
        except model_config.ConfigError as exc:
            raise FetchError(exc.reason, exc.message) from exc
        (model_dir / COMPLETE_MARKER).write_text(marker)
        if final.exists():
            stale = repository / f".stale-{model}-{uuid.uuid4().hex[:8]}"
            final.rename(stale)
            shutil.rmtree(stale, ignore_errors=True)
        model_dir.rename(final)
        size = sum(p.stat().st_size for p in final.rglob("*") if p.is_file())
        report(f"{model} is ready in {final}: {len(versions)} version(s), {size / 2**20:.1f} MiB")
        return final
    finally:
        shutil.rmtree(work, ignore_errors=True)
