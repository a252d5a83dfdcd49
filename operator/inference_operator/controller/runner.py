"""The runner: a keyed work queue of InferenceServices and the worker threads that drain it.

What kopf does not give, and nothing more: triggers for one object coalesce (at most one pass
running and one owed, per object); new work (a spec nobody has acted on yet) goes before
background work (a resume after restart, a resync); a pass says when it wants to run again
(``requeue_after``); a failed pass is retried with per-object exponential backoff and jitter; and
one resync, jittered over its whole period, runs every object again as a safety net. No state
that matters lives here: a restarted operator loses the queue and rebuilds it from the watches.
"""

from __future__ import annotations

import collections
import dataclasses
import heapq
import itertools
import logging
import random
import threading
import time
from typing import Callable, Hashable, Iterable, Optional

from inference_operator.controller import metrics

log = logging.getLogger(__name__)

BACKOFF_BASE_SECONDS = 0.5
BACKOFF_MAX_SECONDS = 300.0


def backoff(failures: int, rng: Callable[[float, float], float] = random.uniform) -> float:
    """The delay before retry number ``failures`` (1, 2, ...): doubling, capped, jittered into
    [d/2, d] so that objects failing together do not retry together."""
    delay = min(BACKOFF_MAX_SECONDS, BACKOFF_BASE_SECONDS * 2 ** (max(failures, 1) - 1))
    return rng(delay / 2, delay)


class WorkQueue:
    """client-go's workqueue, in little: a key is queued at most once, is never handed to two
    workers at once, and a key added while it is being processed is handed out again once done."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._cond = threading.Condition()
        self._urgent: collections.deque = collections.deque()
        self._normal: collections.deque = collections.deque()
        self._queued: dict[Hashable, bool] = {}  # key -> urgent
        self._processing: set[Hashable] = set()
        self._again: dict[Hashable, bool] = {}
        self._delayed: list[tuple[float, int, Hashable, bool]] = []
        self._due: dict[Hashable, float] = {}
        self._seq = itertools.count()
        self._closed = False

    def add(self, key: Hashable, urgent: bool = False) -> None:
        with self._cond:
            self._add(key, urgent)

    def _add(self, key: Hashable, urgent: bool) -> None:
        if self._closed:
            return
        if key in self._processing:
            self._again[key] = self._again.get(key, False) or urgent
            return
        if key in self._queued:
            if urgent and not self._queued[key]:
                self._queued[key] = True  # its entry in the normal lane goes stale
                self._urgent.append(key)
                self._cond.notify()
            return
        self._queued[key] = urgent
        (self._urgent if urgent else self._normal).append(key)
        self._cond.notify()

    def add_after(self, key: Hashable, delay: float, urgent: bool = False) -> None:
        if delay <= 0:
            self.add(key, urgent)
            return
        with self._cond:
            due = self._clock() + delay
            if key in self._due and self._due[key] <= due:
                return  # an earlier wake-up is already booked; that pass books the next
            self._due[key] = due
            heapq.heappush(self._delayed, (due, next(self._seq), key, urgent))
            self._cond.notify()

    def _promote_due(self) -> Optional[float]:
        """Queue what is due; return the seconds until the next delayed key, or None."""
        now = self._clock()
        while self._delayed:
            due, _, key, urgent = self._delayed[0]
            if due > now:
                return due - now
            heapq.heappop(self._delayed)
            if self._due.get(key) == due:
                del self._due[key]
                self._add(key, urgent)
        return None

    def _pop(self) -> Optional[Hashable]:
        for lane, urgent in ((self._urgent, True), (self._normal, False)):
            while lane:
                key = lane.popleft()
                if self._queued.get(key) is urgent:
                    del self._queued[key]
                    self._processing.add(key)
                    return key
        return None

    def get(self, timeout: Optional[float] = None) -> Optional[Hashable]:
        """The next key to process (the caller must call ``done``); None once closed or timed out."""
        deadline = None if timeout is None else self._clock() + timeout
        with self._cond:
            while not self._closed:
                wait = self._promote_due()
                key = self._pop()
                if key is not None:
                    metrics.QUEUE_DEPTH.set(len(self._queued))
                    return key
                if deadline is not None:
                    left = deadline - self._clock()
                    if left <= 0:
                        return None
                    wait = left if wait is None else min(wait, left)
                self._cond.wait(wait)
            return None

    def done(self, key: Hashable) -> None:
        with self._cond:
            self._processing.discard(key)
            if key in self._again:
                self._add(key, self._again.pop(key))

    def add_soon(self, key: Hashable, delay: float) -> None:
        """A pass within ``delay``: none more if one is already due (queued), and events that
        come in the meantime ride along with it. A key being processed runs again once done."""
        with self._cond:
            if key in self._queued:
                return
            if key in self._processing:
                self._add(key, False)
                return
            # This may replace a later booking (a slow retry, a requeue) with this earlier one,
            # and its urgency: harmless, as every pass books its own next wake-up again.
            self.add_after(key, delay)  # the condition's lock is reentrant

    def forget(self, key: Hashable) -> None:
        """Drop delayed wake-ups of a key (its object is gone)."""
        with self._cond:
            self._due.pop(key, None)

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    def __len__(self) -> int:
        with self._cond:
            return len(self._queued)

    def delayed(self, key: Hashable) -> Optional[float]:
        """Seconds until the key's booked wake-up, if any (for tests and metrics)."""
        with self._cond:
            due = self._due.get(key)
            return None if due is None else due - self._clock()


