"""Celery tasks: thin wrappers that pass ids to the services and reschedule when told to."""

from __future__ import annotations

from celery import shared_task

from approvals import execution, services
from approvals import events


@shared_task(bind=True, acks_late=True, reject_on_worker_lost=True, max_retries=None)
def execute_proposal(self, proposal_id: str) -> str:
    result = execution.run(proposal_id, attempt=self.request.retries + 1)
    if result.retry_in is not None:
        raise self.retry(countdown=result.retry_in)
    return result.status


@shared_task(acks_late=True)
def sweep_overdue_reviews() -> dict[str, int]:
    """From beat: escalate reviews past their SLA, and resume executions whose worker died."""
    escalated = services.escalate_overdue()
    resumed = execution.stuck_executions()
    for proposal_id in resumed:
        execute_proposal.delay(proposal_id)
    sweep_callback_deliveries()
    return {"escalated": escalated, "resumed": len(resumed)}


@shared_task(acks_late=True)
def deliver_callback(delivery_id: int) -> str:
    """One attempt to send a callback event. A failure is not retried here: the sweep re-enqueues it when due."""
    return events.deliver(delivery_id)


@shared_task(acks_late=True)
def sweep_callback_deliveries() -> int:
    """Enqueue the callback deliveries now due: retries after backoff, and any enqueue lost at commit."""
    due = events.due_deliveries()
    for delivery_id in due:
        deliver_callback.delay(delivery_id)
    return len(due)


@shared_task(acks_late=True)
def reopen_stale_proposal(proposal_id: str) -> str:
    """After an execution found the record changed: re-preview and reopen review. A redelivery
    finds the proposal no longer stale and does nothing."""
    return execution.reopen_stale(proposal_id)


@shared_task(acks_late=True)
def rollback_batch(batch_id: int) -> str:
    """Work through a rollback batch; only the delivery that moves it queued -> running does anything."""
    from approvals import rollback

    return rollback.run_batch(batch_id)
