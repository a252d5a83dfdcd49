"""Memory the operator freed goes back to the system.

CPython's own allocator (pymalloc) keeps small objects in 1 MiB arenas and returns an arena only
once every object in it is freed. A start with a thousand InferenceServices holds every listed
object's full body at once (kopf's start-up barrier), and the long-lived cache entries made in
between pin most arenas: measured with sys._debugmallocstats after such a start, 244 arenas
(244 MiB) held 79 MiB of live objects. With PYTHONMALLOC=malloc, objects come from glibc's
malloc instead, whose ``malloc_trim`` gives back every free page, wherever it is; MALLOC_ARENA_MAX
keeps the worker threads from each growing a heap of their own. ``run`` re-executes itself once
with both set (unless PYTHONMALLOC is set already: an explicit choice is kept), and trims after
busy periods.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import sys
import threading
from typing import Callable, Optional, Sequence

log = logging.getLogger(__name__)

ENV = {"PYTHONMALLOC": "malloc", "MALLOC_ARENA_MAX": "2"}
TRIM_SECONDS = 30.0


def reexec_with_malloc(argv: Sequence[str]) -> None:
    """Replace this process with one that allocates through malloc; returns if it already does."""
    if "PYTHONMALLOC" in os.environ or not _libc():
        return
    env = dict(os.environ, **ENV)
    os.execve(sys.executable, [sys.executable, "-m", "inference_operator.cli", *argv], env)


_LIBC: Optional[ctypes.CDLL] = None


def _libc() -> Optional[ctypes.CDLL]:
    global _LIBC
    if _LIBC is None:
        name = ctypes.util.find_library("c")
        try:
            libc = ctypes.CDLL(name) if name else None
        except OSError:
            libc = None
        _LIBC = libc if libc is not None and hasattr(libc, "malloc_trim") else False  # type: ignore[assignment]
    return _LIBC or None


def trim() -> bool:
    """Give free heap pages back to the system (glibc only); True if any were."""
    libc = _libc()
    return bool(libc and libc.malloc_trim(0))


def start_trimming(busy: Callable[[], int], every: float = TRIM_SECONDS) -> threading.Event:
    """Trim every ``every`` seconds when ``busy()`` (a counter of work done) moved since the last
    trim: after a burst of work, not while idle. Returns the event that stops it."""
    stop = threading.Event()

    def loop() -> None:
        seen = busy()
        while not stop.wait(every):
            now = busy()
            if now != seen:
                seen = now
                trim()

    threading.Thread(target=loop, name="heap-trim", daemon=True).start()
    return stop