class RetryLater(Exception):
    """A pass that has reported its failure (in status) and wants the backoff to go on."""

    kind = "reported"


@dataclasses.dataclass(frozen=True)
class Result:
    """What a pass asks of the runner: run again after this many seconds, or only on an event."""

    requeue_after: Optional[float] = None


class Runner:
    """Worker threads over a WorkQueue; ``process(key, failures)`` is one pass.

    ``failures`` is how many passes in a row failed for this key, so a pass can report an error
    that persists; a pass that raises is retried with backoff, one that returns resets the count.
    """

    def __init__(
        self,
        process: Callable[[Hashable, int], Result],
        *,
        workers: int = 4,
        resync_seconds: float = 600.0,
        keys: Callable[[], Iterable[Hashable]] = lambda: (),
        clock: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
    ) -> None:
        self.queue = WorkQueue(clock)
        self._process = process
        self._workers = workers
        self._resync_seconds = resync_seconds
        self._keys = keys
        self._rng = rng or random.Random()
        self._failures: dict[Hashable, int] = {}
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []
        self._stop = threading.Event()
        # Passes run only while set: a replica that does not lead (leader.py) keeps its queue and
        # cache, and runs nothing.
        self.gate = threading.Event()
        self.gate.set()

    def enqueue(self, key: Hashable, urgent: bool = False) -> None:
        self.queue.add(key, urgent)

    def enqueue_soon(self, key: Hashable, delay: float) -> None:
        self.queue.add_soon(key, delay)

    def forget(self, key: Hashable) -> None:
        self.queue.forget(key)
        with self._lock:
            self._failures.pop(key, None)

    def failures(self, key: Hashable) -> int:
        with self._lock:
            return self._failures.get(key, 0)

    def process_one(self, timeout: Optional[float] = None) -> bool:
        """Take one key and run its pass; False if none came. The workers loop on this."""
        key = self.queue.get(timeout)
        if key is None:
            return False
        try:
            with self._lock:
                failures = self._failures.get(key, 0)
            try:
                result = self._process(key, failures)
            except Exception as exc:  # noqa: BLE001 -- every failure is retried, none is dropped
                with self._lock:
                    failures = self._failures[key] = self._failures.get(key, 0) + 1
                delay = backoff(failures, self._rng.uniform)
                metrics.RETRIES.labels(getattr(exc, "kind", type(exc).__name__)).inc()
                log.warning("pass for %s failed (%d in a row), retrying in %.1fs: %s", key, failures, delay, exc)
                self.queue.add_after(key, delay)
                return True
            with self._lock:
                self._failures.pop(key, None)
            if result.requeue_after is not None:
                self.queue.add_after(key, result.requeue_after)
            return True
        finally:
            self.queue.done(key)

    def resync(self) -> None:
        """Every key once, at a random moment within the next period: never all at once."""
        for key in self._keys():
            self.queue.add_after(key, self._rng.uniform(0, self._resync_seconds))

    def start(self) -> None:
        for i in range(self._workers):
            t = threading.Thread(target=self._work, name=f"reconcile-{i}", daemon=True)
            t.start()
            self._threads.append(t)
        t = threading.Thread(target=self._resync_loop, name="resync", daemon=True)
        t.start()
        self._threads.append(t)

    def _work(self) -> None:
        while not self._stop.is_set():
            if self.gate.wait(1.0):
                self.process_one()  # woken by work, or by stop (the queue closes)

    def _resync_loop(self) -> None:
        while not self._stop.wait(self._resync_seconds):
            self.resync()

    def stop(self) -> None:
        self._stop.set()
        self.queue.close()
        for t in self._threads:
            t.join(timeout=30)
        self._threads.clear()
