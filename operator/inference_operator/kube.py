"""The operator's only door to the API server: a few typed calls over the official client.

Children are written with server-side apply under one field manager. Responses stay plain dicts,
the same shape the pure modules build and read.
"""

from __future__ import annotations

import datetime
import json
import uuid
from typing import Any, Optional, Protocol
from urllib.parse import quote

import kubernetes
import urllib3

from . import api
from .children import Ref, ref_of
from .config import FIELD_MANAGER
from .status import Event


class ApiError(Exception):
    def __init__(self, status: int, reason: str, message: str) -> None:
        super().__init__(f"{status} {reason}: {message}")
        self.status = status
        self.reason = reason
        self.message = message

    @property
    def transient(self) -> bool:
        return self.status in (0, 409, 429) or self.status >= 500


class Kube(Protocol):
    """What reconcile needs from the cluster; tests pass an in-memory fake."""

    def get(self, ref: Ref) -> Optional[dict[str, Any]]: ...

    def apply(self, obj: dict[str, Any]) -> dict[str, Any]: ...

    def delete(self, ref: Ref, uid: str) -> None: ...

    def list_pods(self, namespace: str, selector: str) -> list[dict[str, Any]]: ...

    def get_pvc(self, namespace: str, name: str) -> Optional[dict[str, Any]]: ...

    def get_isvc(self, namespace: str, name: str) -> Optional[dict[str, Any]]: ...

    def patch_status(self, namespace: str, name: str, status: dict[str, Any]) -> None: ...

    def event(self, isvc: api.InferenceService, event: Event) -> None: ...


def _isvc_path(namespace: str, name: str = "") -> str:
    path = f"/apis/{api.API_VERSION}/namespaces/{quote(namespace)}/{api.PLURAL}"
    return f"{path}/{quote(name)}" if name else path


def _path(ref: Ref) -> str:
    return f"{ref.kind.path_prefix}/namespaces/{quote(ref.namespace)}/{ref.kind.plural}/{quote(ref.name)}"


class RestKube:
    """Kube over the official client's ApiClient; one instance per process is enough."""

    def __init__(self, client: Optional[kubernetes.client.ApiClient] = None) -> None:
        self.client = client or kubernetes.client.ApiClient()

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
        try:
            response = self.client.call_api(*params, _request_timeout=(10, 60))
        except kubernetes.client.exceptions.ApiException as exc:
            raise ApiError(exc.status or 0, str(exc.reason), str(exc)) from exc
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            # Connection refused, reset, timed out: status 0, transient, retried like a 503.
            raise ApiError(0, type(exc).__name__, str(exc)) from exc
        data = response.read()
        payload = json.loads(data) if data else None
        if response.status >= 300:
            message = (payload or {}).get("message", "") if isinstance(payload, dict) else str(payload)
            reason = (payload or {}).get("reason", response.reason) if isinstance(payload, dict) else response.reason
            raise ApiError(response.status, str(reason), message)
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

    def delete(self, ref: Ref, uid: str) -> None:
        body = {
            "apiVersion": "v1",
            "kind": "DeleteOptions",
            "propagationPolicy": "Background",
            # Only the object we looked at: never a same-named newcomer.
            "preconditions": {"uid": uid},
        }
        try:
            self.request("DELETE", _path(ref), body=body)
        except ApiError as exc:
            if exc.status != 404:
                raise

    def list_pods(self, namespace: str, selector: str) -> list[dict[str, Any]]:
        result = self.request(
            "GET", f"/api/v1/namespaces/{quote(namespace)}/pods", query=[("labelSelector", selector)]
        )
        return list((result or {}).get("items") or [])

    def get_pvc(self, namespace: str, name: str) -> Optional[dict[str, Any]]:
        return self._get(f"/api/v1/namespaces/{quote(namespace)}/persistentvolumeclaims/{quote(name)}")

    def get_isvc(self, namespace: str, name: str) -> Optional[dict[str, Any]]:
        return self._get(_isvc_path(namespace, name))

    def patch_status(self, namespace: str, name: str, status: dict[str, Any]) -> None:
        self.request(
            "PATCH",
            _isvc_path(namespace, name) + "/status",
            body={"status": status},
            content_type="application/merge-patch+json",
        )

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

