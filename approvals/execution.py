"""Executing an approved proposal through its connector, exactly once.

The steps, each guarding against a way approval tools go wrong:
1. claim: approved -> executing under a lock, only if the approved change is still the
   planned change (hash) and no kill switch blocks it; a lease marks who is writing;
2. re-read the live record: if the write already landed (a redelivered task after a
   worker died), finish without writing again; if a previewed field changed, go `stale`;
3. write once with the proposal's idempotency key (or, in dry-run mode, only record what
   would have been written);
4. finish: executed, failed (permanent error, or retries exhausted) or stale.

A stale proposal does not wait for an operator: once the stale state is committed, a
follow-up task re-previews it against the live record and reopens review with the new
before/after (stale -> pending_review), so reviewers judge the change as it now is. If the
re-preview fails, or an operator has taken the proposal over, it stays stale and visible.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models import Count, OuterRef, Subquery
from django.db.models.functions import Coalesce
from django.utils import timezone

from approvals import lifecycle, outbox, services
from approvals.facts import change_hash
from approvals.models import Proposal, Status
from connectors.models import Execution
from connectors.services import (
    ConnectorError, WriteConflict, adapter_for, at_most_once, executed_by_client, target_of,
)
from policies.services import covering_switch, engaged_switches


@dataclass(frozen=True)
class RunResult:
    """What the task should do next: nothing (done/busy) or retry in `retry_in` seconds."""

    status: str
    retry_in: float | None = None


def run(proposal_id: Any, attempt: int = 1) -> RunResult:
    """One attempt. For a connector whose records live in this database (`Adapter.in_database`: the
    sandbox), it is ONE transaction: the claim, the write, the Execution row and the outcome commit
    together or not at all, under the proposal's lock from start to end (so no other delivery can come
    between them, and none of it is read twice). For any other connector, two: the claim (which also
    stores the Execution row: a started attempt is on record before the call goes out), then the
    write and its outcome."""
    with transaction.atomic(durable=True):
        claim = _claim(proposal_id)
        adapter = _adapter(claim[0]) if isinstance(claim, tuple) else None
        if adapter is not None and adapter.in_database:
            return _run_in_database(*claim, adapter, attempt)
        if isinstance(claim, tuple):
            claim = (*claim, _started(claim[0]))
    if claim == HOLD:
        services.hold_for_review(proposal_id)
        return RunResult("held for review")
    if isinstance(claim, RunResult):
        return claim
    proposal, token, execution = claim
    started = time.monotonic()
    try:
        return _write(proposal, token, execution, started, adapter or adapter_for(proposal.connector), in_transaction=False)
    except Exception as exc:
        outcome, error, retry_in = _failure(exc, attempt)
        if retry_in is not None:
            with transaction.atomic(durable=True):
                return _retry_later(proposal, token, execution, started, error, retry_in, attempt)
        return _finish(proposal, token, execution, started, outcome=outcome, error=error)


def _adapter(proposal: Proposal):
    """The connector's adapter, or None if it cannot be made: the write path then fails the attempt visibly."""
    try:
        return adapter_for(proposal.connector)
    except Exception:
        return None


def _run_in_database(proposal: Proposal, token: str, adapter, attempt: int) -> RunResult:
    """The write and its outcome inside the claim's transaction. The write runs in a savepoint: if it
    fails, it is undone and the failure is recorded and settled in the same transaction."""
    execution, started = _started(proposal, save=False), time.monotonic()
    try:
        with transaction.atomic():
            return _write(proposal, token, execution, started, adapter, in_transaction=True)
    except Exception as exc:
        outcome, error, retry_in = _failure(exc, attempt)
        # The savepoint undid the attempt's writes, but not what they did to these objects in memory:
        # the proposal is read again (still locked, still ours) and the attempt starts over unsaved.
        execution = _started(proposal, save=False, before=execution.before)
        proposal = _holding_lease(proposal, token)
        if retry_in is not None:
            return _retry_later(proposal, token, execution, started, error, retry_in, attempt)
        return _record_and_settle(proposal, token, execution, started, outcome=outcome, error=error)


