"""A canary through reconcile passes over an in-memory Kube whose Deployments make pods the way the
deployment controller would: what is written, held and deleted, what status and Events say."""

from __future__ import annotations

import copy
import itertools

from inference_operator import api, kinds, naming, promql
from inference_operator.controller import analyzer
from inference_operator.controller.reconcile import reconcile
from inference_operator.kinds import DEPLOYMENT, Ref
from inference_operator.rollout import analysis, canary

from .helpers import CONFIG, isvc_body

STABLE = Ref(DEPLOYMENT, "ns", "demo-predictor")
CANARY = Ref(DEPLOYMENT, "ns", "demo-predictor-canary")
_names = itertools.count(1)


class Clock:
    def __init__(self) -> None:
        self.at = 1_800_000_000.0

    def __call__(self) -> str:
        return canary.format_time(self.at)


def materialize(kube) -> None:
    """The deployment controller and kubelet at once: each Deployment's pods at its template's
    revision, as many as its replicas, ready; pods of another revision replaced (Recreate)."""
    pods = []
    for ref, dep in kube.objects.items():
        if ref.kind.kind != "Deployment":
            continue
        labels = dep["spec"]["template"]["metadata"]["labels"]
        mine = [p for p in kube.pods if p["metadata"]["labels"].get(naming.TRACK_LABEL) == labels[naming.TRACK_LABEL]
                and p["metadata"]["labels"][naming.REVISION_LABEL] == labels[naming.REVISION_LABEL]]
        r = dep["spec"]["replicas"]
        mine = mine[:r]
        while len(mine) < r:
            mine.append({"metadata": {"name": f"{ref.name}-{next(_names)}", "labels": dict(labels)},
                         "status": {"conditions": [{"type": "Ready", "status": "True"}]}})
        pods += mine
        dep["status"] = {
            "observedGeneration": dep["metadata"]["generation"], "replicas": r, "updatedReplicas": r,
            "readyReplicas": r, "availableReplicas": r,
            "conditions": [{"type": "Progressing", "status": "True", "reason": "NewReplicaSetAvailable"}],
        }
    kube.pods = pods


def run(kube, body, clock, analyze):
    outcome = reconcile(kube.observe(body), kube, CONFIG, now=clock, analyze=analyze)
    if outcome.status_written:
        body["status"] = copy.deepcopy(kube.last_status)
    return outcome


def cond(body, ctype):
    return next(c for c in body["status"]["conditions"] if c["type"] == ctype)


def verdicts(result: str, asked: list):
    def analyze(isvc, inputs):
        asked.append(inputs.state.revision)
        check = api.CheckResult(name="errorRate", result=result, value=0.2 if result == "Fail" else 0.0,
                                bound="max 1%", message="20% > max 1%" if result == "Fail" else "0% within max 1%")
        return analysis.Verdict(result, (check,), 100, "errorRate")
    return analyze


CANARY_SPEC = {"maxSurge": 1, "maxUnavailable": 0, "canary": {
    "steps": [{"weight": 50}], "analysis": {"interval": "10s", "initialDelay": "10s", "checksPerStep": 2}}}


def started(fake_kube, result="Pass"):
    clock, asked = Clock(), []
    body = isvc_body(replicas=2, rollout=CANARY_SPEC)
    analyze = verdicts(result, asked)
    run(fake_kube, body, clock, analyze)
    materialize(fake_kube)
    run(fake_kube, body, clock, analyze)
    assert cond(body, "Ready")["status"] == "True" and "canary" not in body["status"]  # a first revision rolls out
    old = body["status"]["revision"]
    body["spec"]["model"]["version"] = 2
    body["metadata"]["generation"] = 2
    fake_kube.writes.clear()
    run(fake_kube, body, clock, analyze)
    return body, clock, asked, analyze, old


def walk(fake_kube, body, clock, analyze, until, passes=100):
    for _ in range(passes):
        materialize(fake_kube)
        clock.at += 5
        run(fake_kube, body, clock, analyze)
        if until(body):
            return
    raise AssertionError(body["status"])


