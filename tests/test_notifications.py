"""Review groups hear of their work: assignment, reminder, escalation and outcome, each once per
recipient, by email (Django's outbox here) and Slack (a local server speaking Slack's shapes)."""

from __future__ import annotations

import json
import threading
from datetime import timedelta

import pytest
from django.core import mail
from django.db import connection
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from approvals import notification_delivery, notifications, services
from approvals.models import Notification, NotificationChannel, OutboxMessage
from tests.conftest import matrix_spec, reload, rule, tier

FINANCE = matrix_spec(rule("refunds-over-100", "review", actions=["refund"],
                           tiers=(tier("finance", sla_minutes=60, escalation_group="finance-leads", remind_at=0.5),)))


def deliver_now(ids=None) -> dict:
    """What the worker does with the outbox's delivery messages, in this process."""
    ids = ids or list(Notification.objects.filter(state="pending").values_list("pk", flat=True))
    return notification_delivery.deliver_many(ids)


def both_at_once(*calls):
    """Run the calls in two threads started together, as two beat sweeps on two machines would."""
    barrier, results, errors = threading.Barrier(len(calls)), [None] * len(calls), []

    def run(i, call):
        try:
            barrier.wait()
            results[i] = call()
        except Exception as exc:  # surfaced below: a thread's failure must fail the test
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=run, args=(i, call)) for i, call in enumerate(calls)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not errors, errors
    return results


@pytest.mark.matrix(FINANCE)
def test_a_tier_opening_emails_its_group_once_with_the_change_rule_confidence_due_time_and_links(
        submit, channel, django_capture_on_commit_callbacks):
    channel("finance", emails="finance@example.com, lead@example.com")
    channel("support")  # another group hears nothing
    with django_capture_on_commit_callbacks(execute=True):
        proposal = submit()

    assert sorted(m.to[0] for m in mail.outbox) == ["finance@example.com", "lead@example.com"]
    message = mail.outbox[0]
    assert "refund-bot wants to refund order A-1001: status delivered -> refunded, refund_amount 0.00 -> 120.00" in message.subject
    assert "Confidence: 0.93" in message.body and "Rule: refunds-over-100" in message.body
    task = services.active_task(proposal)
    assert f"Due: {task.due_at:%Y-%m-%d %H:%M} UTC (finance, tier 1)" in message.body
    assert reverse("admin:approvals_proposal_change", args=[proposal.pk]) in message.body
    assert Notification.objects.filter(event="assigned").count() == 2
    assert set(Notification.objects.values_list("state", flat=True)) == {"sent"}
    assert OutboxMessage.objects.filter(task=notifications.DELIVER, sent_at__isnull=False).count() == 1


@pytest.mark.matrix(FINANCE)
def test_the_reminder_falls_at_the_matrix_fraction_of_the_sla_and_two_racing_sweeps_send_it_once(
        submit, channel, transactional_db):
    channel("finance")
    proposal = submit()
    task = services.active_task(proposal)
    assert task.remind_at == task.due_at - timedelta(minutes=30)  # remind_at: 0.5 of a 60-minute SLA

    assert notifications.send_reminders(now=task.remind_at - timedelta(seconds=1)) == 0
    counts = both_at_once(lambda: notifications.send_reminders(now=task.remind_at),
                          lambda: notifications.send_reminders(now=task.remind_at))

    assert sorted(counts) == [0, 1]
    assert notifications.send_reminders(now=task.due_at) == 0  # never again
    reminder = Notification.objects.get(event="reminder")
    assert reminder.subject.startswith("[HITL Gov] Reminder: review due soon: refund-bot wants to refund")
    assert reload(task).history.first().history_change_reason == "reminder sent: the SLA is running out"
    deliver_now()
    assert [m.subject for m in mail.outbox if "Reminder" in m.subject] == [reminder.subject]


