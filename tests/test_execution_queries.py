"""An execution's database statements are few, in two transactions, and do not grow (issue 14).

Counted around approvals.execution.run for an approved refund on the sandbox connector, with
Django's CaptureQueriesContext; transaction control (BEGIN, SAVEPOINT, RELEASE, COMMIT) is not
counted, every other statement is. The sandbox's write joins the transaction that settles the
outcome, so a failure there leaves neither a written record nor a proposal stuck in `executing`.
"""

from __future__ import annotations

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from approvals import execution
from approvals.models import Proposal, Status
from connectors.adapters.sandbox import SandboxAdapter
from connectors.models import Execution
from tests.conftest import SMALL_REFUND, data_statements, log_event_statements, reload, sandbox_record




# The claim: the proposal with its connector and attempt count (locked), the engaged kill switches,
# the transition's UPDATE and history row, the Execution row, the log's event.
CLAIM_STATEMENTS = 5
# The write and its outcome: the proposal locked again (is the lease still ours?), the sandbox record
# locked, its UPDATE and history row, the Execution row's outcome, the proposal's UPDATE and history
# row, the log's event.
WRITE_STATEMENTS = 7


def statements_of_run(proposal: Proposal) -> list[str]:
    with CaptureQueriesContext(connection) as captured:
        result = execution.run(proposal.pk)
    assert result.status == Status.EXECUTED, reload(proposal).status_reason
    return data_statements(captured)


def refund_of(submit, record: str) -> Proposal:
    proposal = submit(f"refund-{record}", target={"type": "order", "id": record}, **SMALL_REFUND)
    assert proposal.status == Status.APPROVED, proposal.status_reason  # approved by the policy alone
    return proposal


def test_an_execution_on_the_sandbox_takes_the_same_few_statements_in_two_transactions(submit, demo_matrix):
    execution.run(refund_of(submit, "A-1002").pk)  # a worker's first execution warms its caches
    first = statements_of_run(refund_of(submit, "A-1001"))
    assert len(first) == CLAIM_STATEMENTS + WRITE_STATEMENTS + 2 * log_event_statements(), "\n".join(first)
    assert sum(sql.startswith('INSERT INTO "ledger_event"') for sql in first) == 2  # one event per transaction
    assert not any("approvals_review" in sql for sql in first)  # no force_review switch: nobody's review is read

    # More history (executions, the record's writes, log events) does not make the next one cost more.
    for record in ("A-1003", "A-1004", "A-1005"):
        execution.run(refund_of(submit, record).pk)
    undo_refund("A-1001")
    later = statements_of_run(submit("refund-A-1001-again", target={"type": "order", "id": "A-1001"}, **SMALL_REFUND))
    assert len(later) == len(first), "\n".join(later)


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


def test_a_writer_that_lost_its_lease_before_the_write_writes_nothing(submit, demo_matrix, monkeypatch):
    proposal = refund_of(submit, "A-1001")
    before = dict(sandbox_record("A-1001").data)
    real_adapter_for = execution.adapter_for

    def lease_taken_meanwhile(connector):  # between the claim and the write, another delivery took over
        Proposal.objects.filter(pk=proposal.pk).update(lease_token="another-writer")
        return real_adapter_for(connector)

    monkeypatch.setattr(execution, "adapter_for", lease_taken_meanwhile)
    assert execution.run(proposal.pk).status == "lease lost"
    assert sandbox_record("A-1001").data == before
    proposal = reload(proposal)
    assert (proposal.status, proposal.lease_token) == (Status.EXECUTING, "another-writer")  # the other writer's to finish
    attempt = Execution.objects.get(proposal=proposal)
    assert attempt.outcome == Execution.Outcome.FAILED and attempt.error.startswith("lease lost before the write")


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