def test_a_new_revision_starts_a_canary_beside_the_held_stable(fake_kube):
    body, clock, asked, analyze, old = started(fake_kube)
    state = body["status"]["canary"]
    assert state["phase"] == "Progressing" and state["weight"] == 50 and state["stableRevision"] == old
    assert fake_kube.writes[0] == ("apply", "Deployment/demo-predictor-canary")
    assert ("apply", "Deployment/demo-predictor") not in fake_kube.writes  # held at its revision
    dep = fake_kube.objects[CANARY]
    assert dep["spec"]["replicas"] == 1 and dep["spec"]["strategy"] == {"type": "Recreate"}
    assert naming.revision_of(fake_kube.objects[STABLE]) == old
    ready = cond(body, "Ready")
    assert (ready["status"], ready["reason"]) == ("True", "CanaryInProgress")
    assert f"The stable revision {old} keeps serving (2 ready)" in ready["message"]
    assert cond(body, "Progressing")["status"] == "True" and cond(body, "Progressing")["reason"] == "CanaryProgressing"
    assert [e.reason for e in fake_kube.events][-1] == "CanaryStarted"
    assert body["status"]["revision"] == old


def test_a_pass_that_changes_nothing_writes_nothing_during_a_canary(fake_kube):
    body, clock, asked, analyze, old = started(fake_kube)
    for _ in range(3):  # the pods move to the step's split; no time passes
        materialize(fake_kube)
        run(fake_kube, body, clock, analyze)
    assert fake_kube.objects[STABLE]["spec"]["replicas"] == 1 and fake_kube.objects[CANARY]["spec"]["replicas"] == 1
    materialize(fake_kube)
    fake_kube.writes.clear()
    outcome = run(fake_kube, body, clock, analyze)
    assert fake_kube.writes == [] and not outcome.status_written
    assert outcome.requeue_after is not None and outcome.requeue_after > 0


def test_a_good_canary_is_promoted_and_its_pods_serve_on(fake_kube):
    body, clock, asked, analyze, old = started(fake_kube)
    new = body["status"]["canary"]["revision"]
    walk(fake_kube, body, clock, analyze, lambda b: b["status"]["canary"]["phase"] == "Promoting")
    materialize(fake_kube)
    canary_pods = {p["metadata"]["name"] for p in fake_kube.pods
                   if p["metadata"]["labels"][naming.TRACK_LABEL] == "canary"}
    walk(fake_kube, body, clock, analyze, lambda b: b["status"]["canary"]["phase"] == "Promoted")
    materialize(fake_kube)
    run(fake_kube, body, clock, analyze)
    materialize(fake_kube)
    assert body["status"]["revision"] == new and body["status"]["canary"]["stableTrack"] == "canary"
    assert STABLE not in fake_kube.objects, "the old stable Deployment stays"
    dep = fake_kube.objects[CANARY]
    assert dep["spec"]["replicas"] == 2 and dep["spec"]["strategy"]["type"] == "RollingUpdate"
    serving = {p["metadata"]["name"] for p in fake_kube.pods}
    assert canary_pods <= serving and len(serving) == 2, "promotion restarted the canary's pods"
    assert cond(body, "Ready")["status"] == "True" and cond(body, "Progressing")["reason"] == "RolloutComplete"
    reasons = [e.reason for e in fake_kube.events]
    assert "CanaryPromoting" in reasons and "CanaryPromoted" in reasons
    # The promotion is not a second rollout: no RollingOut after it, no Ready flapping.
    assert "RollingOut" not in reasons[reasons.index("CanaryPromoted"):]
    assert len(asked) == 2 and set(asked) == {new}
    # The next revision's canary runs in the other track.
    body["spec"]["model"]["version"] = 3
    run(fake_kube, body, clock, analyze)
    assert STABLE in fake_kube.objects and fake_kube.objects[STABLE]["spec"]["strategy"] == {"type": "Recreate"}
    assert body["status"]["canary"]["stableTrack"] == "canary"