@pytest.mark.matrix(FINANCE)
def test_reminders_are_swept_in_a_few_queries_however_many_are_due(submit, channel, django_assert_max_num_queries):
    channel("finance")
    tasks = [services.active_task(submit()) for _ in range(12)]
    due = max(t.remind_at for t in tasks)
    with django_assert_max_num_queries(16):  # 14, and the decision log's head read and event (ledger)
        assert notifications.send_reminders(now=due) == 12
    assert Notification.objects.filter(event="reminder").count() == 12
    latest = OutboxMessage.objects.filter(task=notifications.DELIVER).order_by("-id").first()
    assert sorted(latest.args[0]) == sorted(Notification.objects.filter(event="reminder").values_list("pk", flat=True))


@pytest.mark.matrix(FINANCE)
def test_an_assignment_delivered_by_two_racing_workers_is_sent_once(submit, channel, transactional_db, monkeypatch):
    channel("finance", emails="finance@example.com, lead@example.com")
    monkeypatch.setattr(notifications.outbox, "publish", lambda *args, **kwargs: None)  # both deliveries come from here
    submit()
    ids = list(Notification.objects.values_list("pk", flat=True))

    results = both_at_once(lambda: deliver_now(ids), lambda: deliver_now(ids))

    assert sum(r.get("sent", 0) for r in results) == 2 and sum(r.get("not due", 0) for r in results) == 2
    assert sorted(m.to[0] for m in mail.outbox) == ["finance@example.com", "lead@example.com"]
    assert set(Notification.objects.values_list("attempts", flat=True)) == {1}


@pytest.mark.matrix(FINANCE)
def test_escalation_tells_the_escalation_group_once_with_two_sweeps_racing(submit, channel, people, transactional_db):
    people.make("head-of-finance", "finance-leads")
    channel("finance")
    channel("finance-leads", emails="leads@example.com")
    proposal = submit()
    task = services.active_task(proposal)

    counts = both_at_once(lambda: services.escalate_overdue(now=task.due_at + timedelta(minutes=1)),
                          lambda: services.escalate_overdue(now=task.due_at + timedelta(minutes=1)))

    assert sorted(counts) == [0, 1]
    escalated = Notification.objects.get(event="escalated")
    assert escalated.recipient == "leads@example.com"
    assert escalated.subject.startswith("[HITL Gov] Escalated: review overdue")
    assert Notification.objects.filter(event="escalated").count() == 1


@pytest.mark.matrix(FINANCE)
def test_the_outcome_reaches_the_groups_that_were_asked(submit, channel, people, django_capture_on_commit_callbacks):
    channel("finance")
    proposal = submit()
    with django_capture_on_commit_callbacks(execute=True):
        services.record_verdict(proposal.pk, people.finance1, "reject", "not within policy")

    rejected = Notification.objects.get(event="rejected")
    assert rejected.recipient == "finance@example.com"
    assert "Now rejected: not within policy" in rejected.text
    assert [m.subject for m in mail.outbox if "Rejected" in m.subject] == [rejected.subject]


@pytest.mark.matrix(FINANCE)
def test_other_operations_announce_their_events_with_one_call(submit, channel):
    """The hook request-info, expiry and delegation call inside their own transactions."""
    channel("finance")
    proposal = submit()
    sent = notifications.notify(proposal, "info_requested", key="info:1", note="Which photo shows the damage?")
    again = notifications.notify(proposal, "info_requested", key="info:2", note="And the receipt?")

    assert [n.recipient for n in sent] == ["finance@example.com"] and len(again) == 1
    assert notifications.notify(proposal, "info_requested", key="info:1") == []  # the same key: announced once
    assert sent[0].subject.startswith("[HITL Gov] Info requested: refund-bot wants to refund")
    assert "Which photo shows the damage?" in sent[0].text


