"""Asking Prometheus: prometheus-api-client with a timeout on every call and no retries. Used by the
operator's canary analysis and by the dashboard."""

from __future__ import annotations

import math
import re
from typing import Any, Optional

from inference_operator.promql import QUERY_TIMEOUT_SECONDS, Answer, Auth, Query, QueryError, redacted


def prometheus_client(address: str, auth: Auth = Auth(), timeout: float = QUERY_TIMEOUT_SECONDS) -> Any:
    """prometheus-api-client's PrometheusConnect for ``address`` with ``auth``: a timeout on every
    call and no retries (the next analysis, or the dashboard's next refresh, is the retry)."""
    from prometheus_api_client import PrometheusConnect
    from urllib3.util.retry import Retry

    headers = {"Authorization": f"Bearer {auth.token}"} if auth.token else None
    basic = (auth.username, auth.password or "") if auth.username else None
    return PrometheusConnect(url=address.rstrip("/"), headers=headers, auth=basic, disable_ssl=False,
                             retry=Retry(total=0, raise_on_status=False), timeout=timeout)


def prometheus_query(address: str, auth: Auth = Auth(), at: Optional[float] = None,
                     timeout: float = QUERY_TIMEOUT_SECONDS) -> Query:
    """A ``Query`` against the Prometheus at ``address``: instant queries, all at the same instant
    ``at`` (so the canary and the stable are read over the same window), a timeout on every call
    and no retries (the next analysis is the retry)."""
    import requests
    from prometheus_api_client.exceptions import PrometheusApiClientException

    client = prometheus_client(address, auth, timeout)
    params = {"time": f"{at:.3f}"} if at is not None else None

    def query(text: str) -> Answer:
        try:
            return _answer(text)
        except QueryError as exc:
            raise QueryError(redacted(str(exc), auth)) from exc.__cause__

    def _answer(text: str) -> Answer:
        try:
            result = client.custom_query(text, params=params)
        except requests.exceptions.InvalidHeader as exc:
            raise QueryError("the credentials from the Secret are not a valid HTTP header") from exc
        except requests.Timeout as exc:
            raise QueryError(f"no answer from {address} within {timeout:g}s") from exc
        except requests.ConnectionError as exc:
            # The client's text is mostly the URL with the query: say what went wrong instead.
            cause = re.sub(r"HTTPConnectionPool\(.*?\): Max retries exceeded with url: \S+ ", "", str(exc))
            raise QueryError(_one_line(f"cannot connect to {address}: {cause}")) from exc
        except (PrometheusApiClientException, requests.RequestException, ValueError) as exc:
            raise QueryError(_one_line(str(exc))) from exc
        values = []
        for sample in result:
            try:
                values.append(float(sample["value"][1]))
            except (KeyError, IndexError, TypeError, ValueError) as exc:
                raise QueryError(f"unexpected answer to {text}: {sample!r}") from exc
        if len(values) != 1 or math.isnan(values[0]) or math.isinf(values[0]):
            return None
        return values[0]

    return query


def _one_line(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= 300 else text[:297] + "..."
