"""kubectl-inference (plugin.py, userclient.control) without a cluster: flags, names, exit codes and
what each control sends. The real path, through kubectl's plugin lookup against the local control
plane, is e2e/test_plugin.py."""

from __future__ import annotations

import json
import pathlib
import tomllib

import pytest

from inference_operator import plugin
from inference_operator.userclient import EXIT_NOTHING_TO_DO, EXIT_USAGE, UserError, control

from .test_overview import CANARY, canary_objects, isvc

ROOT = pathlib.Path(__file__).parents[1]
GROUP = "serving.inference-operator.io"


def test_kubectl_finds_the_plugin_under_its_name():
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts["kubectl-inference"] == "inference_operator.plugin:main"


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


@pytest.mark.parametrize("action,key,value", [
    ("promote", "promote", "t1"), ("promote-full", "promote-full", "t1"), ("abort", "abort", "t1"),
    ("pause", "paused", "true")])
def test_each_control_sends_the_readme_annotation(action, key, value):
    cluster = Recorded(isvc(CANARY))
    control(cluster, "resnet", action, "t1")
    assert cluster.patches == [("resnet", "default", {f"{GROUP}/{key}": value})]


def test_resume_removes_the_pause():
    cluster = Recorded(isvc(CANARY, annotations={f"{GROUP}/paused": "true"}))
    control(cluster, "resnet", "resume", "t1")
    assert cluster.patches == [("resnet", "default", {f"{GROUP}/paused": None})]


@pytest.mark.parametrize("state,action,words", [
    (None, "promote", "has no canary in progress (status.canary.phase: none); nothing to promote"),
    (dict(CANARY, phase="Promoted"), "promote-full", "nothing to promote"),
    (dict(CANARY, phase="RolledBack"), "abort", "nothing to abort"),
    (CANARY, "resume", "is not paused"),
])
def test_nothing_to_act_on_exits_3_and_writes_nothing(state, action, words):
    cluster = Recorded(isvc(state))
    with pytest.raises(UserError) as exc:
        control(cluster, "resnet", action, "t1")
    assert exc.value.code == EXIT_NOTHING_TO_DO and words in exc.value.line and cluster.patches == []


def test_pause_twice_is_nothing_to_do_and_pause_without_a_canary_holds_the_next(monkeypatch, capsys):
    cluster = Recorded(isvc(CANARY, annotations={f"{GROUP}/paused": "true"}))
    with pytest.raises(UserError) as exc:
        control(cluster, "resnet", "pause", "t1")
    assert exc.value.code == EXIT_NOTHING_TO_DO
    cluster = Recorded(isvc(None))
    monkeypatch.setattr(plugin, "_cluster", lambda args: cluster)
    assert plugin.main(["pause", "resnet"]) == 0
    assert "the next one holds at its first step until resumed" in capsys.readouterr().out


def test_get_prints_the_tree_or_json(monkeypatch, capsys):
    class Cluster(Recorded):
        def children(self, obj):
            deps, pods = canary_objects()
            return deps, pods, None

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
        return deps, pods, None


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
