"""Giving freed memory back: the re-exec with glibc's allocator, and trimming after bursts."""

import sys

import pytest

from inference_operator import cli, heap


def test_run_re_executes_itself_once_with_malloc_and_keeps_an_explicit_choice(monkeypatch):
    calls = []
    monkeypatch.setattr(heap.os, "execve", lambda exe, argv, env: calls.append((exe, argv, env)))
    monkeypatch.delenv("PYTHONMALLOC", raising=False)
    heap.reexec_with_malloc(["run", "--workers", "2"])
    if heap._libc() is None:
        pytest.skip("no glibc here: nothing to trim, so no re-exec")
    ((exe, argv, env),) = calls
    assert exe == sys.executable and argv == [sys.executable, "-m", "inference_operator.cli", "run", "--workers", "2"]
    assert env["PYTHONMALLOC"] == "malloc" and env["MALLOC_ARENA_MAX"] == "2"
    monkeypatch.setenv("PYTHONMALLOC", "pymalloc")  # the re-executed process, or a person's choice
    heap.reexec_with_malloc(["run"])
    assert len(calls) == 1


def test_the_cli_passes_its_own_arguments_to_the_re_exec(monkeypatch):
    seen = []
    monkeypatch.setattr(heap, "reexec_with_malloc", lambda argv: seen.append(argv) or (_ for _ in ()).throw(SystemExit(0)))
    with pytest.raises(SystemExit):
        cli.main(["run", "--resync-seconds", "5"])
    assert seen == [["run", "--resync-seconds", "5"]]


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


def test_trim_gives_memory_back_where_glibc_is():
    if heap._libc() is None:
        pytest.skip("no glibc here")
    blocks = [bytearray(100_000) for _ in range(500)]  # 50 MB from malloc, then freed
    del blocks
    heap.trim()  # must not fail; what it returns depends on what the heap held
