"""traffic: gatewayAPI: the children that split a canary's traffic at exact weights. Pure builders.

A Service per role, ``<name>-stable`` and ``<name>-canary``, each selecting the pods of the track
that plays the role now (status.canary.stableTrack), and an HTTPRoute named after the
InferenceService whose two backendRefs carry the weights. The Service ``<name>`` keeps selecting
every track, for clients inside the cluster that do not go through the Gateway.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from inference_operator import api, naming
from inference_operator.desired import render


def children(isvc: api.InferenceService, stable_track: str, canary_track: str, canary_weight: int) -> list[dict[str, Any]]:
    """The two role Services and the route, unstamped; ``canary_weight`` in percent."""
    cfg = isvc.spec.rollout.canary
    assert cfg is not None and cfg.gateway_api is not None
    n = naming.names(isvc.name)
    base = {"namespace": isvc.namespace, "labels": naming.labels(isvc.name), "ports": naming.PORTS}
    result = []
    for service, track in ((n.stable_service, stable_track), (n.canary_service, canary_track)):
        result.append(render.render_template("service.yaml.j2", {
            **base, "names": dataclasses.replace(n, service=service),
            "selector": naming.workload_selector(isvc.name, track)}))
    routing = cfg.gateway_api
    result.append(render.render_template("httproute.yaml.j2", {
        **base, "names": n, "canary_weight": canary_weight,
        "parent_refs": [p.model_dump(by_alias=True, exclude_none=True) for p in routing.parent_refs],
        "hostnames": list(routing.hostnames)}))
    return result
