"""A real headless Chromium (Debian's ``chromium-headless-shell``, or ``chromium``) driven over the
DevTools protocol on a pipe (``--remote-debugging-pipe``: fd 3 in, fd 4 out, one JSON message per
NUL-terminated frame). No port is opened and no driver is needed. Stopped by PID.
"""

from __future__ import annotations

import base64
import json
import os
import pathlib
import shutil
import subprocess
import tempfile
import threading
import time
from typing import Any, Optional

import pytest

CANDIDATES = ("chromium-headless-shell", "chromium", "chromium-browser")


def chromium_binary() -> Optional[str]:
    explicit = os.environ.get("INFERENCE_OPERATOR_CHROMIUM")
    if explicit:
        return explicit
    return next((path for path in map(shutil.which, CANDIDATES) if path), None)


def require_chromium() -> str:
    binary = chromium_binary()
    if binary is None:
        message = "no headless Chromium (make e2e installs Debian's chromium-headless-shell)"
        if os.environ.get("INFERENCE_OPERATOR_REQUIRE_CHROMIUM"):
            pytest.fail(message)
        pytest.skip(message)
    return binary


class Browser:
    def __init__(self, binary: Optional[str] = None, width: int = 1280, height: int = 1400) -> None:
        self.binary = binary or require_chromium()
        self.width, self.height = width, height
        self.profile = tempfile.mkdtemp(prefix="chromium-")
        self._id = 0
        self._buffer = b""
        self._lock = threading.Lock()
        self.proc: Optional[subprocess.Popen] = None
        self.session: Optional[str] = None

    def start(self) -> "Browser":
        to_browser_r, self._to_browser = os.pipe()
        self._from_browser, from_browser_w = os.pipe()

        def fds() -> None:  # in the child: the protocol's pipes on fds 3 and 4
            os.dup2(to_browser_r, 3)
            os.dup2(from_browser_w, 4)

        self.log = open(pathlib.Path(self.profile) / "chromium.log", "wb")
        self.proc = subprocess.Popen(
            [self.binary, "--headless", "--remote-debugging-pipe", "--no-sandbox", "--disable-gpu",
             "--no-first-run", "--no-default-browser-check", "--disable-extensions", "--disable-dev-shm-usage",
             f"--user-data-dir={self.profile}", f"--window-size={self.width},{self.height}", "about:blank"],
            stdin=subprocess.DEVNULL, stdout=self.log, stderr=subprocess.STDOUT, preexec_fn=fds,
            pass_fds=(3, 4, to_browser_r, from_browser_w))  # 3 and 4 kept: dup2 fills them before fds are closed
        os.close(to_browser_r)
        os.close(from_browser_w)
        target = self.call("Target.createTarget", url="about:blank")["targetId"]
        self.session = self.call("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]
        self.call("Page.enable", session=True)
        self.call("Emulation.setDeviceMetricsOverride", session=True, width=self.width, height=self.height,
                  deviceScaleFactor=1, mobile=False)
        return self

    def call(self, method: str, session: bool = False, timeout: float = 30, **params: Any) -> dict:
        with self._lock:
            self._id += 1
            message: dict[str, Any] = {"id": self._id, "method": method, "params": params}
            if session:
                message["sessionId"] = self.session
            os.write(self._to_browser, json.dumps(message).encode() + b"\0")
            deadline = time.monotonic() + timeout
            while True:
                for frame in self._frames(deadline, method):
                    reply = json.loads(frame)
                    if reply.get("id") == self._id:
                        if "error" in reply:
                            raise RuntimeError(f"{method}: {reply['error']}")
                        return reply.get("result") or {}

    def _frames(self, deadline: float, method: str) -> list[bytes]:
        import select

        while b"\0" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self._from_browser], [], [], left)[0]:
                raise TimeoutError(f"no answer from Chromium to {method}")
            chunk = os.read(self._from_browser, 1 << 20)
            if not chunk:
                raise RuntimeError(f"Chromium exited ({self.proc and self.proc.poll()}): {self.log_tail()}")
            self._buffer += chunk
        *frames, self._buffer = self._buffer.split(b"\0")
        return frames

    def goto(self, url: str) -> None:
        self.call("Page.navigate", session=True, url=url)

    def evaluate(self, expression: str) -> Any:
        """The value of a JavaScript expression in the page (promises awaited), as JSON."""
        result = self.call("Runtime.evaluate", session=True, expression=expression, returnByValue=True,
                           awaitPromise=True)
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression}: {result['exceptionDetails']}")
        return result["result"].get("value")

    def wait_for(self, expression: str, timeout: float = 60) -> Any:
        deadline = time.monotonic() + timeout
        while True:
            try:
                value = self.evaluate(expression)
            except RuntimeError:
                value = None
            if value:
                return value
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out after {timeout:.0f}s waiting in the page for {expression}")
            time.sleep(0.25)

    def screenshot(self, path: pathlib.Path) -> pathlib.Path:
        data = self.call("Page.captureScreenshot", session=True, format="png", captureBeyondViewport=True)["data"]
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(base64.b64decode(data))
        return path

    def log_tail(self) -> str:
        try:
            return (pathlib.Path(self.profile) / "chromium.log").read_text(errors="replace")[-2000:]
        except OSError:
            return ""

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()  # by PID
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        for fd in (getattr(self, "_to_browser", None), getattr(self, "_from_browser", None)):
            if fd is not None:
                try:
                    os.close(fd)
                except OSError:
                    pass
        self.log.close() if hasattr(self, "log") else None
        shutil.rmtree(self.profile, ignore_errors=True)

    def __enter__(self) -> "Browser":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()
