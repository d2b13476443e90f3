"""Rolling back executed proposals: one at a time, or in batches an operator starts.

A rollback writes the execution's recorded before-state back through the adapter's
`compensate`, but only when that cannot destroy someone else's work:
- the live record is re-read first; if any field the execution wrote no longer holds the
  value it wrote, somebody changed it since, and writing the old value back would silently
  undo their change. Nothing is written; the fields are listed for a human to handle;
- a dry-run execution wrote nothing, so its rollback writes nothing either and says so (the
  proposal still ends `rolled_back`: the operator decided the change should not stand);
- a proposal handled manually, a sent message (capability "send") and anything the adapter
  refuses (PermanentError: email, public replies, deletes) cannot be undone here: the refusal
  is recorded and the proposal stays as it was (`executed` or `handled_manually`).
Every attempt leaves an Execution row of kind `compensate`, so refusals are as visible as
successes. A lease on the proposal (like the executor's) keeps two rollbacks from running at
once; a rollback whose record already holds the before-state finishes without writing again.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from approvals import lifecycle, operations, outbox
from approvals.models import Proposal, Status
from connectors.models import Connector, Execution, RollbackBatch
from connectors.services import (
    ConnectorError, PermanentError, WriteConflict, WriteResult, adapter_capability, adapter_for, at_most_once, target_of,
)

WRITTEN = (Execution.Outcome.SUCCEEDED, Execution.Outcome.DRY_RUN, Execution.Outcome.MANUAL)
# A dry run is "rolled back" without writing: the operator decided the change should not stand.
# Work handled by hand is undone by hand: its rollback is refused and recorded.
ROLLBACKABLE = (Status.EXECUTED, Status.DRY_RUN, Status.HANDLED_MANUALLY)


@dataclass(frozen=True)
class RollbackResult:
    """What a rollback did. `outcome`: rolled_back, nothing_written, refused or failed."""

    proposal_id: str
    outcome: str
    message: str
    fields: tuple[str, ...] = field(default_factory=tuple)

    @property
    def needs_manual(self) -> bool:
        return self.outcome in ("refused", "failed")

    @property
    def undone(self) -> bool:
        return self.outcome in ("rolled_back", "nothing_written")


@dataclass
class _Attempt:
    proposal: Proposal
    written: Execution
    row: Execution
    token: str
    started: float
    then: Callable[[Proposal, str], None] | None = None


# ---- one proposal -----------------------------------------------------------------------------

def rollback_proposal(proposal_id: Any, user, reason: str) -> RollbackResult:
    """Undo one executed proposal, or refuse visibly. Raises OperationRefused when the proposal
    is not (or no longer) something to roll back, so a batch can skip it."""
    operations.check_operator(user)
    return undo(proposal_id, user, reason)


def undo(proposal_id: Any, user, reason: str, *, then: Callable[[Proposal, str], None] | None = None) -> RollbackResult:
    """A rollback without the operator check: the caller has authorised `user` (approvals.oversight lets
    the after-the-fact reviewers of on-the-loop work roll it back). `then(proposal, result)` runs
    inside the transaction that records the outcome, so the caller's own record lands with it."""
    if not reason.strip():
        raise ValidationError({"reason": "say why this change is being rolled back"})
    attempt = _claim(proposal_id, user, then)
    try:
        return _undo(attempt, user, reason)
    except Exception as exc:  # an adapter bug must still leave a visible refusal, and free the lease
        return _finish(attempt, user, reason, "failed", f"{type(exc).__name__}: {exc}")


def _claim(proposal_id: Any, user, then: Callable[[Proposal, str], None] | None = None) -> _Attempt:
    now, token = timezone.now(), uuid.uuid4().hex
    with transaction.atomic(durable=True):
        proposal = lifecycle.lock(proposal_id)
        if proposal.status not in ROLLBACKABLE:
            raise operations.OperationRefused(f"only an executed proposal can be rolled back; this one is {proposal.status}")
        if proposal.lease_token and proposal.lease_until and proposal.lease_until > now:
            raise operations.OperationRefused("a rollback of this proposal is already running")
        written = proposal.executions.filter(kind=Execution.Kind.EXECUTE, outcome__in=WRITTEN).order_by("started_at", "id").last()
        if written is None:
            raise operations.OperationRefused("the proposal has no recorded execution to undo")
        until = now + timedelta(seconds=settings.EXECUTION_LEASE_SECONDS)
        Proposal.objects.filter(pk=proposal.pk).update(lease_token=token, lease_until=until)
        row = Execution.objects.create(
            proposal=proposal, kind=Execution.Kind.COMPENSATE, change_hash=proposal.change_hash,
            attempt=lifecycle.next_attempt(proposal, Execution.Kind.COMPENSATE),
            idempotency_key=f"hitl-{proposal.pk}-undo-{written.pk}", request={"restore": dict(written.before)},
        )
    return _Attempt(proposal, written, row, token, time.monotonic(), then)


