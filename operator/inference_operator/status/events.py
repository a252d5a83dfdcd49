"""Events a status write posts: one for each condition transition worth a person's notice."""

from __future__ import annotations

from typing import Any

from inference_operator.problems import Event
from inference_operator.status.conditions import AUTOSCALING, CONDITION_TYPES, DEGRADED, PROGRESSING, READY


def events(old: dict[str, Any], new: dict[str, Any]) -> list[Event]:
    """Events for condition transitions; an unchanged condition emits nothing."""

    def by_type(s: dict[str, Any]) -> dict[str, dict[str, Any]]:
        return {c["type"]: c for c in (s or {}).get("conditions") or []}

    before, after = by_type(old), by_type(new)
    result = []
    for ctype in CONDITION_TYPES + (AUTOSCALING,):
        a, b = after.get(ctype), before.get(ctype)
        if a is None or (b and (b["status"], b["reason"]) == (a["status"], a["reason"])):
            continue
        if ctype == READY and a["status"] == "True":
            if not b or b["status"] != "True":  # becoming ready; not a new reason to stay so
                result.append(Event("Normal", "Ready", a["message"]))
        elif ctype == DEGRADED and a["status"] == "True":
            result.append(Event("Warning", a["reason"], a["message"]))
        elif ctype == PROGRESSING and a["status"] == "True" and a["reason"] == "RollingOut":
            result.append(Event("Normal", "RollingOut", a["message"]))
        elif ctype == AUTOSCALING and a["status"] == "False":
            result.append(Event("Warning", a["reason"], a["message"]))
    return result
