"""Celery tasks: thin wrappers that pass ids to the services; the sweeps beat runs."""

from __future__ import annotations

from datetime import timedelta

from celery import shared_task
from django.conf import settings
from django.utils import timezone

from approvals import events, execution, notification_delivery, notifications, outbox, retention, rollback, services
from policies import simulation


@shared_task(acks_late=True, reject_on_worker_lost=True)
def execute_proposal(proposal_id: str, attempt: int = 1) -> str:
    """One attempt. A transient error stores the next attempt in the outbox, due when the sweep
    should send it (never a countdown held in a worker's memory)."""
    return execution.run(proposal_id, attempt=attempt).status


@shared_task(acks_late=True)
def sweep_overdue_reviews() -> dict[str, int]:
    """From beat: escalate reviews past their SLA; expire work past its maximum age (their events go
    out with the callback sweep below); publish the outbox's due messages; send again
    approvals, rollback batches and simulation runs whose message was lost; resume executions
    whose worker died."""
    escalated = services.escalate_overdue()
    expired = services.expire_overdue()
    dispatched = outbox.dispatch_due()
    unstarted = outbox.resume_unstarted()
    resumed = execution.stuck_executions()
    for proposal_id in resumed:
        outbox.publish(outbox.EXECUTE, [proposal_id])  # the expired lease is the durable record: found again if lost
    sweep_callback_deliveries()
    requeued = resend_unstarted_batches_and_runs()
    return {"escalated": escalated, "expired": expired, "dispatched": dispatched, "unstarted": unstarted, "resumed": len(resumed),
            "requeued": requeued}


def resend_unstarted_batches_and_runs() -> int:
    """Rollback batches and simulation runs still queued a grace period after they were asked for:
    the queued row is the record, so the message is sent again (their claims are conditional)."""
    cutoff = timezone.now() - timedelta(seconds=settings.EXECUTION_DISPATCH_GRACE_SECONDS)
    batches, runs = rollback.unstarted_batches(cutoff), simulation.unstarted_runs(cutoff)
    for batch_id in batches:
        outbox.publish("approvals.tasks.rollback_batch", [batch_id])
    for run_id in runs:
        outbox.publish("policies.tasks.run_simulation", [run_id])
    return len(batches) + len(runs)


@shared_task(acks_late=True)
def deliver_callback(delivery_id: int) -> str:
    """One attempt to send a callback event. A failure is not retried here: the sweep re-enqueues it when due."""
    return events.deliver(delivery_id)


@shared_task(acks_late=True)
def sweep_callback_deliveries() -> int:
    """Enqueue the callback deliveries now due: retries after backoff, and any enqueue lost at commit."""
    due = events.due_deliveries()
    for delivery_id in due:
        if outbox.publish("approvals.tasks.deliver_callback", [delivery_id]) is not None:
            break  # the broker is down: the deliveries stay due for the next sweep
    return len(due)


@shared_task(acks_late=True)
def reopen_stale_proposal(proposal_id: str) -> str:
    """After an execution found the record changed: re-preview and reopen review. A redelivery
    finds the proposal no longer stale and does nothing."""
    return execution.reopen_stale(proposal_id)


@shared_task(acks_late=True)
def rollback_batch(batch_id: int) -> str:
    """Work through a rollback batch; only the delivery that moves it queued -> running does anything."""
    return rollback.run_batch(batch_id)


@shared_task
def purge_evidence() -> dict[str, int]:
    """From beat, daily: purge the evidence payloads past their retention (approvals.retention)."""
    result = retention.purge_evidence()
    return {"proposals": result.proposals, "history_rows": result.history_rows}


@shared_task(acks_late=True)
def deliver_notifications(notification_ids: list[int]) -> dict[str, int]:
    """One attempt at each; a redelivered message finds them claimed or sent and does nothing."""
    return notification_delivery.deliver_many(notification_ids)


@shared_task(acks_late=True)
def sweep_notifications() -> dict[str, int]:
    """From beat: remind the tiers whose reminder is due; send again what lost its message."""
    reminded = notifications.send_reminders()
    stalled = notification_delivery.stalled()
    if stalled:
        outbox.publish("approvals.tasks.deliver_notifications", [stalled])
    return {"reminded": reminded, "stalled": len(stalled)}


@shared_task
def demo_trickle() -> int:
    """From beat, in the demo only (DEMO_TRICKLE_SECONDS): simulated agents submit a few proposals."""
    from approvals import demo_stories
    from approvals.models import Integration

    agent = Integration.objects.filter(name="demo-agent").first()
    return len(demo_stories.trickle(agent)) if agent else 0


@shared_task(acks_late=True)
def refresh_board() -> int:
    """From beat: roll up the board's finished days that changed or are missing (approvals.board_days)."""
    from approvals import board_days

    return len(board_days.refresh())
