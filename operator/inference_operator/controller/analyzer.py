"""The canary analysis as the operator runs it: the Prometheus it asks, with credentials read from a
Secret when the analysis falls due (never cached: a rotated token is used at once)."""

from __future__ import annotations

from typing import Any, Callable, Optional

from inference_operator import api, prometheus, promql
from inference_operator.config import OperatorConfig
from inference_operator.kinds import SECRET, Ref
from inference_operator.rollout import analysis, canary
from inference_operator.rollout.plan import Analyze


def prometheus_address(isvc: api.InferenceService, config: OperatorConfig) -> Optional[str]:
    cfg = isvc.spec.rollout.canary
    if cfg is not None and cfg.analysis.prometheus.address:
        return cfg.analysis.prometheus.address
    return config.prometheus_url


def analyzer(config: OperatorConfig, credentials: Callable[[str, str], promql.Auth]) -> Analyze:
    """The analysis against the real Prometheus: its address from the spec or the operator's
    environment, credentials from the named Secret (``credentials(namespace, name)``)."""

    def analyze(isvc: api.InferenceService, inputs: canary.Inputs) -> analysis.Verdict:
        cfg = inputs.canary
        assert cfg is not None and inputs.state is not None
        address = prometheus_address(isvc, config)
        if not address:
            return analysis.error(cfg.analysis, "no Prometheus to ask: set spec.rollout.canary.analysis.prometheus."
                                                "address, or INFERENCE_OPERATOR_PROMETHEUS_URL for the operator")
        auth = promql.Auth()
        if cfg.analysis.prometheus.secret_name:
            try:
                auth = credentials(isvc.namespace, cfg.analysis.prometheus.secret_name)
            except Exception as exc:  # noqa: BLE001 -- whatever keeps us from the Secret holds the canary
                why = str(exc)
                if getattr(exc, "status", None) == 403:
                    why = ("the operator may not read Secrets here: grant it `get` on secrets (the Helm chart's "
                           f"rbac.prometheusCredentialsSecrets=true) ({exc})")
                return analysis.error(
                    cfg.analysis, f"the Secret {cfg.analysis.prometheus.secret_name} could not be read: {why}")
        query = prometheus.prometheus_query(address, auth, at=inputs.now)
        return analysis.run(cfg.analysis, isvc.namespace, isvc.spec.model.name, inputs.state.revision or "",
                            inputs.state.stable_revision, query)

    return analyze


def secret_credentials(kube: Any) -> Callable[[str, str], promql.Auth]:
    """Prometheus credentials from a Secret (``promql.auth_from_secret``). Read when an analysis
    runs, never cached (a rotated token is used at once)."""

    def read(namespace: str, name: str) -> promql.Auth:
        secret = kube.get(Ref(SECRET, namespace, name))
        if secret is None:
            raise LookupError(f"Secret {namespace}/{name} does not exist")
        return promql.auth_from_secret(secret, namespace, name)

    return read
