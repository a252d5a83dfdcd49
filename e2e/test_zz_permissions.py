"""After a full run of the suite (this file's name sorts last): every permission the chart grants
was used by the operator, as the API server's audit log counts its ServiceAccount's requests,
but for the few that only a rare path needs. A grant the code no longer uses fails here."""

from __future__ import annotations

import os
import pathlib

import pytest

from inference_operator.desired import children

from .helpers import Audit, granted

# Needed, but not by every run: a child is created by server-side apply (a patch) unless a pass
# found its name taken; get reads a child whose create conflicted; delete removes a child no
# longer wanted (a route after a canary, a ScaledObject after a change of engine); the finalizers
# row is for admission only (children's blockOwnerDeletion), never sent.
RARE = {(verb, c.kind.group, c.kind.plural) for c in children.REGISTRY
        for verb in ("create", "get", "delete")} | {("update", "serving.inference-operator.io",
                                                     "inferenceservices/finalizers")}


def test_every_permission_the_chart_grants_is_used(request: pytest.FixtureRequest):
    here = pathlib.Path(__file__).parent
    ran = {item.path.name for item in request.session.items}
    everything = {p.name for p in here.glob("test_*.py")}
    if ran != everything:
        pytest.skip(f"only a full run uses every permission; this one left out {sorted(everything - ran)}")
    path = os.environ.get("E2E_AUDIT_LOG")
    if not path:
        pytest.skip("no audit log (E2E_AUDIT_LOG: the local cluster writes one)")
    used, _ = Audit(pathlib.Path(path)).usage()
    unused = granted() - set(used) - RARE
    assert not unused, f"granted by the chart, never sent by the operator in a full run: {sorted(unused)}"