def _undo(attempt: _Attempt, user, reason: str) -> RollbackResult:
    proposal, written = attempt.proposal, attempt.written
    if written.outcome == Execution.Outcome.DRY_RUN:
        return _finish(attempt, user, reason, "nothing_written", "dry run: nothing was written, so nothing was undone")
    if written.outcome == Execution.Outcome.MANUAL:
        return _finish(attempt, user, reason, "refused", "handled manually outside HITL Gov: undo it by hand")
    if adapter_capability(proposal.connector, proposal.action) == "send":
        return _finish(attempt, user, reason, "refused", f"{proposal.action} sent a message, which cannot be recalled")
    adapter = adapter_for(proposal.connector)
    target = target_of(proposal.target_type, proposal.target_id)
    if at_most_once(proposal.connector):  # a remote call (MCP): no record to compare; its compensating tool undoes it
        call = written.request or {}
        return _compensate(attempt, user, reason,
                           lambda: adapter.compensate_call(proposal.action, call.get("arguments") or {}, written.response))
    try:
        live = adapter.read(target) if target else {}
    except ConnectorError as exc:
        return _finish(attempt, user, reason, "failed", f"could not re-read the record: {exc}")
    attempt.row.before = {name: live.get(name) for name in written.before}
    if _holds(live, written.before) and not _holds(live, _written_values(proposal, written)):
        return _finish(attempt, user, reason, "rolled_back", "the record already holds the before-state",
                       after=attempt.row.before, response={"already_restored": True})
    changed = _changed_since(live, proposal, written)
    if changed:
        return _refuse_changed(attempt, user, reason, live, changed)
    return _compensate(attempt, user, reason, lambda: adapter.compensate(proposal.action, target, written.before))


def _written_values(proposal: Proposal, written: Execution) -> dict[str, Any]:
    """The value the execution left in each field it touched: from the write's own answer,
    else the previewed after-value, else the requested change, else (untouched) the before."""
    previewed = {change["field"]: change["after"] for change in proposal.preview.get("changes", [])}
    values = {}
    for name, before in written.before.items():
        if name in written.after:
            values[name] = written.after[name]
        elif name in previewed:
            values[name] = previewed[name]
        else:
            values[name] = proposal.changes.get(name, before)
    return values


def _holds(live: dict, values: dict) -> bool:
    return all(live.get(name) == value for name, value in values.items())


def _changed_since(live: dict, proposal: Proposal, written: Execution) -> list[str]:
    return [name for name, value in _written_values(proposal, written).items() if live.get(name) != value]


def _refuse_changed(attempt: _Attempt, user, reason: str, live: dict, changed: list[str]) -> RollbackResult:
    wrote = _written_values(attempt.proposal, attempt.written)
    detail = ", ".join(f"{name} (wrote {wrote[name]!r}, now {live.get(name)!r})" for name in changed)
    return _finish(attempt, user, reason, "refused", f"changed since the execution: {detail}; nothing was overwritten",
                   outcome=Execution.Outcome.STALE, fields=tuple(changed),
                   response={"manual_fields": changed, "live": {name: live.get(name) for name in changed}})


def _compensate(attempt: _Attempt, user, reason: str, undo: Callable[[], WriteResult]) -> RollbackResult:
    try:
        result = undo()
    except WriteConflict as exc:
        return _finish(attempt, user, reason, "refused", f"the system refused the undo as a conflict: {exc}",
                       outcome=Execution.Outcome.STALE)
    except PermanentError as exc:
        return _finish(attempt, user, reason, "refused", f"cannot be undone: {exc}")
    except ConnectorError as exc:
        return _finish(attempt, user, reason, "failed", f"the undo failed ({exc}); try again")
    return _finish(attempt, user, reason, "rolled_back", "", after=result.after, request=result.request,
                   response=result.response)


_ROW_OUTCOME = {"rolled_back": Execution.Outcome.SUCCEEDED, "nothing_written": Execution.Outcome.DRY_RUN,
                "refused": Execution.Outcome.FAILED, "failed": Execution.Outcome.FAILED}


def _finish(attempt: _Attempt, user, reason: str, result: str, message: str, *, outcome: str | None = None,
            fields: tuple[str, ...] = (), **recorded) -> RollbackResult:
    """Record the compensate row, then roll the proposal back or leave it executed saying why."""
    row = attempt.row
    undone = result in ("rolled_back", "nothing_written")
    row.outcome, row.error = outcome or _ROW_OUTCOME[result], "" if undone else message[:5000]
    for name, value in recorded.items():
        setattr(row, name, value)
    if undone and message:
        row.response = {**row.response, "note": message}
    row.duration_ms, row.finished_at = int((time.monotonic() - attempt.started) * 1000), timezone.now()
    with transaction.atomic(durable=True):
        row.save()
        proposal = lifecycle.lock(attempt.proposal.pk)
        if proposal.lease_token != attempt.token:
            return RollbackResult(str(proposal.pk), "failed", "another rollback took this proposal over", fields)
        name = user.get_username()
        if undone:
            proposal.roll_back()
            proposal.status_reason = f"rolled back by {name}: {reason}" + (f" ({message})" if message else "")
            proposal._change_reason = proposal.status_reason
        else:
            proposal.status_reason = f"{proposal.status}; rollback {result}: {message}"
            proposal._change_reason = f"rollback by {name} {result} ({reason}): {message}"
        proposal.lease_token, proposal.lease_until = "", None
        proposal._history_user = user
        proposal.save()
        if attempt.then is not None:
            attempt.then(proposal, result)
    return RollbackResult(str(proposal.pk), result, message or "rolled back", fields)


