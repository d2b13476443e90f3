"""Work that waits past its matrix's maximum age expires, never executes, and its agent is told once."""

from __future__ import annotations

import json
import threading
from decimal import Decimal
from datetime import timedelta

import pytest
from django.contrib.auth.models import Group
from django.db import connection
from django.utils import timezone

from approvals import events, notifications, services, sweeps
from approvals.models import CallbackDelivery, Notification, Proposal, ReviewTask, Status
from policies.matrix_spec import DEFAULT_MAX_AGE_MINUTES
from tests.conftest import matrix_spec, proposal_body, reload, rule, tier, wait_until
from tests.test_outbox_recovery import wait_for_sweeps

REFUNDS_AGE_OUT = matrix_spec(
    rule("big-refunds", "review", actions=["refund"], currency="USD", amount_min=Decimal("100"),
         tiers=(tier("finance"),), max_age_minutes=60),
    rule("small-refunds", "review", actions=["refund"], currency="USD", amount_max=Decimal("100"),
         tiers=(tier("support"),)),
    default_max_age_minutes=600,
)
pytestmark = pytest.mark.matrix(REFUNDS_AGE_OUT)


def expired_history(proposal: Proposal) -> list:
    return list(proposal.history.filter(status=Status.EXPIRED).values_list("history_change_reason", flat=True))


def test_the_deciding_rule_sets_the_maximum_age_and_it_is_stored_with_the_decision(submit):
    proposal = submit(amount="120.00")

    assert proposal.decision["max_age_minutes"] == 60
    assert proposal.expires_at == proposal.created_at + timedelta(minutes=60)


def test_a_rule_without_a_maximum_age_takes_the_matrix_default(submit):
    proposal = submit(amount="40.00", changes={"status": "refunded", "refund_amount": "40.00"})

    assert proposal.decision["max_age_minutes"] == 600
    assert proposal.expires_at == proposal.created_at + timedelta(minutes=600)


@pytest.mark.matrix(matrix_spec(rule("refunds", "review", actions=["refund"], tiers=(tier("finance"),))))
def test_a_matrix_that_names_no_maximum_age_expires_work_after_two_weeks(submit):
    assert submit().decision["max_age_minutes"] == DEFAULT_MAX_AGE_MINUTES == 14 * 24 * 60


def test_work_past_its_maximum_age_expires_closes_its_tiers_and_cannot_be_approved(submit, people):
    proposal = submit(amount="120.00", callback_url="https://agent.example/hook")
    fresh = submit(amount="40.00", changes={"status": "refunded", "refund_amount": "40.00"})

    deadline = proposal.expires_at
    assert services.expire_overdue(now=deadline - timedelta(seconds=1)) == 0
    assert services.expire_overdue(now=deadline) == 1

    proposal = reload(proposal)
    assert proposal.status == Status.EXPIRED and proposal.due_at is None and proposal.expires_at is None
    assert proposal.status_reason == sweeps.TIRED_OF_WAITING
    assert expired_history(proposal) == [sweeps.TIRED_OF_WAITING]
    assert set(proposal.review_tasks.values_list("state", flat=True)) == {ReviewTask.State.CLOSED}
    assert ReviewTask.history.filter(proposal_id=proposal.pk, history_change_reason__contains="expired").count() == 1
    (delivery,) = CallbackDelivery.objects.filter(proposal=proposal, event="proposal.expired")
    assert delivery.url == "https://agent.example/hook"
    assert reload(fresh).status == Status.PENDING_REVIEW
    with pytest.raises(services.NotReviewable):
        services.record_verdict(proposal.pk, people.finance1, "approve")
    assert services.expire_overdue(now=deadline + timedelta(minutes=1)) == 0  # once only


def test_an_expiry_event_is_sent_with_the_whole_proposal(submit, monkeypatch):
    proposal = submit(amount="120.00", callback_url="https://agent.example/hook")
    services.expire_overdue(now=proposal.expires_at)
    (delivery,) = CallbackDelivery.objects.filter(proposal=proposal, event="proposal.expired")
    sent = []

    def post_event(delivery: CallbackDelivery) -> tuple[int, str]:
        sent.append(delivery.payload)
        return 200, ""

    monkeypatch.setattr(events, "post_event", post_event)
    assert events.deliver(delivery.pk, now=proposal.expires_at) == CallbackDelivery.State.DELIVERED

    (body,) = sent
    assert body["event"] == "proposal.expired"
    assert body["proposal"]["status"] == "expired" and body["proposal"]["status_reason"] == sweeps.TIRED_OF_WAITING
    assert body["proposal"]["agent"] == "refund-bot"


def test_approved_and_claimed_work_never_expires(approved, submit, people):
    from approvals import operations

    done = approved(amount="120.00")
    held = submit(amount="120.00")
    operations.take_over(held.pk, people.operator)
    later = timezone.now() + timedelta(days=30)

    assert services.expire_overdue(now=later) == 0
    assert reload(done).status in (Status.APPROVED, Status.EXECUTED)
    assert reload(held).status == Status.PENDING_REVIEW