def test_a_failing_canary_is_rolled_back_and_not_tried_again(fake_kube):
    body, clock, asked, analyze, old = started(fake_kube, result="Fail")
    new = body["status"]["canary"]["revision"]
    walk(fake_kube, body, clock, analyze, lambda b: b["status"]["canary"]["phase"] == "RolledBack")
    assert CANARY not in fake_kube.objects
    assert fake_kube.objects[STABLE]["spec"]["replicas"] == 2 and naming.revision_of(fake_kube.objects[STABLE]) == old
    assert body["status"]["canary"]["failedRevision"] == new and body["status"]["revision"] == old
    for ctype, status in (("Degraded", "True"), ("Stalled", "True"), ("Progressing", "False")):
        assert cond(body, ctype)["status"] == status and cond(body, ctype)["reason"] == "AnalysisFailed", ctype
    warnings = [e for e in fake_kube.events if e.type == "Warning"]
    assert [e.reason for e in warnings] == ["AnalysisFailed"], "one Warning for a rollback, not two"
    assert "errorRate" in warnings[0].message and "20% > max 1%" in warnings[0].message
    # Held off: passes later change nothing and write nothing.
    materialize(fake_kube)
    run(fake_kube, body, clock, analyze)
    fake_kube.writes.clear()
    for _ in range(3):
        clock.at += 30
        materialize(fake_kube)
        run(fake_kube, body, clock, analyze)
    assert fake_kube.writes == [] and CANARY not in fake_kube.objects
    # Ready says what serves: the stable revision, all of it again.
    assert cond(body, "Ready")["status"] == "True" and cond(body, "Ready")["reason"] == "StableServing"
    assert f"The stable revision {old} keeps serving (2 ready)" in cond(body, "Ready")["message"]


def test_reverting_the_spec_drains_the_canary_and_keeps_serving(fake_kube):
    body, clock, asked, analyze, old = started(fake_kube)
    for _ in range(3):
        materialize(fake_kube)
        run(fake_kube, body, clock, analyze)
    assert fake_kube.objects[CANARY]["spec"]["replicas"] == 1
    del body["spec"]["model"]["version"]
    fake_kube.events.clear()
    seen = []
    for _ in range(10):
        run(fake_kube, body, clock, analyze)
        seen.append((cond(body, "Ready")["status"], CANARY in fake_kube.objects))
        materialize(fake_kube)
        if CANARY not in fake_kube.objects:
            break
    assert body["status"]["canary"]["phase"] == "Aborted" and "failedRevision" not in body["status"]["canary"]
    assert all(ready == "True" for ready, _ in seen), seen  # the stable served all along
    assert seen[0][1], "the canary's Deployment went at once, before the stable was back"
    run(fake_kube, body, clock, analyze)
    assert CANARY not in fake_kube.objects and fake_kube.objects[STABLE]["spec"]["replicas"] == 2
    assert cond(body, "Ready")["reason"] == "Available" and cond(body, "Progressing")["status"] == "False"
    reasons = [e.reason for e in fake_kube.events]
    assert "CanaryAborted" in reasons and "RollingOut" not in reasons, reasons


GATEWAY = {"maxSurge": 1, "maxUnavailable": 0, "canary": {
    "steps": [{"weight": 20}, {"weight": 60}], "traffic": "gatewayAPI",
    "gatewayAPI": {"parentRefs": [{"name": "edge", "namespace": "infra"}], "hostnames": ["demo.example.com"]},
    "analysis": {"interval": "10s", "initialDelay": "10s", "checksPerStep": 1}}}
ROUTE = Ref(kinds.HTTPROUTE, "ns", "demo")
ROUTE_CRD = "httproutes.gateway.networking.k8s.io"


def weights(kube) -> list:
    return [(b["name"], b["weight"]) for b in kube.objects[ROUTE]["spec"]["rules"][0]["backendRefs"]]


def selects(kube, name) -> str:
    return kube.objects[Ref(kinds.SERVICE, "ns", name)]["spec"]["selector"][naming.TRACK_LABEL]