def _failure(exc: Exception, attempt: int) -> tuple[str, str, float | None]:
    """What a failed write leads to: (outcome, error, seconds until a retry or None)."""
    if isinstance(exc, WriteConflict):
        return Execution.Outcome.STALE, str(exc), None
    if isinstance(exc, ConnectorError):
        if exc.transient and attempt < settings.EXECUTION_MAX_ATTEMPTS:
            return Execution.Outcome.FAILED, str(exc), max(min(2**attempt, 300), exc.retry_after or 0)
        return Execution.Outcome.FAILED, str(exc), None
    # An adapter bug must still leave the proposal visible as failed.
    return Execution.Outcome.FAILED, f"{type(exc).__name__}: {exc}", None


def _idempotency_key(proposal: Proposal) -> str:
    return f"hitl-{proposal.pk}-{proposal.change_hash[:16]}"


# What an execution changes on the proposal: its UPDATEs write these alone, not the wide row (evidence,
# preview, trace) read with the lock (the history row is still the whole proposal, from memory).
EXECUTION_FIELDS = ["status", "status_reason", "lease_token", "lease_until", "expires_at", "updated_at"]

HOLD = RunResult("hold for review")  # _claim's answer when a force_review switch wants a human first


def _claim(proposal_id: Any) -> tuple[Proposal, str] | RunResult:
    """approved (or executing with a lapsed lease) -> executing under the row lock, in the caller's
    transaction: (the proposal, this writer's lease token). The transition is conditional twice over:
    the lock, and the FSM's UPDATE ... WHERE status = the status read (ConcurrentTransitionMixin)."""
    now = timezone.now()
    token = uuid.uuid4().hex
    proposal = (Proposal.objects.select_for_update(of=("self",)).select_related("connector")
                .annotate(executions_so_far=_EXECUTIONS_SO_FAR).get(pk=proposal_id))
    if proposal.status == Status.EXECUTING:
        if proposal.lease_until and proposal.lease_until > now:
            return RunResult("busy", retry_in=(proposal.lease_until - now).total_seconds() + 1)
        if at_most_once(proposal.connector) and _hold_unknown_outcome(proposal):
            return RunResult("outcome unknown: held for an operator")
        proposal.lease_token, proposal.lease_until = token, now + timedelta(seconds=settings.EXECUTION_LEASE_SECONDS)
        Proposal.objects.filter(pk=proposal.pk).update(lease_token=token, lease_until=proposal.lease_until)
        return proposal, token
    if proposal.status != Status.APPROVED:
        return RunResult(f"nothing to do: {proposal.status}")
    if executed_by_client(proposal.connector):
        return RunResult("nothing to do: the integration carries it out and reports the outcome")
    switches = engaged_switches()  # once: both checks below read them
    refusal = _refusal(proposal, switches)
    if refusal:
        proposal.fail()
        proposal.status_reason = refusal
        proposal._change_reason = f"execution refused: {refusal}"
        proposal.save(update_fields=EXECUTION_FIELDS)
        return RunResult("refused")
    # The switch first: it is in memory, while whether anyone reviewed it is a query.
    if covering_switch(
        proposal.connector.slug, proposal.action, proposal.agent, "force_review", switches,
    ) and _ran_alone(proposal):
        return HOLD
    proposal.start_execution()
    proposal.lease_token, proposal.lease_until = token, now + timedelta(seconds=settings.EXECUTION_LEASE_SECONDS)
    proposal._change_reason = "execution started"
    proposal.save(update_fields=EXECUTION_FIELDS)
    return proposal, token


# How many Execution rows of kind "execute" the proposal has: read with the claim's row instead of a COUNT after it.
_EXECUTIONS_SO_FAR = Coalesce(Subquery(
    Execution.objects.filter(proposal=OuterRef("pk"), kind=Execution.Kind.EXECUTE).order_by()
    .values("proposal").annotate(n=Count("pk")).values("n")
), 0)


def _started(proposal: Proposal, *, save: bool = True, before: dict | None = None) -> Execution:
    """The attempt's Execution row, stored with the claim: an executing proposal always has its attempt
    on record (for an at-most-once connector, a started row is what says the call may have gone out).
    `save=False` where the outcome commits with the claim: the row is then written once, finished."""
    execution = Execution(proposal=proposal, attempt=proposal.executions_so_far + 1,
                          idempotency_key=_idempotency_key(proposal), change_hash=proposal.change_hash,
                          before=before or {})
    if save:
        execution.save()
    return execution