def test_a_sweep_works_in_batches_and_writes_history_for_every_row(submit, monkeypatch):
    monkeypatch.setattr(sweeps, "BATCH", 2)
    proposals = [submit(amount="120.00") for _ in range(5)]

    assert services.expire_overdue(now=timezone.now() + timedelta(hours=2)) == 5

    assert {reload(p).status for p in proposals} == {Status.EXPIRED}
    assert all(expired_history(p) == [sweeps.TIRED_OF_WAITING] for p in proposals)


@pytest.mark.skipif(connection.vendor != "postgresql", reason="the array parameter is PostgreSQL's; SQLite keeps IN lists")
def test_on_postgresql_a_sweep_batchs_statements_are_the_same_text_whatever_its_size(submit, people, channel):
    """psycopg re-parses a statement whose text is new or long: a batch of 2,000 written as IN lists
    cost about 5 ms a statement. The ids travel as one array, so a batch of 2 and a batch of 5 run
    the same statements; only the inserts of new rows (notifications, callback events) grow."""
    channel("finance")
    people.make("head-of-finance", "finance-leads")
    channel("finance-leads")

    def sweep_statements(count: int) -> list[str]:
        proposals = [submit(amount="120.00", callback_url="https://agent.example/hook") for _ in range(count)]
        ReviewTask.objects.filter(proposal__in=proposals).update(escalation_group=Group.objects.get(name="finance-leads"))
        statements = []

        def record(execute, sql, params, many, context):
            statements.append(sql)
            return execute(sql, params, many, context)

        with connection.execute_wrapper(record):
            assert services.escalate_overdue(now=services.active_task(proposals[-1]).due_at + timedelta(seconds=1)) == count
            assert services.expire_overdue(now=timezone.now() + timedelta(hours=2)) == count
        new_rows = [sql for sql in statements if sql.startswith("INSERT") and (" VALUES " in sql or " UNNEST(" in sql)]
        return [sql for sql in statements if sql not in new_rows and "SAVEPOINT" not in sql]

    two, five = sweep_statements(2), sweep_statements(5)

    assert sum("= ANY(%s)" in sql for sql in two) >= 9
    assert sorted(two) == sorted(five)
    assert Notification.objects.filter(event="escalated").count() == 7
    assert CallbackDelivery.objects.filter(event="proposal.expired").count() == 7


