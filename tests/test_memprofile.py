"""The on-demand memory profile: off unless asked for; SIGUSR2 writes who holds what."""

import os
import signal
import tracemalloc

from inference_operator.controller import memprofile


def _hold_a_lot():
    return [bytearray(1024) for _ in range(4000)]  # about 4 MiB from this line


def test_off_unless_asked_for(monkeypatch):
    monkeypatch.delenv(memprofile.ENV, raising=False)
    assert memprofile.install_from_env() is False
    assert not tracemalloc.is_tracing()


def test_sigusr2_writes_the_largest_holders_by_line(monkeypatch, tmp_path):
    out = tmp_path / "profile.txt"
    monkeypatch.setenv(memprofile.ENV, str(out))
    previous = signal.getsignal(signal.SIGUSR2)
    try:
        assert memprofile.install_from_env() is True
        held = _hold_a_lot()
        os.kill(os.getpid(), signal.SIGUSR2)
        text = out.read_text()
    finally:
        tracemalloc.stop()
        signal.signal(signal.SIGUSR2, previous)
    assert len(held) == 4000
    by_line = text.split("by line", 1)[1]
    first = by_line.split("MiB", 1)[0].split()[-1]
    assert float(first) >= 3.5, text  # the largest holder is ours, and about its size
    assert f"{__file__}:{_hold_a_lot.__code__.co_firstlineno + 1}" in by_line.split("\n\n")[0][:600], text
