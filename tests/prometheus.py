"""Runs a real Prometheus (Debian's package: /usr/bin/prometheus) on loopback, scraping given targets
every second, and queries it over its HTTP API. Stopped by PID.

Targets are static (given at start), or discovered from a file (``file_sd=True``): a JSON file of
target groups that ``set_file_targets`` rewrites (atomically, by rename); Prometheus sees the change
through inotify, and re-reads it every second besides."""

from __future__ import annotations

import json
import os
import pathlib
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request

import pytest

from .servers import wait_ok

DEFAULT = "/usr/bin/prometheus"


def prometheus_binary() -> str | None:
    """INFERENCE_OPERATOR_PROMETHEUS, else /usr/bin/prometheus, else prometheus on PATH."""
    override = os.environ.get("INFERENCE_OPERATOR_PROMETHEUS")
    if override:
        return override if os.access(override, os.X_OK) else None
    if os.access(DEFAULT, os.X_OK):
        return DEFAULT
    return shutil.which("prometheus")


def require_prometheus() -> str:
    """The prometheus binary; CI sets INFERENCE_OPERATOR_REQUIRE_PROMETHEUS=1 so a missing one fails."""
    binary = prometheus_binary()
    if binary is None:
        if os.environ.get("INFERENCE_OPERATOR_REQUIRE_PROMETHEUS") == "1":
            pytest.fail("prometheus not found: apt-get install --no-install-recommends prometheus (or set "
                        "INFERENCE_OPERATOR_PROMETHEUS)")
        pytest.skip("prometheus is not installed")
    return binary


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def config(targets: list[tuple[str, dict[str, str]]], file_sd: pathlib.Path | None = None) -> dict:
    """One static job per target (address "127.0.0.1:port", extra labels), scraped every second; and
    with ``file_sd``, one more job whose targets (and their labels) come from that JSON file."""
    jobs = [
        {"job_name": f"target-{i}", "metrics_path": "/metrics",
         "static_configs": [{"targets": [address], "labels": dict(labels)}]}
        for i, (address, labels) in enumerate(targets)
    ]
    if file_sd is not None:
        jobs.append({"job_name": "file-sd", "metrics_path": "/metrics",
                     "file_sd_configs": [{"files": [str(file_sd)], "refresh_interval": "1s"}]})
    return {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s", "scrape_timeout": "1s"},
        "scrape_configs": jobs,
    }


def file_sd_groups(targets: list[tuple[str, dict[str, str]]]) -> list[dict]:
    """The file_sd JSON of targets: one group per target, so each has its own labels."""
    return [{"targets": [address], "labels": dict(labels)} for address, labels in targets]


class Prometheus:
    """`with Prometheus([("127.0.0.1:8002", {"revision": "good"})]) as prom: prom.wait_for("up")`.

    ``Prometheus([], file_sd=True)`` scrapes what ``set_file_targets`` names, as it changes."""

    def __init__(self, targets: list[tuple[str, dict[str, str]]], binary: str | None = None,
                 workdir: pathlib.Path | None = None, file_sd: bool = False) -> None:
        self.binary = binary or require_prometheus()
        self.targets = list(targets)
        self._tmp = None
        if workdir is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="prometheus-")
            workdir = pathlib.Path(self._tmp.name)
        self.dir = pathlib.Path(workdir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.config_file = self.dir / "prometheus.yml"
        self.log = self.dir / "prometheus.log"
        self.file_sd = self.dir / "file_sd.json" if file_sd else None
        self.port = 0
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log_tail(self, n: int = 3000) -> str:
        try:
            return self.log.read_text(errors="replace")[-n:]
        except OSError:
            return ""

    def start(self, timeout: float = 60) -> "Prometheus":
        if self.proc is not None:
            raise RuntimeError("already started")
        if self.file_sd is not None and not self.file_sd.exists():
            self.set_file_targets([])
        # JSON is YAML.
        self.config_file.write_text(json.dumps(config(self.targets, self.file_sd), indent=2))
        self.port = _free_port()
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen(
                [self.binary, f"--config.file={self.config_file}", f"--storage.tsdb.path={self.dir / 'data'}",
                 f"--web.listen-address=127.0.0.1:{self.port}", "--storage.tsdb.retention.time=1h",
                 f"--web.console.templates={self.dir}", f"--web.console.libraries={self.dir}",
                 "--log.level=info"],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
            )
        try:
            self._wait_ready(timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def set_file_targets(self, targets: list[tuple[str, dict[str, str]]]) -> None:
        """Replaces the discovered targets (address, labels): written beside the file and renamed over
        it, so Prometheus never reads half a file."""
        if self.file_sd is None:
            raise RuntimeError("started without file_sd")
        partial = self.file_sd.with_name(self.file_sd.name + ".tmp")
        partial.write_text(json.dumps(file_sd_groups(targets), indent=2))
        os.replace(partial, self.file_sd)

    def _wait_ready(self, timeout: float) -> None:
        wait_ok(f"{self.url}/-/ready", self.proc, "prometheus", self.log_tail, timeout)

    def stop(self) -> None:
        """SIGTERM by PID, wait, then SIGKILL; safe to call more than once."""
        proc = self.proc
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    def __enter__(self) -> "Prometheus":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def query(self, promql: str, at: float | None = None) -> list[dict]:
        """/api/v1/query at now (or at ``at``): the result vector ([{"metric": {...}, "value": [t, "v"]}, ...])."""
        params = {"query": promql} if at is None else {"query": promql, "time": f"{at:.3f}"}
        url = f"{self.url}/api/v1/query?" + urllib.parse.urlencode(params)
        try:
            with urllib.request.urlopen(url, timeout=10) as r:
                body = json.load(r)
        except urllib.error.HTTPError as e:  # 400 on a bad query: show Prometheus' reason
            raise AssertionError(f"query {promql!r}: HTTP {e.code}: {e.read().decode(errors='replace')}") from None
        if body.get("status") != "success":
            raise AssertionError(f"query {promql!r}: {body}")
        data = body["data"]
        if data["resultType"] != "vector":
            raise AssertionError(f"query {promql!r}: a {data['resultType']}, not a vector")
        return data["result"]

    def query_at(self, promql: str, at: float) -> float | None:
        """The one number ``promql`` gives at ``at``, or None (no series)."""
        result = self.query(promql, at)
        assert len(result) <= 1, result
        return float(result[0]["value"][1]) if result else None

    def wait_for(self, query: str, timeout: float = 30) -> list[dict]:
        """Polls query until its vector is non-empty, and returns it."""
        deadline = time.monotonic() + timeout
        while True:
            if self.proc is None or self.proc.poll() is not None:
                raise AssertionError(f"prometheus is not running:\n{self.log_tail()}")
            result = self.query(query)
            if result:
                return result
            if time.monotonic() >= deadline:
                raise AssertionError(f"{query!r} still empty after {timeout}s; targets: {self.targets_health()}")
            time.sleep(0.5)

    def targets_health(self) -> list[tuple[str, str, str]]:
        """(scrape url, health, last error) of each active target, for failure messages."""
        try:
            with urllib.request.urlopen(f"{self.url}/api/v1/targets", timeout=5) as r:
                active = json.load(r)["data"]["activeTargets"]
        except OSError as e:
            return [("?", "unknown", str(e))]
        return [(t["scrapeUrl"], t["health"], t.get("lastError", "")) for t in active]
