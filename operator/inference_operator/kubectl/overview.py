"""What ``kubectl inference get`` shows: an InferenceService with its revisions, their Deployments
and pods, the canary's step and last analysis (values against bounds) and the autoscaler. Pure:
built from the objects as the API server returns them (dicts), so the same model is printed as a
tree, as JSON (``--output json``), and read by the dashboard.
"""

from __future__ import annotations

import datetime
from typing import Any, Optional, Sequence

from inference_operator import api, naming
from inference_operator.desired.autoscaling import additive, hpa_metric_name, value_of
from inference_operator.observed import condition, pod_ready
from inference_operator.rollout import analysis, canary

Obj = dict[str, Any]

PASS_MARK = {"Pass": "✔", "Fail": "✖", "Inconclusive": "?", "Error": "!"}


def _labels(obj: Obj) -> dict[str, str]:
    return (obj.get("metadata") or {}).get("labels") or {}


def _spec(isvc: Obj) -> Optional[api.InferenceService]:
    """The typed InferenceService, or None when its spec does not parse (then only status is shown)."""
    try:
        return api.parse(isvc)
    except Exception:  # noqa: BLE001 -- a view must show what it can
        return None


def check_unit(check: Optional[api.Check], name: str) -> str:
    """How a check's values read: percent (errorRate), seconds (times), or a plain number."""
    if check is not None and check.query is not None:
        return "number"
    if name == "errorRate":
        return "fraction"
    return "seconds" if name in api.BUILTIN_CHECKS else "number"


def shown(value: Optional[float], unit: str) -> str:
    """A value as people read it: 0.4%, 5.6ms, 812us, 1.25s, 3.2."""
    if value is None:
        return "-"
    if unit == "fraction":
        return f"{value * 100:.3g}%"
    if unit == "seconds":
        if value == 0:
            return "0s"
        if abs(value) < 1e-3:
            return f"{value * 1e6:.3g}us"
        if abs(value) < 1:
            return f"{value * 1e3:.3g}ms"
        return f"{value:.3g}s"
    if unit == "percent":
        return f"{value:.3g}%"
    return f"{value:.4g}"


def limits(check: Optional[api.Check], stable: Optional[float]) -> list[tuple[str, float]]:
    """The numbers a check's value was held to: its max, and the stable's value raised by maxIncrease."""
    if check is None:
        return []
    out = []
    bound = analysis.bound_value(check)
    if bound is not None:
        out.append(("max", bound))
    increase = analysis.increase_value(check)
    if increase is not None and stable is not None:
        out.append(("maxIncrease", stable * (1 + increase)))
    return out


def _checks(spec: Optional[api.InferenceService]) -> dict[str, api.Check]:
    cfg = spec.spec.rollout.canary if spec is not None else None
    return {c.name: c for c in cfg.analysis.checks} if cfg is not None else {}


def _analysis(state: Obj, spec: Optional[api.InferenceService]) -> list[Obj]:
    checks = _checks(spec)
    out = []
    for result in state.get("analysis") or []:
        name = result.get("name", "?")
        check = checks.get(name)
        unit = check_unit(check, name)
        out.append({
            "name": name, "result": result.get("result"), "value": result.get("value"),
            "stable": result.get("stable"), "bound": result.get("bound"), "unit": unit,
            "limits": [{"kind": k, "value": v} for k, v in limits(check, result.get("stable"))],
            "message": result.get("message") or "",
        })
    return out


def _step(spec: Optional[api.InferenceService], index: Optional[int]) -> Obj:
    cfg = spec.spec.rollout.canary if spec is not None else None
    if cfg is None or index is None or not 0 <= index < len(cfg.steps):
        return {}
    step = cfg.steps[index]
    if step.weight is not None:
        what = {"kind": "weight", "weight": step.weight, "duration": step.duration}
    elif step.pause is not None and step.pause.duration:
        what = {"kind": "pause", "duration": step.pause.duration}
    else:
        what = {"kind": "gate"}
    return {"number": index + 1, "of": len(cfg.steps), **what,
            "checksPerStep": cfg.analysis.checks_per_step, "failureLimit": cfg.analysis.failure_limit,
            "traffic": cfg.traffic}


