"""Giving freed memory back: the re-exec with glibc's allocator, and trimming after bursts."""

import sys

import pytest

from inference_operator import cli
from inference_operator.controller import heap


def test_run_re_executes_itself_once_with_malloc_and_keeps_an_explicit_choice(monkeypatch):
    calls = []
    monkeypatch.setattr(heap.os, "execve", lambda exe, argv, env: calls.append((exe, argv, env)))
    monkeypatch.delenv("PYTHONMALLOC", raising=False)
    monkeypatch.setattr(heap.sys, "orig_argv", [sys.executable, "-X", "dev", "-m", "inference_operator.cli", "run"])
    heap.reexec_with_malloc()
    if heap._libc() is None:
        pytest.skip("no glibc here: nothing to trim, so no re-exec")
    ((exe, argv, env),) = calls
    # The same command line, interpreter flags included.
    assert exe == sys.executable and argv == [sys.executable, "-X", "dev", "-m", "inference_operator.cli", "run"]
    assert env["PYTHONMALLOC"] == "malloc" and env["MALLOC_ARENA_MAX"] == "2"
    monkeypatch.setenv("PYTHONMALLOC", "pymalloc")  # the re-executed process, or a person's choice
    heap.reexec_with_malloc()
    assert len(calls) == 1


def test_only_a_command_line_of_its_own_re_executes(monkeypatch):
    seen = []

    def reexec():
        seen.append(1)
        raise SystemExit(0)

    monkeypatch.setattr(heap, "reexec_with_malloc", reexec)
    monkeypatch.setattr(sys, "argv", ["inference-operator", "run"])
    with pytest.raises(SystemExit):
        cli.main()  # as the console script runs it
    assert seen == [1]
    import kopf
    monkeypatch.setattr(kopf, "run", lambda **_: None)
    assert cli.main(["run", "--metrics-port=0", "--liveness-port=0"]) == 0  # in another program's process
    assert seen == [1]


def test_trims_once_a_burst_is_over_never_during_it_or_while_idle():
    trims, work = [], [0]
    trimmer = heap.Trimmer(lambda: work[0], trim=lambda: trims.append(work[0]) or True)
    assert not any(trimmer.look() for _ in range(3))  # idle: nothing to give back
    for _ in range(5):  # a burst: work moved at every look
        work[0] += 100
        assert not trimmer.look()
    assert trimmer.look() and trims == [500]  # calm for one look after it
    assert not any(trimmer.look() for _ in range(3))
    work[0] += 1
    assert not trimmer.look() and trimmer.look() and trims == [500, 501]
