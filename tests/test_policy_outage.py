"""A live matrix that cannot be loaded holds work for triage with a clear reason and an alert; it
never answers every agent with a 500."""

from __future__ import annotations

import json
import logging

from approvals.models import Proposal, Status
from policies.models import Rule
from tests.conftest import proposal_body


def test_an_uncompilable_live_matrix_holds_submissions_for_triage_and_alerts(api, matrix, caplog):
    Rule.objects.filter(matrix=matrix, name="block-deletes").update(outcome="perhaps")  # written past every check

    with caplog.at_level(logging.ERROR, logger="hitlgov.alerts"):
        response = api.post("/api/v1/proposals/", data=json.dumps(proposal_body(idempotency_key="outage")),
                            content_type="application/json")

    assert response.status_code == 201, response.content
    proposal = Proposal.objects.get(pk=response.json()["id"])
    assert proposal.status == Status.TRIAGE
    assert proposal.status_reason.startswith("the live approval matrix could not be loaded")
    assert proposal.decision["facts"] is None  # nothing to replay: simulations count it as undecided
    assert any("holding proposals for triage" in record.getMessage() for record in caplog.records)
