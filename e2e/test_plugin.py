"""``kubectl inference`` (issue #13) on the local control plane, through the real kubectl's plugin
lookup, and the rollout view in a real headless Chromium.

- get, in each phase a canary goes through (the canary suite's harness: the operator as its own
  process, real tritonservers standing in for the pods, a real Prometheus): before any canary,
  Progressing, Paused by hand, Paused at a gate, Promoted, RolledBack, Holding and Aborted; ``-w``
  prints each change; ``--output json`` agrees with status and the pods;
- promote, abort, pause and resume change what the operator does, and say "nothing to do" (exit 3,
  nothing written) when there is nothing to act on;
- bad names, a missing object, missing permissions (ServiceAccounts with and without RBAC), an
  unknown context and an unreachable API server: one line on stderr and a non-zero exit;
- the dashboard, during a canary: the page draws each check's value against its bound, the weight
  and the replicas; the points are read back from the page's charts and compared with Prometheus
  and status; a screenshot lands in artifacts/.
"""

from __future__ import annotations

import json
import math
import time

import pytest

from inference_operator import api, cli
from inference_operator.api import crd
from inference_operator.rollout import analysis

from . import test_canary
from .canary_harness import MODEL, NAME, Harness
from .helpers import Kubectl, account_kubeconfig
from .helpers import manifest as e2e_manifest
from .helpers import wait_for
from .standins import BAD, GOOD, REVISION_LABEL
from .viewers import SETTLE_SECONDS, DashboardPage, Plugin, defined, series, settled_points

STEPS = "[{weight: 50}, {pause: {}}]"

# The canary suite's fixtures: its stand-in kubelet, traffic, invariants and Prometheus.
triton_home, backends, prometheus, harness = (test_canary.triton_home, test_canary.backends,
                                              test_canary.prometheus, test_canary.harness)


@pytest.fixture
def plugin(kubectl: Kubectl) -> Plugin:
    return Plugin(kubectl)


def annotations(h: Harness) -> dict[str, str]:
    return h.isvc()["metadata"].get("annotations") or {}


def control_annotations(h: Harness) -> dict[str, str]:
    return {k: v for k, v in annotations(h).items() if k.startswith(api.GROUP + "/")}


