"""The kubectl plugin's and the dashboard's door to the API server: as the user, from their
kubeconfig (``--kubeconfig``, ``KUBECONFIG``, ``--context``), never the operator's client.

Objects come back as plain dicts, the shape ``overview`` reads. Every failure is a ``UserError``
with one line worded as kubectl words it (``Error from server (NotFound): ...``) and the exit code
a script can act on.
"""

from __future__ import annotations

import json
import re
from typing import Any, Optional
from urllib.parse import quote

from inference_operator import api, naming

Obj = dict[str, Any]

# Exit codes of `kubectl inference` (the README's table).
EXIT_OK, EXIT_ERROR, EXIT_USAGE, EXIT_NOTHING_TO_DO = 0, 1, 2, 3


# A DNS subdomain (RFC 1123), as the API server wants an object's name; a namespace is a DNS label.
_NAME = re.compile(api.DNS_SUBDOMAIN_RE)
_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


def valid_name(name: str) -> bool:
    return len(name) <= 253 and bool(_NAME.match(name))


def valid_namespace(namespace: str) -> bool:
    return len(namespace) <= 63 and bool(_LABEL.match(namespace))


def checked_name(name: str) -> str:
    if not valid_name(name):
        raise UserError(f'error: "{name}" is not a valid {api.KIND} name: lower case letters, digits, "-" '
                        f'and ".", starting and ending with a letter or digit, at most 253 characters',
                        EXIT_USAGE)
    return name


def checked_namespace(namespace: str) -> str:
    if not valid_namespace(namespace):
        raise UserError(f'error: "{namespace}" is not a valid namespace: lower case letters, digits and "-", '
                        f'starting and ending with a letter or digit, at most 63 characters', EXIT_USAGE)
    return namespace


class UserError(Exception):
    def __init__(self, line: str, code: int = EXIT_ERROR) -> None:
        super().__init__(line)
        self.line = " ".join(line.split())
        self.code = code


def _refusal(exc: Any, server: str) -> UserError:
    """kubectl's one line for a failed request (a ``kube.ApiError``): ``Error from server
    (Forbidden): <the server's message>``, or that the server could not be reached."""
    cause = exc.__cause__
    if exc.status == 0:
        return UserError(f"error: cannot reach the API server at {server}: {getattr(cause, 'reason', None) or exc.message}")
    reason, message = exc.reason, exc.message
    body = getattr(cause, "body", None)  # an ApiException: its body is the API server's Status
    if body:
        try:
            status = json.loads(body)
            reason, message = status.get("reason") or reason, status.get("message") or ""
        except (TypeError, ValueError):
            message = str(body)
    return UserError(f"Error from server ({reason or exc.status}): {message or 'status ' + str(exc.status)}")


