"""The board's daily rollup: the dashboard read from it equals the dashboard counted live from the record."""

from __future__ import annotations

import random
from datetime import timedelta

import pytest
from django.contrib.auth.models import Group
from django.utils import timezone

from approvals import board, board_days
from approvals.board_models import BoardDay
from approvals.models import Proposal, Review, ReviewTask, Status
from connectors.models import Connector, Execution

AGENTS = (("refund-bot", "refund", "helpdesk"), ("crm-assistant", "update_account", "crm"),
          ("deal-bot", "update_opportunity", "crm"), ("mail-bot", "send_email", "email"))
STATUSES = (Status.PENDING_REVIEW, Status.APPROVED, Status.EXECUTED, Status.REJECTED, Status.ROLLED_BACK,
            Status.FAILED, Status.TRIAGE, Status.BLOCKED, Status.STALE, Status.CANCELLED)


def figures(data: board.Dashboard) -> dict:
    return {"since": data.since, "days": data.days, "queues": data.queues, "open": data.open_by_status,
            "outcomes": data.outcomes, "by_day": data.outcomes_by_day, "failed": data.failed_by_day,
            "rates": sorted(data.rates, key=lambda r: (r.agent, r.action, r.connector or "")),
            "median": data.wait_median, "p95": data.wait_p95, "reviewers": data.reviewers,
            "suggestions": data.suggestions}


@pytest.fixture
def random_record(people, make_client, sandbox):
    """random_record(n, seed): `n` proposals over the last 20 days (some today), of four agents, every
    status and outcome, some edited or canaries; the reviewed ones with one or two verdicts given
    seconds to hours later; some executions failed."""
    integration = make_client("board-days").integration
    group, _ = Group.objects.get_or_create(name="finance")
    reviewers = [people.finance1, people.finance2, people.make("finance3", "finance")]

    def _record(n: int, seed: int) -> None:
        rng = random.Random(seed)
        now = timezone.now()
        connectors = {c.slug: c for c in Connector.objects.all()}
        rows = []
        for i in range(n):
            agent, action, connector = rng.choice(AGENTS)
            created = now - timedelta(days=rng.randint(0, 19), seconds=rng.randint(0, 86_399))
            rows.append(Proposal(
                integration=integration, idempotency_key=f"days-{seed}-{i}", request_hash="0" * 64, agent=agent,
                action=action, connector=connectors[connector], confidence=round(rng.uniform(0.8, 1.0), 3),
                status=rng.choice(STATUSES), outcome=rng.choice(("auto", "review", "review", "triage", "block", "")),
                edited=rng.random() < 0.2, canary=rng.random() < 0.05, change_hash="0" * 64,
                created_at=min(created, now)))
        Proposal.objects.bulk_create(rows)
        reviewed = [p for p in rows if p.outcome in ("review", "triage")]
        tasks = ReviewTask.objects.bulk_create([ReviewTask(proposal=p, position=0, group=group, state="satisfied")
                                                for p in reviewed])
        reviews = []
        for task in tasks:
            for reviewer in rng.sample(reviewers, rng.randint(1, 2)):
                waited = timedelta(seconds=rng.choice((rng.randint(1, 600), rng.randint(600, 5 * 3600))),
                                   microseconds=rng.randint(0, 999_999))
                reviews.append(Review(proposal=task.proposal, task=task, reviewer=reviewer, change_hash="0",
                                      verdict=rng.choice(("approve", "approve", "reject"))))
                reviews[-1].when = min(task.proposal.created_at + waited, now)
        Review.objects.bulk_create(reviews)
        for review in reviews:  # auto_now_add ignores a given time: the waits are the measurement's input
            Review.objects.filter(pk=review.pk).update(created_at=review.when)
        for proposal in rng.sample(rows, n // 10):
            execution = Execution.objects.create(proposal=proposal, idempotency_key=f"x-{proposal.pk}", change_hash="0",
                                                 outcome=rng.choice(("failed", "succeeded")))
            Execution.objects.filter(pk=execution.pk).update(started_at=proposal.created_at + timedelta(minutes=5))

    return _record


def test_rolled_up_figures_equal_the_live_figures_on_random_records(random_record, decided_record):
    random_record(600, seed=14)
    decided_record(board.RULE_MIN_SAMPLE + 5, agent="quiet-bot", confidence=0.97)  # today: an approve-as-rule suggestion too

    rolled, live = board.dashboard(), board.dashboard(live=True)

    assert BoardDay.objects.count() == board_days.WINDOW_DAYS  # every finished day of the window, not today
    assert figures(rolled) == figures(live)
    assert rolled.decided > 250 and rolled.reviewers and rolled.wait_median and rolled.suggestions
    assert sum(rolled.failed_by_day) > 0


def test_a_late_verdict_on_an_old_proposal_reaches_the_figures_at_the_next_refresh(random_record):
    random_record(200, seed=7)
    board_days.refresh()
    old = Proposal.objects.filter(status=Status.PENDING_REVIEW, canary=False, outcome="review",
                                  created_at__lt=timezone.now() - timedelta(days=3)).first()
    old.status = Status.REJECTED  # as the lifecycle leaves it: saved, with its history row
    old.save()

    recounted = board_days.refresh()

    assert board_days.utc_day(old.created_at) in recounted and len(recounted) <= 3
    assert figures(board.dashboard()) == figures(board.dashboard(live=True))


def test_a_refresh_with_nothing_changed_counts_nothing_again(random_record):
    random_record(100, seed=3)
    first = board_days.refresh()

    again = board_days.refresh()

    assert len(first) == board_days.WINDOW_DAYS and again == []


def test_today_is_never_rolled_up(db):
    today = board_days.utc_day(timezone.now())

    with pytest.raises(ValueError):
        board_days.roll_up(today)
    board_days.refresh()

    assert not BoardDay.objects.filter(day__gte=today).exists()
