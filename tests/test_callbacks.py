"""Signed events to callback_url (CONTRACT.md, "Events to callback_url"), against a real local HTTP server."""

from __future__ import annotations

import hashlib
import hmac
import io
import json
import socket
from datetime import timedelta
from functools import partial

import pytest
from django.core.management import CommandError, call_command

from approvals import events, operations, services, tasks
from approvals.models import CallbackDelivery, Proposal, Status
from connectors.models import Connector
from tests.conftest import matrix_spec, proposal_body, reload, rule
from tests.connector_fakes import hung_vendor

URL = "/api/v1/proposals/"

# Receivers here are served on this machine: the outbound check would (rightly) refuse them otherwise.
pytestmark = pytest.mark.usefixtures("allow_loopback")


@pytest.fixture
def reviewed(publish, sandbox):
    """Everything goes to review (the default tier, triage)."""
    return publish(matrix_spec())


@pytest.fixture
def automatic(publish, sandbox):
    """Refunds run without review."""
    return publish(matrix_spec(rule("refunds-run", "auto", actions=["refund"])))


@pytest.fixture
def submit_with_hook(post_proposal, httpserver):
    """Submit through the API with its callback_url on the local server's /hook; commit hooks (and eager tasks) run."""
    return partial(post_proposal, callback_url=httpserver.url_for("/hook"))


def issue_secret(name: str, *args: str) -> str:
    out = io.StringIO()
    call_command("signing_secret", name, *args, stdout=out, stderr=io.StringIO())
    return out.getvalue().strip().splitlines()[-1]


def received(httpserver, path: str = "/hook") -> list:
    return [request for request, _ in httpserver.log if request.path == path]


def only_delivery(proposal: Proposal) -> CallbackDelivery:
    (delivery,) = CallbackDelivery.objects.filter(proposal=proposal)
    return delivery


# ---- what is sent -------------------------------------------------------------------------------

def test_decided_event_is_signed_so_the_receiver_can_verify_it(api, reviewed, submit_with_hook, httpserver):
    httpserver.expect_request("/hook", method="POST").respond_with_data("ok")
    secret = issue_secret(api.integration.name)

    proposal = submit_with_hook()

    (request,) = received(httpserver)
    raw = request.get_data()
    expected = "sha256=" + hmac.new(secret.encode(), raw, hashlib.sha256).hexdigest()
    assert hmac.compare_digest(request.headers["X-HITL-Signature"], expected)
    assert request.headers["Content-Type"] == "application/json"
    assert request.headers["X-HITL-Event"] == "proposal.decided"
    delivery = only_delivery(proposal)
    assert request.headers["X-HITL-Delivery"] == str(delivery.pk)
    body = json.loads(raw)
    assert body["event"] == "proposal.decided"
    assert body["proposal"]["id"] == str(proposal.pk)
    assert body["proposal"]["status"] == "pending_review"
    # The body is the committed proposal: its review tiers are opened after the routing save.
    assert body["proposal"]["review"]["tiers"][0]["group"] == "triage"
    assert (delivery.state, delivery.attempts, delivery.last_status) == ("delivered", 1, 200)
    assert delivery.delivered_at is not None


def test_a_tampered_body_fails_verification(api, reviewed, submit_with_hook, httpserver):
    httpserver.expect_request("/hook").respond_with_data("ok")
    secret = issue_secret(api.integration.name)

    submit_with_hook()

    (request,) = received(httpserver)
    tampered = request.get_data().replace(b"pending_review", b"approved")
    forged = "sha256=" + hmac.new(secret.encode(), tampered, hashlib.sha256).hexdigest()
    assert not hmac.compare_digest(request.headers["X-HITL-Signature"], forged)


