"""Pytest fixtures of the unit tests; the helpers they build on live in tests/helpers.py."""

from __future__ import annotations

import pytest

from .helpers import FakeKube


@pytest.fixture
def fake_kube() -> FakeKube:
    return FakeKube()
