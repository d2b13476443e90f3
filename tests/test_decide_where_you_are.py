"""Deciding from a notification: a signed Slack button, an email's signed confirmation page. Both
end in the admin's own record_verdict, and refuse what the admin would refuse."""

from __future__ import annotations

import json
import re
import time
from datetime import timedelta
from urllib.parse import urlencode

import pytest
from django.test import Client
from django.utils import timezone
from slack_sdk.signature import SignatureVerifier

from approvals import notification_delivery
from approvals.models import Notification, NotificationChannel, Review, ReviewTask, SlackIdentity, Status
from tests.conftest import matrix_spec, reload, rule, tier

SIGNING_SECRET = "8f742231b10e8888abcd99yyyzzz85a5"
FINANCE = matrix_spec(rule("refunds-over-100", "review", actions=["refund"], tiers=(tier("finance", sla_minutes=60),)))
SIGNED_LINKS = matrix_spec(rule("refunds-over-100", "review", actions=["refund"],
                                tiers=(tier("finance", sla_minutes=60, signed_links=True),)))
ACTIONS = "/notifications/slack/actions/"


# ---- Slack ---------------------------------------------------------------------------------------

@pytest.fixture
def slack(submit, channel, httpserver, settings, monkeypatch):
    """A finance proposal announced in a Slack channel by a bot; Slack's API and response_url served locally."""
    monkeypatch.setenv("HITL_SECRET_SLACK_TOKEN", "xoxb-test-token")
    monkeypatch.setenv("HITL_SECRET_SLACK_SIGNING", SIGNING_SECRET)
    settings.SLACK_API_URL = httpserver.url_for("/api/")
    settings.SLACK_SIGNING_SECRET_REF = "env:HITL_SECRET_SLACK_SIGNING"
    channel("finance", kind=NotificationChannel.Kind.SLACK, slack_channel="C0FINANCE", secret_ref="env:HITL_SECRET_SLACK_TOKEN")
    httpserver.expect_request("/api/chat.postMessage").respond_with_json({"ok": True, "channel": "C0FINANCE", "ts": "1.2"})
    httpserver.expect_request("/respond", method="POST").respond_with_data("ok")
    proposal = submit()
    notification = Notification.objects.get(proposal=proposal, event="assigned")
    notification_delivery.deliver_many([notification.pk])
    return proposal, notification


def press(client: Client, httpserver, notification, slack_user: str, action: str = "approve", *,
          value: str | None = None, timestamp: int | None = None, secret: str = SIGNING_SECRET):
    """POST what Slack posts when a button is pressed, signed as Slack signs it."""
    payload = {
        "type": "block_actions", "user": {"id": slack_user, "username": slack_user, "team_id": "T1"},
        "response_url": httpserver.url_for("/respond"), "container": {"message_ts": notification.slack_ts},
        "actions": [{"action_id": action, "block_id": "decision", "type": "button",
                     "value": value or f"{notification.pk}:{notification.change_hash}"}],
    }
    body = urlencode({"payload": json.dumps(payload)})
    timestamp = str(timestamp or int(time.time()))
    signature = SignatureVerifier(secret).generate_signature(timestamp=timestamp, body=body)
    return client.post(ACTIONS, body, content_type="application/x-www-form-urlencoded",
                       HTTP_X_SLACK_REQUEST_TIMESTAMP=timestamp, HTTP_X_SLACK_SIGNATURE=signature)


def responses(httpserver) -> list[dict]:
    return [json.loads(request.get_data()) for request, _ in httpserver.log if request.path == "/respond"]


@pytest.mark.matrix(FINANCE)
def test_a_signed_slack_button_approves_as_the_mapped_user_and_the_message_says_who(slack, people, httpserver):
    proposal, notification = slack
    SlackIdentity.objects.create(slack_user_id="U0FAY", user=people.finance1)

    response = press(Client(), httpserver, notification, "U0FAY")

    assert response.status_code == 200
    assert reload(proposal).status in (Status.APPROVED, Status.EXECUTED)
    review = Review.objects.get(proposal=proposal)
    assert (review.reviewer, review.via, review.change_hash) == (people.finance1, "slack", proposal.change_hash)
    [update] = responses(httpserver)
    assert update["replace_original"] is True and update["text"].startswith("finance1 approved this via Slack")