def test_an_automatic_refund_reports_approved_then_executed(automatic, submit_with_hook, httpserver):
    httpserver.expect_request("/hook").respond_with_data("ok")

    proposal = submit_with_hook()

    assert reload(proposal).status == Status.EXECUTED
    bodies = [json.loads(request.get_data()) for request in received(httpserver)]
    assert [body["event"] for body in bodies] == ["proposal.approved", "proposal.executed"]
    executed = bodies[1]["proposal"]
    assert executed["status"] == "executed"
    assert executed["execution"]["outcome"] == "succeeded"
    assert set(CallbackDelivery.objects.values_list("state", flat=True)) == {"delivered"}


def test_a_dry_run_reports_dry_run_never_executed(automatic, submit_with_hook, httpserver, sandbox):
    """An agent told `executed` believes a write happened; a dry run wrote nothing."""
    httpserver.expect_request("/hook").respond_with_data("ok")
    Connector.objects.filter(pk=sandbox.helpdesk.pk).update(dry_run=True)

    proposal = submit_with_hook()

    assert reload(proposal).status == Status.DRY_RUN
    bodies = [json.loads(request.get_data()) for request in received(httpserver)]
    assert [body["event"] for body in bodies] == ["proposal.approved", "proposal.dry_run"]
    assert bodies[1]["proposal"]["status"] == "dry_run"


def test_work_handled_by_hand_reports_handled_manually(reviewed, submit_with_hook, httpserver, people,
                                                       django_capture_on_commit_callbacks):
    httpserver.expect_request("/hook").respond_with_data("ok")
    proposal = submit_with_hook()
    operations.take_over(proposal.pk, people.operator)

    operations.handle_manually(proposal.pk, people.operator, "refunded by phone")

    with django_capture_on_commit_callbacks(execute=True):
        operations.confirm_manual_handling(proposal.pk, people.make("operator2", "operators"), "checked")

    assert reload(proposal).status == Status.HANDLED_MANUALLY
    assert received(httpserver)[-1].headers["X-HITL-Event"] == "proposal.handled_manually"


def test_reviewer_decisions_are_reported(reviewed, submit_with_hook, httpserver, people, django_capture_on_commit_callbacks):
    httpserver.expect_request("/hook").respond_with_data("ok")
    proposal = submit_with_hook()

    with django_capture_on_commit_callbacks(execute=True):
        services.record_verdict(proposal.pk, people.triager, "reject", "not our customer")

    events_sent = [request.headers["X-HITL-Event"] for request in received(httpserver)]
    assert events_sent == ["proposal.decided", "proposal.rejected"]
    assert json.loads(received(httpserver)[-1].get_data())["proposal"]["status_reason"] == "not our customer"


def test_cancelling_reports_cancelled(api, reviewed, submit_with_hook, httpserver, django_capture_on_commit_callbacks):
    httpserver.expect_request("/hook").respond_with_data("ok")
    proposal = submit_with_hook()

    with django_capture_on_commit_callbacks(execute=True):
        services.cancel_proposal(proposal.pk, api.integration, "customer withdrew")

    assert received(httpserver)[-1].headers["X-HITL-Event"] == "proposal.cancelled"


