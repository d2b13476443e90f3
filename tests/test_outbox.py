"""The outbox in one process: an approval and its execution message commit together, a broker
error leaves the message due, retries wait in the outbox, lost messages are sent again, and
operators can read it all in the admin."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.test import Client
from django.utils import timezone

from approvals import outbox, rollback, services, tasks
from approvals.models import OutboxMessage, Proposal, Status
from connectors.adapters.base import TransientError
from connectors.adapters.sandbox import SandboxAdapter
from connectors.models import Execution, RollbackBatch
from policies import simulation
from policies.models import SimulationRun
from hitlgov.celery import app as celery_app
from tests.broker_outage import broker_down
from tests.conftest import approve_all, clear_broker, reload, sandbox_record


def messages(proposal: Proposal) -> list[OutboxMessage]:
    return list(OutboxMessage.objects.filter(proposal=proposal, task=outbox.EXECUTE).order_by("id"))


def auto_approved(submit, key: str = "auto") -> Proposal:
    """A small confident refund the demo matrix runs without review (its message not yet published:
    a test's transaction never commits, so nothing runs until the test runs the hooks)."""
    proposal = submit(key, amount="40.00", confidence=0.97, changes={"status": "refunded", "refund_amount": "40.00"})
    assert proposal.status == Status.APPROVED
    return proposal


def test_an_approval_stores_its_execution_message_and_publishes_it_after_commit(
    submit, people, django_capture_on_commit_callbacks
):
    proposal = submit("reviewed")
    with django_capture_on_commit_callbacks() as hooks:
        approve_all(proposal, people)
        (message,) = messages(proposal)
        assert reload(proposal).status == Status.APPROVED
        assert message.sent_at is None and message.args == [str(proposal.pk)]

    for hook in hooks:
        hook()

    message.refresh_from_db()
    assert message.sent_at is not None and message.attempts == 1 and message.last_error == ""
    assert reload(proposal).status == Status.EXECUTED


def test_a_sweep_between_the_commit_and_its_hook_leaves_the_message_to_the_hook(
    submit, django_capture_on_commit_callbacks
):
    """The writer stores its message claimed: one publish, and no claim of its own after the commit."""
    celery_app.conf.task_always_eager = False  # publish to the real broker (conftest's _celery_mode restores it)
    clear_broker()
    try:
        with django_capture_on_commit_callbacks() as hooks:
            proposal = auto_approved(submit)
        (message,) = messages(proposal)
        assert message.attempts == 1 and message.due_at > timezone.now()

        assert outbox.dispatch_due() == 0  # the beat's sweep, between the commit and the hook
        for hook in hooks:
            hook()
    finally:
        clear_broker()
    message.refresh_from_db()
    assert message.sent_at is not None and message.attempts == 1 and message.last_error == ""


def test_a_message_whose_writer_died_before_its_hook_is_sent_by_the_sweep_soon_after(submit):
    celery_app.conf.task_always_eager = False  # publish to the real broker (conftest's _celery_mode restores it)
    clear_broker()
    try:
        proposal = auto_approved(submit)  # its hook never runs: a test's transaction does not commit
        (message,) = messages(proposal)
        assert outbox.dispatch_due() == 0
        assert outbox.dispatch_due(now=timezone.now() + timedelta(seconds=outbox.FRESH_CLAIM_SECONDS + 1)) == 1
    finally:
        clear_broker()
    message.refresh_from_db()
    assert message.sent_at is not None and message.attempts == 2  # the writer's claim, then the sweep's


def test_an_approval_that_rolls_back_leaves_no_execution_message(submit, people, monkeypatch):
    proposal = submit("rolled-back")
    task = services.active_task(proposal)
    reviewers = [people.make(f"r{n}", task.group.name) for n in range(task.required)]
    for reviewer in reviewers[:-1]:
        services.record_verdict(proposal.pk, reviewer, "approve")
    save = Proposal.save

    def fail_once_approved(self, *args, **kwargs):
        if self.status == Status.APPROVED:
            raise RuntimeError("the database went away mid-approval")
        return save(self, *args, **kwargs)

    monkeypatch.setattr(Proposal, "save", fail_once_approved)
    with pytest.raises(RuntimeError):
        services.record_verdict(proposal.pk, reviewers[-1], "approve")

    assert reload(proposal).status == Status.PENDING_REVIEW
    assert not OutboxMessage.objects.exists()


def test_a_broker_error_at_publish_is_recorded_and_the_sweep_sends_it_later(
    submit, django_capture_on_commit_callbacks
):
    celery_app.conf.task_always_eager = False  # publish to the real broker (conftest's _celery_mode restores it)
    clear_broker()
    with broker_down(), django_capture_on_commit_callbacks(execute=True):
        proposal = auto_approved(submit)

    (message,) = messages(proposal)
    assert message.sent_at is None and message.attempts == 1
    assert "Error" in message.last_error  # FileNotFoundError on the filesystem broker, OperationalError on Redis

    try:
        assert outbox.dispatch_due() == 1
    finally:
        clear_broker()
    message.refresh_from_db()
    assert message.sent_at is not None and message.attempts == 2
    assert reload(proposal).status == Status.APPROVED  # published, not run: no worker here


def test_a_transient_error_stores_the_next_attempt_due_later_instead_of_a_countdown(
    submit, people, monkeypatch, django_capture_on_commit_callbacks
):
    proposal = submit("transient")
    monkeypatch.setattr(SandboxAdapter, "execute", lambda *a, **k: (_ for _ in ()).throw(
        TransientError("503 from the helpdesk", status=503, retry_after=7)))
    with django_capture_on_commit_callbacks(execute=True):
        approve_all(proposal, people)

    first, retry = messages(proposal)
    assert reload(proposal).status == Status.EXECUTING
    assert retry.args == [str(proposal.pk), 2] and retry.sent_at is None
    assert timedelta(seconds=6) < retry.due_at - timezone.now() <= timedelta(seconds=7)
    assert outbox.dispatch_due() == 0  # not due yet

    monkeypatch.undo()
    past = timezone.now() - timedelta(seconds=1)  # the seven seconds have passed
    Proposal.objects.filter(pk=proposal.pk).update(lease_until=past)
    OutboxMessage.objects.filter(pk=retry.pk).update(due_at=past)
    assert outbox.dispatch_due() == 1

    assert reload(proposal).status == Status.EXECUTED
    assert list(Execution.objects.filter(proposal=proposal).order_by("id").values_list("outcome", flat=True)) == [
        "failed", "succeeded"]


def test_the_sweep_sends_again_an_approval_whose_message_was_lost_and_only_after_the_grace(submit, settings):
    settings.EXECUTION_DISPATCH_GRACE_SECONDS = 60
    lost, recent = auto_approved(submit, "lost"), auto_approved(submit, "recent")
    long_ago = timezone.now() - timedelta(minutes=5)
    OutboxMessage.objects.filter(proposal=lost).update(sent_at=long_ago, attempts=1)
    Proposal.objects.filter(pk=lost.pk).update(updated_at=long_ago)
    OutboxMessage.objects.filter(proposal=recent).update(sent_at=timezone.now(), attempts=1)

    assert outbox.unstarted_approvals() == [str(lost.pk)]
    assert tasks.sweep_overdue_reviews()["unstarted"] == 1

    assert reload(lost).status == Status.EXECUTED
    assert reload(recent).status == Status.APPROVED
    (message,) = messages(lost)
    assert message.attempts == 2 and message.sent_at > long_ago and "never started" in message.last_error
    assert tasks.sweep_overdue_reviews()["unstarted"] == 0
    assert sandbox_record("A-1001").history.count() == 2  # created, written once


def test_an_approval_from_before_the_outbox_is_sent_by_the_sweep_on_a_new_message(submit, settings):
    settings.EXECUTION_DISPATCH_GRACE_SECONDS = 60
    proposal = auto_approved(submit, "before-the-outbox")
    OutboxMessage.objects.all().delete()
    Proposal.objects.filter(pk=proposal.pk).update(updated_at=timezone.now() - timedelta(minutes=5))

    assert tasks.sweep_overdue_reviews()["unstarted"] == 1

    assert reload(proposal).status == Status.EXECUTED
    (message,) = messages(proposal)
    assert message.args == [str(proposal.pk)] and message.sent_at is not None and message.attempts == 1


def test_operators_read_the_outbox_in_the_admin_but_cannot_change_it(submit, people):
    proposal = auto_approved(submit)
    OutboxMessage.objects.filter(proposal=proposal).update(attempts=3, last_error="OperationalError: connection refused")
    (message,) = messages(proposal)
    browser = Client()
    browser.force_login(people.operator)

    listing = browser.get("/admin/approvals/outboxmessage/")
    assert listing.status_code == 200
    assert b"OperationalError: connection refused" in listing.content
    assert str(proposal).encode() in listing.content and b"<td class=\"field-attempts\">3</td>" in listing.content
    page = browser.get(f"/admin/approvals/outboxmessage/{message.pk}/change/")
    assert page.status_code == 200 and b"approvals.tasks.execute_proposal" in page.content

    assert browser.get("/admin/approvals/outboxmessage/add/").status_code == 403
    assert browser.post(f"/admin/approvals/outboxmessage/{message.pk}/change/", {"attempts": 0}).status_code == 403
    assert browser.post(f"/admin/approvals/outboxmessage/{message.pk}/delete/", {"post": "yes"}).status_code == 403
    assert OutboxMessage.objects.get(pk=message.pk).attempts == 3


def test_a_simulation_asked_for_while_the_broker_is_down_runs_from_the_sweep(people, matrix, settings,
                                                                              django_capture_on_commit_callbacks):
    """The board member gets their page, not a 500; the queued run is the record the sweep sends again."""
    settings.EXECUTION_DISPATCH_GRACE_SECONDS = 60
    celery_app.conf.task_always_eager = False
    clear_broker()
    with broker_down(), django_capture_on_commit_callbacks(execute=True):
        run = simulation.start_run(matrix, people.board1)
    assert reload(run).status == SimulationRun.State.QUEUED
    celery_app.conf.task_always_eager = True  # a worker would run what the sweep sends; here it runs in place

    assert tasks.sweep_overdue_reviews()["requeued"] == 0  # within the grace: its message may still be on its way
    SimulationRun.objects.filter(pk=run.pk).update(created_at=timezone.now() - timedelta(minutes=5))
    assert tasks.sweep_overdue_reviews()["requeued"] == 1

    assert reload(run).status == SimulationRun.State.DONE
    assert tasks.sweep_overdue_reviews()["requeued"] == 0


def test_a_rollback_batch_whose_message_was_lost_is_sent_again_by_the_sweep(executed, people, settings):
    settings.EXECUTION_DISPATCH_GRACE_SECONDS = 60
    proposal = executed("batch-lost")
    celery_app.conf.task_always_eager = False
    clear_broker()
    batch = rollback.start_batch(people.operator, "incident 12", proposal_ids=[str(proposal.pk)])
    long_ago = timezone.now() - timedelta(minutes=5)
    RollbackBatch.objects.filter(pk=batch.pk).update(created_at=long_ago)
    OutboxMessage.objects.filter(task="approvals.tasks.rollback_batch").update(sent_at=long_ago)  # sent, then
    clear_broker()  # fetched by a worker that died with it
    celery_app.conf.task_always_eager = True

    assert tasks.sweep_overdue_reviews()["requeued"] == 1

    assert reload(batch).status == RollbackBatch.Status.DONE and reload(batch).rolled_back == 1
    assert reload(proposal).status == Status.ROLLED_BACK