@pytest.mark.matrix(FINANCE)
def test_a_slack_user_is_found_by_their_email_through_users_info(slack, people, httpserver):
    proposal, notification = slack
    people.finance2.email = "frank@example.com"
    people.finance2.save()
    httpserver.expect_request("/api/users.info").respond_with_json(
        {"ok": True, "user": {"id": "U0FRANK", "profile": {"email": "Frank@example.com"}}})

    assert press(Client(), httpserver, notification, "U0FRANK").status_code == 200
    assert Review.objects.get(proposal=proposal).reviewer == people.finance2
    [asked] = [request for request, _ in httpserver.log if request.path == "/api/users.info"]
    assert asked.values["user"] == "U0FRANK" and asked.headers["Authorization"] == "Bearer xoxb-test-token"


@pytest.mark.matrix(FINANCE)
def test_a_bad_signature_is_refused_and_decides_nothing(slack, people, httpserver):
    proposal, notification = slack
    SlackIdentity.objects.create(slack_user_id="U0FAY", user=people.finance1)

    response = press(Client(), httpserver, notification, "U0FAY", secret="not-the-signing-secret")

    assert response.status_code == 401
    assert reload(proposal).status == Status.PENDING_REVIEW and not Review.objects.exists()
    assert responses(httpserver) == []  # an unsigned request's response_url is never followed


@pytest.mark.matrix(FINANCE)
def test_a_replayed_request_is_refused_old_or_within_the_window(slack, people, httpserver):
    proposal, notification = slack
    SlackIdentity.objects.create(slack_user_id="U0FAY", user=people.finance1)

    old = press(Client(), httpserver, notification, "U0FAY", timestamp=int(time.time()) - 6 * 60)
    assert old.status_code == 401 and "more than 5 minutes old" in old.json()["text"]
    assert reload(proposal).status == Status.PENDING_REVIEW

    now = int(time.time())
    assert press(Client(), httpserver, notification, "U0FAY", action="open", timestamp=now).status_code == 200
    again = press(Client(), httpserver, notification, "U0FAY", action="open", timestamp=now)
    assert again.status_code == 409 and "already handled" in again.json()["text"]
    assert [r["response_type"] for r in responses(httpserver)] == ["ephemeral", "ephemeral"]
    assert not Review.objects.exists()


@pytest.mark.matrix(FINANCE)
def test_a_signed_request_that_is_not_a_block_action_is_a_400_naming_the_payload(slack):
    body = urlencode({"payload": "{not json"})
    timestamp = str(int(time.time()))
    signature = SignatureVerifier(SIGNING_SECRET).generate_signature(timestamp=timestamp, body=body)
    response = Client().post(ACTIONS, body, content_type="application/x-www-form-urlencoded",
                             HTTP_X_SLACK_REQUEST_TIMESTAMP=timestamp, HTTP_X_SLACK_SIGNATURE=signature)
    assert response.status_code == 400 and response.json()["error"].startswith("payload")
    assert not Review.objects.exists()


@pytest.mark.matrix(FINANCE)
def test_without_a_signing_secret_every_press_is_refused(slack, people, httpserver, settings):
    proposal, notification = slack
    SlackIdentity.objects.create(slack_user_id="U0FAY", user=people.finance1)
    settings.SLACK_SIGNING_SECRET_REF = ""
    response = press(Client(), httpserver, notification, "U0FAY")
    assert response.status_code == 503 and not Review.objects.exists()


@pytest.mark.matrix(FINANCE)
def test_a_stale_button_is_refused_after_the_change_was_edited(slack, people, httpserver):
    proposal, notification = slack
    SlackIdentity.objects.create(slack_user_id="U0FAY", user=people.finance1)
    stale_value = f"{notification.pk}:{'0' * 64}"

    response = press(Client(), httpserver, notification, "U0FAY", value=stale_value)

    assert response.json()["response_type"] == "ephemeral"
    assert "the change was edited since you saw it" in response.json()["text"]
    assert reload(proposal).status == Status.PENDING_REVIEW and not Review.objects.exists()


