"""kubectl-inference (plugin.py, controls.py, userclient.py) without a cluster: flags, names, exit codes and
what each control sends. The real path, through kubectl's plugin lookup against the local control
plane, is e2e/test_plugin.py."""

from __future__ import annotations

import json
import pathlib
import tomllib

import pytest

from inference_operator.kubectl import controls, plugin, userclient
from inference_operator.kubectl.userclient import EXIT_NOTHING_TO_DO, EXIT_USAGE, UserError

from .overview_objects import CANARY, canary_objects, isvc

ROOT = pathlib.Path(__file__).parents[1]
GROUP = "serving.inference-operator.io"


def test_kubectl_finds_the_plugin_under_its_name():
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts["kubectl-inference"] == "inference_operator.kubectl.plugin:main"


@pytest.mark.parametrize("argv", [
    ["-n", "ns", "--context", "c", "--kubeconfig", "k", "get", "x"],
    ["get", "x", "-n", "ns", "--context", "c", "--kubeconfig", "k"],
    ["--namespace", "other", "get", "-n", "ns", "x", "--context=c", "--kubeconfig=k"],
])
def test_the_standard_flags_go_before_or_after_the_command(argv):
    args = plugin.parser().parse_args(argv)
    assert (args.namespace, args.context, args.kubeconfig, args.name) == ("ns", "c", "k", "x")


def test_usage_errors_are_one_line_and_exit_2(capsys):
    with pytest.raises(SystemExit) as exc:
        plugin.main(["get"])
    assert exc.value.code == EXIT_USAGE
    err = capsys.readouterr().err
    assert err == "error: the following arguments are required: name; see 'kubectl inference get -h'\n"
    assert plugin.main(["get", "Not_A_Name"]) == EXIT_USAGE
    assert capsys.readouterr().err.startswith('error: "Not_A_Name" is not a valid InferenceService name')


@pytest.mark.parametrize("name,ok", [("resnet", True), ("a.b-c", True), ("a" * 253, True), ("a" * 254, False),
                                     ("-a", False), ("a-", False), ("A", False), ("a_b", False), ("", False)])
def test_names_are_checked_as_the_api_server_checks_them(name, ok):
    if ok:
        assert plugin.checked_name(name) == name
    else:
        with pytest.raises(UserError) as exc:
            plugin.checked_name(name)
        assert exc.value.code == EXIT_USAGE


class Recorded:
    """The InferenceService as the API server would return it, and the patches sent."""

    namespace = "default"

    def __init__(self, obj: dict) -> None:
        self.obj, self.patches = obj, []

    def isvc(self, name, namespace=None):
        return self.obj

    def annotate(self, name, annotations, namespace=None):
        self.patches.append((name, namespace, annotations))
        return self.obj


@pytest.mark.parametrize("argv,key,value", [
    (["promote"], "promote", None), (["promote", "--full"], "promote-full", None), (["abort"], "abort", None),
    (["pause"], "paused", "true")])
def test_each_control_sends_the_readme_annotation(monkeypatch, capsys, argv, key, value):
    cluster = Recorded(isvc(CANARY))
    monkeypatch.setattr(plugin, "_cluster", lambda args: cluster)
    assert plugin.main(argv + ["resnet"]) == 0
    [(name, namespace, patch)] = cluster.patches
    assert name == "resnet" and list(patch) == [f"{GROUP}/{key}"]
    assert patch[f"{GROUP}/{key}"] == value or (value is None and patch[f"{GROUP}/{key}"].isdigit())
    assert capsys.readouterr().out.startswith("inferenceservices/resnet ")


def test_each_request_is_a_new_token():
    first = controls.plan(isvc(CANARY), "promote", "t1").annotations
    assert first == {f"{GROUP}/promote": "t1"}
    assert controls.plan(isvc(CANARY), "promote", "t2").annotations == {f"{GROUP}/promote": "t2"}


def test_resume_removes_the_pause():
    request = controls.plan(isvc(CANARY, annotations={f"{GROUP}/paused": "true"}), "resume", "t1")
    assert request.annotations == {f"{GROUP}/paused": None}


