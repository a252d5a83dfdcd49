"""The REST edge, against a local HTTP server that records what the client really sends."""

import http.server
import json
import threading

import kubernetes
import pytest

from inference_operator import api
from inference_operator.controller import metrics
from inference_operator.kinds import DEPLOYMENT, Ref
from inference_operator.kube import ApiError, RestKube
from inference_operator.problems import Event


class Recorder(http.server.BaseHTTPRequestHandler):
    requests: list = []
    replies: dict = {}

    def _handle(self):
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        Recorder.requests.append({
            "method": self.command, "path": self.path,
            "content_type": self.headers.get("Content-Type"),
            "body": json.loads(body) if body else None,
        })
        status, payload = Recorder.replies.get((self.command, self.path.split("?")[0]), (200, {"ok": True}))
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_PATCH = do_POST = do_DELETE = _handle

    def log_message(self, *args):
        pass


@pytest.fixture
def kube():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Recorder)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    Recorder.requests, Recorder.replies = [], {}
    config = kubernetes.client.Configuration()
    config.host = f"http://127.0.0.1:{server.server_address[1]}"
    yield RestKube(kubernetes.client.ApiClient(config), count=metrics.count_request)
    server.shutdown()
    server.server_close()


def test_apply_is_server_side_apply_with_our_field_manager(kube):
    obj = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d", "namespace": "ns"}}
    kube.apply(obj)
    (req,) = Recorder.requests
    assert req["method"] == "PATCH"
    assert req["path"] == "/apis/apps/v1/namespaces/ns/deployments/d?fieldManager=inference-operator&force=true"
    assert req["content_type"] == "application/apply-patch+yaml"
    assert req["body"] == obj


def test_get_returns_none_on_404_and_raises_otherwise(kube):
    Recorder.replies[("GET", "/apis/apps/v1/namespaces/ns/deployments/gone")] = (404, {"reason": "NotFound"})
    assert kube.get(Ref(DEPLOYMENT, "ns", "gone")) is None
    Recorder.replies[("GET", "/apis/apps/v1/namespaces/ns/deployments/x")] = (
        403, {"reason": "Forbidden", "message": "no access"})
    with pytest.raises(ApiError) as err:
        kube.get(Ref(DEPLOYMENT, "ns", "x"))
    assert err.value.status == 403 and err.value.message == "no access" and not err.value.transient


def test_delete_has_a_uid_precondition(kube):
    kube.delete(Ref(DEPLOYMENT, "ns", "d"), "uid-1")
    (req,) = Recorder.requests
    assert req["method"] == "DELETE" and req["body"]["preconditions"] == {"uid": "uid-1"}


def test_status_is_a_merge_patch_under_our_field_manager_with_a_resource_version(kube):
    kube.patch_status("ns", "demo", {"observedGeneration": 2}, "41")
    (req,) = Recorder.requests
    assert req["path"] == (f"/apis/{api.API_VERSION}/namespaces/ns/inferenceservices/demo/status"
                           "?fieldManager=inference-operator")
    assert req["content_type"] == "application/merge-patch+json"
    assert req["body"] == {"metadata": {"resourceVersion": "41"}, "status": {"observedGeneration": 2}}


def test_a_stale_status_write_is_a_conflict(kube):
    Recorder.replies[("PATCH", f"/apis/{api.API_VERSION}/namespaces/ns/inferenceservices/demo/status")] = (
        409, {"reason": "Conflict", "message": "the object has been modified"})
    with pytest.raises(ApiError) as err:
        kube.patch_status("ns", "demo", {}, "1")
    assert err.value.kind == "conflict" and err.value.verb == "patch"
    assert err.value.resource == "inferenceservices/status"


@pytest.mark.parametrize(
    "status,message,kind",
    [(0, "", "transient"), (429, "", "transient"), (500, "", "transient"), (503, "", "transient"),
     (409, "", "conflict"), (403, "forbidden", "refused"), (401, "", "refused"), (422, "", "invalid"),
     (400, "", "invalid"), (404, "", "gone"),
     (400, 'admission webhook "policy.example.com" denied the request: no GPUs for you', "refused"),
     (422, "ValidatingAdmissionPolicy 'gpu-limits' with binding 'b' denied request: too many", "refused"),
     (403, "unable to create new content in namespace x because it is being terminated", "terminating")],
)
def test_errors_are_classified_once(status, message, kind):
    assert ApiError(status, "R", message).kind == kind


