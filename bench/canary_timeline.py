"""How long a canary takes with a manifest's settings: the operator's own state machine (canary.py)
walked in simulated time, pods getting ready after a model load, every check passing (a promotion)
or failing (a rollback), manual gates promoted as soon as they are reached.

    .venv/bin/python bench/canary_timeline.py [-f manifests/samples/resnet-canary.yaml] [--load-seconds 60]

Prints each phase and step change with its time, then the totals. Only the decisions are real:
scheduling, image pulls and the analysis's queries take no time here.
"""

from __future__ import annotations

import argparse
import pathlib
import sys

import yaml

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "operator"))

from inference_operator import api  # noqa: E402
from inference_operator.api import validation  # noqa: E402
from inference_operator.rollout import analysis, canary  # noqa: E402
from inference_operator.rollout.split import Pods  # noqa: E402

TICK = 1.0


def walk(isvc: api.InferenceService, result: str, load_seconds: float) -> tuple[list[str], float]:
    spec = isvc.spec
    pods = Pods(spec.replicas, 0, spec.replicas, 0)
    born: dict[str, list[float]] = {"stable": [], "canary": []}  # when each not-ready pod was made
    state = None
    now, start = 0.0, 0.0
    lines: list[str] = []
    last = None
    annotations: dict[str, str] = {}
    for _ in range(200_000):
        ready_canary = pods.canary - sum(1 for t in born["canary"] if now - t < load_seconds)
        ready_stable = pods.stable - sum(1 for t in born["stable"] if now - t < load_seconds)
        pods = Pods(pods.stable, pods.canary, ready_stable, ready_canary)
        inputs = canary.Inputs(canary=spec.rollout.canary, replicas=spec.replicas, max_surge=spec.rollout.max_surge,
                               max_unavailable=spec.rollout.max_unavailable,
                               startup_timeout_seconds=spec.runtime.startup_timeout_seconds,
                               desired_revision="new", stable_revision="old", state=state, pods=pods, other=0,
                               actions=canary.actions_of(annotations), now=now)
        verdict = None
        if canary.analysis_due(inputs):
            check = api.CheckResult(name="all", result=result)
            verdict = analysis.Verdict(result, (check,), 1000, result)
        d = canary.decide(inputs, verdict)
        state = api.CanaryStatus.model_validate(d.state) if d.state else None
        where = (state.phase, state.step_index, state.weight) if state else None
        if where != last:
            lines.append(f"{now:8.0f} s  {state.phase:<11} step {state.step_index + 1} weight {state.weight}%")
            last = where
        if state.phase == canary.PAUSED and state.message and "by hand" in state.message:
            annotations[canary.ANNOTATION_PREFIX + canary.PROMOTE] = str(now)  # a person at the gate
        if d.promoted or state.phase in (canary.ROLLED_BACK, canary.ABORTED):
            return lines, now - start
        if d.split is not None:
            for track, before, after in (("stable", pods.stable, d.split.stable), ("canary", pods.canary, d.split.canary)):
                if after > before:
                    born[track] += [now] * (after - before)
                elif after < before:
                    born[track] = born[track][: max(0, len(born[track]) - (before - after))]
            pods = Pods(d.split.stable, d.split.canary, min(pods.stable_ready, d.split.stable),
                        min(pods.canary_ready, d.split.canary))
        now += TICK
    raise SystemExit("the canary never ended")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("-f", "--file", default=str(ROOT / "manifests" / "samples" / "resnet-canary.yaml"))
    parser.add_argument("--load-seconds", type=float, default=60.0, help="a new pod's model load, until ready")
    args = parser.parse_args()
    body = yaml.safe_load(pathlib.Path(args.file).read_text())
    body.setdefault("metadata", {}).setdefault("namespace", "default")
    problems = validation.validate(body)
    if problems:
        raise SystemExit("\n".join(str(p) for p in problems))
    isvc = api.parse(validation.defaulted(body))
    print(f"{args.file}: {isvc.spec.replicas} replicas, maxSurge {isvc.spec.rollout.max_surge}, "
          f"maxUnavailable {isvc.spec.rollout.max_unavailable}, model load {args.load_seconds:.0f} s, "
          "manual gates promoted at once")
    totals = {}
    for result, what in (("Pass", "promotion (every check passes)"), ("Fail", "rollback (every check fails)")):
        lines, took = walk(isvc, result, args.load_seconds)
        print(f"\n{what}:")
        print("\n".join(lines))
        totals[what] = took
    print()
    for what, took in totals.items():
        print(f"{what}: {took:.0f} s ({took / 60:.1f} min) from the spec change")


if __name__ == "__main__":
    main()
