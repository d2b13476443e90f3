"""The feedback export: each proposal with the people's verdict, the edit as before/after, reasons and categories."""

from __future__ import annotations

import io
import json

import pytest
from django.core.management import call_command

from approvals import services
from tests.conftest import matrix_spec, rule, tier

pytestmark = pytest.mark.matrix(matrix_spec(rule("refunds-finance", "review", actions=["refund"], tiers=(tier("finance"),))))

FIELDS = {"proposal", "agent", "connector", "action", "target", "submitted_at", "confidence", "outcome", "rule", "status",
          "verdict", "edit", "reviews", "reasons", "exception_categories", "rationale"}  # docs/audit.md


def exported() -> list[dict]:
    out = io.StringIO()
    call_command("export_feedback", "--since", "2000-01-01", "--until", "2100-01-01", stdout=out, stderr=io.StringIO())
    return [json.loads(line) for line in out.getvalue().splitlines()]


def test_the_story_reads_as_an_edit_with_before_and_after(story):
    (row,) = exported()

    assert set(row) == FIELDS
    assert (row["proposal"], row["agent"], row["action"], row["rule"]) == (str(story.pk), "refund-bot", "refund", "refunds-finance")
    assert row["verdict"] == "edited" and row["status"] == "rolled_back"
    assert row["edit"] == {"by": "finance1", "changes": [{"field": "refund_amount", "before": "120.00", "after": "60.00"}]}
    assert [(r["reviewer"], r["verdict"], r["reason"]) for r in row["reviews"]] == [("finance2", "approve", "half refund is right")]
    assert row["exception_categories"] == ["wrong_amount", "rolled_back"]
    assert row["reasons"][0] == "submitted by integration refund-bot-integration"
    assert any("customer returned the goods" in reason for reason in row["reasons"])


def test_rejections_and_untouched_proposals_are_told_apart(submit, people):
    rejected, waiting = submit(), submit()
    services.record_verdict(rejected.pk, people.finance1, "reject", "duplicate of yesterday's", category="duplicate")

    rows = {row["proposal"]: row for row in exported()}

    assert (rows[str(rejected.pk)]["verdict"], rows[str(rejected.pk)]["exception_categories"]) == ("rejected", ["duplicate"])
    assert (rows[str(waiting.pk)]["verdict"], rows[str(waiting.pk)]["edit"], rows[str(waiting.pk)]["reviews"]) == (None, None, [])