def _canary(isvc: Obj, spec: Optional[api.InferenceService]) -> Optional[Obj]:
    state = (isvc.get("status") or {}).get("canary")
    if not state:
        return None
    keys = ("phase", "reason", "revision", "stableRevision", "stableTrack", "weight", "effectiveWeight",
            "checksPassed", "consecutiveFailures", "consecutiveInconclusive", "startedAt", "stepStartedAt",
            "readyAt", "lastAnalysisAt", "failedRevision", "message")
    out = {k: state.get(k) for k in keys if state.get(k) is not None}
    out["active"] = state.get("phase") in canary.ACTIVE
    out["pausedByHand"] = canary.actions_of((isvc.get("metadata") or {}).get("annotations") or {}).paused
    out["step"] = _step(spec, state.get("stepIndex")) if out["active"] else {}
    out["analysis"] = _analysis(state, spec)
    return out


def _autoscaler(isvc: Obj, spec: Optional[api.InferenceService], hpa: Optional[Obj]) -> Optional[Obj]:
    state = (isvc.get("status") or {}).get("autoscaler")
    cfg = spec.spec.autoscaling if spec is not None else None
    if not state and cfg is None:
        return None
    state = state or {}
    out: Obj = {k: state.get(k) for k in ("kind", "name", "currentReplicas", "desiredReplicas", "refusedMessage")
                if state.get(k) is not None}
    if cfg is not None:
        out.update(engine=cfg.engine, minReplicas=cfg.min_replicas, maxReplicas=cfg.max_replicas)
    out["metrics"] = hpa_metrics(hpa, cfg)
    return out


def _quantity(text: Optional[str]) -> Optional[float]:
    """A Kubernetes quantity as a float (50m -> 0.05)."""
    if text is None:
        return None
    scale = {"n": 1e-9, "u": 1e-6, "m": 1e-3, "k": 1e3, "M": 1e6, "G": 1e9}
    try:
        if text[-1] in scale:
            return float(text[:-1]) * scale[text[-1]]
        return float(text)
    except (ValueError, IndexError):
        return None


def signal_unit(target: api.AutoscalingTarget) -> str:
    """How an autoscaling signal's values read: seconds (times), percent (GPU), or a plain number."""
    if target.name in api.TIME_SIGNALS:
        return "seconds"
    return "percent" if target.name == "gpuUtilization" else "number"


def hpa_metrics(hpa: Optional[Obj], cfg: Optional[api.Autoscaling]) -> list[Obj]:
    """Per target: the autoscaler's current value of the signal against its target, as the HPA
    reports it: the adapter's pods metric by its name, a KEDA trigger's external metric by the
    name KEDA gives it (``s<index>-...``). None where the HPA is unread or has no reading yet."""
    if cfg is None:
        return []
    readings: dict[str, Obj] = {}
    for metric in ((hpa or {}).get("status") or {}).get("currentMetrics") or []:
        body = metric.get("external") or metric.get("pods") or {}
        name = (body.get("metric") or {}).get("name")
        if name:
            readings[name] = body.get("current") or {}
    out = []
    for i, target in enumerate(cfg.targets):
        reading = readings.get(hpa_metric_name(target)) or next(
            (r for name, r in readings.items() if name.startswith(f"s{i}-")), {})
        out.append({"name": target.name, "unit": signal_unit(target),
                    "current": _quantity(reading.get("averageValue") or reading.get("value")),
                    "target": float(value_of(target)), "perReplica": additive(target)})
    return out


def _deployment_track(deployment: Obj) -> str:
    """The track a Deployment selects (naming.track_of); one made before tracks existed: stable."""
    return naming.track_of(deployment) or naming.STABLE


def _pod_track(pod: Obj) -> str:
    return _labels(pod).get(naming.TRACK_LABEL) or naming.STABLE


