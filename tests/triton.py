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