@pytest.mark.matrix(FINANCE)
def test_a_failed_send_waits_out_its_backoff_in_the_outbox_then_is_sent_once(submit, channel, settings, monkeypatch):
    channel("finance")
    proposal = submit()
    notification = Notification.objects.get(proposal=proposal)
    now = timezone.now()
    with monkeypatch.context() as patch:
        patch.setattr("django.core.mail.EmailMessage.send", lambda self: (_ for _ in ()).throw(ConnectionRefusedError("smtp down")))
        assert notification_delivery.deliver_many([notification.pk], now=now) == {"retry": 1}

    notification = reload(notification)
    assert (notification.state, notification.attempts) == ("pending", 1)
    assert "ConnectionRefusedError: smtp down" in notification.last_error
    assert notification.next_attempt_at == now + timedelta(seconds=30)
    retry = OutboxMessage.objects.get(task=notifications.DELIVER, due_at=notification.next_attempt_at)
    assert retry.args == [[notification.pk]]
    assert notification_delivery.deliver_many([notification.pk], now=now + timedelta(seconds=29)) == {"not due": 1}

    later = now + timedelta(seconds=30)
    assert notification_delivery.deliver_many([notification.pk], now=later) == {"sent": 1}
    assert notification_delivery.deliver_many([notification.pk], now=later) == {"not due": 1}
    assert (reload(notification).state, reload(notification).attempts, len(mail.outbox)) == ("sent", 2, 1)


@pytest.mark.matrix(FINANCE)
def test_sends_that_keep_failing_fail_for_good_after_the_last_delay(submit, channel, settings, monkeypatch):
    settings.NOTIFICATION_RETRY_DELAYS_SECONDS = (1,)
    channel("finance")
    notification = Notification.objects.get(proposal=submit())
    monkeypatch.setattr("django.core.mail.EmailMessage.send", lambda self: (_ for _ in ()).throw(OSError("down")))
    now = timezone.now()
    assert notification_delivery.deliver_many([notification.pk], now=now) == {"retry": 1}
    assert notification_delivery.deliver_many([notification.pk], now=now + timedelta(seconds=1)) == {"failed": 1}
    assert (reload(notification).state, reload(notification).attempts) == ("failed", 2)


@pytest.mark.matrix(FINANCE)
def test_slack_channels_post_with_the_bot_token_and_webhooks_post_their_url(
        submit, channel, httpserver, settings, monkeypatch):
    monkeypatch.setenv("HITL_SECRET_SLACK_TOKEN", "xoxb-test-token")
    monkeypatch.setenv("HITL_SECRET_SLACK_WEBHOOK", httpserver.url_for("/services/T1/B1/hook"))
    settings.SLACK_API_URL = httpserver.url_for("/api/")
    channel("finance", kind=NotificationChannel.Kind.SLACK, slack_channel="C0FINANCE", secret_ref="env:HITL_SECRET_SLACK_TOKEN")
    channel("finance", kind=NotificationChannel.Kind.SLACK_WEBHOOK, secret_ref="env:HITL_SECRET_SLACK_WEBHOOK")
    httpserver.expect_request("/api/chat.postMessage", method="POST", headers={"Authorization": "Bearer xoxb-test-token"}
                              ).respond_with_json({"ok": True, "channel": "C0FINANCE", "ts": "1764680000.000100"})
    httpserver.expect_request("/services/T1/B1/hook", method="POST").respond_with_data("ok")

    proposal = submit()
    assert deliver_now() == {"sent": 2}

    bodies = {request.path: json.loads(request.get_data()) for request, _ in httpserver.log}
    posted, hooked = bodies["/api/chat.postMessage"], bodies["/services/T1/B1/hook"]
    assert posted["channel"] == "C0FINANCE"
    assert posted["text"].startswith("[HITL Gov] Review needed: refund-bot wants to refund order A-1001")
    bot_message = Notification.objects.get(channel__kind="slack")
    buttons = {e["action_id"]: e for e in posted["blocks"][1]["elements"]}
    assert buttons["approve"]["value"] == buttons["reject"]["value"] == f"{bot_message.pk}:{proposal.change_hash}"
    assert buttons["open"]["url"].endswith(reverse("admin:approvals_proposal_change", args=[proposal.pk]))
    assert bot_message.slack_ts == "1764680000.000100"
    assert hooked["text"] == posted["text"] and "channel" not in hooked


