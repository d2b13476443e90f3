"""Notifications end to end: a real Celery worker with beat delivers to a real SMTP server (aiosmtpd)
and a local server speaking Slack's incoming-webhook shape. Time is moved by moving the tier's
reminder and due times, never by sleeping."""

from __future__ import annotations

import email
import json
import re
import socket
from datetime import timedelta

import pytest
from aiosmtpd.controller import Controller
from django.utils import timezone

from approvals.models import Notification, NotificationChannel, ReviewTask
from tests.conftest import matrix_spec, rule, tier, wait_until

pytestmark = [pytest.mark.worker, pytest.mark.django_db(transaction=True)]
FINANCE = matrix_spec(rule("refunds-over-100", "review", actions=["refund"],
                           tiers=(tier("finance", sla_minutes=60, escalation_group="finance-leads", remind_at=0.5),)))


class Inbox:
    """What a mail server received, as parsed messages."""

    def __init__(self):
        self.messages: list[email.message.Message] = []

    async def handle_DATA(self, server, session, envelope):
        self.messages.append(email.message_from_bytes(envelope.content))
        return "250 OK"

    def subjects(self, prefix: str) -> list[str]:
        return [m["Subject"] for m in self.messages if m["Subject"].startswith(prefix)]


@pytest.fixture
def smtp():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    inbox = Inbox()
    controller = Controller(inbox, hostname="127.0.0.1", port=port)
    controller.start()
    inbox.port = port
    yield inbox
    controller.stop()


def finished(worker, task: str) -> int:
    return len(re.findall(rf"Task {re.escape(task)}\[[^\]]+\] succeeded", worker.output()))


@pytest.mark.matrix(FINANCE)
def test_assignment_reminder_and_escalation_each_arrive_once_by_smtp_and_slack_webhook(
        submit, channel, people, start_worker, smtp, httpserver):
    people.finance1.email = "finance1@example.com"
    people.finance1.save()
    people.make("head-of-finance", "finance-leads")
    channel("finance", emails="finance1@example.com")
    channel("finance", kind=NotificationChannel.Kind.SLACK_WEBHOOK, secret_ref="env:HITL_SECRET_SLACK_WEBHOOK")
    channel("finance-leads", emails="leads@example.com")
    httpserver.expect_request("/services/T1/B1/hook", method="POST").respond_with_data("ok")
    worker = start_worker(beat=True, SWEEP_INTERVAL_SECONDS=1,
                          EMAIL_BACKEND="django.core.mail.backends.smtp.EmailBackend",
                          EMAIL_HOST="127.0.0.1", EMAIL_PORT=smtp.port,
                          HITL_SECRET_SLACK_WEBHOOK=httpserver.url_for("/services/T1/B1/hook"))

    proposal = submit()
    wait_until(lambda: smtp.subjects("[HITL Gov] Review needed") and len(httpserver.log) == 1, message="assignment")
    [assigned] = smtp.messages
    assert assigned["To"] == "finance1@example.com"
    assert "/notifications/decide/" in assigned.get_payload()  # a member gets a link signed for them

    ReviewTask.objects.filter(proposal=proposal).update(remind_at=timezone.now() - timedelta(seconds=1))
    wait_until(lambda: smtp.subjects("[HITL Gov] Reminder") and len(httpserver.log) == 2, message="the reminder")

    ReviewTask.objects.filter(proposal=proposal).update(due_at=timezone.now() - timedelta(seconds=1))
    wait_until(lambda: smtp.subjects("[HITL Gov] Escalated"), message="the escalation")

    sweeps = finished(worker, "approvals.tasks.sweep_notifications") + 2
    wait_until(lambda: finished(worker, "approvals.tasks.sweep_notifications") >= sweeps
               and finished(worker, "approvals.tasks.sweep_overdue_reviews") >= 2, message="two more sweeps")
    assert [m["To"] for m in smtp.messages] == ["finance1@example.com", "finance1@example.com", "leads@example.com"]
    hooks = [json.loads(request.get_data())["text"] for request, _ in httpserver.log]
    assert [text.split(":")[0] for text in hooks] == ["[HITL Gov] Review needed", "[HITL Gov] Reminder"]
    assert set(Notification.objects.values_list("state", flat=True)) == {"sent"}
    assert Notification.objects.count() == 5
