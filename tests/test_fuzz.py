"""Property-based: InferenceServices drawn from the CRD's schema (tests/fuzz_specs.py), valid and
not, go through what `render` does (the offline admission, defaults, the models, the renderers)
without an unhandled exception, and every refusal names its field. e2e/test_fuzz.py puts the same
cases to the real API server."""

from __future__ import annotations

import collections

from hypothesis import HealthCheck, Phase, given, settings

from inference_operator import api
from inference_operator.api import validation
from inference_operator.config import OperatorConfig
from inference_operator.desired import autoscaling, render

from .fuzz_specs import bodies

SEEN: collections.Counter = collections.Counter()


# Seeded (derandomize) so CI runs the same cases each time; no shrinking (minutes on these specs):
# a failure prints the case as drawn.
@settings(max_examples=300, deadline=None, derandomize=True, database=None,
          phases=(Phase.explicit, Phase.generate),
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(bodies())
def test_render_admits_or_refuses_every_spec_and_names_the_field(body):
    refused = validation.validate(body)
    if refused:
        SEEN["refused"] += 1
        # Each names its field, as the API server does; the one without is the API server's own
        # addendum ("some validation rules were not checked ..."), never alone.
        named = [v for v in refused if v.path.startswith(("spec", "metadata"))]
        assert named, refused
        assert all(v.message and (v in named or "were not checked" in v.message) for v in refused), refused
        return
    isvc = api.parse(validation.defaulted(body))
    try:
        children = render.render(isvc, OperatorConfig())
    except render.SpecError as exc:  # what only the operator detects: a status condition
        SEEN["spec error"] += 1
        assert exc.reason and exc.message
        return
    children += autoscaling.children(isvc, OperatorConfig(), frozenset({autoscaling.SCALEDOBJECT_CRD}))
    assert children and all(c["metadata"]["namespace"] == "fuzz" for c in children)
    SEEN["accepted"] += 1


def test_the_fuzzed_cases_cover_both_sides():
    """Runs after the property above (file order): the generator is worth something only if it
    reaches both the refusals and the accepted specs."""
    print("fuzzed InferenceServices:", dict(SEEN))
    assert SEEN["refused"] >= 40 and SEEN["accepted"] >= 40, dict(SEEN)