def _hold_unknown_outcome(proposal: Proposal) -> bool:
    """A writer died after starting a call that cannot be repeated safely (an MCP tools/call): whether
    it reached the upstream is unknown, so the proposal fails saying so, for an operator to check and
    then retry or close by hand. Inside the claim's transaction; True if it was held."""
    started = proposal.executions.filter(kind=Execution.Kind.EXECUTE, outcome=Execution.Outcome.STARTED)
    if not started.exists():
        return False  # the worker died before starting the call: running it now is its first time
    why = (f"outcome unknown: a worker stopped during the call to {proposal.connector.slug}; it was not sent again. "
           "Check the upstream, then retry the execution or record that it was handled by hand")
    started.update(outcome=Execution.Outcome.FAILED, error=why, finished_at=timezone.now())
    proposal.fail()
    proposal.lease_token, proposal.lease_until = "", None
    lifecycle.record(proposal, "execution held: outcome unknown after a worker stopped mid-call", status_reason=why)
    return True


def _ran_alone(proposal: Proposal) -> bool:
    """Approved by the policy alone: a force_review switch engaged since then wants a human first."""
    return proposal.outcome in ("auto", "on_the_loop") and not proposal.reviews.exists()


def _refusal(proposal: Proposal, switches: list) -> str:
    """Why an approved proposal must not run now, or '' (`switches`: the engaged kill switches)."""
    if proposal.canary:
        return "a canary the board planted is never executed"
    if not proposal.approved_hash or proposal.approved_hash != change_hash(proposal):
        return "the planned change differs from the change that was approved"
    switch = covering_switch(proposal.connector.slug, proposal.action, proposal.agent, "block", switches)
    if switch:
        where = switch.scope if switch.scope == "global" else f"{switch.scope} {switch.value}"
        return f"kill switch on {where} blocks execution: {switch.reason}"
    if not proposal.connector.enabled:
        return f"connector {proposal.connector.slug} is disabled"
    return ""


def _write(proposal: Proposal, token: str, execution: Execution, started: float, adapter, *,
           in_transaction: bool) -> RunResult:
    """Read the live record, then write once (or finish without writing). `in_transaction`: inside the
    caller's transaction with the proposal locked (an in-database adapter): the record is read under
    its lock and the outcome is settled in the same transaction."""
    finish = _record_and_settle if in_transaction else _finish
    target = target_of(proposal.target_type, proposal.target_id)
    current = (adapter.read_for_write(target) if in_transaction else adapter.read(target)) if target else {}
    execution.before = {name: current.get(name) for name in compensation_fields(proposal)}
    if target and _already_written(current, proposal.changes):
        return finish(proposal, token, execution, started, outcome=Execution.Outcome.SUCCEEDED,
                      after=current, response={"already_written": True})
    changed = _changed_since_preview(current, proposal.preview_before)
    if changed:
        return finish(proposal, token, execution, started, outcome=Execution.Outcome.STALE,
                      error="changed since the preview: " + ", ".join(changed))
    if proposal.connector.dry_run:
        would_be = {**current, **proposal.changes}
        return finish(proposal, token, execution, started, outcome=Execution.Outcome.DRY_RUN,
                      after=would_be, request={"dry_run": True, "would_write": proposal.changes})
    result = adapter.execute(proposal.action, target, proposal.changes, execution.idempotency_key)
    return finish(proposal, token, execution, started, outcome=Execution.Outcome.SUCCEEDED,
                  after=result.after, request=result.request, response=result.response)


def compensation_fields(proposal: Proposal) -> list[str]:
    """Every field the adapter previewed, not just the ones asked for: a ServiceNow resolve
    also moves `state`, and a rollback must be able to put that back too."""
    return list(dict.fromkeys([*proposal.changes, *proposal.preview_before]))


def _already_written(current: dict, changes: dict) -> bool:
    return bool(changes) and all(current.get(name) == value for name, value in changes.items())


