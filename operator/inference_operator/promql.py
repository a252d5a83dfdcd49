"""PromQL text and what asking Prometheus deals in, without asking it: durations, quoting, answers,
errors, and credentials read from a Secret and kept out of messages."""

from __future__ import annotations

import dataclasses
import re
from typing import Callable, Optional

from inference_operator import api

QUERY_TIMEOUT_SECONDS = 5.0


_UNITS = {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


def seconds(duration: str) -> float:
    """A duration such as 30s, 1m30s, 500ms or 1.5s, in seconds."""
    parts = re.findall(r"([0-9]+(?:\.[0-9]+)?)(us|ms|s|m|h)", duration)
    if not parts or "".join(n + u for n, u in parts) != duration:
        raise ValueError(f"{duration!r} is not a duration")
    return sum(float(n) * _UNITS[u] for n, u in parts)


def promql_duration(value: float) -> str:
    """Seconds as a PromQL range: whole milliseconds (PromQL takes no fractions)."""
    return f"{max(1, round(value * 1000))}ms"


def quoted(value: str) -> str:
    """A label value as a PromQL string literal."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


class QueryError(Exception):
    """Prometheus could not be asked, or refused the query."""


# A query's answer: a number, None for no data (an empty vector, NaN, an infinity), or QueryError.
Answer = Optional[float]


Query = Callable[[str], Answer]


@dataclasses.dataclass(frozen=True)
class Auth:
    token: Optional[str] = None
    username: Optional[str] = None
    password: Optional[str] = None


CREDENTIALS_LABEL = f"{api.GROUP}/prometheus-credentials"


def auth_from_secret(secret: dict, namespace: str, name: str) -> Auth:
    """Prometheus credentials from a Secret as the API server returns it: ``token`` (bearer), or
    ``username`` and ``password`` (basic). Whoever may create an InferenceService names the Secret
    and the address its token goes to: only a Secret labelled for it is used, never a service
    account's token (LookupError says why). Used by the operator and by the dashboard alike."""
    import base64

    labels = (secret.get("metadata") or {}).get("labels") or {}
    if labels.get(CREDENTIALS_LABEL) != "true":
        raise LookupError(f"Secret {namespace}/{name} is not labelled {CREDENTIALS_LABEL}=true")
    if secret.get("type") == "kubernetes.io/service-account-token":
        raise LookupError(f"Secret {namespace}/{name} is a service account token")
    data = {k: base64.b64decode(v).decode("utf-8", "replace") for k, v in (secret.get("data") or {}).items()}
    if not data.get("token") and not data.get("username"):
        raise LookupError(f"Secret {namespace}/{name} holds neither token nor username")
    # Files made with --from-file end in a newline, which no header may hold.
    data = {k: v.strip() for k, v in data.items()}
    return Auth(token=data.get("token") or None, username=data.get("username") or None,
                password=data.get("password") or None)


def redacted(message: str, auth: Auth) -> str:
    """``message`` without the credentials in ``auth``, as they are and as a repr quotes them:
    status and the dashboard's page are read by people who may not read the Secret."""
    for value in (auth.token, auth.password):
        if value:
            message = message.replace(value, "<redacted>").replace(repr(value)[1:-1], "<redacted>")
    return message