def test_gateway_api_routes_exact_weights_between_role_services(fake_kube):
    fake_kube.crds = frozenset({ROUTE_CRD})
    clock, asked = Clock(), []
    analyze = verdicts("Pass", asked)
    body = isvc_body(replicas=4, rollout=GATEWAY)
    run(fake_kube, body, clock, analyze)
    assert weights(fake_kube) == [("demo-stable", 100), ("demo-canary", 0)]
    route = fake_kube.objects[ROUTE]["spec"]
    assert route["parentRefs"] == [{"name": "edge", "namespace": "infra"}] and route["hostnames"] == ["demo.example.com"]
    assert selects(fake_kube, "demo-stable") == "stable" and selects(fake_kube, "demo-canary") == "canary"
    materialize(fake_kube)
    run(fake_kube, body, clock, analyze)
    body["spec"]["model"]["version"] = 2
    run(fake_kube, body, clock, analyze)
    assert weights(fake_kube) == [("demo-stable", 100), ("demo-canary", 0)]  # no ready canary pod yet
    seen = []
    for _ in range(100):
        materialize(fake_kube)
        clock.at += 5
        run(fake_kube, body, clock, analyze)
        if not seen or seen[-1] != weights(fake_kube):
            seen.append(weights(fake_kube))
        if body["status"]["canary"]["phase"] == "Promoted":
            break
    assert [w[1][1] for w in seen] == [20, 60, 100, 0], seen
    # Promoted: the stable role's Service now selects the track the canary ran in, pods unmoved.
    assert selects(fake_kube, "demo-stable") == "canary" and selects(fake_kube, "demo-canary") == "stable"
    assert weights(fake_kube) == [("demo-stable", 100), ("demo-canary", 0)]


def test_gateway_traffic_without_the_gateway_api_is_a_condition_and_writes_nothing(fake_kube):
    clock, asked = Clock(), []
    body = isvc_body(replicas=2, rollout=CANARY_SPEC)
    run(fake_kube, body, clock, verdicts("Pass", asked))
    materialize(fake_kube)
    run(fake_kube, body, clock, verdicts("Pass", asked))
    body["spec"]["rollout"] = GATEWAY
    fake_kube.writes.clear()
    outcome = run(fake_kube, body, clock, verdicts("Pass", asked))
    assert [w for w in fake_kube.writes if w[0] != "status"] == [] and ROUTE not in fake_kube.objects
    assert cond(body, "Degraded")["reason"] == "GatewayAPINotInstalled" and outcome.requeue_after is not None
    assert cond(body, "Ready")["status"] == "False" and "keeps serving (2 ready)" in cond(body, "Ready")["message"]
    fake_kube.crds = frozenset({ROUTE_CRD})  # installed: the next pass writes the route
    run(fake_kube, body, clock, verdicts("Pass", asked))
    assert ROUTE in fake_kube.objects and cond(body, "Degraded")["status"] == "False"
    body["spec"]["rollout"] = CANARY_SPEC  # and back to replicas: the role Services and route go
    run(fake_kube, body, clock, verdicts("Pass", asked))
    assert ROUTE not in fake_kube.objects and Ref(kinds.SERVICE, "ns", "demo-stable") not in fake_kube.objects


def test_a_weight_changed_behind_our_back_is_put_back(fake_kube):
    fake_kube.crds = frozenset({ROUTE_CRD})
    clock, asked = Clock(), []
    body = isvc_body(replicas=2, rollout=GATEWAY)
    run(fake_kube, body, clock, verdicts("Pass", asked))
    fake_kube.objects[ROUTE]["spec"]["rules"][0]["backendRefs"][1]["weight"] = 50
    fake_kube.objects[ROUTE]["spec"]["rules"][0]["matches"] = [{"path": {"type": "PathPrefix", "value": "/"}}]
    fake_kube.writes.clear()
    run(fake_kube, body, clock, verdicts("Pass", asked))
    assert fake_kube.writes == [("apply", "HTTPRoute/demo")] and weights(fake_kube)[1] == ("demo-canary", 0)
    fake_kube.objects[ROUTE]["spec"]["rules"][0]["matches"] = [{"path": {"type": "PathPrefix", "value": "/"}}]
    fake_kube.writes.clear()
    run(fake_kube, body, clock, verdicts("Pass", asked))
    assert fake_kube.writes == []  # what the API server defaults is not drift