def test_no_callback_url_means_no_delivery(api, reviewed, httpserver, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        response = api.post(URL, data=json.dumps(proposal_body(callback_url="")), content_type="application/json")

    assert response.status_code == 201
    assert not CallbackDelivery.objects.exists()
    assert httpserver.log == []


def test_a_save_that_keeps_the_status_sends_nothing(reviewed, submit_with_hook, httpserver, django_capture_on_commit_callbacks):
    httpserver.expect_request("/hook").respond_with_data("ok")
    proposal = submit_with_hook()

    with django_capture_on_commit_callbacks(execute=True):
        proposal._change_reason = "note added"
        proposal.save()

    assert CallbackDelivery.objects.filter(proposal=proposal).count() == 1
    assert len(received(httpserver)) == 1


def test_every_event_is_named_in_the_status_map():
    assert set(events.STATUS_EVENTS) == set(Status.values) - {Status.NEW, Status.EXECUTING}
    assert set(events.STATUS_EVENTS.values()) == {
        "proposal.decided", "proposal.approved", "proposal.rejected", "proposal.executed", "proposal.failed",
        "proposal.stale", "proposal.rolled_back", "proposal.cancelled", "proposal.expired", "proposal.dry_run",
        "proposal.handled_manually", "proposal.info_requested", "proposal.dismissed", "proposal.done_elsewhere",
    }


# ---- retries ------------------------------------------------------------------------------------

def test_a_500_is_retried_after_the_backoff_and_then_delivered(reviewed, submit_with_hook, httpserver):
    httpserver.expect_oneshot_request("/hook").respond_with_data("busy", status=500)
    httpserver.expect_request("/hook").respond_with_data("ok")

    proposal = submit_with_hook()

    delivery = only_delivery(proposal)
    assert (delivery.state, delivery.attempts, delivery.last_status) == ("pending", 1, 500)
    assert "busy" in delivery.last_error
    wait = delivery.next_attempt_at - delivery.created_at
    assert timedelta(seconds=29) < wait < timedelta(seconds=40)

    assert events.deliver(delivery.pk, now=delivery.next_attempt_at - timedelta(seconds=1)) == "not due"
    assert events.deliver(delivery.pk, now=delivery.next_attempt_at) == "delivered"

    delivery.refresh_from_db()
    assert (delivery.state, delivery.attempts, delivery.last_status, delivery.last_error) == ("delivered", 2, 200, "")
    first, second = received(httpserver)
    assert first.get_data() == second.get_data()
    assert first.headers["X-HITL-Delivery"] == second.headers["X-HITL-Delivery"]


def test_the_delivery_gives_up_after_the_last_retry(reviewed, submit_with_hook, httpserver, settings):
    settings.CALLBACK_RETRY_DELAYS_SECONDS = (30, 120)
    httpserver.expect_request("/hook").respond_with_data("down", status=503)

    proposal = submit_with_hook()
    delivery = only_delivery(proposal)
    first_retry = delivery.next_attempt_at
    events.deliver(delivery.pk, now=first_retry)
    second_retry = reload(delivery).next_attempt_at
    assert second_retry - first_retry == timedelta(seconds=120)
    assert events.deliver(delivery.pk, now=second_retry) == "failed"

    delivery.refresh_from_db()
    assert (delivery.state, delivery.attempts, delivery.last_status) == ("failed", 3, 503)
    assert delivery.next_attempt_at is None
    assert events.deliver(delivery.pk, now=second_retry + timedelta(days=1)) == "not due"
    assert len(received(httpserver)) == 3


def test_the_beat_sweep_sends_deliveries_that_are_due(reviewed, submit_with_hook, httpserver):
    httpserver.expect_oneshot_request("/hook").respond_with_data("busy", status=500)
    httpserver.expect_request("/hook").respond_with_data("ok")
    proposal = submit_with_hook()
    delivery = only_delivery(proposal)

    tasks.sweep_overdue_reviews()
    assert reload(delivery).attempts == 1, "not due yet: the sweep leaves it alone"

    CallbackDelivery.objects.filter(pk=delivery.pk).update(next_attempt_at=delivery.created_at)  # 30 s have passed
    tasks.sweep_overdue_reviews()

    assert (reload(delivery).state, reload(delivery).attempts) == ("delivered", 2)


def test_an_event_whose_enqueue_was_lost_is_sent_by_the_sweep(api, reviewed, httpserver):
    httpserver.expect_request("/hook").respond_with_data("ok")
    body = proposal_body(callback_url=httpserver.url_for("/hook"))
    api.post(URL, data=json.dumps(body), content_type="application/json")  # commit hooks never run here
    assert httpserver.log == []

    assert tasks.sweep_callback_deliveries() == 1

    assert [r.headers["X-HITL-Event"] for r in received(httpserver)] == ["proposal.decided"]


def test_a_redelivered_task_does_not_send_twice(reviewed, submit_with_hook, httpserver):
    httpserver.expect_request("/hook").respond_with_data("ok")
    delivery = only_delivery(submit_with_hook())

    assert tasks.deliver_callback(delivery.pk) == "not due"

    assert len(received(httpserver)) == 1
    assert reload(delivery).attempts == 1


def test_a_claimed_attempt_cannot_be_claimed_again_until_its_claim_runs_out(reviewed, api, httpserver):
    body = proposal_body(callback_url=httpserver.url_for("/hook"))
    api.post(URL, data=json.dumps(body), content_type="application/json")
    delivery = CallbackDelivery.objects.get()
    now = delivery.next_attempt_at

    assert events.claim(delivery.pk, now) == 1
    assert events.claim(delivery.pk, now + timedelta(seconds=5)) is None
    assert events.claim(delivery.pk, now + timedelta(seconds=events.CLAIM_SECONDS)) == 2


def test_a_refused_connection_is_recorded_and_retried(reviewed, api, django_capture_on_commit_callbacks):
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    body = proposal_body(callback_url=f"http://localhost:{port}/hook")
    with django_capture_on_commit_callbacks(execute=True):
        api.post(URL, data=json.dumps(body), content_type="application/json")

    delivery = CallbackDelivery.objects.get()
    assert (delivery.state, delivery.attempts, delivery.last_status) == ("pending", 1, None)
    assert "refused" in delivery.last_error.lower()
    assert delivery.next_attempt_at > delivery.created_at


def test_a_slow_receiver_times_out_and_is_retried(reviewed, submit_with_hook, httpserver, settings):
    settings.CALLBACK_TIMEOUT_SECONDS = 0.2

    with hung_vendor(httpserver, "/hook", "late"):
        delivery = only_delivery(submit_with_hook())

    assert (delivery.state, delivery.attempts, delivery.last_status) == ("pending", 1, None)
    assert "timed out" in delivery.last_error.lower()


def test_a_redirect_is_not_followed(reviewed, submit_with_hook, httpserver):
    httpserver.expect_request("/hook").respond_with_data("", status=302, headers={"Location": httpserver.url_for("/elsewhere")})
    httpserver.expect_request("/elsewhere").respond_with_data("ok")

    delivery = only_delivery(submit_with_hook())

    assert (delivery.state, delivery.last_status) == ("pending", 302)
    assert received(httpserver, "/elsewhere") == []


def test_a_non_https_url_stored_by_another_path_is_never_called(reviewed, submit_with_hook, httpserver):
    httpserver.expect_request("/hook").respond_with_data("ok")
    delivery = only_delivery(submit_with_hook())
    CallbackDelivery.objects.filter(pk=delivery.pk).update(
        url="http://agent.example/hook", state="pending", next_attempt_at=delivery.created_at,
    )

    events.deliver(delivery.pk)

    assert "https" in reload(delivery).last_error
    assert len(received(httpserver)) == 1


# ---- the signing secret -------------------------------------------------------------------------

def test_the_signing_secret_is_shown_once_and_can_be_rotated(api):
    first = issue_secret(api.integration.name)

    with pytest.raises(CommandError, match="--rotate"):
        issue_secret(api.integration.name)
    rotated = issue_secret(api.integration.name, "--rotate")

    assert len(first) >= 40 and rotated != first
    assert reload(api.integration).signing_secret == rotated
    history_fields = {field.name for field in api.integration.history.model._meta.fields}
    assert "signing_secret" not in history_fields, "the secret stays out of history"


def test_a_secret_is_made_at_first_use_and_pending_retries_use_the_rotated_one(api, reviewed, submit_with_hook, httpserver):
    httpserver.expect_oneshot_request("/hook").respond_with_data("busy", status=500)
    httpserver.expect_request("/hook").respond_with_data("ok")
    assert api.integration.signing_secret == ""

    delivery = only_delivery(submit_with_hook())
    assert reload(api.integration).signing_secret, "made when the first event was signed"
    rotated = issue_secret(api.integration.name, "--rotate")
    events.deliver(delivery.pk, now=reload(delivery).next_attempt_at)

    retry = received(httpserver)[-1]
    assert retry.headers["X-HITL-Signature"] == events.signature(rotated, retry.get_data())