def _changed_since_preview(current: dict, before: dict) -> list[str]:
    return [name for name, value in before.items() if current.get(name) != value]


def _record(execution: Execution, started: float, *, outcome: str, error: str = "", after=None, request=None, response=None) -> None:
    execution.outcome, execution.error = outcome, error[:5000]
    execution.after = after if after is not None else execution.after
    execution.request = request if request is not None else execution.request
    execution.response = response if response is not None else execution.response
    execution.duration_ms = int((time.monotonic() - started) * 1000)
    execution.finished_at = timezone.now()
    execution.save()


def _retry_later(proposal: Proposal, token: str, execution: Execution, started: float, error: str,
                 retry_in: float, attempt: int) -> RunResult:
    """A transient failure: the attempt is recorded as failed and the lease handed to the retry (in the caller's transaction)."""
    _record(execution, started, outcome=Execution.Outcome.FAILED, error=f"{error} (will retry)")
    _hand_lease_to_retry(proposal, token, retry_in, attempt)
    return RunResult("retrying", retry_in=retry_in)


def _hand_lease_to_retry(proposal: Proposal, token: str, retry_in: float, attempt: int) -> None:
    """The lease runs out when the retry is due, so the retry (and only it, then) may claim it.
    The retry is an outbox row due then; if it is lost, the sweep resumes the expired lease. In the
    caller's transaction."""
    until = timezone.now() + timedelta(seconds=retry_in)
    if Proposal.objects.filter(pk=proposal.pk, lease_token=token).update(lease_until=until):
        lifecycle.enqueue_execution(proposal, attempt=attempt + 1, due_at=until)


def _finish(proposal: Proposal, token: str, execution: Execution, started: float, *, outcome: str, error: str = "", **fields) -> RunResult:
    with transaction.atomic(durable=True):
        _record(execution, started, outcome=outcome, error=error, **fields)
        locked = _holding_lease(proposal, token)
        if locked is None:
            return RunResult("lease lost")
        return _settle(locked, outcome, error)


def _record_and_settle(proposal: Proposal, token: str, execution: Execution, started: float, *, outcome: str,
                       error: str = "", **fields) -> RunResult:
    """_finish for a proposal already locked with its lease checked, inside the write's transaction."""
    _record(execution, started, outcome=outcome, error=error, **fields)
    return _settle(proposal, outcome, error)


def _holding_lease(proposal: Proposal, token: str) -> Proposal | None:
    """The proposal locked and read again, or None if this writer's lease was lost (inside a transaction)."""
    locked = Proposal.objects.select_for_update().get(pk=proposal.pk)
    if locked.status != Status.EXECUTING or locked.lease_token != token:
        return None
    locked.connector = proposal.connector  # read with the claim: a connector's settings do not matter past this point
    return locked


def _settle(proposal: Proposal, outcome: str, error: str) -> RunResult:
    """Move a locked executing proposal to where its execution's outcome leads."""
    if outcome == Execution.Outcome.SUCCEEDED:
        proposal.finish_execution()
        proposal.status_reason = "executed"
    elif outcome == Execution.Outcome.DRY_RUN:
        proposal.finish_dry_run()
        proposal.status_reason = "dry run: nothing was written"
    elif outcome == Execution.Outcome.STALE:
        proposal.mark_stale()
        proposal.status_reason = f"the live record changed after the preview ({error}); review it again"
        _queue_reopen(proposal)
    else:
        proposal.fail()
        proposal.status_reason = error
    proposal.lease_token, proposal.lease_until = "", None
    proposal._change_reason = f"execution {outcome}" + (f": {error}" if error else "")
    proposal.save(update_fields=EXECUTION_FIELDS)
    return RunResult(proposal.status)


def stuck_executions() -> list[str]:
    """Executing proposals whose writer's lease ran out: a worker died; run them again."""
    grace = timedelta(seconds=settings.EXECUTION_RESUME_GRACE_SECONDS)  # a retry due now gets the first chance
    expired = Proposal.objects.filter(status=Status.EXECUTING, lease_until__lt=timezone.now() - grace)
    lost = Proposal.objects.filter(status=Status.EXECUTING, lease_until__isnull=True)
    return [str(pk) for pk in (expired | lost).values_list("pk", flat=True)]


