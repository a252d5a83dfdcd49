"""What holds the operator's memory, on demand: with INFERENCE_OPERATOR_TRACEMALLOC=PATH set,
allocations are traced from the start (tracemalloc, a few frames deep; it costs memory and CPU,
so it is off unless asked for) and each SIGUSR2 writes the largest holders to PATH, by source
line and by file, as text. Meant for a benchmark or a one-off investigation, not for production.
"""

from __future__ import annotations

import os
import pathlib
import signal
import tracemalloc
from typing import Any

ENV = "INFERENCE_OPERATOR_TRACEMALLOC"
FRAMES = 4
TOP = 25


def install_from_env() -> bool:
    path = os.environ.get(ENV)
    if not path:
        return False
    tracemalloc.start(FRAMES)
    signal.signal(signal.SIGUSR2, lambda *_: write(pathlib.Path(path)))
    return True


def report(snapshot: tracemalloc.Snapshot, top: int = TOP) -> str:
    snapshot = snapshot.filter_traces([tracemalloc.Filter(False, tracemalloc.__file__)])
    total = sum(s.size for s in snapshot.statistics("filename"))
    lines = [f"traced: {total / 2**20:.1f} MiB (Python allocations only; RSS also holds the interpreter, "
             "C libraries and freed-but-kept arenas)", "", "by file:"]
    lines += [f"  {s.size / 2**20:8.2f} MiB  {s.count:>9} blocks  {s.traceback[0].filename}"
              for s in snapshot.statistics("filename")[:top]]
    lines += ["", "by line (with its callers):"]
    for stat in snapshot.statistics("traceback")[:top]:
        lines.append(f"  {stat.size / 2**20:8.2f} MiB  {stat.count:>9} blocks")
        lines += [f"      {frame.filename}:{frame.lineno}" for frame in stat.traceback]
    return "\n".join(lines) + "\n"


def write(path: pathlib.Path, *_: Any) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(report(tracemalloc.take_snapshot()))
    tmp.replace(path)