@pytest.mark.django_db(transaction=True)
def test_two_sweeps_racing_expire_each_proposal_once_and_tell_its_agent_once(submit):
    proposals = [submit(amount="120.00", callback_url="https://agent.example/hook") for _ in range(6)]
    later, barrier, counts = timezone.now() + timedelta(hours=2), threading.Barrier(2), []

    def sweep() -> None:
        barrier.wait()
        try:
            counts.append(services.expire_overdue(now=later))
        finally:
            connection.close()

    threads = [threading.Thread(target=sweep) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert sum(counts) == 6 and len(counts) == 2
    for proposal in proposals:
        assert reload(proposal).status == Status.EXPIRED
        assert len(expired_history(proposal)) == 1
        assert CallbackDelivery.objects.filter(proposal=proposal, event="proposal.expired").count() == 1


def test_a_missed_sla_escalates_in_one_set_based_pass_with_a_history_row_each(publish, submit, people):
    people.make("head-of-finance", "finance-leads")
    tasks = []
    for _ in range(3):
        proposal = submit(amount="120.00")
        tasks.append(services.active_task(proposal))
    ReviewTask.objects.filter(pk=tasks[0].pk).update(escalation_group=None)
    ReviewTask.objects.filter(pk__in=[t.pk for t in tasks[1:]]).update(escalation_group=Group.objects.get(name="finance-leads"))
    later = tasks[-1].due_at + timedelta(seconds=1)

    assert services.escalate_overdue(now=later) == 3
    assert services.escalate_overdue(now=later) == 0

    reasons = sorted(ReviewTask.history.filter(history_change_reason__startswith="SLA missed")
                     .values_list("history_change_reason", flat=True))
    assert reasons == ["SLA missed: escalated to finance-leads"] * 2 + ["SLA missed: escalated to nobody (no escalation group)"]
    assert all(reload(task).escalated_at == later for task in tasks)


@pytest.mark.worker
@pytest.mark.django_db(transaction=True)
def test_two_beats_sweeping_at_once_expire_work_and_tell_the_agent_once(matrix, api, start_worker, httpserver, tmp_path):
    httpserver.expect_request("/expiry-hook", method="POST").respond_with_data("ok")
    body = proposal_body(idempotency_key="ages-out", callback_url=httpserver.url_for("/expiry-hook"))
    created = api.post("/api/v1/proposals/", data=json.dumps(body), content_type="application/json").json()
    assert created["status"] == "pending_review"
    Proposal.objects.filter(pk=created["id"]).update(expires_at=timezone.now() - timedelta(seconds=1))  # the clock, moved on

    workers = [start_worker(beat=True, SWEEP_INTERVAL_SECONDS="0.5", EXECUTION_DISPATCH_GRACE_SECONDS="1",
                            CELERY_BEAT_SCHEDULE_FILENAME=tmp_path / f"beat-{n}") for n in range(2)]

    expired_events = lambda: [r for r, _ in httpserver.log if r.headers["X-HITL-Event"] == "proposal.expired"]  # noqa: E731
    wait_until(expired_events, message="the agent to hear of the expiry")
    for worker in workers:  # both beats keep sweeping: a second event or history row would appear now
        wait_for_sweeps(worker, 3)

    proposal = Proposal.objects.get(pk=created["id"])
    assert proposal.status == Status.EXPIRED and not proposal.executions.exists()
    assert len(expired_events()) == 1
    assert json.loads(expired_events()[0].get_data())["proposal"]["status"] == "expired"
    assert len(expired_history(proposal)) == 1


def test_sweeps_tell_the_review_groups_and_keep_the_decision_log_verifiable(submit, people, channel):
    """The sweeps write history rows in bulk (no simple-history signal): they announce and log them themselves."""
    from approvals.models import Notification
    from ledger.verify import verify

    channel("finance")
    people.make("head-of-finance", "finance-leads")
    channel("finance-leads")
    escalating = submit(amount="120.00")
    task = services.active_task(escalating)
    ReviewTask.objects.filter(pk=task.pk).update(escalation_group=Group.objects.get(name="finance-leads"))

    assert services.escalate_overdue(now=task.due_at + timedelta(seconds=1)) == 1
    ageing = submit(amount="120.00", changes={"status": "refunded", "refund_amount": "130.00"})
    assert services.expire_overdue(now=reload(ageing).expires_at) == 2

    told = sorted(Notification.objects.filter(event__in=["escalated", "expired"]).values_list("event", "recipient", "proposal"))
    assert told == sorted([("escalated", "finance-leads@example.com", escalating.pk),
                           ("expired", "finance@example.com", escalating.pk), ("expired", "finance@example.com", ageing.pk)])
    report = verify()
    assert report.intact, report.problems


def test_expiry_tells_the_groups_with_a_channel_and_only_them(submit, channel):
    channel("finance")  # support has no channel: its expired work is told to nobody
    big = [submit(amount="120.00") for _ in range(3)]
    small = submit(amount="40.00", changes={"status": "refunded", "refund_amount": "40.00"})

    assert services.expire_overdue(now=small.expires_at) == 4

    told = Notification.objects.filter(event="expired")
    assert sorted(told.values_list("proposal_id", flat=True)) == sorted(p.pk for p in big)
    assert set(told.values_list("recipient", flat=True)) == {"finance@example.com"}


def test_expiring_work_nobody_is_to_be_told_of_reads_no_proposal_to_announce_it(submit, django_assert_max_num_queries):
    """A sweep batch of thousands in a deployment without channels must not load thousands of
    proposals (with their JSON) to build messages for nobody: two narrow queries decide that."""
    ids = [submit(amount="120.00").pk for _ in range(4)]

    with django_assert_max_num_queries(2) as queries:
        assert notifications.announce_in_bulk("expired", proposal_ids=ids) == 0

    assert not any('"changes"' in query["sql"] for query in queries.captured_queries)


def test_deciding_who_hears_of_a_sweep_batch_reads_the_tiers_alone(submit, django_assert_max_num_queries):
    """The tiers' default order is their proposal's deadline: a join and a sort over each batch of
    thousands (up to 1.5 s a batch on SQLite) to build what is used as a set."""
    proposals = [submit(amount="120.00") for _ in range(3)]
    tiers = [services.active_task(p).pk for p in proposals]

    with django_assert_max_num_queries(3) as queries:
        assert notifications.announce_in_bulk("escalated", task_ids=tiers, proposal_ids=[p.pk for p in proposals]) == 0

    tier_reads = [q["sql"] for q in queries.captured_queries if 'FROM "approvals_reviewtask"' in q["sql"]]
    assert len(tier_reads) == 2
    assert not any("approvals_proposal" in sql.split("WHERE")[0] or "ORDER BY" in sql for sql in tier_reads)


@pytest.mark.skipif(connection.vendor != "sqlite", reason="the plan asked for is SQLite's (PostgreSQL seeks either way)")
def test_a_sweep_with_nothing_due_seeks_the_deadline_index_instead_of_scanning(submit, django_assert_max_num_queries):
    """Open rows whose deadlines all look alike made SQLite's planner scan the table to answer
    "is anything due?" (36 ms at 100,000 open proposals): the sweeps ask for the first by deadline."""
    first = [submit(amount="120.00") for _ in range(30)][0]
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE")

    with django_assert_max_num_queries(2) as queries:
        assert services.escalate_overdue(now=first.created_at) + services.expire_overdue(now=first.created_at) == 0

    with connection.cursor() as cursor:
        for query in queries.captured_queries:
            cursor.execute("EXPLAIN QUERY PLAN " + query["sql"])
            plan = " ".join(str(step[-1]) for step in cursor.fetchall())
            assert "SEARCH" in plan and "SCAN approvals_" not in plan, plan