class Cluster:
    """The API server of one kubeconfig context, in one namespace."""

    def __init__(self, kubeconfig: Optional[str] = None, context: Optional[str] = None,
                 namespace: Optional[str] = None) -> None:
        import kubernetes

        from inference_operator.kube import RestKube

        path = kubeconfig or None
        try:
            self.client = kubernetes.config.new_client_from_config(config_file=path, context=context)
            namespace = namespace or _context_namespace(path, context)
        except kubernetes.config.ConfigException as exc:
            raise UserError(f"error: {exc}") from exc
        except OSError as exc:
            raise UserError(f"error: cannot read the kubeconfig: {exc}") from exc
        self.namespace = namespace or "default"
        self.server = self.client.configuration.host
        self.kube = RestKube(self.client)
        if not self.client.configuration.verify_ssl:
            # The kubeconfig asks for no verification (insecure-skip-tls-verify): kubectl says nothing.
            import warnings

            import urllib3

            warnings.filterwarnings("ignore", category=urllib3.exceptions.InsecureRequestWarning)

    # ---- raw requests --------------------------------------------------------------------------

    def request(self, method: str, path: str, body: Any = None, query: Optional[list] = None,
                content_type: str = "application/json") -> Obj:
        """One request through the operator's own transport (``kube.RestKube``) with the user's
        client; its errors as one line."""
        from inference_operator.kube import ApiError

        try:
            return self.kube.request(method, path, query=query, body=body, content_type=content_type) or {}
        except ApiError as exc:
            raise _refusal(exc, self.server) from exc
        except ValueError as exc:  # a body that is not JSON: something else answered
            raise UserError(f"error: {self.server} answered with something other than JSON") from exc

    # ---- what the plugin reads and writes --------------------------------------------------------

    def _isvc_path(self, namespace: str, name: str = "") -> str:
        base = f"/apis/{api.GROUP}/{api.VERSION}/namespaces/{_segment(namespace)}/{api.PLURAL}"
        return f"{base}/{_segment(name)}" if name else base

    def isvc(self, name: str, namespace: Optional[str] = None) -> Obj:
        return self.request("GET", self._isvc_path(namespace or self.namespace, name))

    def isvcs(self, namespace: Optional[str] = None) -> list[Obj]:
        return self.request("GET", self._isvc_path(namespace or self.namespace)).get("items") or []

    def children(self, isvc: Obj) -> tuple[list[Obj], list[Obj], Optional[Obj], Optional[Obj]]:
        """The Deployments and pods of an InferenceService, and (when readable) its HPA and its
        HTTPRoute (traffic: gatewayAPI)."""
        meta = isvc["metadata"]
        ns = _segment(meta["namespace"])
        query = [("labelSelector", naming.selector_string(meta["name"]))]
        deployments = self.request("GET", f"/apis/apps/v1/namespaces/{ns}/deployments", query=query)["items"]
        pods = self.request("GET", f"/api/v1/namespaces/{ns}/pods", query=query)["items"]
        return deployments, pods, self.hpa(isvc), self.route(isvc)

    def _optional(self, path: str) -> Optional[Obj]:
        """An object the view can do without: None when absent or not readable as this user."""
        try:
            return self.request("GET", path)
        except UserError as exc:
            if "(NotFound)" in exc.line or "(Forbidden)" in exc.line:
                return None
            raise

    def hpa(self, isvc: Obj) -> Optional[Obj]:
        state = (isvc.get("status") or {}).get("autoscaler") or {}
        if not state.get("name"):
            return None
        from inference_operator.desired.autoscaling import keda_hpa_name

        name = keda_hpa_name(state["name"]) if state.get("kind") == "ScaledObject" else state["name"]
        return self._optional(f"/apis/autoscaling/v2/namespaces/{_segment(isvc['metadata']['namespace'])}/"
                              f"horizontalpodautoscalers/{_segment(name)}")

    def route(self, isvc: Obj) -> Optional[Obj]:
        canary = ((isvc.get("spec") or {}).get("rollout") or {}).get("canary") or {}
        if canary.get("traffic") != "gatewayAPI":
            return None
        meta = isvc["metadata"]
        return self._optional(f"/apis/gateway.networking.k8s.io/v1/namespaces/{_segment(meta['namespace'])}/"
                              f"httproutes/{_segment(naming.names(meta['name']).route)}")

    def secret(self, namespace: str, name: str) -> Obj:
        """A Secret as the API server returns it (the analysis's Prometheus credentials, read as the
        user; ``promql.auth_from_secret`` decides whether it may be used)."""
        return self.request("GET", f"/api/v1/namespaces/{_segment(namespace)}/secrets/{_segment(name)}")

    def annotate(self, name: str, annotations: dict[str, Optional[str]], namespace: Optional[str] = None) -> Obj:
        """A JSON merge patch of the InferenceService's annotations (None removes one), as
        ``kubectl annotate`` sends it."""
        body = {"metadata": {"annotations": annotations}}
        return self.request("PATCH", self._isvc_path(namespace or self.namespace, name), body=body,
                            content_type="application/merge-patch+json")


def _segment(text: str) -> str:
    """One path segment, quoted: a name can never reach another path or a query."""
    return quote(text, safe="")


def _context_namespace(path: Optional[str], context: Optional[str]) -> Optional[str]:
    import kubernetes

    contexts, active = kubernetes.config.list_kube_config_contexts(config_file=path)
    chosen = next((c for c in contexts if c["name"] == context), None) if context else active
    return ((chosen or {}).get("context") or {}).get("namespace")
