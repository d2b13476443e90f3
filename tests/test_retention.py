"""Retention: evidence payloads of closed proposals are purged after the period; the record still verifies."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from django.db import connection

from approvals import retention
from ledger.models import Event
from ledger.verify import verify
from tests.conftest import matrix_spec, reload, rule, tier

def json_text(value) -> str:
    return json.dumps(value, sort_keys=True)


pytestmark = pytest.mark.matrix(matrix_spec(rule("refunds-finance", "review", actions=["refund"], tiers=(tier("finance"),))))


def test_closed_proposals_past_retention_lose_their_payload_and_the_log_still_verifies(executed, submit, settings):
    settings.EVIDENCE_RETENTION_DAYS = 30
    done = executed(rationale="Delivered damaged, photo attached", context={"ticket": "T-9"},
                    evidence=[{"kind": "photo", "excerpt": "dented box"}])
    still_open = submit(rationale="waiting")
    status, change_hash = done.status, done.change_hash

    result = retention.purge_evidence(now=done.created_at + timedelta(days=31))

    assert (result.proposals, result.history_rows) == (1, done.history.count())
    done = reload(done)
    assert (done.rationale, done.context, done.evidence) == ("", {}, [])
    assert (done.status, done.change_hash) == (status, change_hash)
    assert {(h.rationale, json_text(h.context), json_text(h.evidence)) for h in done.history.all()} == {("", "{}", "[]")}
    assert reload(still_open).rationale == "waiting"
    purge = Event.objects.order_by("-position").first()
    assert purge.reason.startswith("evidence purged: retention of 30 days")
    assert purge.records[0]["ids"] == [str(done.pk)]
    report = verify()
    assert report.intact, report.problems
    assert retention.purge_evidence(now=done.created_at + timedelta(days=31)).proposals == 0


def test_nothing_is_purged_before_its_time(executed, settings):
    settings.EVIDENCE_RETENTION_DAYS = 30
    done = executed(rationale="Delivered damaged")

    assert retention.purge_evidence(now=done.created_at + timedelta(days=29)).proposals == 0
    assert reload(done).rationale == "Delivered damaged"


def test_a_purged_payload_put_back_is_reported(executed, settings):
    settings.EVIDENCE_RETENTION_DAYS = 30
    done = executed(rationale="Delivered damaged")
    retention.purge_evidence(now=done.created_at + timedelta(days=31))
    row = done.history.order_by("history_id").first()

    with connection.cursor() as cursor:
        cursor.execute("UPDATE approvals_historicalproposal SET rationale = 'restored' WHERE history_id = %s", [row.history_id])

    problem = verify().problems[0]
    assert (problem.kind, problem.what) == ("edited", "approvals.historicalproposal")
    assert "evidence" in problem.detail
