"""``kubectl-inference``: the kubectl plugin (kubectl finds it on PATH as ``kubectl inference``).

get (a tree, ``-w``, ``--output json``), the manual controls of a canary (promote, abort, pause,
resume: the README's annotations), render and crd for people who only have kubectl, and the
rollout dashboard. The standard flags ``-n``, ``--context`` and ``--kubeconfig`` work before or
after the command. Exit codes: 0 done, 1 the cluster refused or could not be reached, 2 a usage
error (a bad name), 3 nothing to act on (promote with no canary running, resume when not paused).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from typing import Optional, Sequence

from inference_operator import __version__, api
from inference_operator.cli import cmd_crd, cmd_render
from inference_operator.kubectl import controls, overview
from inference_operator.kubectl.userclient import (
    EXIT_ERROR,
    EXIT_OK,
    EXIT_USAGE,
    Cluster,
    UserError,
    checked_name,
    checked_namespace,
)
from inference_operator.rollout import canary


def _namespace_arg(text: str) -> str:
    try:
        return checked_namespace(text)
    except UserError as exc:
        raise argparse.ArgumentTypeError(exc.line.removeprefix("error: ")) from None


def _number(low: float, high: float, kind=float):
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"{text} is not between {low:g} and {high:g}")
        return value

    return parse


def _cluster(args: argparse.Namespace) -> Cluster:
    return Cluster(kubeconfig=args.kubeconfig, context=args.context, namespace=args.namespace)


# ---- get --------------------------------------------------------------------------------------------


def view(cluster: Cluster, name: str) -> dict:
    isvc = cluster.isvc(name)
    deployments, pods, hpa, route = cluster.children(isvc)
    return overview.overview(isvc, deployments, pods, hpa, route=route)


def _print(view_: dict, output: str) -> None:
    """text: the tree; json: one indented document; json-line: one line (a watch's stream)."""
    if output == "text":
        sys.stdout.write(overview.tree(view_))
    else:
        sys.stdout.write(json.dumps(view_, indent=2 if output == "json" else None, sort_keys=True) + "\n")
    sys.stdout.flush()


def _comparable(view_: dict) -> dict:
    """The view without what changes every second (ages), so a watch prints only real changes."""
    text = json.dumps(view_, sort_keys=True)
    return json.loads(re.sub(r'"ageSeconds": [0-9.e+-]+', '"ageSeconds": 0', text))


def _cmd_get(args: argparse.Namespace) -> int:
    name = checked_name(args.name)
    cluster = _cluster(args)
    if not args.watch:
        _print(view(cluster, name), args.output)
        return EXIT_OK
    tty = sys.stdout.isatty() and args.output == "text"
    last = None
    try:
        while True:
            try:
                current = view(cluster, name)
            except UserError as exc:
                if "(NotFound)" in exc.line or "(Forbidden)" in exc.line:
                    raise
                print(exc.line, file=sys.stderr)  # the API server away: keep watching
                time.sleep(args.interval)
                continue
            if tty:
                sys.stdout.write("\x1b[H\x1b[2J")  # refreshed in place
                _print(current, args.output)
            elif _comparable(current) != last:
                if last is not None and args.output == "text":
                    sys.stdout.write("\n")
                _print(current, "json-line" if args.output == "json" else args.output)
            last = _comparable(current)
            time.sleep(args.interval)
    except KeyboardInterrupt:
        return EXIT_OK


# ---- the manual controls --------------------------------------------------------------------------


_DONE = {canary.PROMOTE: "promoted past its current step", canary.PROMOTE_FULL: "promoted fully",
         canary.ABORT: "aborted", "pause": "paused", "resume": "resumed"}


def _cmd_control(args: argparse.Namespace) -> int:
    name = checked_name(args.name)
    action = canary.PROMOTE_FULL if args.command == "promote" and args.full else args.command
    cluster = _cluster(args)
    request = controls.plan(cluster.isvc(name), action, str(time.time_ns()))
    cluster.annotate(name, request.annotations)
    what = ", ".join(f"{k}={v}" if v is not None else f"{k}-" for k, v in request.annotations.items())
    note = f" ({request.note})" if request.note else ""
    print(f"{api.PLURAL}/{name} {_DONE[action]}{note} [{what}]")
    return EXIT_OK


# ---- render, crd, dashboard -------------------------------------------------------------------------


def _cmd_dashboard(args: argparse.Namespace) -> int:
    from inference_operator.kubectl import dashboard

    token = None
    if args.prometheus_token_file and not args.prometheus:
        # A token goes only to the Prometheus named with it, never to an address from a spec.
        raise UserError("error: --prometheus-token-file needs --prometheus (the token is sent there only)", EXIT_USAGE)
    if args.prometheus_token_file:
        try:
            token = open(args.prometheus_token_file, encoding="utf-8").read().strip()
        except OSError as exc:
            raise UserError(f"error: cannot read {args.prometheus_token_file}: {exc.strerror or exc}") from exc
    cluster = _cluster(args)
    return dashboard.serve(cluster, port=args.port, prometheus=args.prometheus, refresh=args.refresh,
                           all_namespaces=args.all_namespaces, token=token)


def _cmd_version(args: argparse.Namespace) -> int:
    print(f"kubectl-inference {__version__}")
    return EXIT_OK


def _kube_flags(parser: argparse.ArgumentParser, suppress: bool) -> None:
    default = argparse.SUPPRESS if suppress else None
    parser.add_argument("-n", "--namespace", default=default, type=_namespace_arg,
                        help="the namespace (default: the context's)")
    parser.add_argument("--context", default=default, help="the kubeconfig context to use")
    parser.add_argument("--kubeconfig", default=default, help="the kubeconfig file (default: $KUBECONFIG, ~/.kube/config)")


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, exit 2 (argparse's own code), as kubectl words it
        print(f"error: {message}; see '{self.prog} -h'", file=sys.stderr)
        raise SystemExit(EXIT_USAGE)


def parser() -> argparse.ArgumentParser:
    p = _Parser(prog="kubectl inference", description="Inspect and steer InferenceServices (inference-operator).")
    _kube_flags(p, suppress=False)
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)

    def command(name: str, help_: str, func) -> argparse.ArgumentParser:
        s = sub.add_parser(name, help=help_, description=help_)
        _kube_flags(s, suppress=True)
        s.set_defaults(func=func)
        return s

    g = command("get", "an InferenceService as a tree: revisions, Deployments, pods, canary, analysis, autoscaler",
                _cmd_get)
    g.add_argument("name")
    g.add_argument("-w", "--watch", action="store_true", help="refresh in place until interrupted")
    g.add_argument("-o", "--output", choices=("text", "json"), default="text")
    g.add_argument("--interval", type=_number(0.2, 3600), default=2.0, help="seconds between refreshes with -w (2)")
    for action, help_ in (("promote", "past the canary's current step (a gate, a held or analysed step); "
                                      "--full: every remaining step skipped"),
                          ("abort", "roll the canary back now"),
                          ("pause", "hold the canary where it is (a level, until resume)"),
                          ("resume", "let a paused canary go on")):
        c = command(action, help_, _cmd_control)
        c.add_argument("name")
        if action == "promote":
            c.add_argument("--full", action="store_true", help="promote now, skipping the remaining steps")
    r = command("render", "the children of every InferenceService in a file, with no cluster", cmd_render)
    r.add_argument("-f", "--filename", required=True, help="a file, or - for stdin")
    command("crd", "the CustomResourceDefinition", cmd_crd)
    d = command("dashboard", "serve the rollout view on 127.0.0.1", _cmd_dashboard)
    d.add_argument("--port", type=_number(0, 65535, int), default=3100,
                   help="the port on 127.0.0.1 (3100; 0: any free port)")
    d.add_argument("--prometheus", help="Prometheus's URL (default: each InferenceService's analysis address, "
                                        "then its keda.serverAddress, then $INFERENCE_OPERATOR_PROMETHEUS_URL)")
    d.add_argument("--prometheus-token-file", help="a file holding a bearer token for Prometheus (default: the "
                                                   "analysis's secretName, read as you, when it names one)")
    d.add_argument("--refresh", type=_number(0.5, 3600), default=2.0, help="seconds between the page's refreshes while a "
                                                             "rollout runs (2)")
    d.add_argument("-A", "--all-namespaces", action="store_true", help="list InferenceServices of every namespace")
    command("version", "the plugin's version", _cmd_version)
    return p


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parser().parse_args(argv)
    try:
        return args.func(args)
    except UserError as exc:
        print(exc.line, file=sys.stderr)
        return exc.code
    except BrokenPipeError:
        return EXIT_ERROR


if __name__ == "__main__":
    sys.exit(main())
