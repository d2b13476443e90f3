"""Request more information: a reviewer asks the agent, the agent hears it on its callback_url and
answers through the API, and the proposal returns to the same queue with the answer on its thread."""

from __future__ import annotations

import json
from datetime import timedelta
from decimal import Decimal

import pytest
from django.core.exceptions import PermissionDenied, ValidationError
from django.test import Client
from django.utils import timezone

from approvals import info_requests, operations, services, sweeps
from approvals.models import CallbackDelivery, Proposal, ReviewTask, Status
from tests.conftest import matrix_spec, reload, rule, tier

FINANCE_REVIEWS_REFUNDS = matrix_spec(
    rule("big-refunds", "review", actions=["refund"], currency="USD", amount_min=Decimal("100"),
         tiers=(tier("finance", sla_minutes=60),)),
    rule("small-refunds", "auto", actions=["refund"], currency="USD", amount_max=Decimal("100")),
    info_wait_minutes=120,
)
pytestmark = [pytest.mark.matrix(FINANCE_REVIEWS_REFUNDS), pytest.mark.usefixtures("allow_loopback")]
QUESTION = "Is there a photo of the damage?"


def answer(api, proposal: Proposal, **body):
    return api.post(f"/api/v1/proposals/{proposal.pk}/info/", data=json.dumps(body), content_type="application/json")


def paused_tier(proposal: Proposal) -> ReviewTask:
    (task,) = proposal.review_tasks.all()
    return task


def test_a_reviewer_asks_and_review_pauses_until_the_agent_answers(submit, people):
    proposal = submit()
    due = services.active_task(proposal).due_at

    info_requests.request_info(proposal.pk, people.finance1, QUESTION)

    proposal = reload(proposal)
    assert proposal.status == Status.INFO_REQUESTED and proposal.info_question == QUESTION
    assert proposal.due_at is None and proposal.info_requested_by == people.finance1
    assert proposal.expires_at == proposal.info_requested_at + timedelta(minutes=120)
    task = paused_tier(proposal)
    assert task.state == ReviewTask.State.WAITING and task.due_at == due
    with pytest.raises(services.NotReviewable):
        services.record_verdict(proposal.pk, people.finance2, "approve")


def test_only_a_reviewer_of_the_active_tier_may_ask(submit, people):
    proposal = submit()

    with pytest.raises(PermissionDenied):
        info_requests.request_info(proposal.pk, people.support1, QUESTION)
    with pytest.raises(ValidationError):
        info_requests.request_info(proposal.pk, people.finance1, "  ")
    assert reload(proposal).status == Status.PENDING_REVIEW


def test_the_answer_resumes_the_same_tier_with_the_sla_time_that_was_left(submit, people, api):
    proposal = submit()
    due = services.active_task(proposal).due_at
    info_requests.request_info(proposal.pk, people.finance1, QUESTION)
    an_hour_ago = timezone.now() - timedelta(hours=1)
    Proposal.objects.filter(pk=proposal.pk).update(info_requested_at=an_hour_ago)  # the agent took an hour

    response = answer(api, proposal, answer="Yes, attached.", evidence=[{"title": "Photo", "url": "https://x.example/p.jpg"}])

    assert response.status_code == 200, response.content
    body = response.json()
    assert body["status"] == "pending_review" and body["info_request"] is None
    proposal = reload(proposal)
    task = paused_tier(proposal)
    assert task.state == ReviewTask.State.ACTIVE
    assert timedelta(minutes=59) < task.due_at - due <= timedelta(minutes=61)  # the hour away does not count
    assert proposal.due_at == task.due_at
    assert proposal.expires_at == proposal.created_at + timedelta(minutes=proposal.decision["max_age_minutes"])
    assert proposal.evidence[-1]["title"] == "Photo"
    texts = [event.text for event in operations.thread(proposal)]
    asked = next(i for i, text in enumerate(texts) if QUESTION in text)
    answered = next(i for i, text in enumerate(texts) if "Yes, attached." in text)
    assert asked < answered and "refund-bot-integration answered finance1" in texts[answered]
    services.record_verdict(proposal.pk, people.finance2, "approve")
    assert reload(proposal).status in (Status.APPROVED, Status.EXECUTED)


