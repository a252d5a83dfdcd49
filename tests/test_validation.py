"""`render` refuses what the API server refuses: the CRD's schema and CEL rules, evaluated offline."""

import fractions

import pytest

from inference_operator.api import validation

from .validation_cases import CASES, case_body


@pytest.mark.parametrize("change,expect", [(c, e) for _, c, e in CASES], ids=[i for i, _, _ in CASES])
def test_the_table(change, expect):
    found = validation.validate(case_body(change))
    if expect is None:
        assert found == []
    else:
        assert any(expect in str(v) for v in found), [str(v) for v in found]


@pytest.mark.parametrize("text,value", [("500m", fractions.Fraction(1, 2)), ("2", 2), ("1Gi", 2**30),
                                        ("1024Mi", 2**30), ("1.5G", 1_500_000_000), ("1e3", 1000), ("100u", fractions.Fraction(1, 10**4))])
def test_quantities_as_kubernetes_reads_them(text, value):
    assert validation.quantity_value(text) == value


def test_a_type_error_blocks_the_rules_as_on_the_api_server():
    body = case_body(lambda b: b["spec"].update(replicas="x", rollout={"maxSurge": 0, "maxUnavailable": 0}))
    messages = [str(v) for v in validation.validate(body)]
    assert any("must be of type integer" in m for m in messages)
    assert not any("cannot both be 0" in m for m in messages)
    assert any("some validation rules were not checked" in m for m in messages)


def test_defaults_are_applied_before_the_rules():
    # rollout {} defaults to maxSurge 1 / maxUnavailable 0: valid; {maxSurge: 0} alone is not.
    assert validation.validate(case_body(lambda b: b["spec"].update(rollout={}))) == []
    assert validation.validate(case_body(lambda b: b["spec"].update(rollout={"maxSurge": 0})))
