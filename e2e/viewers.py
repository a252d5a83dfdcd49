"""The kubectl plugin and the rollout view as a person runs them: ``kubectl inference ...`` found by
the real kubectl on PATH, and ``kubectl inference dashboard`` as its own process, loaded in a real
headless Chromium (tests/browser.py). Every process is stopped by PID."""

from __future__ import annotations

import json
import os
import pathlib
import re
import signal
import subprocess
import sys
import threading
from typing import Any, Optional

from tests.browser import Browser

from .helpers import REPO, Kubectl, wait_for

# Where screenshots go; CI keeps the folder as the run's artifacts (.ci/run lists it).
ARTIFACTS = pathlib.Path(os.environ.get("E2E_ARTIFACTS") or REPO / "artifacts")
BIN = pathlib.Path(sys.executable).parent  # where pip put kubectl-inference


def plugin_env(kubeconfig: Optional[str]) -> dict[str, str]:
    env = dict(os.environ, PATH=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}")
    env.pop("KUBECONFIG", None)
    if kubeconfig:
        env["KUBECONFIG"] = kubeconfig
    return env


class Plugin:
    """``kubectl inference`` through kubectl's plugin lookup (kubectl-inference on PATH)."""

    def __init__(self, kubectl: Kubectl, kubeconfig: Optional[str] = None) -> None:
        self.kubectl = kubectl
        self.kubeconfig = kubeconfig if kubeconfig is not None else kubectl.kubeconfig

    def __call__(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
        return subprocess.run([self.kubectl.binary, "inference", *args], capture_output=True, text=True,
                              timeout=timeout, env=plugin_env(self.kubeconfig))

    def ok(self, *args: str) -> str:
        result = self(*args)
        assert result.returncode == 0, f"kubectl inference {' '.join(args)}: {result.returncode}\n{result.stderr}"
        return result.stdout

    def json(self, *args: str) -> dict:
        return json.loads(self.ok("get", *args, "-o", "json"))

    def refused(self, code: int, *args: str) -> str:
        """The one line a refused command prints on stderr (it prints nothing on stdout)."""
        result = self(*args)
        assert result.returncode == code, (f"kubectl inference {' '.join(args)}: exit {result.returncode}, "
                                           f"not {code}\n{result.stdout}\n{result.stderr}")
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and result.stdout == "", (result.stdout, result.stderr)
        return lines[0]

    def start(self, *args: str) -> "Streamed":
        return Streamed(subprocess.Popen([self.kubectl.binary, "inference", *args], stdout=subprocess.PIPE,
                                         stderr=subprocess.PIPE, text=True, env=plugin_env(self.kubeconfig)))


class Streamed:
    """A long-running plugin command (``get -w``, ``dashboard``): its stdout read as it comes."""

    def __init__(self, proc: subprocess.Popen) -> None:
        self.proc = proc
        self.out: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.out.append(line)

    def text(self) -> str:
        return "".join(self.out)

    def interrupt(self, timeout: float = 20) -> int:
        """Ctrl-C, by PID; the exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self._reader.join(5)
        return self.proc.returncode

    def stderr(self) -> str:
        return self.proc.stderr.read() if self.proc.stderr and self.proc.poll() is not None else ""


# The points each chart draws, read back from the uPlot instances in the page.
CHARTS_JS = """Object.fromEntries(Object.entries(window.inferenceCharts || {}).map(([id, u]) =>
  [id, {labels: u.series.slice(1).map(s => s.label), data: u.data.map(col => Array.from(col))}]))"""


class DashboardPage:
    """``kubectl inference dashboard --port 0`` as its own process, and a page of it in Chromium."""

    def __init__(self, plugin: Plugin, namespace: str, name: str, refresh: float = 1.0) -> None:
        self.plugin, self.namespace, self.name, self.refresh = plugin, namespace, name, refresh
        self.server: Optional[Streamed] = None
        self.browser: Optional[Browser] = None
        self.url = ""

    def start(self) -> "DashboardPage":
        self.server = self.plugin.start("dashboard", "-n", self.namespace, "--port", "0",
                                        "--refresh", str(self.refresh))
        line = wait_for(lambda: re.search(r"http://127\.0\.0\.1:(\d+)/", self.server.text())
                        or (self.server.proc.poll() is not None and self._died()), "the dashboard to listen", timeout=60)
        self.url = line.group(0)
        self.browser = Browser().start()
        self.browser.goto(f"{self.url}isvc/{self.namespace}/{self.name}")
        return self

    def _died(self) -> None:
        raise AssertionError(f"the dashboard exited {self.server.proc.returncode}: {self.server.stderr()}")

    def charts(self) -> dict[str, dict[str, Any]]:
        assert self.browser is not None
        return self.browser.evaluate(CHARTS_JS) or {}

    def updates(self) -> int:
        assert self.browser is not None
        return int(self.browser.evaluate("+((document.body && document.body.dataset.updates) || 0)") or 0)

    def text(self, element_id: str) -> str:
        assert self.browser is not None
        return self.browser.evaluate(f"document.getElementById({json.dumps(element_id)}).textContent") or ""

    def wait_updated(self, after: int = 0, timeout: float = 60) -> int:
        """Until the page has fetched and drawn new data more than ``after`` times."""
        return wait_for(lambda: (n := self.updates()) > after and n, f"the page's update {after + 1}", timeout=timeout)

    def screenshot(self, name: str) -> pathlib.Path:
        assert self.browser is not None
        return self.browser.screenshot(ARTIFACTS / name)

    def stop(self) -> Optional[int]:
        """Both stopped by PID; the dashboard's exit code on Ctrl-C."""
        if self.browser is not None:
            self.browser.stop()
        return self.server.interrupt() if self.server is not None else None


# A scrape taken a moment before the page asked may be ingested after it: the points drawn this
# close to a range's end may differ from what Prometheus answers later. Compare the ones before.
SETTLE_SECONDS = 5


def settled_points(xs: list[float], values: list) -> list[tuple[float, float]]:
    """The drawn (x, value) points Prometheus can no longer change."""
    return [(x, v) for x, v in zip(xs, values) if v is not None and x <= xs[-1] - SETTLE_SECONDS]


def defined(values: list) -> list[float]:
    return [v for v in values if v is not None]


def series(chart: dict[str, Any], label_start: str) -> list:
    """The values of the chart's series whose label starts with ``label_start``."""
    for i, label in enumerate(chart["labels"]):
        if label.startswith(label_start):
            return chart["data"][i + 1]
    raise AssertionError(f"no series {label_start!r} in {chart['labels']}")