def _queue_reopen(proposal: Proposal) -> None:
    outbox.enqueue("approvals.tasks.reopen_stale_proposal", [str(proposal.pk)], proposal=proposal)


def reopen_stale(proposal_id: Any) -> str:
    """Re-preview a stale proposal and put it back in review with the new diff.

    Same path as an operator's "send to review" (fresh preview, fresh decision, at least review),
    done by the system right after the stale state committed. The preview talks to the system
    of record, so it runs before the transaction.
    """
    proposal = Proposal.objects.select_related("connector").get(pk=proposal_id)
    if proposal.status != Status.STALE or proposal.claimed_by_id:
        return f"nothing to do: {proposal.status}" + (" (taken over)" if proposal.claimed_by_id else "")
    live = lifecycle.read_live(proposal)
    with transaction.atomic(durable=True):
        proposal = lifecycle.lock(proposal_id)
        if proposal.status != Status.STALE or proposal.claimed_by_id:
            return f"nothing to do: {proposal.status}"
        if live.error:
            return _stay_stale(proposal, live.error)
        lifecycle.apply_preview(proposal, live)
        reason = f"{proposal.status_reason}; back to review with a fresh preview"
        lifecycle.redecide_into_review(
            proposal, proposal.send_to_review, why="sent back to review after going stale", status_reason=reason,
            note={"reopened_after_stale": True},
        )
    return proposal.status


def _stay_stale(proposal: Proposal, error: str) -> str:
    """The record could not be re-read: leave it stale, saying why, for an operator to act on."""
    proposal.status_reason = f"{proposal.status_reason}; could not re-preview ({error}): send it to review or reject it"
    proposal._change_reason = f"re-preview after going stale failed: {error}"
    proposal.save()
    return proposal.status


# ---- actions the integration carries out ----------------------------------------------------

class OutcomeConflict(Exception):
    """The proposal is not waiting for an outcome report: not approved, or already reported."""


def report_outcome(proposal_id: Any, integration, *, ok: bool, result: dict | None = None, error: str = "") -> Proposal:
    """The submitting integration reports how its own execution of an approved action went.

    Accepted once per approval (approved -> executing -> executed or failed in one transaction),
    only from the integration that submitted it and only for connectors whose actions the
    integration carries out; a second report finds the proposal no longer approved (409).
    The result is stored on an Execution row like a worker's write.
    """
    with transaction.atomic(durable=True):
        proposal = Proposal.objects.select_for_update(of=("self",)).select_related("connector", "integration").get(pk=proposal_id)
        if proposal.integration_id != integration.pk:
            raise Proposal.DoesNotExist
        if not executed_by_client(proposal.connector):
            raise OutcomeConflict(f"connector {proposal.connector.slug} is executed by HITL Gov, not by the integration")
        if proposal.status != Status.APPROVED:
            already = proposal.executions.filter(kind=Execution.Kind.EXECUTE).exclude(outcome=Execution.Outcome.STARTED)
            raise OutcomeConflict(
                f"the outcome of this approval was already reported: the proposal is {proposal.status}" if already.exists()
                else f"a proposal that is {proposal.status} is not waiting for an outcome"
            )
        proposal.start_execution()
        Execution.objects.create(
            proposal=proposal, attempt=lifecycle.next_attempt(proposal, Execution.Kind.EXECUTE),
            idempotency_key=_idempotency_key(proposal), change_hash=proposal.change_hash,
            outcome=Execution.Outcome.SUCCEEDED if ok else Execution.Outcome.FAILED,
            request={"reported_by": integration.name, "changes": proposal.changes},
            response=result or {}, after=dict(proposal.changes) if ok else {}, error=error[:5000],
            finished_at=timezone.now(),
        )
        if ok:
            proposal.finish_execution()
            why = "executed by the integration"
        else:
            proposal.fail()
            why = f"the integration reported a failure: {error or 'no detail given'}"
        lifecycle.record(proposal, f"outcome reported by integration {integration.name}: {'ok' if ok else 'failed'}",
                         status_reason=why)
    return proposal
