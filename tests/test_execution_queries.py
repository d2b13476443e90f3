"""An execution's database statements are few, in one transaction, and do not grow (issue 14).

Counted around approvals.execution.run for an approved refund on the sandbox connector, with
Django's CaptureQueriesContext; transaction control (BEGIN, SAVEPOINT, RELEASE, COMMIT) is not
counted, every other statement is. The sandbox's records live in this database, so the claim, the
write and the outcome are one transaction: a failure there leaves neither a written record nor a
proposal stuck in `executing`.
"""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest
from django.db import connection
from django.utils import timezone
from django.test.utils import CaptureQueriesContext

from approvals import execution, outbox
from approvals.models import OutboxMessage, Proposal, Status
from connectors.adapters.base import TransientError
from connectors.adapters.sandbox import SandboxAdapter
from connectors.models import Execution
from tests.conftest import SMALL_REFUND, data_statements, log_event_statements, reload, sandbox_record




# The claim: the proposal with its connector and attempt count (locked), the engaged kill switches,
# the transition's UPDATE and history row. The write and its outcome: the sandbox record locked, its
# UPDATE and history row, the finished Execution row, the proposal's UPDATE and history row. Then
# the log's one event (log_event_statements).
STATEMENTS = 10


def statements_of_run(proposal: Proposal) -> list[str]:
    with CaptureQueriesContext(connection) as captured:
        result = execution.run(proposal.pk)
    assert result.status == Status.EXECUTED, reload(proposal).status_reason
    return data_statements(captured)


def refund_of(submit, record: str) -> Proposal:
    proposal = submit(f"refund-{record}", target={"type": "order", "id": record}, **SMALL_REFUND)
    assert proposal.status == Status.APPROVED, proposal.status_reason  # approved by the policy alone
    return proposal


def test_an_execution_on_the_sandbox_takes_the_same_few_statements_in_one_transaction(submit, demo_matrix):
    execution.run(refund_of(submit, "A-1002").pk)  # a worker's first execution warms its caches
    first = statements_of_run(refund_of(submit, "A-1001"))
    assert len(first) == STATEMENTS + log_event_statements(), "\n".join(first)
    assert sum(sql.startswith('INSERT INTO "ledger_event"') for sql in first) == 1  # one transaction, one event
    assert sum(sql.startswith('SELECT "approvals_proposal"') for sql in first) == 1  # read once, locked throughout
    assert not any("approvals_review" in sql for sql in first)  # no force_review switch: nobody's review is read

    # More history (executions, the record's writes, log events) does not make the next one cost more.
    for record in ("A-1003", "A-1004", "A-1005"):
        execution.run(refund_of(submit, record).pk)
    undo_refund("A-1001")
    later = statements_of_run(submit("refund-A-1001-again", target={"type": "order", "id": "A-1001"}, **SMALL_REFUND))
    assert len(later) == len(first), "\n".join(later)


def test_an_attempt_on_the_sandbox_starts_when_claimed_and_finishes_after_its_write(submit, demo_matrix):
    """Its row is written once, finished; its start is still when the attempt began."""
    proposal = refund_of(submit, "A-1001")
    asked = timezone.now()
    execution.run(proposal.pk)
    attempt = Execution.objects.get(proposal=proposal)
    written = sandbox_record("A-1001").history.latest().history_date
    assert asked <= attempt.started_at < written <= attempt.finished_at


def undo_refund(record_id: str) -> None:
    record = sandbox_record(record_id)
    record.data = {**record.data, "status": "delivered", "refund_amount": "0.00"}
    record.save()


def test_a_failure_inside_the_sandbox_write_rolls_the_write_back_and_leaves_the_proposal_failed(
    submit, demo_matrix, monkeypatch,
):
    proposal = refund_of(submit, "A-1001")
    before = dict(sandbox_record("A-1001").data)
    written = SandboxAdapter.execute

    def write_then_break(self, *args, **kwargs):
        written(self, *args, **kwargs)
        raise RuntimeError("adapter bug after the write")

    monkeypatch.setattr(SandboxAdapter, "execute", write_then_break)
    assert execution.run(proposal.pk).status == Status.FAILED
    assert sandbox_record("A-1001").data == before  # the write went with the transaction it was in
    proposal = reload(proposal)
    assert proposal.status_reason == "RuntimeError: adapter bug after the write"
    assert (proposal.lease_token, proposal.lease_until) == ("", None)
    attempt = Execution.objects.get(proposal=proposal)
    assert (attempt.outcome, attempt.error) == (Execution.Outcome.FAILED, "RuntimeError: adapter bug after the write")