def test_requests_are_counted_by_verb_and_resource(kube):
    from inference_operator.controller import metrics

    def count(verb, resource):
        return metrics.API_REQUESTS.labels(verb, resource, "200")._value.get()

    before = count("apply", "deployments"), count("get", "deployments"), count("patch", "inferenceservices/status")
    kube.apply({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d", "namespace": "ns"}})
    kube.get(Ref(DEPLOYMENT, "ns", "d"))
    kube.patch_status("ns", "demo", {}, "1")
    after = count("apply", "deployments"), count("get", "deployments"), count("patch", "inferenceservices/status")
    assert [a - b for a, b in zip(after, before)] == [1, 1, 1]


def test_event_regards_the_inferenceservice(kube):
    isvc = api.parse({"metadata": {"name": "demo", "namespace": "ns", "uid": "u1"},
                      "spec": {"model": {"name": "m", "storageUri": "pvc://x"}}})
    kube.event(isvc, Event("Warning", "ChildConflict", "taken"))
    (req,) = Recorder.requests
    assert req["path"] == "/apis/events.k8s.io/v1/namespaces/ns/events"
    body = req["body"]
    assert (body["type"], body["reason"], body["note"]) == ("Warning", "ChildConflict", "taken")
    assert body["regarding"]["uid"] == "u1" and body["regarding"]["kind"] == "InferenceService"


def test_a_fenced_replica_sends_no_write_but_still_reads(kube):
    """Leader election's fence: checked before every write, never before a read."""
    why = ["replica-a last renewed the Lease 5.0s ago (renew deadline 4s)"]
    kube.fence = lambda: why[0]
    kube.get(Ref(DEPLOYMENT, "ns", "d"))
    for write in (lambda: kube.apply({"apiVersion": "apps/v1", "kind": "Deployment",
                                      "metadata": {"name": "d", "namespace": "ns"}}),
                  lambda: kube.delete(Ref(DEPLOYMENT, "ns", "d"), "u"),
                  lambda: kube.patch_status("ns", "demo", {}, "1")):
        with pytest.raises(ApiError) as err:
            write()
        assert err.value.reason == "NotLeader" and "renew deadline" in err.value.message
    assert [r["method"] for r in Recorder.requests] == ["GET"]
    why[0] = None
    kube.patch_status("ns", "demo", {}, "1")
    assert [r["method"] for r in Recorder.requests] == ["GET", "PATCH"]


def test_a_kill_point_dies_before_the_nth_write_in_its_namespace(kube, monkeypatch):
    from inference_operator.controller import faults

    killed = []
    monkeypatch.setattr(faults.signal, "pthread_kill", lambda tid, sig: killed.append((tid, sig)))
    monkeypatch.setenv(faults.ENV, "ns:2")
    kube.before_write = faults.from_env().before_write
    obj = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d", "namespace": "ns"}}
    kube.apply(dict(obj, metadata={"name": "d", "namespace": "other"}))  # another namespace: not counted
    kube.get(Ref(DEPLOYMENT, "ns", "d"))  # a read: not counted
    kube.apply(obj)
    assert not killed
    kube.apply(obj)
    assert killed == [(faults.threading.get_ident(), faults.signal.SIGKILL)]


@pytest.mark.parametrize("value", ["ns", "ns:", ":3", "ns:x", "ns:0", "ns:2:SIGTERM", "ns:2:"])
def test_a_kill_point_is_namespace_colon_count(value):
    from inference_operator.controller import faults

    with pytest.raises(ValueError, match=faults.ENV):
        faults.KillPoint.parse(value)


def test_a_stop_point_freezes_before_the_fence_is_consulted(kube, monkeypatch):
    """SIGSTOP before the write, the fence after: a leader frozen mid-pass meets the fence when it
    wakes (e2e/test_leader.py freezes one there)."""
    from inference_operator.controller import faults

    order = []
    monkeypatch.setattr(faults.signal, "pthread_kill", lambda tid, sig: order.append(sig))
    kube.before_write = faults.KillPoint.parse("ns:1:SIGSTOP").before_write
    kube.fence = lambda: order.append("fence") or "replaced"
    with pytest.raises(ApiError):
        kube.patch_status("ns", "demo", {}, "1")
    assert order == [faults.signal.SIGSTOP, "fence"] and not Recorder.requests


def test_a_write_under_election_is_bounded_by_the_time_left(kube, monkeypatch):
    """A quarter of it per connection attempt (urllib3 tries 4 times): no write reaches the API
    server after another replica may act. Reads keep their usual timeouts."""
    timeouts = []
    call = kube.client.call_api
    monkeypatch.setattr(kube.client, "call_api", lambda *a, **kw: timeouts.append(kw["_request_timeout"]) or call(*a, **kw))
    kube.write_seconds = lambda: 8.0
    kube.get(Ref(DEPLOYMENT, "ns", "d"))
    kube.patch_status("ns", "demo", {}, "1")
    kube.write_seconds = lambda: 100.0
    kube.patch_status("ns", "demo", {}, "1")
    assert timeouts == [(10, 60), (2.0, 2.0), (10, 25.0)]
