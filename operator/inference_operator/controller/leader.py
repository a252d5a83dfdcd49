"""Leader election on a coordination.k8s.io/v1 Lease, so that two replicas of the operator never act
at once (issue #11). Every replica watches and keeps its cache warm; only the leader's workers run
passes.

The rules are client-go's (leaderelection.LeaderElector): a candidate takes the Lease when nobody
holds it, or when its record has not changed for ``lease_seconds`` as this candidate's own clock
measures it (the holder's clock is never compared with ours); the leader renews every
``retry_seconds`` and gives up when it could not renew for ``renew_seconds`` (less than the lease,
so it stops before anyone else may start); writes carry the resourceVersion read, so two
candidates never both win. On a clean stop the leader releases the Lease (no holder, a 1 s
lease), so a rolling update hands over within one retry instead of a whole lease.

Why not kopf's peering: it pauses operators that see a higher-priority peer, through a CRD of its
own, and promises no exclusivity during the handover. Why not the client's leaderelection
module: it blocks in time.sleep, cannot release on stop, and judges expiry by comparing the
holder's timestamps with the local clock. ``decide`` is pure; ``Elector`` does the I/O through a
small ``LeaseApi``, so both are tested with a fake clock.
"""

from __future__ import annotations

import dataclasses
import datetime
import logging
import socket
import threading
import time
import uuid
from typing import Any, Callable, Optional, Protocol

log = logging.getLogger(__name__)

LEASE_NAME = "inference-operator"
LEASE_SECONDS = 15.0
RENEW_SECONDS = 10.0
RETRY_SECONDS = 2.0


def boottime() -> float:
    """Seconds on a clock that keeps counting while the machine is suspended (CLOCK_BOOTTIME, where
    there is one): a leader suspended past its deadline must see that it was. Monotonic elsewhere."""
    return time.clock_gettime(time.CLOCK_BOOTTIME) if hasattr(time, "CLOCK_BOOTTIME") else time.monotonic()


def identity() -> str:
    """This process: the pod's name (its hostname) and a random suffix, as client-go does."""
    return f"{socket.gethostname()}_{uuid.uuid4().hex[:8]}"