def test_get_and_the_controls_through_each_phase_of_canaries(harness: Harness, plugin: Plugin):
    h, ns = harness, harness.ns
    first = h.start_first_revision(steps=STEPS)

    # Before any canary: one revision at 100%, its pods as the API server lists them.
    view = plugin.json(NAME, "-n", ns)
    assert view["canary"] is None and view["revision"] == first
    assert [(r["revision"], r["role"], r["weight"]) for r in view["revisions"]] == [(first, "stable", 100)]
    pods = {p["metadata"]["name"] for p in h.pods()}
    assert {p["name"] for d in view["revisions"][0]["deployments"] for p in d["pods"]} == pods
    line = plugin.refused(3, "promote", NAME, "-n", ns)
    assert "has no canary in progress" in line and "nothing to promote" in line
    plugin.refused(3, "abort", NAME, "-n", ns)
    plugin.refused(3, "resume", NAME, "-n", ns)
    assert control_annotations(h) == {}, "a refused control wrote something"

    # A watch, in the background, prints every change from here on.
    watch = plugin.start("get", NAME, "-n", ns, "-w", "--interval", "0.5")
    try:
        # Progressing: both revisions, the step, its weight.
        h.apply(version=2, steps=STEPS)
        state = h.wait_phase("Progressing", also=lambda s: s.get("readyAt") is not None)["status"]["canary"]
        second = state["revision"]
        view = plugin.json(NAME, "-n", ns)
        c = view["canary"]
        assert (c["phase"], c["revision"], c["stableRevision"]) == ("Progressing", second, first)
        assert c["step"]["number"] == 1 and c["step"]["of"] == 2 and c["step"]["weight"] == 50
        roles = {r["role"]: r for r in view["revisions"]}
        assert set(roles) == {"stable", "canary"} and roles["canary"]["revision"] == second
        assert roles["stable"]["weight"] + roles["canary"]["weight"] == 100
        listed = {p["name"]: r["revision"] for r in view["revisions"] for d in r["deployments"] for p in d["pods"]}
        assert listed == {p["metadata"]["name"]: p["metadata"]["labels"][REVISION_LABEL] for p in h.pods()}
        text = plugin.ok("get", NAME, "-n", ns)
        assert "Progressing  step 1/2 (weight 50%)" in text and f"revision {second}  canary" in text

        # Paused by hand: the operator holds the canary, whatever its analysis says, until resumed.
        out = plugin.ok("pause", NAME, "-n", ns)
        assert out.startswith(f"inferenceservices/{NAME} paused")
        h.wait_phase("Paused", also=lambda s: s.get("stepIndex") == 0)
        assert "[paused by hand" in plugin.ok("get", NAME, "-n", ns)
        assert "paused already" in plugin.refused(3, "pause", NAME, "-n", ns)
        for _ in range(6):  # held over several analysis intervals (2 s)
            time.sleep(1)
            h.check()
            assert (h.canary_state()["phase"], h.canary_state()["stepIndex"]) == ("Paused", 0)
        plugin.ok("resume", NAME, "-n", ns)
        assert f"{api.GROUP}/paused" not in annotations(h)
        plugin.refused(3, "resume", NAME, "-n", ns)

        # Paused at the gate (step 2, a pause: {}), with the last analysis: values and bounds.
        gate = h.wait_phase("Paused", also=lambda s: s.get("stepIndex") == 1)["status"]["canary"]
        view = plugin.json(NAME, "-n", ns)
        c = view["canary"]
        assert c["step"]["kind"] == "gate" and not c["pausedByHand"]
        checks = {a["name"]: a for a in c["analysis"]}
        assert set(checks) == {"errorRate", "requestLatency"}
        assert checks["errorRate"]["limits"] == [{"kind": "max", "value": 0.05}]
        assert checks["errorRate"]["value"] == gate["analysis"][0]["value"]
        latency = checks["requestLatency"]
        assert latency["limits"][0]["value"] == pytest.approx(latency["stable"] * 1.5)
        text = plugin.ok("get", NAME, "-n", ns)
        print(f"$ kubectl inference get {NAME}    # at the gate\n{text}")
        assert "step 2/2 (gate: waits for `kubectl inference promote`)" in text
        assert "✔ errorRate" in text and "max 5%" in text

        # promote: past the gate, to Promoted.
        out = plugin.ok("promote", NAME, "-n", ns)
        print(f"$ kubectl inference promote {NAME}\n{out}")
        assert "promoted past its current step" in out
        h.wait_phase("Promoted")
        h.wait(lambda: h.isvc()["status"].get("revision") == second, "status.revision to follow the promotion")
        view = plugin.json(NAME, "-n", ns)
        assert view["canary"]["phase"] == "Promoted" and not view["canary"]["active"]
        assert view["revision"] == second
        print(f"$ kubectl inference promote {NAME}; echo $?\n{plugin.refused(3, 'promote', NAME, '-n', ns)}\n3")
    finally:
        code = watch.interrupt()
    assert code == 0, watch.stderr()
    printed = watch.text()
    # Each change printed once, in order: the phases as the operator went through them.
    phases = [line.split()[1] for line in printed.splitlines() if line.startswith("Canary:")]
    deduped = [p for i, p in enumerate(phases) if i == 0 or phases[i - 1] != p]
    assert deduped[0] == "Progressing" and deduped[-1] == "Promoted", deduped
    assert "Paused" in deduped, deduped

    # RolledBack: a revision failing every 2nd request.
    h.kubelet.profiles[second] = GOOD
    h.kubelet.default = BAD
    h.apply(version=3, steps=STEPS)
    third = h.wait_phase("Progressing", also=lambda s: s.get("revision") not in (first, second))["status"]["canary"]
    rolled = h.wait_phase("RolledBack")["status"]["canary"]
    view = plugin.json(NAME, "-n", ns)
    assert view["canary"]["phase"] == "RolledBack" and view["canary"]["reason"] == "AnalysisFailed"
    text = plugin.ok("get", NAME, "-n", ns)
    print(f"$ kubectl inference get {NAME}    # rolled back\n{text}")
    assert "RolledBack  (AnalysisFailed)" in text and "✖ errorRate" in text, text
    assert rolled["revision"] == third["revision"]

    # Holding: a canary with no traffic is inconclusive, then held; abort rolls it back by hand.
    h.kubelet.default = GOOD
    h.traffic.stop()
    h.apply(version=4, steps=STEPS)
    h.wait_phase("Holding", also=lambda s: s.get("revision") not in (first, second, third["revision"]))
    view = plugin.json(NAME, "-n", ns)
    assert view["canary"]["phase"] == "Holding" and view["canary"]["active"]
    assert all(a["result"] == "Inconclusive" for a in view["canary"]["analysis"])
    assert "Holding" in plugin.ok("get", NAME, "-n", ns)
    assert "aborted" in plugin.ok("abort", NAME, "-n", ns)
    h.wait_phase("Aborted")
    view = plugin.json(NAME, "-n", ns)
    assert (view["canary"]["phase"], view["canary"]["reason"]) == ("Aborted", "CanaryAborted")
    assert view["revision"] == second
    plugin.refused(3, "abort", NAME, "-n", ns)