@pytest.mark.parametrize("state,action,words", [
    (None, "promote", "has no canary in progress (status.canary.phase: none); nothing to promote"),
    (dict(CANARY, phase="Promoted"), "promote-full", "nothing to promote"),
    (dict(CANARY, phase="RolledBack"), "abort", "nothing to abort"),
    (dict(CANARY, phase="Promoting"), "promote", "is promoting already; nothing to promote"),
    (dict(CANARY, phase="Promoting"), "promote-full", "is promoting already"),
    (CANARY, "resume", "is not paused"),
])
def test_nothing_to_act_on_exits_3_and_writes_nothing(monkeypatch, capsys, state, action, words):
    cluster = Recorded(isvc(state))
    monkeypatch.setattr(plugin, "_cluster", lambda args: cluster)
    argv = ["promote", "--full"] if action == "promote-full" else [action]
    assert plugin.main(argv + ["resnet"]) == EXIT_NOTHING_TO_DO
    assert words in capsys.readouterr().err and cluster.patches == []


def test_an_abort_while_promoting_is_sent():
    # The operator rolls back even then (the README's "an abort while promoting").
    assert controls.plan(isvc(dict(CANARY, phase="Promoting")), "abort", "t").annotations == {f"{GROUP}/abort": "t"}


@pytest.mark.parametrize("state,note", [
    (None, "no canary in progress: the next one holds at its first step until resumed"),
    (dict(CANARY, phase="Holding"), "holding: the pause takes hold when the canary leaves Holding"),
    (dict(CANARY, phase="Promoting"), "promoting: this canary is past pausing"),
    (CANARY, "")])
def test_a_pause_says_when_it_takes_hold(state, note):
    request = controls.plan(isvc(state), "pause", "t")
    assert request.annotations == {f"{GROUP}/paused": "true"} and request.note.startswith(note)
    assert bool(request.note) == bool(note)


def test_pause_twice_is_nothing_to_do():
    with pytest.raises(UserError) as exc:
        controls.plan(isvc(CANARY, annotations={f"{GROUP}/paused": "true"}), "pause", "t1")
    assert exc.value.code == EXIT_NOTHING_TO_DO


@pytest.mark.parametrize("argv,words", [
    (["get", "x", "-w", "--interval", "-1"], "argument --interval: -1 is not between 0.2 and 3600"),
    (["get", "x", "--interval", "soon"], "argument --interval: 'soon' is not a number"),
    (["dashboard", "--port", "70000"], "argument --port: 70000 is not between 0 and 65535"),
    (["dashboard", "--refresh", "0"], "argument --refresh: 0 is not between 0.5 and 3600"),
    (["get", "x", "-n", "a/b"], 'argument -n/--namespace: "a/b" is not a valid namespace'),
    (["-n", "A", "get", "x"], 'argument -n/--namespace: "A" is not a valid namespace'),
])
def test_bad_flag_values_are_one_line_and_exit_2(capsys, argv, words):
    with pytest.raises(SystemExit) as exc:
        plugin.main(argv)
    err = capsys.readouterr().err
    assert exc.value.code == EXIT_USAGE and err.count("\n") == 1 and words in err, err


def test_names_reach_the_api_server_as_one_quoted_segment():
    cluster = userclient.Cluster.__new__(userclient.Cluster)
    assert cluster._isvc_path("ns", "a/../../x?y") == \
        f"/apis/{GROUP}/v1alpha1/namespaces/ns/inferenceservices/a%2F..%2F..%2Fx%3Fy"


@pytest.mark.parametrize("refusal,kept", [("NotFound", False), ("Forbidden", False), ("InternalError", True)])
def test_an_hpa_or_route_not_readable_is_left_out_and_other_errors_are_not(refusal, kept):
    cluster = userclient.Cluster.__new__(userclient.Cluster)

    def request(method, path, **_):
        raise UserError(f"Error from server ({refusal}): no")

    cluster.request = request
    obj = isvc(CANARY, autoscaler={"kind": "HorizontalPodAutoscaler", "name": "resnet"})
    obj["spec"]["rollout"]["canary"]["traffic"] = "gatewayAPI"
    for read in (cluster.hpa, cluster.route):
        if kept:
            with pytest.raises(UserError):
                read(obj)
        else:
            assert read(obj) is None


