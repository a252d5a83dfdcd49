"""The local cluster launcher itself: a start-up that loses a port race is tried again."""

from __future__ import annotations

import os
import pathlib
import socket
import sys

import pytest

sys.path.insert(0, str(pathlib.Path(__file__).parent))
import cluster  # noqa: E402


@pytest.mark.skipif(not os.environ.get("E2E_BIN"), reason="needs the built binaries (E2E_BIN, set by make e2e)")
def test_a_port_taken_between_choice_and_bind_is_retried(tmp_path, monkeypatch, capsys):
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    ports = iter([taken.getsockname()[1]])  # the first port chosen (etcd's) is already in use
    real = cluster.free_port
    monkeypatch.setattr(cluster, "free_port", lambda: next(ports, None) or real())
    state = tmp_path / "cluster"
    try:
        kubeconfig = cluster.up(state, pathlib.Path(os.environ["E2E_BIN"]))
        assert kubeconfig.exists() and all(cluster.status(state).values())
        assert "starting again with new ports" in capsys.readouterr().err
    finally:
        cluster.down(state)
        taken.close()
    assert not state.exists()