@pytest.mark.matrix(FINANCE)
def test_an_outcome_in_a_slack_channel_takes_the_buttons_off_the_earlier_message(
        submit, channel, people, httpserver, settings, monkeypatch, django_capture_on_commit_callbacks):
    monkeypatch.setenv("HITL_SECRET_SLACK_TOKEN", "xoxb-test-token")
    settings.SLACK_API_URL = httpserver.url_for("/api/")
    channel("finance", kind=NotificationChannel.Kind.SLACK, slack_channel="C0FINANCE", secret_ref="env:HITL_SECRET_SLACK_TOKEN")
    httpserver.expect_ordered_request("/api/chat.postMessage").respond_with_json({"ok": True, "ts": "1.1"})
    httpserver.expect_ordered_request("/api/chat.postMessage").respond_with_json({"ok": True, "ts": "2.2"})
    httpserver.expect_ordered_request("/api/chat.update").respond_with_json({"ok": True, "ts": "1.1"})
    with django_capture_on_commit_callbacks(execute=True):
        proposal = submit()
    with django_capture_on_commit_callbacks(execute=True):
        services.record_verdict(proposal.pk, people.finance1, "reject", "duplicate refund")

    update = json.loads(httpserver.log[-1][0].get_data())
    assert (update["channel"], update["ts"]) == ("C0FINANCE", "1.1")
    assert update["text"].startswith("[HITL Gov] Rejected: refund-bot wants to refund")
    assert [b["type"] for b in update["blocks"]] == ["section", "context"]  # no buttons left
    httpserver.check_assertions()


@pytest.mark.matrix(FINANCE)
def test_slack_refusing_a_message_is_a_failed_attempt_with_its_error(submit, channel, httpserver, settings, monkeypatch):
    monkeypatch.setenv("HITL_SECRET_SLACK_TOKEN", "xoxb-test-token")
    settings.SLACK_API_URL = httpserver.url_for("/api/")
    channel("finance", kind=NotificationChannel.Kind.SLACK, slack_channel="C0GONE", secret_ref="env:HITL_SECRET_SLACK_TOKEN")
    httpserver.expect_request("/api/chat.postMessage").respond_with_json({"ok": False, "error": "channel_not_found"})
    submit()
    assert deliver_now() == {"retry": 1}
    assert "channel_not_found" in Notification.objects.get().last_error


@pytest.mark.matrix(FINANCE)
def test_groups_without_a_channel_get_no_rows(submit):
    submit()
    assert not Notification.objects.exists()


def test_the_admin_shows_each_notification_with_its_attempts(governed, channel, people):
    channel("finance")
    notifications.notify(governed.finance_proposal, "info_requested", key="asked")
    client = Client()
    client.force_login(governed.admin)
    page = client.get(reverse("admin:approvals_notification_changelist"))
    assert page.status_code == 200 and "finance@example.com" in page.content.decode()
    notification = Notification.objects.get(key="asked", recipient="finance@example.com")
    detail = client.get(reverse("admin:approvals_notification_change", args=[notification.pk])).content.decode()
    assert "Attempts" in detail and "info_requested" in detail


def test_a_channel_is_saved_through_its_service_with_checked_references(people, db):
    from django.contrib.auth import get_user_model
    from django.core.exceptions import PermissionDenied, ValidationError

    from approvals.notification_setup import save_channel

    admin = get_user_model().objects.create_superuser("root", password="pw")
    from django.contrib.auth.models import Group

    finance = Group.objects.get(name="finance")
    with pytest.raises(ValidationError) as bad:
        save_channel(None, admin, {"group": finance, "kind": "slack", "slack_channel": "C1",
                                   "secret_ref": "env:SECRET_KEY"}, "slack for finance")
    assert "secret_ref" in bad.value.message_dict
    with pytest.raises(PermissionDenied):
        save_channel(None, people.finance1, {"group": finance, "emails": "f@example.com"}, "mine")
    saved = save_channel(None, admin, {"group": finance, "emails": "f@example.com"}, "finance's inbox")
    assert saved.history.first().history_change_reason == "finance's inbox"
