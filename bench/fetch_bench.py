"""fetch-model throughput and peak memory, from real servers on loopback.

    .venv/bin/python bench/fetch_bench.py [--http-mib 1024] [--s3-mib 256]

HTTP: Python's http.server serving a file. S3: moto in server mode (it keeps objects in memory, so
its size is kept smaller). Each fetch runs the real CLI in a child process whose peak RSS is read
back. Prints figures; asserts nothing.
"""

from __future__ import annotations

import argparse
import pathlib
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

from tests.servers import http_server, moto_server  # noqa: E402

PROBE = ("import resource, subprocess, sys; rc = subprocess.call(sys.argv[1:]); "
         "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss); sys.exit(rc)")


def write(path: pathlib.Path, mib: int) -> None:
    block = bytes(range(256)) * 4096  # 1 MiB
    with open(path, "wb") as f:
        for _ in range(mib):
            f.write(block)


def run_fetch(uri: str, repo: pathlib.Path, *extra: str) -> tuple[float, float]:
    t0 = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", PROBE, sys.executable, "-m", "inference_operator.cli", "fetch-model",
                          "--uri", uri, "--repository", str(repo), "--model", "m", "--format", "onnx", *extra],
                         capture_output=True, text=True, check=True)
    return time.perf_counter() - t0, int(out.stdout.strip().splitlines()[-1]) / 1024


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--http-mib", type=int, default=1024)
    p.add_argument("--s3-mib", type=int, default=256)
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = pathlib.Path(tmp)
        (root / "web").mkdir()
        write(root / "web" / "model.onnx", args.http_mib)
        with http_server(root / "web") as url:
            seconds, peak = run_fetch(f"{url}/model.onnx", root / "http-repo")
        print(f"http  {args.http_mib:5d} MiB  {seconds:6.1f} s  {args.http_mib / seconds:7.1f} MiB/s  "
              f"peak RSS {peak:5.0f} MiB")

        import boto3

        write(root / "s3.onnx", args.s3_mib)
        with moto_server() as url:
            client = boto3.client("s3", endpoint_url=url, region_name="us-east-1",
                                  aws_access_key_id="x", aws_secret_access_key="x")
            client.create_bucket(Bucket="models")
            client.upload_file(str(root / "s3.onnx"), "models", "m/model.onnx")
            import os

            os.environ.update(AWS_ACCESS_KEY_ID="x", AWS_SECRET_ACCESS_KEY="x", AWS_DEFAULT_REGION="us-east-1")
            seconds, peak = run_fetch("s3://models/m/model.onnx", root / "s3-repo", "--endpoint", url)
        print(f"s3    {args.s3_mib:5d} MiB  {seconds:6.1f} s  {args.s3_mib / seconds:7.1f} MiB/s  "
              f"peak RSS {peak:5.0f} MiB")


if __name__ == "__main__":
    main()