def test_a_second_delivery_between_the_claim_and_the_sandbox_write_waits_then_finds_it_executed(
    transactional_db, submit, demo_matrix, monkeypatch,
):
    """The proposal stays locked from the claim to the outcome: a redelivered message arriving once the
    claim is made (here: while the connector's adapter is set up) waits, then has nothing to do. With
    the claim committed apart, it found the proposal `executing` under a live lease and came back later."""
    with monkeypatch.context() as unsent:
        unsent.setattr(outbox, "publish", lambda task, args: None)  # the approval's own message stays in the outbox
        proposal = refund_of(submit, "A-1001")
    real_adapter_for, second = execution.adapter_for, {}

    def deliver_again() -> None:
        try:
            second["status"] = execution.run(proposal.pk).status
        finally:
            connection.close()

    def adapter_with_a_redelivery_waiting(connector):
        if "thread" not in second:
            second["thread"] = threading.Thread(target=deliver_again)
            second["thread"].start()
            second["thread"].join(timeout=0.5)
            assert second["thread"].is_alive(), second  # it waits for the lock the claim holds
        return real_adapter_for(connector)

    monkeypatch.setattr(execution, "adapter_for", adapter_with_a_redelivery_waiting)
    assert execution.run(proposal.pk).status == Status.EXECUTED
    second["thread"].join(timeout=30)
    assert second["status"] == f"nothing to do: {Status.EXECUTED}"
    assert Execution.objects.filter(proposal=proposal).count() == 1
    assert sandbox_record("A-1001").data["refund_amount"] == "45.00"


def test_a_failure_after_the_sandbox_write_settles_the_proposal_as_it_stands_in_the_database(
    submit, demo_matrix, monkeypatch,
):
    """The write's savepoint is undone, including the proposal's move to `executed`; the failure is then
    settled on the proposal read again, not on the copy in memory that had already moved on."""
    proposal = refund_of(submit, "A-1001")
    before = dict(sandbox_record("A-1001").data)
    save = Proposal.save

    def break_on_executed(self, *args, **kwargs):
        if self.status == Status.EXECUTED:
            raise RuntimeError("disk full while settling")
        return save(self, *args, **kwargs)

    monkeypatch.setattr(Proposal, "save", break_on_executed)
    assert execution.run(proposal.pk).status == Status.FAILED
    assert sandbox_record("A-1001").data == before
    proposal = reload(proposal)
    assert (proposal.status, proposal.status_reason) == (Status.FAILED, "RuntimeError: disk full while settling")
    attempt = Execution.objects.get(proposal=proposal)
    assert (attempt.outcome, attempt.after, attempt.response) == (Execution.Outcome.FAILED, {}, {})
    assert attempt.before == {"status": "delivered", "refund_amount": "0.00"}


def test_a_transient_sandbox_failure_hands_the_lease_to_a_retry_in_the_same_transaction(submit, demo_matrix,
                                                                                        monkeypatch):
    proposal = refund_of(submit, "A-1001")

    def busy(self, *args, **kwargs):
        raise TransientError("sandbox busy", retry_after=30)

    monkeypatch.setattr(SandboxAdapter, "execute", busy)
    result = execution.run(proposal.pk)
    assert (result.status, result.retry_in) == ("retrying", 30)
    proposal = reload(proposal)
    assert proposal.status == Status.EXECUTING and proposal.lease_until > timezone.now() + timedelta(seconds=25)
    retry = OutboxMessage.objects.get(proposal=proposal, task=outbox.EXECUTE, args=[str(proposal.pk), 2])
    assert retry.due_at == proposal.lease_until
    attempt = Execution.objects.get(proposal=proposal)
    assert (attempt.outcome, attempt.error) == (Execution.Outcome.FAILED, "sandbox busy (will retry)")


@pytest.mark.parametrize("attempts_before", [0, 2])
def test_the_attempt_number_counts_the_earlier_executions(submit, demo_matrix, attempts_before):
    proposal = refund_of(submit, "A-1001")
    for n in range(attempts_before):
        Execution.objects.create(proposal=proposal, attempt=n + 1, outcome=Execution.Outcome.FAILED,
                                 idempotency_key="earlier", change_hash=proposal.change_hash)
    Execution.objects.create(proposal=proposal, kind=Execution.Kind.COMPENSATE, idempotency_key="undo",
                             change_hash=proposal.change_hash)  # another kind: not an attempt to execute
    execution.run(proposal.pk)
    assert Execution.objects.filter(proposal=proposal, kind=Execution.Kind.EXECUTE).latest("id").attempt == attempts_before + 1
