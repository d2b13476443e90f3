"""The Celery app: executes approved proposals and sweeps overdue reviews from beat."""

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "hitlgov.settings")

app = Celery("hitlgov")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


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
