"""How much one reconcile pass costs the operator's CPU, and how many writes a no-op resync sends.

    .venv/bin/python bench/reconcile_bench.py [--services 200] [--rounds 5]

Uses the in-memory Kube of the unit tests, so it measures the operator's own work (parse, render,
hash, plan, status), not the API server. Prints figures; asserts nothing about time.
"""

from __future__ import annotations

import argparse
import copy
import pathlib
import statistics
import sys
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

from inference_operator import api, kinds  # noqa: E402
from inference_operator.controller import cache  # noqa: E402
from inference_operator.controller.reconcile import reconcile  # noqa: E402
from inference_operator.controller.render_cache import RenderCache  # noqa: E402
from inference_operator.desired import children, render  # noqa: E402
from inference_operator.status import conditions  # noqa: E402
from tests.helpers import CONFIG, FakeKube, isvc_body  # noqa: E402

NOW = "2026-12-06T10:00:00Z"  # the passes' clock: status timestamps are RFC 3339


def body(i: int) -> dict:
    b = isvc_body(replicas=1 + i % 4, resources={"gpu": {"count": 1 + i % 2, "product": "NVIDIA-A100-SXM4-80GB"}})
    b["metadata"].update(name=f"svc-{i}", uid=f"uid-{i}")
    return b


def timed(fn, n: int) -> float:
    t0 = time.perf_counter()
    for _ in range(n):
        fn()
    return (time.perf_counter() - t0) / n


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--services", type=int, default=200)
    p.add_argument("--rounds", type=int, default=5)
    args = p.parse_args()

    bodies = [body(i) for i in range(args.services)]
    isvcs = [api.parse(b) for b in bodies]
    sample = isvcs[0]
    desired = [children.stamp(c, sample) for c in render.render(sample, CONFIG)]
    live = {kinds.ref_of(o): o for o in desired}

    per_call = {
        "parse (pydantic)": timed(lambda: api.parse(bodies[0]), 2000),
        "render (jinja2 + hash)": timed(lambda: render.render(sample, CONFIG), 500),
        "stamp + plan": timed(lambda: children.plan(sample, [children.stamp(c, sample) for c in desired], live), 2000),
        "status.compute": timed(lambda: conditions.compute(conditions.Seen(
            sample, deployment=desired[0], pods=[], desired_revision="x", problem=None, config=CONFIG, now=NOW)), 2000),
    }
    print("per call, one InferenceService:")
    for name, seconds in per_call.items():
        print(f"  {name:<24} {seconds * 1e6:8.1f} µs")

    # The operator's own path: snapshots from the cache, writes through it (the API is in memory).
    kube = FakeKube()
    store = cache.Store()
    renders = RenderCache()  # the operator keeps one for its lifetime
    writer = cache.WriteThrough(kube, store)
    store.upsert(cache.PVC, {"metadata": {"namespace": bodies[0]["metadata"]["namespace"], "name": "models", "uid": "pvc"}})
    keys = []
    for i, b in enumerate(bodies):
        b["metadata"].setdefault("resourceVersion", "1")
        kube.isvcs[(b["metadata"]["namespace"], b["metadata"]["name"])] = copy.deepcopy(b)
        store.upsert(cache.ISVC, b)
        keys.append((b["metadata"]["namespace"], b["metadata"]["name"]))
    first = []
    for key in keys:  # first pass: creates everything
        t0 = time.perf_counter()
        reconcile(store.observe(*key), writer, CONFIG, now=lambda: NOW, renders=renders)
        first.append(time.perf_counter() - t0)
    creates = len(kube.writes)

    resync = []
    kube.writes.clear()
    kube.reads.clear()
    for _ in range(args.rounds):
        t0 = time.perf_counter()
        for key in keys:
            reconcile(store.observe(*key), writer, CONFIG, now=lambda: NOW, renders=renders)
        resync.append(time.perf_counter() - t0)
    print(f"\n{args.services} InferenceServices, in-memory API:")
    print(f"  first pass (create)      median {statistics.median(first) * 1e3:6.2f} ms/service, "
          f"{creates} writes ({creates / args.services:.1f} per service)")
    print(f"  no-op resync of all      median {statistics.median(resync) * 1e3:6.1f} ms "
          f"({statistics.median(resync) / args.services * 1e3:.2f} ms/service), "
          f"writes: {len(kube.writes)}, reads: {len(kube.reads)} over {args.rounds} rounds")


if __name__ == "__main__":
    main()
