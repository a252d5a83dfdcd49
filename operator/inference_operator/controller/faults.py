"""Fault injection for the fault tests (issue #12), off unless its variable is set.

``INFERENCE_OPERATOR_KILL_AT_WRITE=<namespace>:<n>[:SIGSTOP]`` makes the process send itself SIGKILL
(or SIGSTOP: frozen until someone sends SIGCONT, a stalled VM's leader) just before its n-th write
(create, apply, patch, delete, status, Event) to an object in that namespace: a kill point that
lands between two given writes of a create, an update or a canary step, the same on every run,
where a kill on a timer lands wherever the machine's speed puts it. SIGKILL
runs no handler and flushes nothing: what the API server holds is all that survives, as when a
node dies under the operator. A production deployment never sets it.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from typing import Optional

ENV = "INFERENCE_OPERATOR_KILL_AT_WRITE"


SIGNALS = {"SIGKILL": signal.SIGKILL, "SIGSTOP": signal.SIGSTOP}


class KillPoint:
    def __init__(self, namespace: str, at: int, sig: signal.Signals = signal.SIGKILL) -> None:
        if at < 1:
            raise ValueError(f"{ENV}: the write to die before counts from 1, not {at}")
        self.namespace, self.at, self.signal = namespace, at, sig
        self.seen = 0
        self._lock = threading.Lock()

    @classmethod
    def parse(cls, value: str) -> "KillPoint":
        parts = value.split(":")
        sig = SIGNALS.get(parts.pop()) if len(parts) == 3 else signal.SIGKILL
        if len(parts) != 2 or not parts[0] or not parts[1].isdigit() or sig is None:
            raise ValueError(f"{ENV} must be <namespace>:<n> or <namespace>:<n>:SIGSTOP, not {value!r}")
        return cls(parts[0], int(parts[1]), sig)

    def before_write(self, path: str) -> None:
        if f"/namespaces/{self.namespace}/" not in path:
            return
        with self._lock:  # held until the kill: no other worker's write slips past the point
            self.seen += 1
            if self.seen == self.at:
                sys.stderr.write(f"{ENV}: {self.signal.name} before write {self.at} in {self.namespace} ({path})\n")
                sys.stderr.flush()
                # To this thread: it stops (or dies) before running another line. Sent to the
                # process, the signal may be taken by another thread while this one goes on and
                # sends the very write it was to stop before (make faults caught one).
                signal.pthread_kill(threading.get_ident(), self.signal)  # SIGSTOP: goes on after SIGCONT


def from_env() -> Optional[KillPoint]:
    value = os.environ.get(ENV)
    return KillPoint.parse(value) if value else None