def test_errors_are_one_line_with_an_exit_code_a_script_can_use(kubectl: Kubectl, namespace: str, plugin: Plugin,
                                                                tmp_path):
    ns = namespace
    kubectl.apply(e2e_manifest("plain", ns))
    wait_for(lambda: (kubectl.json("infsvc", "plain", "-n", ns).get("status") or {}).get("revision"),
             "the operator's first status")

    assert "is not a valid InferenceService name" in plugin.refused(2, "get", "Bad_Name", "-n", ns)
    assert plugin.refused(1, "get", "absent", "-n", ns) == \
        f'Error from server (NotFound): inferenceservices.{api.GROUP} "absent" not found'
    assert plugin.refused(2, "get") == ("error: the following arguments are required: name; "
                                        "see 'kubectl inference get -h'")
    assert plugin.refused(1, "get", "plain", "-n", ns, "--context", "nowhere").startswith("error:")

    # A reader may get, not steer; an account with no grant may not even get.
    kubectl.apply(f"""
apiVersion: v1
kind: ServiceAccount
metadata: {{name: reader, namespace: {ns}}}
---
apiVersion: v1
kind: ServiceAccount
metadata: {{name: nobody, namespace: {ns}}}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {{name: reader, namespace: {ns}}}
rules:
- {{apiGroups: [{api.GROUP}], resources: [inferenceservices], verbs: [get, list, watch]}}
- {{apiGroups: [apps], resources: [deployments], verbs: [list]}}
- {{apiGroups: [""], resources: [pods], verbs: [list]}}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {{name: reader, namespace: {ns}}}
roleRef: {{apiGroup: rbac.authorization.k8s.io, kind: Role, name: reader}}
subjects: [{{kind: ServiceAccount, name: reader, namespace: {ns}}}]
""")
    reader = Plugin(kubectl, account_kubeconfig(kubectl, tmp_path, "reader", ns, context="reader", namespace=ns))
    view = json.loads(reader.ok("get", "plain", "-o", "json"))  # the namespace from the context
    assert view["namespace"] == ns and view["revisions"]
    line = reader.refused(1, "pause", "plain")
    print(f"$ kubectl inference pause plain --kubeconfig reader.kubeconfig; echo $?\n{line}\n1")
    assert line.startswith("Error from server (Forbidden):") and "cannot patch resource" in line, line
    assert f"{api.GROUP}/paused" not in (kubectl.json("infsvc", "plain", "-n", ns)["metadata"].get("annotations") or {})
    nobody = Plugin(kubectl, account_kubeconfig(kubectl, tmp_path, "nobody", ns))
    line = nobody.refused(1, "get", "plain", "-n", ns)
    assert line.startswith("Error from server (Forbidden):") and "cannot get resource" in line, line

    # An API server that does not answer.
    config = json.loads(kubectl("config", "view", "--raw", "--minify", "-o", "json").stdout)
    config["clusters"][0]["cluster"]["server"] = "https://127.0.0.1:1"
    away = tmp_path / "away.kubeconfig"
    away.write_text(json.dumps(config))
    line = Plugin(kubectl, str(away)).refused(1, "get", "plain", "-n", ns)
    assert line.startswith("error: cannot reach the API server at https://127.0.0.1:1"), line


def test_render_and_crd_are_the_operator_commands(kubectl: Kubectl, plugin: Plugin, tmp_path, capsys):
    assert plugin.ok("crd") == crd.crd_yaml()
    good = tmp_path / "good.yaml"
    good.write_text(e2e_manifest("demo", "default"))
    assert cli.main(["render", "-f", str(good)]) == 0
    assert plugin.ok("render", "-f", str(good)) == capsys.readouterr().out
    bad = tmp_path / "bad.yaml"
    bad.write_text(e2e_manifest("demo", "default", replicas=-1))
    result = plugin("render", "-f", str(bad))
    assert result.returncode == 1 and "spec.replicas" in result.stderr and result.stdout == ""


