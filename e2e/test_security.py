"""Security (issue #12), with the chart's least-privilege RBAC (the suite's operator runs as its
ServiceAccount): a Secret's value and a presigned URL's query string never reach the operator's
log (at debug level), the InferenceService's status or its Events, though both are used: the token
goes to Prometheus, the URL to the model fetcher. A reference into another namespace is refused by
the API server (tests/validation_cases.py, run by e2e/test_parity.py); here, the operator reads
Secrets only in the InferenceService's own namespace."""

from __future__ import annotations

import base64
import http.server
import json
import threading
import uuid

import pytest

from .helpers import OPERATOR_ACCOUNT, OPERATOR_NAMESPACE, Kubectl, Operator, manifest, wait_for, wait_ready


class EchoingPrometheus(http.server.BaseHTTPRequestHandler):
    """A hostile Prometheus: it refuses every query with a body that repeats the request's
    Authorization header, so the error the operator gets back carries the token."""

    seen: list[str] = []

    def do_GET(self):  # noqa: N802 -- http.server's name
        auth = self.headers.get("Authorization", "")
        EchoingPrometheus.seen.append(auth)
        body = json.dumps({"status": "error", "errorType": "unauthorized",
                           "error": f"credentials {auth} are not valid for {self.path}"}).encode()
        self.send_response(401)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_POST = do_GET

    def log_message(self, *args):
        pass


@pytest.fixture
def echoing_prometheus():
    EchoingPrometheus.seen = []
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), EchoingPrometheus)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_no_secret_value_or_presigned_query_reaches_logs_status_or_events(
        kubectl: Kubectl, namespace: str, operator: Operator, audit, echoing_prometheus: str):
    ns = namespace
    token, signature = f"tok-{uuid.uuid4().hex}", f"sig{uuid.uuid4().hex}"
    leaks = {token, base64.b64encode(token.encode()).decode(), signature}

    def presigned(file: str) -> str:
        return (f"https://models.example.com/{file}?X-Amz-Algorithm=AWS4-HMAC-SHA256"
                f"&X-Amz-Credential=AKIAEXAMPLE%2F20261125&X-Amz-Expires=3600&X-Amz-Signature={signature}")

    # What the chart grants with rbac.prometheusCredentialsSecrets=true, here for this namespace only.
    kubectl.apply(f"""
apiVersion: v1
kind: Secret
metadata:
  name: prom-token
  namespace: {ns}
  labels: {{serving.inference-operator.io/prometheus-credentials: "true"}}
stringData: {{token: {token}}}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {{name: read-prometheus-credentials, namespace: {ns}}}
rules: [{{apiGroups: [""], resources: [secrets], verbs: [get]}}]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {{name: read-prometheus-credentials, namespace: {ns}}}
roleRef: {{apiGroup: rbac.authorization.k8s.io, kind: Role, name: read-prometheus-credentials}}
subjects: [{{kind: ServiceAccount, name: {OPERATOR_ACCOUNT}, namespace: {OPERATOR_NAMESPACE}}}]
""")
    # A Secret of the same name in another namespace: never the one read.
    other = f"{ns}-other"
    kubectl("create", "namespace", other)
    kubectl("create", "secret", "generic", "prom-token", "-n", other, "--from-literal=token=elsewhere")
    rollout = f"""\
        rollout:
          canary:
            steps: [{{weight: 50}}]
            analysis:
              prometheus: {{address: "{echoing_prometheus}", secretName: prom-token}}
              interval: 2s
              initialDelay: 1s
        """
    offset = audit.offset() if audit else 0
    operator.restart(args=("--log-level", "debug"))
    try:
        kubectl.apply(manifest("resnet", ns, replicas=2, gpu="count: 0", storage=presigned("v1.tar.gz"),
                               extra=rollout))
        wait_ready(kubectl, ns, "resnet")
        kubectl.apply(manifest("resnet", ns, replicas=2, gpu="count: 0", storage=presigned("v2.tar.gz"),
                               extra=rollout))
        # The analysis runs, with the token, and fails on the echoed answer: held, then rolled back.
        wait_for(lambda: any(token in seen for seen in EchoingPrometheus.seen), "a query that carries the token",
                 timeout=180)
        isvc = wait_for(lambda: (i := kubectl.json("infsvc", "resnet", "-n", ns))["status"].get("canary", {})
                        .get("lastAnalysisAt") and i, "an analysis recorded in status", timeout=120)
        assert "401" in json.dumps(isvc["status"]) or "unauthorized" in json.dumps(isvc["status"]), isvc["status"]
        wait_for(lambda: "<redacted>" in json.dumps(kubectl.json("infsvc", "resnet", "-n", ns)["status"]),
                 "the echoed token redacted in status")
    finally:
        log = operator.log()
        operator.restart()
        kubectl("delete", "namespace", other, "--wait=false", check=False)

    # Used, so the checks below are not vacuous: the URL is in the pods' fetcher, the token went out.
    deployment = json.dumps(kubectl.json("deployments", "-n", ns))
    assert signature in deployment
    assert f"Bearer {token}" in EchoingPrometheus.seen
    status = json.dumps(kubectl.json("infsvc", "resnet", "-n", ns)["status"])
    events = json.dumps(kubectl.json("events", "-n", ns))
    assert " DEBUG " in log  # the most the operator ever logs
    for leak in leaks:
        assert leak not in log, f"the operator's log holds {leak[:8]}...: " + \
            next(line for line in log.splitlines() if leak in line)[:500]
        assert leak not in status, status
        assert leak not in events, events
    if audit is not None:  # every Secret it asked for: the named one, in the InferenceService's namespace
        assert audit.objects(offset, "secrets") == {(ns, "prom-token")}
