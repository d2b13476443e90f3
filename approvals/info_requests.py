"""Request more information: a reviewer sends a proposal back to its agent with a question, and
the agent answers (new evidence, rationale, or a revised change) through the API.

Choices, and why:
- Only a person who may decide the active tier may ask (the same checks as a verdict). The
  proposal becomes `info_requested`; the agent hears `proposal.info_requested` (approvals.events).
- The tier's SLA pauses: the tier goes back to waiting with its due time kept, and resumes with
  the time that was left when the answer comes. Waiting on the agent has its own limit (the
  matrix's `info_wait_minutes`, never beyond the proposal's maximum age): past it the expiry
  sweep ends the proposal `expired`.
- An answer that keeps the change resumes the same tier in the same queue. A revised change is
  previewed and decided again like a reviewer's edit: earlier approvals were for another change,
  and the asking tier's group is the floor, so a question never turns into an automatic run.
- The question and the answer are history reasons, so they read in order on the thread.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone

from approvals import lifecycle, services
from approvals.facts import change_money, check_money_fields
from approvals.lifecycle import NotReviewable
from approvals.models import Integration, Proposal, ReviewTask, Status
from connectors.services import action_facts
from policies import engine
from policies.matrix_spec import DEFAULT_INFO_WAIT_MINUTES


def request_info(proposal_id: Any, user, question: str) -> Proposal:
    """A reviewer of the active tier asks the agent a question; review pauses until it answers."""
    if not question.strip():
        raise ValidationError({"question": "ask the agent something"})
    with transaction.atomic(durable=True):
        proposal = lifecycle.lock(proposal_id)
        if proposal.status != Status.PENDING_REVIEW:
            raise NotReviewable(f"the proposal is {proposal.status}, not waiting for review")
        task = services.check_reviewer(proposal, lifecycle.active_task(proposal), user, None)
        lifecycle.require(proposal.request_info, user)
        proposal.request_info()
        now = timezone.now()
        task.state = ReviewTask.State.WAITING  # paused; due_at kept to resume with the time left
        task._change_reason = f"paused: {user.get_username()} asked the agent a question"
        task.save()
        wait = timedelta(minutes=proposal.decision.get("info_wait_minutes") or DEFAULT_INFO_WAIT_MINUTES)
        proposal.info_question, proposal.info_requested_by, proposal.info_requested_at = question, user, now
        proposal.due_at = None
        proposal.expires_at = min(filter(None, (proposal.expires_at, now + wait)))
        lifecycle.record(proposal, f"information requested by {user.get_username()}: {question}", user=user,
                         status_reason=f"waiting for the agent to answer: {question}")
    return proposal


def answer_info(
    proposal_id: Any, integration: Integration, answer: str, *, evidence: list | None = None,
    rationale: str | None = None, changes: dict | None = None,
) -> Proposal:
    """The submitting agent answers: the proposal returns to review (the same tier, or decided
    again for a revised change). Raises Proposal.DoesNotExist for another integration's proposal."""
    if not answer.strip():
        raise ValidationError({"answer": "must not be blank"})
    if not Proposal.objects.filter(pk=proposal_id, integration=integration).exists():
        raise Proposal.DoesNotExist  # before reading another integration's live record
    edit = services.read_edit(proposal_id, changes) if changes is not None else None
    with transaction.atomic(durable=True):
        proposal = lifecycle.lock(proposal_id)
        if proposal.integration_id != integration.pk:
            raise Proposal.DoesNotExist
        if proposal.status != Status.INFO_REQUESTED:
            raise NotReviewable(f"the proposal is {proposal.status}: nobody is waiting for an answer")
        asker = proposal.info_requested_by.get_username() if proposal.info_requested_by_id else "a reviewer"
        paused_at, why = proposal.info_requested_at, f"{integration.name} answered {asker}: {answer}"
        if evidence:
            proposal.evidence = [*proposal.evidence, *evidence]
        if rationale:
            proposal.rationale = rationale
        proposal.info_question, proposal.info_requested_by, proposal.info_requested_at = "", None, None
        if edit is not None and edit[0] != proposal.changes:
            _revise(proposal, edit, why)
        else:
            _resume(proposal, paused_at, why)
    return proposal


def _resume(proposal: Proposal, paused_at, why: str) -> None:
    task = proposal.review_tasks.filter(state=ReviewTask.State.WAITING).order_by("position").first()
    proposal.resume_review()
    if task is not None:
        task.state = ReviewTask.State.ACTIVE
        task.due_at = (task.due_at or paused_at) + (timezone.now() - paused_at)  # the SLA paused while the agent was away
        task._change_reason = "resumed: the agent answered"
        task.save()
        proposal.due_at = task.due_at
    proposal.expires_at = lifecycle.expiry(proposal, proposal.decision)
    lifecycle.record(proposal, why, status_reason=why)


def _revise(proposal: Proposal, edit: tuple[dict, lifecycle.LivePreview], why: str) -> None:
    """A revised change, like a reviewer's edit: checked, previewed and decided again, the asking tier
    the floor. The answer is recorded first, so the thread reads question, answer, new decision."""
    changes, live = edit
    task = proposal.review_tasks.filter(state=ReviewTask.State.WAITING).order_by("position").first()
    money_fields = action_facts(proposal.connector, proposal.action).money_fields
    if problems := check_money_fields(changes, money_fields):
        raise ValidationError(problems)
    proposal.review_tasks.exclude(state=ReviewTask.State.SATISFIED).update(state=ReviewTask.State.CLOSED)
    lifecycle.record(proposal, f"{why} (revised the change)")
    proposal.changes = changes
    if (money := change_money(changes, money_fields)) is not None:
        proposal.amount = money
    lifecycle.apply_preview(proposal, live)
    floor = engine.Tier(group=task.group.name, required=1, sla_minutes=task.sla_minutes) if task else None
    lifecycle.decide_and_route(proposal, human_edit=floor)