def test_get_prints_the_tree_or_json(monkeypatch, capsys):
    class Cluster(Recorded):
        def children(self, obj):
            deps, pods = canary_objects()
            return deps, pods, None, None

    monkeypatch.setattr(plugin, "_cluster", lambda args: Cluster(isvc(CANARY)))
    assert plugin.main(["get", "resnet"]) == 0
    assert "Progressing  step 1/3 (weight 25%)" in capsys.readouterr().out
    assert plugin.main(["get", "resnet", "-o", "json"]) == 0
    assert json.loads(capsys.readouterr().out)["canary"]["phase"] == "Progressing"


def test_a_refusal_from_the_server_is_its_one_line(monkeypatch, capsys):
    def refused(args):
        raise UserError('Error from server (Forbidden): inferenceservices "x" is forbidden:\n User "u" cannot get')

    monkeypatch.setattr(plugin, "_cluster", refused)
    assert plugin.main(["get", "x"]) == 1
    assert capsys.readouterr().err == ('Error from server (Forbidden): inferenceservices "x" is forbidden: '
                                       'User "u" cannot get\n')


class Watched(Recorded):
    """An InferenceService whose canary moves on at each look."""

    def __init__(self, states: list) -> None:
        super().__init__(isvc(states[0]))
        self.states, self.looks = states, 0

    def isvc(self, name, namespace=None):
        state = self.states[min(self.looks, len(self.states) - 1)]
        self.looks += 1
        return isvc(state)

    def children(self, obj):
        deps, pods = canary_objects()
        return deps, pods, None, None


def _watch(monkeypatch, capsys, states, tty: bool, argv: list[str], looks: int) -> str:
    cluster = Watched(states)
    monkeypatch.setattr(plugin, "_cluster", lambda args: cluster)
    monkeypatch.setattr(plugin.sys.stdout, "isatty", lambda: tty, raising=False)

    def sleep(seconds):  # Ctrl-C after `looks` looks
        if cluster.looks >= looks:
            raise KeyboardInterrupt

    monkeypatch.setattr(plugin.time, "sleep", sleep)
    assert plugin.main(argv) == 0  # Ctrl-C ends a watch with 0
    return capsys.readouterr().out


def test_a_watch_on_a_terminal_redraws_in_place(monkeypatch, capsys):
    paused = dict(CANARY, phase="Paused")
    out = _watch(monkeypatch, capsys, [CANARY, paused, paused], True, ["get", "resnet", "-w"], 3)
    assert out.count("\x1b[H\x1b[2J") == 3 and out.rindex("Paused") > out.rindex("\x1b[H")


def test_a_piped_watch_prints_each_change_once(monkeypatch, capsys):
    paused = dict(CANARY, phase="Paused")
    out = _watch(monkeypatch, capsys, [CANARY, CANARY, paused, paused], False, ["get", "resnet", "-w"], 4)
    assert "\x1b" not in out and out.count("Name:") == 2
    assert out.index("Canary:      Progressing") < out.index("Canary:      Paused")
    out = _watch(monkeypatch, capsys, [CANARY, paused, paused], False, ["get", "resnet", "-w", "-o", "json"], 3)
    assert [json.loads(line)["canary"]["phase"] for line in out.splitlines()] == ["Progressing", "Paused"]


def test_a_token_file_goes_only_with_the_prometheus_it_is_for(capsys, tmp_path):
    token = tmp_path / "token"
    token.write_text("t")
    assert plugin.main(["dashboard", "--prometheus-token-file", str(token)]) == EXIT_USAGE
    assert capsys.readouterr().err == ("error: --prometheus-token-file needs --prometheus (the token is sent "
                                       "there only)\n")


def test_controls_say_when_the_canary_will_not_move_at_once():
    gate = isvc(dict(CANARY, phase="Paused", stepIndex=1), annotations={f"{GROUP}/paused": "true"})
    assert controls.plan(gate, "resume", "t").note == "at a gate: it stays there until promoted"
    held = isvc(dict(CANARY, phase="Paused", stepIndex=0), annotations={f"{GROUP}/paused": "true"})
    assert controls.plan(held, "resume", "t").note == ""
    assert controls.plan(held, "promote", "t").note == ("paused by hand: it moves past this step and stays "
                                                         "paused until resumed")
    assert controls.plan(isvc(CANARY), "promote", "t").note == ""
