"""The ``inference-operator`` command: print the CRD, render children offline, run the operator."""

from __future__ import annotations

import argparse
import logging
import sys
from typing import Optional, Sequence

import pydantic
import yaml

from . import __version__, api, autoscaling, crd, render, validation, yamlout
from .config import OperatorConfig


def _cmd_crd(args: argparse.Namespace) -> int:
    sys.stdout.write(crd.crd_yaml())
    return 0


def _load(path: str) -> list[dict]:
    text = sys.stdin.read() if path == "-" else open(path, encoding="utf-8").read()
    docs = [d for d in yaml.safe_load_all(text) if d]
    return [d for d in docs if d.get("kind") == api.KIND]


def _cmd_render(args: argparse.Namespace) -> int:
    config = OperatorConfig.from_env()
    docs = _load(args.filename)
    if not docs:
        print(f"error: no {api.KIND} in {args.filename}", file=sys.stderr)
        return 1
    out = []
    for doc in docs:
        name = (doc.get("metadata") or {}).get("name", "?")
        # First what the API server would refuse, worded as it words it.
        refused = validation.validate(doc)
        if refused:
            details = "\n".join(f"  {v}" for v in refused)
            print(f'error: {api.KIND} "{name}" is invalid (the API server would refuse it):\n{details}',
                  file=sys.stderr)
            return 1
        try:
            isvc = api.parse(validation.defaulted(doc))
            out.extend(render.render(isvc, config))
            # As on a cluster with KEDA installed (a ScaledObject needs a Prometheus address).
            out.extend(autoscaling.children(isvc, config, frozenset({autoscaling.SCALEDOBJECT_CRD})))
        except pydantic.ValidationError as exc:
            print(f"error: {api.KIND} {name} is invalid:\n{exc}", file=sys.stderr)
            return 1
        except render.SpecError as exc:
            print(f"error: {api.KIND} {name}: {exc.reason}: {exc.message}", file=sys.stderr)
            return 1
    sys.stdout.write(yamlout.dump_all(out))
    return 0


def _cmd_fetch_model(args: argparse.Namespace) -> int:
    import pathlib

    from . import storage

    logging.basicConfig(level=logging.INFO, format="%(asctime)s fetch-model: %(message)s")
    overrides = args.config_overrides or ""
    try:
        storage.fetch(
            args.uri, pathlib.Path(args.repository), args.model, fmt=args.format, checksum=args.checksum,
            config_overrides=overrides, endpoint=args.endpoint, region=args.region, retries=args.retries,
        )
    except storage.FetchError as exc:
        line = f"{exc.reason}: {exc.message}"
        print(f"fetch-model failed: {line}", file=sys.stderr)
        if args.termination_log:
            # Kubernetes shows this file as the container's termination message: status quotes it.
            try:
                with open(args.termination_log, "w", encoding="utf-8") as f:
                    f.write(line[:4000])
            except OSError:
                pass
        return 1
    return 0


def _cmd_run(args: argparse.Namespace) -> int:
    from . import heap, memprofile

    if args.own_process:  # not when called in another program's process (tests)
        heap.reexec_with_malloc()  # returns at once when the allocator is chosen already
    memprofile.install_from_env()  # before the imports below, so that their allocations count too
    import kopf

    from . import handlers, metrics  # noqa: F401  (registers the handlers)

    handlers.configure_runner(workers=args.workers, resync_seconds=args.resync_seconds,
                              slow_retry_seconds=args.slow_retry_seconds)

    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if not args.verbose:
        # Kopf logs every handler call at INFO: a line per watch event, thousands a minute at scale.
        logging.getLogger("kopf.objects").setLevel(logging.WARNING)
    if args.metrics_port:
        metrics.serve(args.metrics_port, args.bind_address)
    liveness = f"http://{args.bind_address}:{args.liveness_port}/healthz" if args.liveness_port else None
    namespaces = args.namespace or []
    kopf.run(
        standalone=True,
        clusterwide=not namespaces,
        namespaces=namespaces,
        liveness_endpoint=liveness,
    )
    return 0


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="inference-operator", description=__doc__)
    p.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = p.add_subparsers(dest="command", required=True)

    c = sub.add_parser("crd", help="print the InferenceService CustomResourceDefinition")
    c.set_defaults(func=_cmd_crd)

    r = sub.add_parser("render", help="print the children of InferenceServices, without a cluster")
    r.add_argument("-f", "--filename", required=True, help="a YAML file of InferenceServices, or -")
    r.set_defaults(func=_cmd_render)

    f = sub.add_parser("fetch-model", help="fetch a model into a Triton model repository (init container)")
    f.add_argument("--uri", required=True, help="s3://, gs://, https:// or http:// source")
    f.add_argument("--repository", required=True, help="the model repository root to write into")
    f.add_argument("--model", required=True, help="the Triton model name (directory)")
    f.add_argument("--format", choices=[m.value for m in api.ModelFormat], help="for generated config.pbtxt")
    f.add_argument("--checksum", help="sha256:<hex> of a single file or archive")
    f.add_argument("--config-overrides", help="config.pbtxt fields that replace the model's own")
    f.add_argument("--endpoint", help="S3-compatible endpoint URL (also AWS_ENDPOINT_URL)")
    f.add_argument("--region", help="S3 region (also AWS_REGION)")
    f.add_argument("--retries", type=int, default=5, help="retries of transient errors, with backoff")
    f.add_argument("--termination-log", default=None, help="write the failure reason here (one line)")
    f.set_defaults(func=_cmd_fetch_model)

    run = sub.add_parser("run", help="run the operator against the current kubeconfig or in-cluster")
    run.add_argument(
        "-n", "--namespace", action="append",
        help="watch only this namespace (repeatable; glob patterns allowed); default: all",
    )
    run.add_argument("--metrics-port", type=int, default=8080, help="Prometheus /metrics port (0: off)")
    run.add_argument("--liveness-port", type=int, default=8081, help="/healthz port (0: off)")
    run.add_argument("--bind-address", default="0.0.0.0", help="address for /metrics and /healthz")
    run.add_argument("--workers", type=int, default=4, help="passes run in parallel (threads)")
    run.add_argument("--resync-seconds", type=float, default=3600,
                     help="every InferenceService is reconciled once per this period, spread over it")
    run.add_argument("--slow-retry-seconds", type=float, default=60,
                     help="how often a problem outside the spec (RBAC, quota, a name taken) is looked at again")
    run.add_argument("-v", "--verbose", action="store_true")
    run.set_defaults(func=_cmd_run)
    return p


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parser().parse_args(argv)
    args.own_process = argv is None  # the command line is this process's own
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
