"""What a status write sends: the status as the API server stores it, and the merge patch to it."""

from __future__ import annotations

from typing import Any

from inference_operator import api


def comparable(status: dict[str, Any]) -> dict[str, Any]:
    """A status as the API server would store it, for 'did anything change' checks."""
    return api.InferenceServiceStatus.model_validate(status or {}).model_dump(
        by_alias=True, exclude_none=True, mode="json"
    )


def merge_patch(old: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    """The JSON merge patch (RFC 7386) from old to new status. The API server merges objects
    recursively, so a key that is gone, at any depth (a canary's readyAt, its failedRevision),
    must be sent as null, or it stays (and a pass would act on it, or write again forever)."""
    patch: dict[str, Any] = {}
    for key, value in new.items():
        before = old.get(key)
        if isinstance(value, dict) and isinstance(before, dict):
            patch[key] = merge_patch(before, value)
        else:
            patch[key] = value
    for key in old:
        if key not in new:
            patch[key] = None
    return patch
