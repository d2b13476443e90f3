"""The oversight evidence pack: it renders for the demo and every number matches the database."""

from __future__ import annotations

import csv
import io
from datetime import datetime, timezone

import pytest
from django.contrib.auth import get_user_model
from django.core.management import call_command

from approvals import evidence, services
from approvals.models import Proposal, Review, Status
from ledger.models import Event
from policies import services as policy_services
from policies.models import ApprovalMatrix, KillSwitch

SINCE, UNTIL = datetime(2000, 1, 1, tzinfo=timezone.utc), datetime(2100, 1, 1, tzinfo=timezone.utc)


@pytest.fixture
def demo(db):
    """The demo, plus a rejection by finance-fay and a kill switch pulled by operator-olga."""
    call_command("seed_demo", stdout=io.StringIO())
    users = get_user_model().objects
    pending = Proposal.objects.filter(status=Status.PENDING_REVIEW, review_tasks__group__name="finance",
                                      review_tasks__state="active").first()
    services.record_verdict(pending.pk, users.get(username="finance-fay"), "reject", "no receipt", category="insufficient_evidence")
    policy_services.engage_switch(scope="connector", value="crm", mode="block", reason="CRM incident",
                                  user=users.get(username="operator-olga"))
    return pending


def test_the_demo_pack_counts_match_the_database(demo):
    pack = evidence.build(SINCE, UNTIL)

    assert sum(line.total for line in pack.lines) == Proposal.objects.count()
    for line in pack.lines:
        mine = Proposal.objects.filter(connector__slug=line.connector, action=line.action)
        assert line.total == mine.count()
        for outcome in evidence.OUTCOMES:
            assert getattr(line, outcome) == mine.filter(outcome=outcome).count(), (line.connector, line.action, outcome)
        assert line.reviewed == mine.filter(reviews__isnull=False).distinct().count()
        assert line.rejected == mine.filter(status=Status.REJECTED).count()
        assert line.edited == mine.filter(edited=True).count()
        assert line.failed == mine.filter(status=Status.FAILED).count()
        assert line.rolled_back == mine.filter(status=Status.ROLLED_BACK).count()
    rejecting = next(l for l in pack.lines if (l.connector, l.action) == (demo.connector.slug, demo.action))
    assert rejecting.rejected >= 1 and rejecting.rejection_rate == round(rejecting.rejected / rejecting.reviewed, 3)
    assert {"reviewer": "finance-fay", "approved": 0, "rejected": 1} in pack.reviewers
    assert len(pack.reviewers) == Review.objects.values("reviewer").distinct().count()
    assert [(s["by"], s["why"], s["engaged"]) for s in pack.switches] == [("operator-olga", "engaged: CRM incident", True)]
    assert len(pack.switches) == KillSwitch.history.count()
    live = ApprovalMatrix.objects.get(status="published")
    assert [(m["version"], m["author"], m["published_by"]) for m in pack.matrices] == [(live.version, "board-alice", "board-bob")]
    assert {"agent": demo.agent, "action": demo.action, "category": "insufficient_evidence", "count": 1} in pack.exceptions
    head = Event.objects.order_by("-position").first()
    assert (pack.head_position, pack.head_hash) == (head.position, head.hash)


def test_the_html_report_and_its_csvs_say_the_same(demo, tmp_path):
    call_command("evidence_pack", "--since", "2000-01-01", "--until", "2100-01-01", "--out", str(tmp_path), stdout=io.StringIO())
    pack = evidence.build(SINCE, UNTIL)

    page = (tmp_path / "evidence_pack.html").read_text(encoding="utf-8")
    for heading in ("(a) Operation", "(b) Who reviewed", "(c) The approval matrix", "(d) Disregarded", "(e) Stop buttons"):
        assert heading in page
    assert pack.head_hash in page and "Article 14(4)" in page
    with (tmp_path / "outcomes.csv").open(newline="", encoding="utf-8") as stream:
        rows = list(csv.DictReader(stream))
    assert [{k: v for k, v in row.items()} for row in rows] == [
        {k: "" if v is None else str(v) for k, v in evidence.line_row(line).items()} for line in pack.lines]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["evidence_pack.html", *evidence.csv_files(pack)])