@pytest.mark.matrix(FINANCE)
def test_unknown_slack_users_and_users_of_another_group_are_refused(slack, people, httpserver):
    proposal, notification = slack
    SlackIdentity.objects.create(slack_user_id="U0SAM", user=people.support1)
    httpserver.expect_request("/api/users.info").respond_with_json({"ok": False, "error": "user_not_found"})

    unknown = press(Client(), httpserver, notification, "U0NOBODY").json()
    other_group = press(Client(), httpserver, notification, "U0SAM").json()

    assert "is not linked to a HITL Gov user" in unknown["text"]
    assert "only members of finance can decide this tier" in other_group["text"]
    assert {r["response_type"] for r in responses(httpserver)} == {"ephemeral"}
    assert reload(proposal).status == Status.PENDING_REVIEW and not Review.objects.exists()


# ---- email links ---------------------------------------------------------------------------------

@pytest.fixture
def emailed(submit, channel, people):
    """finance1 (finance1@example.com) was emailed a finance proposal with a link signed for them."""
    people.finance1.email = "finance1@example.com"
    people.finance1.save()
    channel("finance", emails="finance1@example.com, outsider@example.com")
    proposal = submit()
    personal = Notification.objects.get(proposal=proposal, recipient="finance1@example.com")
    link = re.search(r"https?://\S+/notifications/decide/\S+/", personal.text).group(0)
    return proposal, "/" + link.split("://", 1)[1].split("/", 1)[1]


@pytest.mark.matrix(FINANCE)
def test_only_a_member_whose_email_matches_gets_a_signed_link(emailed):
    outsider = Notification.objects.get(recipient="outsider@example.com")
    assert "/notifications/decide/" not in outsider.text and "Open: " in outsider.text


@pytest.mark.matrix(FINANCE)
def test_an_email_link_shows_on_get_and_approves_only_on_post_for_its_reviewer(emailed, people):
    proposal, path = emailed
    reviewer = Client()
    reviewer.force_login(people.finance1)

    page = reviewer.get(path)
    assert page.status_code == 200 and "refund-bot wants to refund order A-1001" in page.content.decode()
    assert reload(proposal).status == Status.PENDING_REVIEW and not Review.objects.exists()  # a GET never decides

    colleague = Client()
    colleague.force_login(people.finance2)
    refused = colleague.post(path, {"verdict": "approve"})
    assert refused.status_code == 403 and "this link is for finance1" in refused.content.decode()
    assert not Review.objects.exists()

    decided = reviewer.post(path, {"verdict": "approve"})
    assert decided.status_code == 200 and "Recorded: you approved this change" in decided.content.decode()
    review = Review.objects.get(proposal=proposal)
    assert (review.reviewer, review.via) == (people.finance1, "email")


@pytest.mark.matrix(FINANCE)
def test_without_signed_link_decisions_an_email_link_asks_for_a_login(emailed):
    proposal, path = emailed
    response = Client().post(path, {"verdict": "approve"})
    assert response.status_code == 302 and response["Location"].startswith("/admin/login/")
    assert not Review.objects.exists()


@pytest.mark.matrix(SIGNED_LINKS)
def test_a_low_tier_that_allows_signed_links_decides_without_a_login_but_only_by_post(emailed, people):
    proposal, path = emailed
    anonymous = Client()
    assert anonymous.get(path).status_code == 200 and not Review.objects.exists()
    assert anonymous.post(path, {"verdict": "reject"}).status_code == 400  # a reason is required to reject
    assert anonymous.post(path, {"verdict": "approve"}).status_code == 200
    assert Review.objects.get(proposal=proposal).reviewer == people.finance1


@pytest.mark.matrix(FINANCE)
def test_an_altered_expired_or_stale_link_is_refused(emailed, people, monkeypatch):
    proposal, path = emailed
    reviewer = Client()
    reviewer.force_login(people.finance1)

    assert reviewer.post(path[:-3] + "xx/", {"verdict": "approve"}).status_code == 403
    task = ReviewTask.objects.get(proposal=proposal)
    monkeypatch.setattr(timezone, "now", lambda: task.due_at + timedelta(seconds=1))
    expired = reviewer.post(path, {"verdict": "approve"})
    assert expired.status_code == 403 and "this link expired" in expired.content.decode()
    monkeypatch.undo()

    type(proposal).objects.filter(pk=proposal.pk).update(change_hash="f" * 64)
    stale = reviewer.post(path, {"verdict": "approve"})
    assert stale.status_code == 403 and "the change was edited since this email was sent" in stale.content.decode()
    assert not Review.objects.exists()
