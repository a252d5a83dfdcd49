"""Real servers on 127.0.0.1 for storage tests: moto (S3), gcp-storage-emulator (GCS), HTTP.

Each runs as a child process (the HTTP one as a thread) and is stopped by PID.
"""

from __future__ import annotations

import contextlib
import http.server
import os
import pathlib
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from typing import Callable, Iterator, Optional

BIN = pathlib.Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait(url: str, proc: subprocess.Popen, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.args[0]} exited with {proc.returncode}")
        try:
            urllib.request.urlopen(url, timeout=2)
            return
        except urllib.error.HTTPError:
            return  # it answers
        except OSError:
            time.sleep(0.2)
    raise RuntimeError(f"nothing answered at {url}")


def wait_ok(url: str, proc: subprocess.Popen, what: str, log: Callable[[], str], timeout: float,
            interval: float = 0.2) -> None:
    """Until ``url`` answers 200; a process that exits, or a timeout, fails with its log's tail."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"{what} exited with {proc.returncode}:\n{log()}")
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        time.sleep(interval)
    raise AssertionError(f"{what}: {url} not ready in {timeout}s:\n{log()}")


@contextlib.contextmanager
def process(argv: list[str], ready_url: str, env: Optional[dict] = None) -> Iterator[subprocess.Popen]:
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env={**os.environ, **(env or {})}, start_new_session=True)
    try:
        _wait(ready_url, proc)
        yield proc
    finally:
        proc.terminate()  # by PID
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


@contextlib.contextmanager
def moto_server(auth: bool = False) -> Iterator[str]:
    """moto in server mode. With auth, every request must be signed by a key moto knows: none is."""
    port = free_port()
    env = {"INITIAL_NO_AUTH_ACTION_COUNT": "0"} if auth else {}
    url = f"http://127.0.0.1:{port}"
    with process([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)], url, env):
        yield url


@contextlib.contextmanager
def gcs_emulator() -> Iterator[str]:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with process([str(BIN / "gcp-storage-emulator"), "start", "-H", "127.0.0.1", "--port", str(port), "-q",
                  "--in-memory"], url):
        yield url


class _Handler(http.server.SimpleHTTPRequestHandler):
    truncate: set[str] = set()

    def log_message(self, *args) -> None:
        pass

    def copyfile(self, source, outputfile) -> None:
        # For /truncated/... paths: promise the whole file, send half, hang up (a dropped download).
        if self.path.split("?")[0].lstrip("/") in self.truncate:
            size = os.fstat(source.fileno()).st_size
            outputfile.write(source.read(size // 2))
            outputfile.flush()
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)
            return
        super().copyfile(source, outputfile)


@contextlib.contextmanager
def http_server(root: pathlib.Path, truncate: tuple[str, ...] = ()) -> Iterator[str]:
    handler = type("Handler", (_Handler,), {"truncate": set(truncate)})
    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), lambda *a, **kw: handler(*a, directory=str(root), **kw)
    )
    with serving(server) as url:
        yield url


@contextlib.contextmanager
def serving(server: http.server.HTTPServer) -> Iterator[str]:
    """A server bound on loopback, run in a thread while the block runs, then shut and closed."""
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def metrics_handler(exposition: bytes) -> type[http.server.BaseHTTPRequestHandler]:
    """A /metrics endpoint that always answers ``exposition`` (Prometheus's text format)."""

    class Metrics(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200)
            self.send_header("Content-Type", "text/plain; version=0.0.4")
            self.send_header("Content-Length", str(len(exposition)))
            self.end_headers()
            self.wfile.write(exposition)

        def log_message(self, *args):
            pass

    return Metrics