def test_each_step_waits_for_its_own_pods_and_delay_through_the_api_servers_merge(fake_kube):
    """status.canary goes through real merge-patch semantics: a timer cleared for a new step
    (readyAt) must be cleared on the server too, or the step is analysed before its pods exist."""
    clock, asked = Clock(), []
    spec = {"maxSurge": 1, "maxUnavailable": 0, "canary": {
        "steps": [{"weight": 25}, {"weight": 75}], "analysis": {"interval": "10s", "initialDelay": "60s",
                                                                "checksPerStep": 1}}}
    analyze = verdicts("Pass", asked)
    body = isvc_body(replicas=4, rollout=spec)
    run(fake_kube, body, clock, analyze)
    materialize(fake_kube)
    run(fake_kube, body, clock, analyze)
    body["spec"]["model"]["version"] = 2
    run(fake_kube, body, clock, analyze)
    walk(fake_kube, body, clock, analyze, lambda b: b["status"]["canary"].get("stepIndex") == 1)
    step_started = canary.parse_time(body["status"]["canary"]["stepStartedAt"])
    assert "readyAt" not in body["status"]["canary"]
    walk(fake_kube, body, clock, analyze, lambda b: len(asked) == 2)
    state = body["status"]["canary"]
    assert canary.parse_time(state["lastAnalysisAt"]) >= canary.parse_time(state["readyAt"]) + 60 + 10
    assert canary.parse_time(state["readyAt"]) > step_started


def test_a_failed_revision_is_tried_again_once_the_spec_named_another(fake_kube):
    clock, asked = Clock(), []
    body = isvc_body(replicas=2, rollout=CANARY_SPEC)
    failing = verdicts("Fail", asked)
    run(fake_kube, body, clock, failing)
    materialize(fake_kube)
    run(fake_kube, body, clock, failing)
    body["spec"]["model"]["version"] = 2
    run(fake_kube, body, clock, failing)
    walk(fake_kube, body, clock, failing, lambda b: b["status"]["canary"]["phase"] == "RolledBack")
    del body["spec"]["model"]["version"]  # back to the stable revision
    walk(fake_kube, body, clock, failing, lambda b: "failedRevision" not in b["status"]["canary"])
    body["spec"]["model"]["version"] = 2  # and the failed one again: a new attempt
    run(fake_kube, body, clock, failing)
    assert body["status"]["canary"]["phase"] == "Progressing" and CANARY in fake_kube.objects


def test_while_time_passes_a_canary_writes_only_when_a_check_runs(fake_kube):
    body, clock, asked, analyze, old = started(fake_kube)
    for _ in range(4):
        materialize(fake_kube)
        run(fake_kube, body, clock, analyze)
    walk(fake_kube, body, clock, analyze, lambda b: len(asked) == 1)
    fake_kube.writes.clear()
    checks = len(asked)
    for _ in range(9):  # 9 s: less than one interval (10 s) until the next check
        clock.at += 1
        materialize(fake_kube)
        run(fake_kube, body, clock, analyze)
    assert len(asked) - checks <= 1
    assert len(fake_kube.writes) == len(asked) - checks, fake_kube.writes


def test_prometheus_credentials_come_only_from_a_secret_labelled_for_them(fake_kube):
    import base64

    from inference_operator.controller import analyzer

    def secret(name, labels=None, kind="Opaque", **data):
        fake_kube.objects[Ref(kinds.SECRET, "ns", name)] = {
            "metadata": {"name": name, "labels": labels or {}}, "type": kind,
            "data": {k: base64.b64encode(v.encode()).decode() for k, v in data.items()}}

    label = {promql.CREDENTIALS_LABEL: "true"}
    secret("ok", label, token="t0k")
    secret("basic", label, username="u", password="p")
    secret("unlabelled", token="t0k")
    secret("sa", label, "kubernetes.io/service-account-token", token="t0k")
    read = analyzer.secret_credentials(fake_kube)
    assert read("ns", "ok") == promql.Auth(token="t0k")
    assert read("ns", "basic") == promql.Auth(username="u", password="p")
    for name, words in (("unlabelled", "is not labelled"), ("sa", "service account token"), ("gone", "does not exist")):
        try:
            read("ns", name)
        except LookupError as exc:
            assert words in str(exc)
        else:
            raise AssertionError(f"{name} was read")