def _age(created: Optional[str], now: float) -> Optional[float]:
    at = canary.parse_time(created)
    return None if at is None else max(0.0, now - at)


def _pod(pod: Obj, now: float) -> Obj:
    status = pod.get("status") or {}
    restarts = sum(c.get("restartCount", 0) for c in status.get("containerStatuses") or [])
    meta = pod.get("metadata") or {}
    phase = "Terminating" if meta.get("deletionTimestamp") else status.get("phase", "Pending")
    return {"name": meta.get("name"), "ready": pod_ready(pod), "phase": phase,
            "node": (pod.get("spec") or {}).get("nodeName"), "restarts": restarts,
            "ageSeconds": _age(meta.get("creationTimestamp"), now)}


def _roles(isvc: Obj, canary_view: Optional[Obj]) -> dict[str, str]:
    status = isvc.get("status") or {}
    if canary_view and canary_view["active"]:
        return {canary_view.get("stableRevision", ""): "stable", canary_view.get("revision", ""): "canary"}
    roles = {status.get("revision", ""): "stable"} if status.get("revision") else {}
    if canary_view and canary_view.get("phase") in (canary.ROLLED_BACK, canary.ABORTED):
        roles.setdefault(canary_view.get("revision", ""), "rolled back")
    return roles


def route_weights(isvc: Obj, route: Optional[Obj]) -> dict[str, Optional[int]]:
    """traffic: gatewayAPI: each role's share of the route's weights, in percent, as the route sends
    them now (not the step's: the operator sends 0 to a canary with no ready pod)."""
    names = naming.names((isvc.get("metadata") or {}).get("name", ""))
    weights: dict[str, int] = {}
    for rule in ((route or {}).get("spec") or {}).get("rules") or []:
        for ref in rule.get("backendRefs") or []:
            role = {names.stable_service: "stable", names.canary_service: "canary"}.get(ref.get("name"))
            if role:
                weights[role] = weights.get(role, 0) + int(ref.get("weight", 1))
    total = sum(weights.values())
    return {role: (round(100 * weights.get(role, 0) / total) if total else None) for role in ("stable", "canary")}


def overview(isvc: Obj, deployments: Sequence[Obj], pods: Sequence[Obj], hpa: Optional[Obj] = None,
             now: Optional[float] = None, route: Optional[Obj] = None) -> Obj:
    """The model ``get`` prints: JSON-ready, keys in camelCase as in status."""
    now = datetime.datetime.now(datetime.timezone.utc).timestamp() if now is None else now
    meta = isvc.get("metadata") or {}
    status = isvc.get("status") or {}
    spec = _spec(isvc)
    canary_view = _canary(isvc, spec)
    roles = _roles(isvc, canary_view)

    by_track = {_deployment_track(d): d for d in deployments}
    revisions: dict[str, dict[str, list[Obj]]] = {}
    for dep in deployments:
        if naming.revision_of(dep):
            revisions.setdefault(naming.revision_of(dep), {}).setdefault(_deployment_track(dep), [])
    for pod in sorted(pods, key=lambda p: p["metadata"]["name"]):
        rev = _labels(pod).get(naming.REVISION_LABEL, "?")
        revisions.setdefault(rev, {}).setdefault(_pod_track(pod), []).append(pod)

    ready_total = sum(1 for p in pods if pod_ready(p) and not p["metadata"].get("deletionTimestamp"))
    gateway = bool(spec is not None and spec.spec.rollout.canary is not None
                   and spec.spec.rollout.canary.traffic == "gatewayAPI" and canary_view and canary_view["active"])
    by_route = route_weights(isvc, route) if gateway else {}
    out_revisions = []
    order = {"stable": 0, "canary": 1}
    for rev, tracks in sorted(revisions.items(), key=lambda kv: (order.get(roles.get(kv[0], ""), 2), kv[0])):
        role = roles.get(rev) or ("rolling out" if any(naming.revision_of(by_track.get(t, {})) == rev for t in tracks)
                                  else "old")
        ready = sum(1 for t in tracks.values() for p in t if pod_ready(p) and not p["metadata"].get("deletionTimestamp"))
        if gateway:
            weight = by_route.get(role, 0) if role in ("stable", "canary") else 0
        else:
            weight = round(100 * ready / ready_total) if ready_total else 0
        deps = []
        for track, track_pods in sorted(tracks.items()):
            dep = by_track.get(track) or {}
            dstatus = dep.get("status") or {}
            deps.append({
                "name": (dep.get("metadata") or {}).get("name") or naming.predictor(meta.get("name", ""), track),
                "track": track, "revision": naming.revision_of(dep) if dep else None,
                "replicas": (dep.get("spec") or {}).get("replicas"), "readyReplicas": dstatus.get("readyReplicas", 0),
                "pods": [_pod(p, now) for p in track_pods],
            })
        out_revisions.append({"revision": rev, "role": role, "weight": weight, "readyPods": ready,
                              "deployments": deps})

    ready = condition(isvc, "Ready") or {}
    progressing = condition(isvc, "Progressing") or {}
    return {
        "name": meta.get("name"), "namespace": meta.get("namespace"),
        "generation": meta.get("generation"), "observedGeneration": status.get("observedGeneration"),
        "ready": {k: ready.get(k) for k in ("status", "reason", "message")},
        "progressing": {k: progressing.get(k) for k in ("status", "reason", "message")},
        "url": status.get("url"), "revision": status.get("revision"),
        "replicas": status.get("replicas"), "readyReplicas": status.get("readyReplicas"),
        "canary": canary_view, "autoscaler": _autoscaler(isvc, spec, hpa), "revisions": out_revisions,
        "ageSeconds": _age(meta.get("creationTimestamp"), now),
    }


