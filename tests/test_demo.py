"""The demo a newcomer sees: real queues for every team, safe to load twice."""

from django.core.management import call_command
from django.db.models import Count

from approvals.models import Proposal, ReviewTask, Status
from policies.models import ApprovalMatrix


def test_the_demo_fills_every_teams_queue_and_every_route(db, capsys):
    call_command("seed_demo")

    out = capsys.readouterr().out
    assert "/admin/" in out and "finance-fay/demo" in out
    assert out.strip().splitlines()[-1].startswith("hitl_")
    statuses = dict(Proposal.objects.values_list("status").annotate(n=Count("pk")))
    assert statuses.get(Status.PENDING_REVIEW, 0) > 0
    assert statuses.get(Status.TRIAGE, 0) > 0
    assert statuses.get(Status.BLOCKED, 0) > 0
    assert statuses.get(Status.APPROVED, 0) + statuses.get(Status.EXECUTED, 0) > 0
    queues = set(ReviewTask.objects.filter(state="active").values_list("group__name", flat=True))
    assert {"finance", "support", "sales"} <= queues
    live = ApprovalMatrix.objects.get(status="published")
    assert live.author.username == "board-alice" and live.published_by.username == "board-bob"


def test_loading_the_demo_twice_adds_nothing_but_a_key(db):
    call_command("seed_demo")
    proposals = Proposal.objects.count()

    call_command("seed_demo")

    assert Proposal.objects.count() == proposals
    assert ApprovalMatrix.objects.count() == 1


def test_the_demo_emails_every_review_group_with_links_signed_for_its_members(db):
    from approvals.models import Notification, NotificationChannel

    call_command("seed_demo")

    groups = set(NotificationChannel.objects.filter(kind="email").values_list("group__name", flat=True))
    assert {"finance", "support", "sales", "triage", "operators"} <= groups
    fay = Notification.objects.filter(recipient="finance-fay@demo.example", event="assigned")
    assert fay.exists() and all("/notifications/decide/" in n.text for n in fay)
