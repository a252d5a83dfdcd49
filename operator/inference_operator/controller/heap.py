"""Memory the operator freed goes back to the system.

CPython's own allocator (pymalloc) keeps small objects in 1 MiB arenas and returns an arena only
once every object in it is freed. A start with a thousand InferenceServices holds every listed
object's full body at once (kopf's start-up barrier), and the long-lived cache entries made in
between pin most arenas: measured with sys._debugmallocstats after such a start, 244 arenas
(244 MiB) held 79 MiB of live objects. With PYTHONMALLOC=malloc, objects come from glibc's
malloc instead, whose ``malloc_trim`` gives back every free page, wherever it is; MALLOC_ARENA_MAX
keeps the worker threads from each growing a heap of their own. ``run`` re-executes itself once
with both set (unless PYTHONMALLOC is set already: an explicit choice is kept), and trims once a
busy period is over.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import os
import sys
import threading
from typing import Callable, Optional

ENV = {"PYTHONMALLOC": "malloc", "MALLOC_ARENA_MAX": "2"}
TRIM_SECONDS = 30.0


def reexec_with_malloc() -> None:
    """Replace this process with the same command line (interpreter flags included) allocating
    through malloc; returns if it already does, if PYTHONMALLOC is set (a choice is kept: set it
    to ``pymalloc`` to opt out), if there is no glibc to trim, or if this is no plain interpreter."""
    if "PYTHONMALLOC" in os.environ or not _libc() or getattr(sys, "frozen", False) or not sys.executable:
        return
    env = dict(os.environ, **ENV)
    os.execve(sys.executable, list(sys.orig_argv), env)


@functools.cache
def _libc() -> Optional[ctypes.CDLL]:
    """glibc, if it can trim (looked up once)."""
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name) if name else None
    except OSError:
        libc = None
    return libc if libc is not None and hasattr(libc, "malloc_trim") else None


def trim() -> bool:
    """Give free heap pages back to the system (glibc only); True if any were."""
    libc = _libc()
    return bool(libc and libc.malloc_trim(0))


class Trimmer:
    """Trims once a burst of work is over: when ``busy()`` (a count of work done) moved since the
    last trim and then stood still for one look. Never while idle, and not in the middle of a
    burst (the first trim after one walks the whole heap: some 0.2 s of CPU after a start at a
    thousand InferenceServices, then milliseconds)."""

    def __init__(self, busy: Callable[[], int], trim: Callable[[], bool] = trim) -> None:
        self._busy, self._trim = busy, trim
        self._trimmed = self._previous = busy()

    def look(self) -> bool:
        """One look (every TRIM_SECONDS); True if it trimmed."""
        now = self._busy()
        calm_after_work = now == self._previous and now != self._trimmed
        self._previous = now
        if calm_after_work:
            self._trim()
            self._trimmed = now
        return calm_after_work


def start_trimming(busy: Callable[[], int], every: float = TRIM_SECONDS) -> threading.Event:
    """A thread that looks every ``every`` seconds; returns the event that stops it."""
    stop = threading.Event()
    trimmer = Trimmer(busy)

    def loop() -> None:
        while not stop.wait(every):
            trimmer.look()

    threading.Thread(target=loop, name="heap-trim", daemon=True).start()
    return stop