# ---- the tree ---------------------------------------------------------------------------------------


def _ago(seconds: Optional[float]) -> str:
    if seconds is None:
        return "-"
    seconds = int(seconds)
    if seconds < 120:
        return f"{seconds}s"
    if seconds < 7200:
        return f"{seconds // 60}m"
    if seconds < 172800:
        return f"{seconds // 3600}h"
    return f"{seconds // 86400}d"


def _check_line(check: Obj) -> str:
    unit = check["unit"]
    value = shown(check["value"], unit)
    held = []
    for limit in check["limits"]:
        if limit["kind"] == "max":
            held.append(f"max {shown(limit['value'], unit)}")
        else:
            held.append(f"max {shown(limit['value'], unit)} (stable {shown(check['stable'], unit)} "
                        f"+{_increase_text(check['bound'])})")
    bounds = " and ".join(held) or (check["bound"] or "")
    mark = PASS_MARK.get(check["result"] or "", " ")
    line = f"  {mark} {check['name']:<18} {check['result'] or '':<12} {value:>9}  {bounds}"
    if check["result"] in ("Inconclusive", "Error") and check["message"]:
        line += f"  ({check['message']})"
    return line


def _increase_text(bound: Optional[str]) -> str:
    for part in (bound or "").split(","):
        part = part.strip()
        if part.startswith("maxIncrease"):
            return part.split()[-1]
    return "?"


def _step_text(c: Obj) -> str:
    step = c.get("step") or {}
    if not step:
        return ""
    if step["kind"] == "weight":
        what = f"weight {step['weight']}%" + (f" for {step['duration']}" if step.get("duration") else "")
    elif step["kind"] == "pause":
        what = f"pause {step['duration']}"
    else:
        what = "gate: waits for `kubectl inference promote`"
    return f"step {step['number']}/{step['of']} ({what})"