# ---- the rollout view ---------------------------------------------------------------------------------


def _close(a: float, b: float) -> bool:
    return math.isclose(a, b, rel_tol=1e-6, abs_tol=1e-12)


def test_the_dashboard_draws_the_canary_checks_weight_and_replicas_in_a_real_browser(
        harness: Harness, plugin: Plugin):
    h, ns = harness, harness.ns
    h.start_first_revision(steps=STEPS)
    page = DashboardPage(plugin, ns, NAME, refresh=1.0).start()
    try:
        page.wait_updated()
        h.apply(version=2, steps=STEPS)
        isvc = h.wait_phase("Paused", also=lambda s: s.get("stepIndex") == 1)
        state = isvc["status"]["canary"]
        # Refreshes after the gate: the page fetched status and Prometheus on its own, and drew
        # enough for points that can no longer change (viewers.settled_points).
        n = page.wait_updated()
        page.wait_updated(after=n + 1 + 2 * SETTLE_SECONDS)
        assert page.text("phase") == "Paused at 50%"
        charts = page.charts()
        assert {"check-errorRate", "check-requestLatency", "weight", "replicas"} <= set(charts), list(charts)

        started = api.parse(isvc)
        cfg = started.spec.rollout.canary
        q = analysis.queries(cfg.analysis, ns, MODEL, state["revision"], state["stableRevision"])

        # errorRate: the canary's value at each point is what Prometheus answers for the analysis's
        # own query at that instant; the bound is max 5% all along.
        err = charts["check-errorRate"]
        xs = err["data"][0]
        start_at = analysis_time(state["startedAt"])
        assert xs[0] >= start_at - 61 and xs == sorted(xs) and len(xs) >= 5
        values = series(err, "canary")
        points = [(x, v) for x, v in zip(xs, values) if v is not None]
        assert len(points) >= 3, err
        assert all(0 <= v <= 0.05 for _, v in points), points  # a good canary: within its bound
        assert set(series(err, "max 5%")) == {0.05}
        compared = settled_points(xs, values)[-3:]
        assert len(compared) == 3, err
        for x, v in compared:
            answer = h._prometheus.query_at(q.canary["errorRate"], x)
            assert answer is not None and _close(v, answer), (x, v, answer)

        # requestLatency: canary and stable from Prometheus, the bound the stable's + 50% point by point.
        lat = charts["check-requestLatency"]
        canary_values, stable_values = series(lat, "canary"), series(lat, "stable " + state["stableRevision"])
        bound = series(lat, "stable +50%")
        assert len(defined(canary_values)) >= 3 and len(defined(stable_values)) >= 3
        assert all((s is None and b is None) or _close(b, s * 1.5) for s, b in zip(stable_values, bound))
        x, v = settled_points(lat["data"][0], stable_values)[-1]
        assert _close(v, h._prometheus.query_at(q.stable["requestLatency"], x))

        # The weight: 50% asked since the step started (status), and the canary's measured share.
        weight = charts["weight"]
        asked = series(weight, "weight asked")
        step_start = analysis_time(state["stepStartedAt"])
        assert {w for x, w in zip(weight["data"][0], asked) if x >= step_start + 1} == {50}
        measured = defined(series(weight, "canary's share"))
        assert measured and all(0 <= m <= 100 for m in measured) and 10 < measured[-1] < 90, measured

        # The replicas: pods reporting to Prometheus, and status's count.
        replicas = charts["replicas"]
        reporting = defined(series(replicas, "pods reporting"))
        assert reporting and reporting[-1] == len(h.kubelet.serving()), reporting
        assert defined(series(replicas, "replicas (status)"))[-1] == h.isvc()["status"]["replicas"]

        shot = page.screenshot("dashboard-canary.png")
        assert shot.stat().st_size > 10_000
        print(f"screenshot: {shot}")

        # It refreshes itself: a promotion shows without a reload.
        plugin.ok("promote", NAME, "-n", ns)
        h.wait_phase("Promoted")
        wait_for(lambda: page.text("phase") == "Promoted", "the page to show the promotion", timeout=60)
    finally:
        code = page.stop()
    assert code == 0


def analysis_time(text: str) -> float:
    from inference_operator.rollout import canary

    at = canary.parse_time(text)
    assert at is not None
    return at
