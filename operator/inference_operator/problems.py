"""What a pass reports: a Problem that blocks serving the spec, and an Event posted on the InferenceService."""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class Problem:
    """Something the operator detected that blocks serving the current spec."""

    reason: str
    message: str


@dataclasses.dataclass(frozen=True)
class Event:
    type: str  # Normal | Warning
    reason: str
    message: str
