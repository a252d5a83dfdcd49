"""The only door to the API server: a few typed calls over the official client (the operator's,
and kubectl inference's with the user's own client: userclient.py).

Children are written with server-side apply under one field manager. Responses stay plain dicts,
the same shape the pure modules build and read.
"""

from __future__ import annotations

import datetime
import json
import logging
import re
import uuid
from typing import Any, Callable, Optional, Protocol
from urllib.parse import quote

import kubernetes
import urllib3

from inference_operator import api
from inference_operator.config import FIELD_MANAGER
from inference_operator.kinds import Ref, ref_of
from inference_operator.problems import Event

log = logging.getLogger(__name__)

# The error classes, decided once, here; the pass and the runner act on the class, never a code.
TRANSIENT = "transient"  # connection trouble, 429, 5xx: retried with backoff, reported if it persists
CONFLICT = "conflict"  # a stale resourceVersion or an object that already exists: run the pass again
REFUSED = "refused"  # RBAC, quota, an admission webhook: a condition and an Event, retried slowly
INVALID = "invalid"  # the object as built from the spec is invalid: a condition until the spec changes
GONE = "gone"  # 404
TERMINATING = "terminating"  # the namespace is being deleted: nothing to do


# An admission webhook's or a ValidatingAdmissionPolicy's denial: outside the spec, retried slowly.
_ADMISSION_DENIAL = re.compile(r'admission webhook ".*" denied the request|ValidatingAdmissionPolicy .* denied request')


# Etcd revisions are int64 counting up from 1: no object ever carries the largest one.
UNREACHABLE_RESOURCE_VERSION = str(2**63 - 1)


class ApiError(Exception):
    def __init__(self, status: int, reason: str, message: str, verb: str = "", resource: str = "") -> None:
        super().__init__(f"{status} {reason}: {message}")
        self.status = status
        self.reason = reason
        self.message = message
        self.verb = verb
        self.resource = resource

    @property
    def kind(self) -> str:
        if self.status == 404:
            return GONE
        if self.status == 409:
            return CONFLICT
        if self.status in (400, 422) and not _ADMISSION_DENIAL.search(self.message):
            return INVALID
        if self.status == 403 and "because it is being terminated" in self.message:
            return TERMINATING
        if self.status in (400, 401, 403, 422):
            return REFUSED  # RBAC, quota, or an admission webhook or policy that denied the request
        return TRANSIENT  # 0 (no response), 408, 410, 429, 5xx and anything unexpected

    @property
    def transient(self) -> bool:
        return self.kind in (TRANSIENT, CONFLICT)


class Kube(Protocol):
    """What reconcile needs from the cluster; tests pass an in-memory fake."""

    def get(self, ref: Ref) -> Optional[dict[str, Any]]:
        """A read the cache cannot answer: only after a create found the name taken."""

    def apply(self, obj: dict[str, Any]) -> dict[str, Any]: ...

    def create(self, obj: dict[str, Any]) -> dict[str, Any]:
        """Server-side apply that only creates: 409 (CONFLICT) if the name is taken, untouched."""

    def delete(self, ref: Ref, uid: str, propagation: str = "Background") -> None: ...

    def patch(self, ref: Ref, body: dict[str, Any]) -> dict[str, Any]: ...

    def patch_status(
        self, namespace: str, name: str, status: dict[str, Any], resource_version: str
    ) -> dict[str, Any]: ...

    def event(self, isvc: api.InferenceService, event: Event) -> None: ...


def _isvc_path(namespace: str, name: str = "") -> str:
    path = f"/apis/{api.API_VERSION}/namespaces/{quote(namespace)}/{api.PLURAL}"
    return f"{path}/{quote(name)}" if name else path


_VERBS = {"GET": "get", "POST": "create", "PUT": "update", "DELETE": "delete"}


def _verb(method: str, path: str, content_type: str) -> str:
    if method == "PATCH":
        return "apply" if content_type == "application/apply-patch+yaml" else "patch"
    return _VERBS.get(method, method.lower())


def _resource(path: str) -> str:
    """The resource a path names, as RBAC does: 'deployments', 'inferenceservices/status', ..."""
    parts = [p for p in path.split("?")[0].split("/") if p]
    if "namespaces" in parts:
        i = parts.index("namespaces")
        rest = parts[i + 2:]
    else:
        rest = parts[2:] if parts[:1] == ["api"] else parts[3:]
    if not rest:
        return "namespaces"
    return rest[0] + (f"/{rest[2]}" if len(rest) > 2 else "")


def _path(ref: Ref) -> str:
    return f"{ref.kind.path_prefix}/namespaces/{quote(ref.namespace)}/{ref.kind.plural}/{quote(ref.name)}"


def _uncounted(verb: str, resource: str, code: str) -> None:
    pass