def _micro_time(at: float) -> str:
    return datetime.datetime.fromtimestamp(at, datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclasses.dataclass(frozen=True)
class Record:
    """What a Lease says: who holds it, for how long, since when; and its resourceVersion."""

    holder: str = ""
    lease_seconds: float = 0
    acquire_time: str = ""
    renew_time: str = ""
    transitions: int = 0
    resource_version: str = ""

    @classmethod
    def of(cls, lease: Optional[dict[str, Any]]) -> Optional["Record"]:
        if lease is None:
            return None
        spec = lease.get("spec") or {}
        return cls(holder=spec.get("holderIdentity") or "", lease_seconds=spec.get("leaseDurationSeconds") or 0,
                   acquire_time=spec.get("acquireTime") or "", renew_time=spec.get("renewTime") or "",
                   transitions=spec.get("leaseTransitions") or 0,
                   resource_version=(lease.get("metadata") or {}).get("resourceVersion", ""))

    @property
    def observed(self) -> tuple:
        """What must change for a holder to count as alive: any write of the record."""
        return (self.holder, self.renew_time, self.acquire_time, self.transitions, self.resource_version)


CREATE, ACQUIRE, RENEW, WAIT = "create", "acquire", "renew", "wait"


def decide(record: Optional[Record], me: str, unchanged_for: float) -> str:
    """What a candidate does now: create the Lease, acquire it (free, or its holder silent for a
    whole lease), renew it (ours), or wait. ``unchanged_for``: seconds since this candidate last
    saw the record change, by its own clock."""
    if record is None:
        return CREATE
    if record.holder == me:
        return RENEW
    if not record.holder or unchanged_for >= record.lease_seconds:
        return ACQUIRE
    return WAIT


class LeaseApi(Protocol):
    def get(self, namespace: str, name: str) -> Optional[dict[str, Any]]: ...
    def create(self, namespace: str, body: dict[str, Any]) -> dict[str, Any]: ...
    def replace(self, namespace: str, name: str, body: dict[str, Any]) -> dict[str, Any]: ...


class Elector:
    """One candidate. ``run()`` loops ``step()`` until ``stop()``; ``on_started`` runs once when it
    becomes the leader, ``on_stopped`` once when it loses the Lease (not on a clean stop)."""

    def __init__(self, api: LeaseApi, namespace: str, name: str = LEASE_NAME, me: Optional[str] = None, *,
                 lease_seconds: float = LEASE_SECONDS, renew_seconds: float = RENEW_SECONDS,
                 retry_seconds: float = RETRY_SECONDS, on_started: Callable[[], None] = lambda: None,
                 on_stopped: Callable[[], None] = lambda: None, clock: Callable[[], float] = boottime,
                 wall: Callable[[], float] = time.time) -> None:
        if not 0 < retry_seconds < renew_seconds < lease_seconds:
            raise ValueError("leader election needs retry < renew deadline < lease duration")
        self.api, self.namespace, self.name = api, namespace, name
        self.me = me or identity()
        self.lease_seconds, self.renew_seconds, self.retry_seconds = lease_seconds, renew_seconds, retry_seconds
        self.on_started, self.on_stopped = on_started, on_stopped
        self.clock, self.wall = clock, wall
        self.leading = False
        self.lost = False
        self._observed: Optional[tuple] = None
        self._observed_at = clock()
        self._renewed_at = 0.0
        self.started_at: Optional[float] = None  # when it last became the leader (its clock)
        self._record: Optional[Record] = None
        self._stop = threading.Event()

    def _body(self, record: Optional[Record], acquire: bool) -> dict[str, Any]:
        now = _micro_time(self.wall())
        spec = {"holderIdentity": self.me, "leaseDurationSeconds": int(self.lease_seconds), "renewTime": now,
                "acquireTime": now if acquire or record is None else record.acquire_time,
                "leaseTransitions": (record.transitions + (1 if acquire and record.holder else 0)) if record else 0}
        metadata: dict[str, Any] = {"name": self.name, "namespace": self.namespace}
        if record is not None:
            metadata["resourceVersion"] = record.resource_version
        return {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": metadata, "spec": spec}

    def step(self) -> float:
        """One look at the Lease, and the write it calls for; the seconds until the next step."""
        now = self.clock()
        try:
            record = Record.of(self.api.get(self.namespace, self.name))
            if self.leading and (record is None or record.holder != self.me):
                return self._lose(now, "another replica holds the Lease")
            if record is None or record.observed != self._observed:
                self._observed, self._observed_at = (record.observed if record else None), now
            action = decide(record, self.me, now - self._observed_at)
            if action != WAIT:
                body = self._body(record, acquire=action in (CREATE, ACQUIRE))
                written = self.api.create(self.namespace, body) if action == CREATE else \
                    self.api.replace(self.namespace, self.name, body)
                record = Record.of(written)
                self._observed, self._observed_at = record.observed, now
                self._renewed_at = now
                self._record = record
                if not self.leading:
                    self.leading, self.started_at = True, now
                    log.info("leader election: %s leads (Lease %s/%s)", self.me, self.namespace, self.name)
                    self.on_started()
                return self.retry_seconds
        except Exception as exc:  # noqa: BLE001 -- a conflict or an unreachable API server: try again
            log.info("leader election: %s could not read or write the Lease: %s", self.me, exc)
        if self.leading and now - self._renewed_at >= self.renew_seconds:
            return self._lose(now, f"it could not renew the Lease for {now - self._renewed_at:.0f}s")
        return self.retry_seconds

    def fence(self) -> Optional[str]:
        """Why this replica may not write now, or None. A leader whose last renewal is a renew
        deadline old may already be replaced (it was paused, or cut off): it writes nothing more,
        whether or not the elector's thread has run since."""
        if not self.leading:
            return f"{self.me} does not hold the Lease"
        since = self.clock() - self._renewed_at
        if since >= self.renew_seconds:
            return f"{self.me} last renewed the Lease {since:.1f}s ago (renew deadline {self.renew_seconds:g}s)"
        return None

    def write_seconds(self) -> float:
        """How long a write sent now may take, at most: until a lease after the last renewal, the
        earliest another replica may act (it waits a whole lease from the last change it saw). A
        write cut off there is retried by the next leader's pass, never delivered after it acts."""
        return max(0.0, self.lease_seconds - (self.clock() - self._renewed_at))

    def _lose(self, now: float, why: str) -> float:
        self.leading, self.lost = False, True
        log.warning("leader election: %s stops leading: %s", self.me, why)
        self.on_stopped()
        return self.retry_seconds

    def run(self) -> None:
        while not self._stop.is_set() and not self.lost:
            delay = self.step()
            self._stop.wait(delay)

    def start(self) -> threading.Thread:
        thread = threading.Thread(target=self.run, name="leader-election", daemon=True)
        thread.start()
        return thread

    def stop(self, release: bool = True) -> None:
        """Stop campaigning; the leader releases the Lease (no holder, a 1 s lease), so another
        replica takes over at its next step."""
        self._stop.set()
        # The fence closes before the Lease is free: a pass still running writes nothing after.
        was_leading, self.leading = self.leading, False
        if release and was_leading and self._record is not None:
            body = self._body(self._record, acquire=False)
            body["spec"].update(holderIdentity="", leaseDurationSeconds=1)
            try:
                self.api.replace(self.namespace, self.name, body)
                log.info("leader election: %s released the Lease", self.me)
            except Exception as exc:  # noqa: BLE001 -- the others take over when it expires
                log.warning("leader election: %s could not release the Lease: %s", self.me, exc)


class KubernetesLeases:
    """LeaseApi over the official client's CoordinationV1Api (dicts in, dicts out)."""

    def __init__(self, api_client: Any = None, user_agent: Optional[str] = None) -> None:
        import kubernetes

        self._client = api_client or kubernetes.client.ApiClient()
        if user_agent:
            self._client.user_agent = user_agent
        self._api = kubernetes.client.CoordinationV1Api(self._client)

    def _plain(self, obj: Any) -> dict[str, Any]:
        return self._client.sanitize_for_serialization(obj)

    def get(self, namespace: str, name: str) -> Optional[dict[str, Any]]:
        import kubernetes

        try:
            return self._plain(self._api.read_namespaced_lease(name, namespace, _request_timeout=5))
        except kubernetes.client.ApiException as exc:
            if exc.status == 404:
                return None
            raise

    def create(self, namespace: str, body: dict[str, Any]) -> dict[str, Any]:
        return self._plain(self._api.create_namespaced_lease(namespace, body, _request_timeout=5))

    def replace(self, namespace: str, name: str, body: dict[str, Any]) -> dict[str, Any]:
        return self._plain(self._api.replace_namespaced_lease(name, namespace, body, _request_timeout=5))
