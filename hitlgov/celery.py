"""The Celery app: executes approved proposals and sweeps overdue reviews from beat."""

import os

from celery import Celery, Task
from celery.signals import task_postrun, task_prerun

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "hitlgov.settings")

app = Celery("hitlgov")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


@task_prerun.connect
@task_postrun.connect
def recycle_database_connections(task: Task | None = None, **kwargs) -> None:
    """Before and after each task, close the connections past CONN_MAX_AGE or unusable, and keep the
    rest, as Django does around a request (settings.CELERY_DB_REUSE_MAX stops Celery closing them all)."""
    if task is None or getattr(task.request, "is_eager", False):
        return  # run in the caller's process, inside its transaction: the connection is not the task's
    from django.db import close_old_connections

    close_old_connections()


@app.on_after_finalize.connect
def schedule_sweeps(sender: Celery, **kwargs) -> None:
    from django.conf import settings

    sender.add_periodic_task(settings.SWEEP_INTERVAL_SECONDS, sender.signature("approvals.tasks.sweep_overdue_reviews"))
    sender.add_periodic_task(settings.HEARTBEAT_INTERVAL_SECONDS, sender.signature("hitlgov.heartbeat"))
    sender.add_periodic_task(settings.AUDIT_ANCHOR_INTERVAL_SECONDS, sender.signature("ledger.tasks.write_anchor"))
    sender.add_periodic_task(24 * 3600, sender.signature("approvals.tasks.purge_evidence"))
    sender.add_periodic_task(settings.SWEEP_INTERVAL_SECONDS, sender.signature("approvals.tasks.sweep_notifications"))
    sender.add_periodic_task(settings.BOARD_REFRESH_SECONDS, sender.signature("approvals.tasks.refresh_board"))
    if settings.DEMO_TRICKLE_SECONDS > 0:  # off by default: only the demo wants invented work
        sender.add_periodic_task(settings.DEMO_TRICKLE_SECONDS, sender.signature("approvals.tasks.demo_trickle"))


@app.task(name="hitlgov.heartbeat", ignore_result=True)
def heartbeat() -> None:
    """Sent by beat, run by a worker: /healthz reads how long ago it last ran."""
    from hitlgov.health import record_heartbeat

    record_heartbeat()