class RestKube:
    """Kube over the official client's ApiClient; one instance per process is enough. ``count``
    is told each request's verb, resource and code (the operator counts them in its metrics)."""

    def __init__(self, client: Optional[kubernetes.client.ApiClient] = None,
                 count: Callable[[str, str, str], None] = _uncounted) -> None:
        self.client = client or kubernetes.client.ApiClient()
        self.count = count
        # With leader election: why this replica may not write now (None: it may). Checked before
        # every write, so a leader that was paused past its renew deadline (a stopped VM, a long GC
        # pause, SIGSTOP) sends nothing when it wakes, even before its elector notices the loss.
        self.fence: Optional[Callable[[], Optional[str]]] = None
        # With leader election: the seconds a write sent now may take (connection attempts and
        # reads included), so that none arrives after another replica may have started acting.
        self.write_seconds: Optional[Callable[[], float]] = None
        # A fault test's kill point (controller/faults.py): called with the path before each write.
        self.before_write: Optional[Callable[[str], None]] = None

    def request(
        self,
        method: str,
        path: str,
        *,
        query: Optional[list[tuple[str, str]]] = None,
        body: Any = None,
        content_type: str = "application/json",
    ) -> Optional[dict[str, Any]]:
        headers = {"Accept": "application/json"}
        if body is not None:
            headers["Content-Type"] = content_type
        params = self.client.param_serialize(
            method=method,
            resource_path=path,
            query_params=query or [],
            header_params=headers,
            body=body,
            auth_settings=["BearerToken"],
        )
        verb, resource = _verb(method, path, content_type if body is not None else ""), _resource(path)
        timeout: tuple[float, float] = (10, 60)
        if method != "GET":
            if self.before_write is not None:  # here, so a write frozen by a fault test meets the fence after
                self.before_write(path)
            why = self.fence() if self.fence is not None else None
            if why:
                self.count(verb, resource, "fenced")
                log.warning("not sent: %s %s: %s", verb, path, why)
                raise ApiError(0, "NotLeader", why, verb, resource)
            if self.write_seconds is not None:
                # urllib3 tries a connection up to 4 times: each attempt gets a quarter of the time left.
                share = max(self.write_seconds() / 4, 0.001)
                timeout = (min(timeout[0], share), min(timeout[1], share))
        try:
            response = self.client.call_api(*params, _request_timeout=timeout)
        except kubernetes.client.exceptions.ApiException as exc:
            self.count(verb, resource, str(exc.status or 0))
            raise ApiError(exc.status or 0, str(exc.reason), str(exc), verb, resource) from exc
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            # Connection refused, reset, timed out: status 0, transient, retried like a 503.
            self.count(verb, resource, "0")
            raise ApiError(0, type(exc).__name__, str(exc), verb, resource) from exc
        self.count(verb, resource, str(response.status))
        data = response.read()
        payload = json.loads(data) if data else None
        if response.status >= 300:
            message = (payload or {}).get("message", "") if isinstance(payload, dict) else str(payload)
            reason = (payload or {}).get("reason", response.reason) if isinstance(payload, dict) else response.reason
            raise ApiError(response.status, str(reason), message, verb, resource)
        return payload

    def get(self, ref: Ref) -> Optional[dict[str, Any]]:
        return self._get(_path(ref))

    def _get(self, path: str) -> Optional[dict[str, Any]]:
        try:
            return self.request("GET", path)
        except ApiError as exc:
            if exc.status == 404:
                return None
            raise

    def apply(self, obj: dict[str, Any]) -> dict[str, Any]:
        result = self.request(
            "PATCH",
            _path(ref_of(obj)),
            query=[("fieldManager", FIELD_MANAGER), ("force", "true")],
            body=obj,
            content_type="application/apply-patch+yaml",
        )
        assert result is not None
        return result

    def create(self, obj: dict[str, Any]) -> dict[str, Any]:
        """Creates with server-side apply (the fields are the apply manager's from the start, so a
        field later dropped from the template is removed), made create-only by a resourceVersion
        precondition no object can meet: an object of that name, whoever made it, fails it with
        409 and is left as it was. One request, where a GET before the apply would be two."""
        meta = dict(obj["metadata"], resourceVersion=UNREACHABLE_RESOURCE_VERSION)
        return self.apply(dict(obj, metadata=meta))

    def delete(self, ref: Ref, uid: str, propagation: str = "Background") -> None:
        body = {
            "apiVersion": "v1",
            "kind": "DeleteOptions",
            "propagationPolicy": propagation,
            # Only the object we looked at: never a same-named newcomer.
            "preconditions": {"uid": uid},
        }
        try:
            self.request("DELETE", _path(ref), body=body)
        except ApiError as exc:
            if exc.status != 404:
                raise

    def patch(self, ref: Ref, body: dict[str, Any]) -> dict[str, Any]:
        """A merge patch of an object no Deployment controls any more (an orphaned ReplicaSet)."""
        result = self.request("PATCH", _path(ref), query=[("fieldManager", FIELD_MANAGER)],
                              body=body, content_type="application/merge-patch+json")
        assert result is not None
        return result

    def patch_status(
        self, namespace: str, name: str, status: dict[str, Any], resource_version: str
    ) -> dict[str, Any]:
        """A merge patch of status under our field manager, valid only against resource_version:
        a writer that read a stale InferenceService gets 409 and runs its pass again, instead of
        writing over a newer status (a canary's step, later)."""
        result = self.request(
            "PATCH",
            _isvc_path(namespace, name) + "/status",
            query=[("fieldManager", FIELD_MANAGER)],
            body={"metadata": {"resourceVersion": resource_version}, "status": status},
            content_type="application/merge-patch+json",
        )
        assert result is not None
        return result

    def event(self, isvc: api.InferenceService, event: Event) -> None:
        now = datetime.datetime.now(datetime.timezone.utc)
        body = {
            "apiVersion": "events.k8s.io/v1",
            "kind": "Event",
            "metadata": {
                "name": f"{isvc.name}.{uuid.uuid4().hex[:16]}",
                "namespace": isvc.namespace,
            },
            "eventTime": now.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
            "reportingController": f"{api.GROUP}/{FIELD_MANAGER}",
            "reportingInstance": FIELD_MANAGER,
            "action": "Reconcile",
            "type": event.type,
            "reason": event.reason,
            "note": event.message[:1024],
            "regarding": {
                "apiVersion": api.API_VERSION,
                "kind": api.KIND,
                "name": isvc.name,
                "namespace": isvc.namespace,
                "uid": isvc.metadata.uid,
            },
        }
        self.request("POST", f"/apis/events.k8s.io/v1/namespaces/{quote(isvc.namespace)}/events", body=body)

