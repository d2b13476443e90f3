"""Celery tasks of the policies app: thin wrappers that pass ids to the services."""

from __future__ import annotations

from celery import shared_task

from policies import simulation


@shared_task(bind=True, acks_late=True, reject_on_worker_lost=True, max_retries=20)
def run_simulation(self, run_id: int) -> str:
    """Replay a simulation run. Redelivery is harmless: the run is claimed queued -> running once.

    A delivery that finds the run held by another worker checks back when that worker's
    heartbeat would be stale, so a run orphaned by a dead worker is finished by another.
    """
    status = simulation.execute(run_id)
    if status == "busy":
        raise self.retry(countdown=simulation.seconds_until_stale(run_id))
    return status