# ---- batches ----------------------------------------------------------------------------------

def start_batch(user, reason: str, *, agent: str = "", connector: Connector | None = None,
                executed_from: datetime | None = None, executed_until: datetime | None = None,
                proposal_ids: list[Any] | None = None) -> RollbackBatch:
    """Resolve the selection now (so later executions are not swept in) and queue the batch."""
    operations.check_operator(user)
    if not reason.strip():
        raise ValidationError({"reason": "say why these changes are being rolled back"})
    if not (agent or connector or executed_from or executed_until or proposal_ids):
        raise ValidationError({"agent": "choose an agent, a connector, a time range or proposals to roll back"})
    if executed_from and executed_until and executed_from > executed_until:
        raise ValidationError({"executed_until": "must not be before executed_from"})
    ids = _selection(agent, connector, executed_from, executed_until, proposal_ids)
    if not ids:
        field = "proposal_ids" if proposal_ids is not None else "agent"
        raise ValidationError({field: "no executed proposal matches this selection"})
    with transaction.atomic():
        batch = RollbackBatch.objects.create(
            agent=agent, connector=connector, executed_from=executed_from, executed_until=executed_until,
            proposal_ids=ids, requested_by=user, reason=reason, total=len(ids),
        )
        outbox.enqueue("approvals.tasks.rollback_batch", [batch.pk])
    return batch


def _selection(agent: str, connector: Connector | None, executed_from: datetime | None,
               executed_until: datetime | None, proposal_ids: list[Any] | None) -> list[str]:
    """Executed proposals matching every filter given; the time range is when their write finished."""
    executions = Q(executions__kind=Execution.Kind.EXECUTE, executions__outcome__in=WRITTEN)
    if executed_from:
        executions &= Q(executions__finished_at__gte=executed_from)
    if executed_until:
        executions &= Q(executions__finished_at__lte=executed_until)
    query = Proposal.objects.filter(status__in=ROLLBACKABLE).filter(executions)
    if agent:
        query = query.filter(agent=agent)
    if connector:
        query = query.filter(connector=connector)
    if proposal_ids is not None:
        query = query.filter(pk__in=proposal_ids)
    return [str(pk) for pk in query.order_by("created_at").values_list("pk", flat=True).distinct()]


def unstarted_batches(older_than: datetime) -> list[int]:
    """Batches queued before `older_than` that no worker has claimed: their message was lost after a
    worker fetched it (the outbox row says sent). The claim below makes a second delivery harmless."""
    queued = RollbackBatch.objects.filter(status=RollbackBatch.Status.QUEUED, created_at__lt=older_than)
    return list(queued.order_by("created_at").values_list("pk", flat=True)[:100])


def run_batch(batch_id: int) -> str:
    """Claim a queued batch and roll back its proposals one by one, saving progress after each."""
    claimed = RollbackBatch.objects.filter(pk=batch_id, status=RollbackBatch.Status.QUEUED).update(
        status=RollbackBatch.Status.RUNNING, started_at=timezone.now(),
    )
    if not claimed:
        return "nothing to do"
    batch = RollbackBatch.objects.select_related("requested_by").get(pk=batch_id)
    for proposal_id in batch.proposal_ids[batch.done:]:
        _count(batch, proposal_id, _rollback_item(batch, proposal_id))
        batch.save(update_fields=["done", "rolled_back", "skipped", "manual"])
    batch.status, batch.finished_at = RollbackBatch.Status.DONE, timezone.now()
    batch.save(update_fields=["status", "finished_at"])
    return f"rolled back {batch.rolled_back} of {batch.total}"


def _rollback_item(batch: RollbackBatch, proposal_id: str) -> RollbackResult:
    reason = f"rollback batch #{batch.pk}: {batch.reason}"
    try:
        return rollback_proposal(proposal_id, batch.requested_by, reason)
    except operations.OperationRefused as exc:
        return RollbackResult(proposal_id, "skipped", str(exc))
    except Exception as exc:  # one bad proposal (or a revoked permission) must not stop the rest of the batch
        return RollbackResult(proposal_id, "failed", f"{type(exc).__name__}: {exc}")


def _count(batch: RollbackBatch, proposal_id: str, result: RollbackResult) -> None:
    batch.done += 1
    if result.undone:
        batch.rolled_back += 1
        return
    batch.skipped += 1
    if result.needs_manual:
        entry = {"proposal": proposal_id, "fields": list(result.fields)} if result.fields else {"proposal": proposal_id}
        entry["error"] = result.message
        batch.manual = [*batch.manual, entry]