def test_a_canary_posts_its_own_events_not_one_per_scale(fake_kube):
    body, clock, asked, analyze, old = started(fake_kube)
    walk(fake_kube, body, clock, analyze, lambda b: b["status"]["canary"]["phase"] == "Promoted")
    assert "ChildrenUpdated" not in [e.reason for e in fake_kube.events]


def test_a_stable_deployment_deleted_behind_our_back_is_made_again_from_the_spec(fake_kube):
    body, clock, asked, analyze, old = started(fake_kube, result="Fail")
    walk(fake_kube, body, clock, analyze, lambda b: b["status"]["canary"]["phase"] == "RolledBack")
    materialize(fake_kube)
    run(fake_kube, body, clock, analyze)
    del fake_kube.objects[STABLE]
    fake_kube.pods = []
    run(fake_kube, body, clock, analyze)
    assert STABLE in fake_kube.objects and fake_kube.objects[STABLE]["spec"]["replicas"] == 2


def test_no_canary_while_a_deployment_made_before_tracks_is_moved_onto_them(fake_kube):
    """The migration's orphaned ReplicaSet still serves: the new revision rolls out plainly, and
    the stable track's Deployment is made, never held while missing."""
    clock, asked = Clock(), []
    analyze = verdicts("Pass", asked)
    body = isvc_body(replicas=2, rollout=CANARY_SPEC)
    run(fake_kube, body, clock, analyze)
    materialize(fake_kube)
    run(fake_kube, body, clock, analyze)
    # What a migration leaves: no stable Deployment yet, an orphaned ReplicaSet of ours.
    del fake_kube.objects[STABLE]
    rs = {"apiVersion": "apps/v1", "kind": "ReplicaSet",
          "metadata": {"name": "demo-predictor-abc", "namespace": "ns", "uid": "rs-1",
                       "labels": {naming.ISVC_LABEL: "demo"}},
          "spec": {"replicas": 2}, "status": {"replicas": 2, "availableReplicas": 2}}
    fake_kube.objects[Ref(kinds.REPLICASET, "ns", "demo-predictor-abc")] = rs
    body["spec"]["model"]["version"] = 2
    run(fake_kube, body, clock, analyze)
    assert STABLE in fake_kube.objects and CANARY not in fake_kube.objects
    assert "canary" not in body["status"] or body["status"]["canary"].get("phase") != "Progressing"


def test_a_secret_the_operator_may_not_read_holds_the_analysis_and_says_which_permission(fake_kube):
    """The Helm chart grants no Secret access unless asked: a canary naming Prometheus credentials
    gets an Error verdict (held, never passed) whose message names the value that grants it."""
    import types

    from inference_operator import kube

    body = isvc_body(rollout={"canary": {"steps": [{"weight": 50}], "analysis": {
        "prometheus": {"address": "http://prometheus:9090", "secretName": "prom"}}}})
    isvc = api.InferenceService.model_validate(body)

    def forbidden(namespace, name):
        raise kube.ApiError(403, "Forbidden", f'secrets "{name}" is forbidden: User cannot get resource "secrets"')

    analyze = analyzer.analyzer(CONFIG, forbidden)
    inputs = types.SimpleNamespace(canary=isvc.spec.rollout.canary, state=api.CanaryStatus(revision="r2"), now=0.0)
    verdict = analyze(isvc, inputs)
    assert verdict.result == analysis.ERROR
    assert "rbac.prometheusCredentialsSecrets=true" in verdict.message and "403 Forbidden" in verdict.message