def test_a_revised_change_is_previewed_and_decided_again_and_never_runs_alone(submit, people, api):
    proposal = submit()
    info_requests.request_info(proposal.pk, people.finance1, "Would a partial refund do?")

    response = answer(api, proposal, answer="A partial refund is enough.",
                      changes={"status": "refunded", "refund_amount": "50.00"})

    assert response.status_code == 200, response.content
    proposal = reload(proposal)
    assert proposal.status == Status.PENDING_REVIEW  # the policy alone would run 50.00: a person asked, a person decides
    assert proposal.amount == Decimal("50.00") and proposal.changes["refund_amount"] == "50.00"
    previewed = {change["field"]: (change["before"], change["after"]) for change in proposal.preview["changes"]}
    assert previewed["refund_amount"] == ("0.00", "50.00")
    assert services.active_task(proposal).group.name == "finance"
    assert proposal.review_tasks.filter(state=ReviewTask.State.CLOSED).count() == 1


def test_answers_are_refused_when_nobody_waits_and_for_another_integrations_proposal(submit, api, make_client):
    proposal = submit()

    not_waiting = answer(api, proposal, answer="unasked")
    assert not_waiting.status_code == 409 and "nobody is waiting" in not_waiting.json()["errors"]["status"][0]

    other = make_client("other-agent")
    foreign = other.post(f"/api/v1/proposals/{proposal.pk}/info/", data=json.dumps({"answer": "mine"}),
                         content_type="application/json")
    assert foreign.status_code == 404
    blank = answer(api, proposal, answer="")
    unknown = answer(api, proposal, answer="ok", question="?")
    assert blank.status_code == 400 and "answer" in blank.json()["errors"]
    assert unknown.status_code == 400 and "question" in unknown.json()["errors"]
    assert reload(proposal).status == Status.PENDING_REVIEW


def test_an_agent_that_does_not_answer_in_time_sees_its_proposal_expire(submit, people):
    proposal = submit()
    info_requests.request_info(proposal.pk, people.finance1, QUESTION)
    deadline = reload(proposal).expires_at

    assert services.expire_overdue(now=deadline - timedelta(seconds=1)) == 0
    assert services.expire_overdue(now=deadline) == 1
    assert reload(proposal).status == Status.EXPIRED and reload(proposal).status_reason == sweeps.NO_ANSWER


def test_the_round_trip_through_the_callback_and_the_api(matrix, post_proposal, people, api, httpserver,
                                                         django_capture_on_commit_callbacks):
    httpserver.expect_request("/hook", method="POST").respond_with_data("ok")
    proposal = post_proposal(callback_url=httpserver.url_for("/hook"))

    with django_capture_on_commit_callbacks(execute=True):
        info_requests.request_info(proposal.pk, people.finance1, QUESTION)

    events_sent = [json.loads(request.get_data()) for request, _ in httpserver.log]
    asked = [e for e in events_sent if e["event"] == "proposal.info_requested"]
    assert len(asked) == 1 and asked[0]["proposal"]["info_request"]["question"] == QUESTION
    with django_capture_on_commit_callbacks(execute=True):
        response = answer(api, proposal, answer="Photo attached.")
    assert response.status_code == 200
    last = json.loads(httpserver.log[-1][0].get_data())
    assert last["event"] == "proposal.decided" and last["proposal"]["status"] == "pending_review"
    assert CallbackDelivery.objects.filter(proposal=proposal, event="proposal.info_requested").count() == 1


def test_a_reviewer_asks_from_the_admin(submit, people):
    proposal = submit()
    browser = Client()
    browser.force_login(people.finance1)

    page = browser.get(f"/admin/approvals/proposal/{proposal.pk}/change/")
    assert b'id="ask-button"' in page.content
    response = browser.post(f"/admin/approvals/proposal/{proposal.pk}/decide/", {"verdict": "ask", "reason": QUESTION})

    assert response.status_code == 302
    assert reload(proposal).status == Status.INFO_REQUESTED
    page = browser.get(f"/admin/approvals/proposal/{proposal.pk}/change/")
    assert QUESTION.encode() in page.content and b'id="info-request"' in page.content
