"""Finds the real tritonserver binary shipped in the nvidia-pytriton wheel, and runs it."""

from __future__ import annotations

import importlib.util
import os
import pathlib
import subprocess

import pytest


def triton_home() -> pathlib.Path | None:
    spec = importlib.util.find_spec("pytriton")
    if spec is None or spec.origin is None:
        return None
    home = pathlib.Path(spec.origin).parent / "tritonserver"
    return home if (home / "bin" / "tritonserver").exists() else None


def require_triton() -> pathlib.Path:
    """The tritonserver folder; CI sets INFERENCE_OPERATOR_REQUIRE_TRITON=1 so a missing one fails."""
    home = triton_home()
    if home is None:
        if os.environ.get("INFERENCE_OPERATOR_REQUIRE_TRITON") == "1":
            pytest.fail("tritonserver not found: pip install --no-deps nvidia-pytriton")
        pytest.skip("tritonserver (nvidia-pytriton) is not installed")
    return home


def triton_env(home: pathlib.Path) -> dict[str, str]:
    libs = home.parents[1] / "nvidia_pytriton.libs"
    env = dict(os.environ)
    env["LD_LIBRARY_PATH"] = os.pathsep.join(
        p for p in (str(libs), str(home / "lib"), env.get("LD_LIBRARY_PATH", "")) if p
    )
    return env


def run_triton(home: pathlib.Path, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    binary = home / "bin" / "tritonserver"
    if not os.access(binary, os.X_OK):
        binary.chmod(0o755)  # wheels do not always keep the executable bit
    return subprocess.run(
        [str(binary), *args], env=triton_env(home), capture_output=True, text=True, timeout=timeout
    )


def python_backend_dir(root: pathlib.Path, home: pathlib.Path) -> pathlib.Path:
    """A --backend-directory whose python/ holds the backend, the stub for this Python, and numpy.

    The stub runs an isolated interpreter (PYTHONPATH is ignored) that has the backend folder on
    sys.path, so numpy, which the backend's utilities import, is linked in beside them.
    """
    import sys

    python = root / "backends" / "python"
    python.mkdir(parents=True)
    for f in (home / "backends" / "python").iterdir():
        if f.is_file():
            (python / f.name).symlink_to(f)
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    (python / "triton_python_backend_stub").symlink_to(home / "python_backend_stubs" / version / "triton_python_backend_stub")
    import numpy

    site = pathlib.Path(numpy.__file__).parents[1]
    for name in ("numpy", "numpy.libs"):
        if (site / name).exists():
            (python / name).symlink_to(site / name)
    return root / "backends"


class TritonServer:
    """tritonserver on loopback ports, stopped by PID."""

    def __init__(self, home: pathlib.Path, repository: pathlib.Path, backends: pathlib.Path, model: str,
                 extra_args: tuple[str, ...] = ()) -> None:
        import socket
        import sysconfig

        def port() -> int:
            with socket.socket() as s:
                s.bind(("127.0.0.1", 0))
                return s.getsockname()[1]

        self.http = port()
        self.metrics = port()  # Prometheus text at http://127.0.0.1:{metrics}/metrics
        env = triton_env(home)
        # The stub loads libpython; this interpreter's comes first.
        env["LD_LIBRARY_PATH"] = f"{sysconfig.get_config_var('LIBDIR')}:{env['LD_LIBRARY_PATH']}"
        self.log = repository.parent / "tritonserver.log"
        self.proc = subprocess.Popen(
            [str(home / "bin" / "tritonserver"), f"--model-repository={repository}",
             f"--backend-directory={backends}", "--model-control-mode=explicit", f"--load-model={model}",
             "--strict-readiness=true", "--exit-on-error=true", "--allow-gpu-metrics=false",
             "--http-address=127.0.0.1", f"--http-port={self.http}",
             "--grpc-address=127.0.0.1", f"--grpc-port={port()}",
             "--metrics-address=127.0.0.1", f"--metrics-port={self.metrics}", *extra_args],
            env=env, stdout=open(self.log, "wb"), stderr=subprocess.STDOUT, start_new_session=True,
        )

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.http}{path}"

    def wait_ready(self, path: str, timeout: float = 120) -> None:
        from .servers import wait_ok

        wait_ok(self.url(path), self.proc, "tritonserver", lambda: self.log.read_text()[-3000:], timeout, 0.5)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