def tree(view: Obj) -> str:
    """The text ``get`` prints."""
    lines = []

    def field(label: str, text: str) -> None:
        lines.append(f"{label + ':' if label else '':<13}{text}")

    field("Name", f"{view['name']}")
    field("Namespace", f"{view['namespace']}")
    r, p = view["ready"], view["progressing"]
    field("Ready", f"{r.get('status') or 'Unknown'}  {r.get('reason') or ''}".rstrip())
    if r.get("message"):
        field("", r["message"])
    field("Progressing", f"{p.get('status') or 'Unknown'}  {p.get('reason') or ''}".rstrip())
    if view.get("url"):
        field("URL", view["url"])
    field("Revision", view.get("revision") or "-")
    field("Replicas", f"{view.get('replicas') if view.get('replicas') is not None else '-'} "
                      f"({view.get('readyReplicas') or 0} ready)")

    c = view.get("canary")
    if c:
        head = c.get("phase") or "-"
        if c["active"]:
            head += f"  {_step_text(c)}"
            w = c.get("weight")
            if w is not None:
                eff = c.get("effectiveWeight")
                head += f"  weight {w}%" + (f" (effective {eff}%)" if eff is not None and eff != w else "")
            if c.get("pausedByHand"):
                head += "  [paused by hand: `kubectl inference resume`]"
        elif c.get("reason"):
            head += f"  ({c['reason']})"
        field("Canary", head)
        field("", f"revision {c.get('revision', '-')}  stable {c.get('stableRevision', '-')}"
                  f"  started {c.get('startedAt', '-')}")
        step = c.get("step") or {}
        if c["active"] and step:
            field("", f"checks passed {c.get('checksPassed', 0)}/{step['checksPerStep']} this step, "
                      f"consecutive failures {c.get('consecutiveFailures', 0)}/{step['failureLimit']}")
        if c.get("message"):
            field("", c["message"])
        if c["analysis"]:
            field("Analysis", f"at {c.get('lastAnalysisAt', '-')}")
            lines.extend(_check_line(check) for check in c["analysis"])

    a = view.get("autoscaler")
    if a:
        head = f"{a.get('kind') or a.get('engine', '-')} {a.get('name') or ''}".rstrip()
        head += f"  replicas {a.get('currentReplicas', '-')} -> {a.get('desiredReplicas', '-')}"
        if a.get("minReplicas") is not None:
            head += f" (min {a['minReplicas']}, max {a['maxReplicas']})"
        field("Autoscaler", head)
        if a.get("refusedMessage"):
            field("", f"refused: {a['refusedMessage']}")
        for m in a["metrics"]:
            per = " per replica" if m["perReplica"] else ""
            lines.append(f"    {m['name']:<20} {shown(m['current'], m['unit']):>9}  target "
                         f"{shown(m['target'], m['unit'])}{per}")

    lines.append("")
    lines.append(f"⟳ {view['name']} (InferenceService)")
    revs = view["revisions"]
    for i, rev in enumerate(revs):
        last_rev = i == len(revs) - 1
        lines.append(f"{'└──' if last_rev else '├──'} revision {rev['revision']}  {rev['role']}  "
                     f"weight {'-' if rev['weight'] is None else str(rev['weight']) + '%'}  {rev['readyPods']} ready")
        pad = "    " if last_rev else "│   "
        for j, dep in enumerate(rev["deployments"]):
            last_dep = j == len(rev["deployments"]) - 1
            replicas = dep["replicas"] if dep["replicas"] is not None else "-"
            lines.append(f"{pad}{'└──' if last_dep else '├──'} Deployment {dep['name']}  track {dep['track']}  "
                         f"{dep['readyReplicas']}/{replicas} ready")
            pad2 = pad + ("    " if last_dep else "│   ")
            for k, pod in enumerate(dep["pods"]):
                mark = "✔" if pod["ready"] else "✖"
                extra = f"  restarts {pod['restarts']}" if pod["restarts"] else ""
                lines.append(f"{pad2}{'└──' if k == len(dep['pods']) - 1 else '├──'} Pod {pod['name']}  "
                             f"{mark} {'Ready' if pod['ready'] else 'NotReady'}  {pod['phase']}  "
                             f"{pod['node'] or '-'}  {_ago(pod['ageSeconds'])}{extra}")
    if not revs:
        lines.append("└── (no pods)")
    return "\n".join(lines) + "\n"
