"""The decision log: one hash-chained event per operation, append-only, and verify_audit finds tampering."""

from __future__ import annotations

import io
from datetime import datetime, timedelta
from decimal import Decimal

import pytest
from django.core.management import CommandError, call_command
from django.db import DatabaseError, connection, models, transaction
from django.utils import timezone

from approvals import services
from approvals.models import Proposal, ReviewTask
from ledger import anchors, chain
from ledger.models import Event
from ledger.verify import verify
from policies import services as policy_services
from tests.conftest import matrix_spec, rule, tier

pytestmark = pytest.mark.matrix(matrix_spec(rule("refunds-finance", "review", actions=["refund"], tiers=(tier("finance"),))))


@pytest.fixture(autouse=True)
def anchor_file(settings, tmp_path):
    settings.AUDIT_ANCHOR_FILE = tmp_path / "anchors.log"
    return settings.AUDIT_ANCHOR_FILE


def sql(statement: str, params=()) -> None:
    with connection.cursor() as cursor:
        cursor.execute(statement, params)


def lift_guard() -> None:
    """What someone with database access would do first (inside the test's transaction, so it comes back)."""
    if connection.vendor == "postgresql":
        sql("ALTER TABLE ledger_event DISABLE TRIGGER ledger_event_append_only")
    else:
        sql("DROP TRIGGER ledger_event_no_update")
        sql("DROP TRIGGER ledger_event_no_delete")


def first_problem() -> tuple[str, str, int | None]:
    report = verify()
    assert not report.intact
    problem = report.problems[0]
    return problem.kind, problem.what, problem.position


def event_recording(model: str, history_id: int) -> Event:
    return next(e for e in Event.objects.all() if any(r.get("model") == model and r.get("history_id") == history_id
                                                      for r in e.records))


# ---- what is written --------------------------------------------------------------------------

def test_a_submission_is_one_event_listing_every_history_row_it_wrote(submit):
    before = Event.objects.count()

    proposal = submit()

    (event,) = Event.objects.filter(position__gt=before)
    history = [("approvals.historicalproposal", h.history_id) for h in proposal.history.order_by("history_id")]
    tiers = [("approvals.historicalreviewtask", h.history_id)
             for task in proposal.review_tasks.all() for h in task.history.order_by("history_id")]
    assert [(r["model"], r["history_id"]) for r in event.records if "history_id" in r] == history[:2] + tiers
    assert event.reason.startswith("submitted by integration refund-bot-integration; decided review")
    assert (event.agent, event.action) == ("refund-bot", "refund")
    assert event.prev_hash == Event.objects.get(position=event.position - 1).hash


def test_the_log_costs_one_statement_per_operation(submit):
    """Whatever the submission wrote (four history rows, a tier), its event is one INSERT that reads the
    head itself (two statements on PostgreSQL: the advisory lock first)."""
    from django.test.utils import CaptureQueriesContext

    submit()
    with CaptureQueriesContext(connection) as queries:
        submit()

    mine = [q["sql"] for q in queries.captured_queries if "ledger_event" in q["sql"] or "advisory" in q["sql"]]
    assert len(mine) == (2 if connection.vendor == "postgresql" else 1), mine
    assert mine[-1].startswith('INSERT INTO "ledger_event"'), mine


def test_a_verdict_names_the_reviewer_and_the_chain_stays_intact(submit, people):
    proposal = submit()

    services.record_verdict(proposal.pk, people.finance1, "approve", "receipt checked")

    event = Event.objects.order_by("-position").first()
    assert event.user == "finance1"
    assert "receipt checked" in event.reason
    report = verify()
    assert report.intact, report.problems
    assert report.events == Event.objects.count() and report.history_rows > 0


def test_kill_switch_and_matrix_publication_are_events(matrix, people):
    policy_services.engage_switch(scope="connector", value="crm", mode="block", reason="incident 7", user=people.operator)

    event = Event.objects.order_by("-position").first()
    assert event.reason == "engaged: incident 7"
    assert [r["model"] for r in event.records] == ["policies.historicalkillswitch"]
    assert any("published" in e.reason for e in Event.objects.all())


def test_a_rolled_back_savepoint_leaves_nothing_in_the_event(submit, people):
    proposal = submit()
    before = Event.objects.count()

    with transaction.atomic():
        Proposal.objects.get(pk=proposal.pk).save()  # kept: a history row
        with pytest.raises(RuntimeError), transaction.atomic():  # the savepoint is rolled back
            saved = Proposal.objects.get(pk=proposal.pk)
            saved._change_reason = "undone"
            saved.save()
            raise RuntimeError("abandon the savepoint")

    (event,) = Event.objects.filter(position__gt=before)
    assert len(event.records) == 1
    assert verify().intact


# ---- append-only ------------------------------------------------------------------------------

def test_the_application_cannot_update_or_delete_an_event(submit):
    submit()
    event = Event.objects.order_by("position").first()

    for attempt in (lambda: Event.objects.filter(pk=event.pk).update(reason="nothing happened"),
                    lambda: Event.objects.filter(pk=event.pk).delete(),
                    lambda: event.delete()):
        with pytest.raises(DatabaseError, match="append-only"), transaction.atomic():
            attempt()
    event.reason = "nothing happened"
    with pytest.raises(DatabaseError, match="append-only"), transaction.atomic():
        event.save()
    assert Event.objects.get(pk=event.pk).reason != "nothing happened"


# ---- tampering, found ----------------------------------------------------------------------------

def test_an_edited_history_row_is_reported_with_its_event_position(submit):
    proposal = submit()
    row = proposal.history.order_by("history_id").first()
    sql("UPDATE approvals_historicalproposal SET amount = 1 WHERE history_id = %s", [row.history_id])

    assert first_problem() == ("edited", "approvals.historicalproposal",
                               event_recording("approvals.historicalproposal", row.history_id).position)


def test_an_inserted_history_row_is_reported(submit):
    proposal = submit()
    row = proposal.history.order_by("history_id").first()
    row.history_id = None
    row.history_change_reason = "approved by nobody"
    row.save()  # a history model is not governed: this is a plain INSERT nobody logs, as raw SQL would be

    report = verify()
    assert [(p.kind, p.what) for p in report.problems] == [("inserted", "approvals.historicalproposal")]
    assert str(row.history_id) in report.problems[0].detail


def test_a_deleted_history_row_is_reported_with_its_event_position(submit):
    proposal = submit()
    row = proposal.history.order_by("history_id").last()
    sql("DELETE FROM approvals_historicalproposal WHERE history_id = %s", [row.history_id])

    assert first_problem() == ("missing", "approvals.historicalproposal",
                               event_recording("approvals.historicalproposal", row.history_id).position)


def test_an_edited_event_is_reported_with_its_position(submit):
    submit()
    submit()
    target = Event.objects.order_by("-position")[1]
    lift_guard()
    sql("UPDATE ledger_event SET reason = 'approved by the CFO' WHERE id = %s", [target.pk])

    assert first_problem() == ("edited", "event", target.position)


def test_a_deleted_event_is_reported_as_a_missing_position(submit):
    submit()
    submit()
    target = Event.objects.order_by("-position")[1]
    lift_guard()
    sql("DELETE FROM ledger_event WHERE id = %s", [target.pk])

    assert first_problem() == ("missing", "event", target.position)


def test_an_inserted_event_is_reported_with_its_position(submit):
    submit()
    submit()
    before = Event.objects.order_by("-position")[1]
    lift_guard()  # make room after `before`, then forge an event that links to it correctly
    sql("UPDATE ledger_event SET position = position + 1000 WHERE position > %s", [before.position])
    sql("UPDATE ledger_event SET position = position - 999 WHERE position > %s", [before.position + 999])
    forged = Event(position=before.position + 1, at=before.at, reason="approved by the CFO", records=[],
                   prev_hash=before.hash)
    forged.hash = chain.event_hash(forged.prev_hash, forged)
    sql("INSERT INTO ledger_event (position, at, \"user\", reason, category, subject, agent, action, records, prev_hash, hash) "
        "VALUES (%s, %s, '', %s, '', '', '', '', '[]', %s, %s)",
        [forged.position, before.at, forged.reason, forged.prev_hash, forged.hash])

    assert first_problem() == ("inserted", "event", before.position + 1)


def test_a_truncated_tail_is_caught_by_the_anchor(submit, anchor_file):
    submit()
    anchor = anchors.write_anchor()
    lift_guard()
    last = Event.objects.get(position=anchor.position)
    for record in last.records:
        if "history_id" in record:
            table = record["model"].replace(".", "_")
            sql(f"DELETE FROM {table} WHERE history_id = %s", [record["history_id"]])
    sql("DELETE FROM ledger_event WHERE position = %s", [anchor.position])

    report = verify()
    assert [(p.kind, p.position) for p in report.problems] == [("truncated", anchor.position)]


# ---- the command ---------------------------------------------------------------------------------

def test_verify_audit_exits_zero_when_intact_and_fails_naming_the_position(submit, anchor_file):
    proposal = submit()
    out = io.StringIO()
    call_command("verify_audit", "--anchor", stdout=out)
    assert out.getvalue().rstrip().endswith("intact")
    assert anchors.latest_anchor().position == Event.objects.order_by("-position").first().position

    row = proposal.history.order_by("history_id").first()
    sql("UPDATE approvals_historicalproposal SET history_change_reason = 'x' WHERE history_id = %s", [row.history_id])
    out = io.StringIO()
    with pytest.raises(CommandError, match="NOT intact"):
        call_command("verify_audit", stdout=out)
    position = event_recording("approvals.historicalproposal", row.history_id).position
    assert f"edited approvals.historicalproposal at position {position}" in out.getvalue()


# ---- concurrency -----------------------------------------------------------------------------------

@pytest.mark.django_db(transaction=True)
def test_concurrent_operations_extend_one_chain_without_forks(matrix, make_client):
    """Two agents submitting at once: every event lands, one after another, and the chain verifies."""
    import threading

    from django.db import connections

    from tests.conftest import proposal_body

    integrations = [make_client(f"agent-{n}").integration for n in range(2)]
    errors: list[BaseException] = []

    def agent(integration, count: int = 4) -> None:
        try:
            for n in range(count):
                data = proposal_body(idempotency_key=f"{integration.name}-{n}")
                services.submit_proposal(integration, {**data, "amount": Decimal(data["amount"])})
        except BaseException as exc:  # noqa: BLE001  (reported below, not swallowed)
            errors.append(exc)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=agent, args=(i,)) for i in integrations]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert errors == []
    assert Proposal.objects.count() == 8
    positions = list(Event.objects.order_by("position").values_list("position", flat=True))
    assert positions == list(range(1, len(positions) + 1))
    report = verify()
    assert report.intact, report.problems


def test_rows_from_before_the_log_are_adopted_once_in_a_logged_event(submit):
    proposal = submit()
    old = proposal.history.order_by("history_id").first()
    old.history_id = None
    old.save()  # stands for a row written before the decision log was installed
    assert not verify().intact

    out = io.StringIO()
    call_command("verify_audit", "--adopt", stdout=out)

    assert "adopted 1 history rows" in out.getvalue() and out.getvalue().rstrip().endswith("intact")
    assert Event.objects.order_by("-position").first().reason == "adopted 1 history rows written before the decision log"


def digests_by_row_values(row) -> dict:
    """What history_digests must give: every field through the general row_values."""
    payload_names = chain.PAYLOAD_FIELDS.get(chain.source_label(type(row)), ())
    core, payload = {}, {}
    for field in type(row)._meta.concrete_fields:
        (payload if field.name in payload_names else core)[field.attname] = chain.row_values(field, getattr(row, field.attname))
    digests = {"digest": chain.sha256(chain.canonical(core))}
    if payload_names:
        digests["payload"] = chain.sha256(chain.canonical(payload))
    return digests


class Text(str):
    """A str of another type (as an enum member is): the fast path must hand it to row_values."""


def unusual(field, value):
    """The same value in another type a field may be given in memory, or None for fields kept as they are."""
    target = field.target_field if isinstance(field, models.ForeignKey) else field
    if value is None or isinstance(target, (models.JSONField, models.DecimalField)):
        return None
    if isinstance(target, models.DateTimeField):
        return value.replace(tzinfo=None)  # naive, read as UTC
    if isinstance(target, models.BooleanField):
        return int(value)
    if isinstance(target, (models.IntegerField, models.UUIDField)):
        return str(value)
    return Text(value)


def test_the_fast_digest_reads_every_field_as_the_general_one_does(submit, people):
    """history_digests skips to_python for the exact types a row usually holds; for real history
    rows, and for the same rows holding other types (a naive datetime, an id as text, a str
    subclass), it must give what row_values gives, or the sweeps' digests would not verify."""
    proposal = submit()
    services.record_verdict(proposal.pk, people.finance1, "approve", "receipt checked")
    rows = [*Proposal.history.model.objects.filter(id=proposal.pk),
            *ReviewTask.history.model.objects.filter(proposal_id=proposal.pk)]
    assert len(rows) >= 3
    for row in rows:
        assert chain.history_digests(row) == digests_by_row_values(row)
        changed = 0
        for field in type(row)._meta.concrete_fields:
            other = unusual(field, getattr(row, field.attname))
            if other is not None:
                setattr(row, field.attname, other)
                changed += 1
        assert changed > 5
        assert chain.history_digests(row) == digests_by_row_values(row)


def test_the_sweeps_log_each_history_row_they_write_with_the_entry_verify_computes_from_it(submit):
    """The sweeps write history rows in SQL and digest what the INSERT returned, as the database
    returned it; verify_audit digests model instances read later. Both must agree, row by row."""
    escalating = submit(changes={"status": "refunded", "refund_amount": "120.00", "note": "\u00e9 \u2603 \"q\""})
    ageing = submit(amount=Decimal("99.5"), changes={"nested": {"b": [1, 2.5, None], "a": True}})
    task = services.active_task(escalating)
    escalated_at, expired_at = task.due_at + timedelta(seconds=1), timezone.now() + timedelta(days=30)
    before = Event.objects.order_by("-position").values_list("position", flat=True).first()

    assert services.escalate_overdue(now=escalated_at) >= 1
    assert services.expire_overdue(now=expired_at) >= 2

    logged = {(r["model"], r["history_id"]): r for e in Event.objects.filter(position__gt=before) for r in e.records
              if "history_id" in r}
    written = [row for history in (Proposal.history.model, ReviewTask.history.model)
               for row in history.objects.filter(history_date__in=[escalated_at, expired_at])]
    assert {type(row) for row in written} == {Proposal.history.model, ReviewTask.history.model}
    assert len(written) >= 5  # an escalated tier; two expired proposals and their closed tiers
    for row in written:
        assert logged[(row._meta.label_lower, row.history_id)] == chain.history_entry(row)


def returned_rows(history) -> list[tuple]:
    """Every row of a history table as the driver returns it (every concrete field, in order), as
    the sweeps' INSERT ... RETURNING does."""
    columns = ", ".join(connection.ops.quote_name(f.column) for f in history._meta.concrete_fields)
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT {columns} FROM {connection.ops.quote_name(history._meta.db_table)}")
        return cursor.fetchall()


def test_rows_as_the_driver_returns_them_get_the_entries_verify_computes(submit, people):
    """The sweeps digest raw rows with shortcuts for the forms the drivers return (SQLite's naive
    datetimes and hex uuids); on real rows, and on rows whose values take the other forms (whole
    seconds, an upper-case uuid), every entry must be the one verify_audit computes."""
    proposal = submit(changes={"status": "refunded", "refund_amount": "120.00", "note": "\u00e9 \u2603"})
    services.record_verdict(proposal.pk, people.finance1, "approve", "receipt checked")
    histories = (Proposal.history.model, ReviewTask.history.model)

    def entries_agree() -> int:
        checked = 0
        for history in histories:
            expected = [chain.history_entry(row) for row in history.objects.order_by("history_id")]
            assert chain.history_entries_returned(history, returned_rows(history), connection) == expected
            checked += len(expected)
        return checked

    assert entries_agree() >= 3
    whole = timezone.now().replace(microsecond=0)
    for history in histories:
        history.objects.update(history_date=whole)
    sql(f"UPDATE approvals_historicalproposal SET id = {'upper(id)' if connection.vendor == 'sqlite' else 'id'}")
    assert Proposal.history.model.objects.filter(history_date=whole).exists()
    assert entries_agree() >= 3


@pytest.mark.skipif(connection.vendor != "postgresql", reason="the loader swapped is psycopg's; SQLite's driver has none")
def test_on_postgresql_the_sweeps_read_the_rows_they_copy_as_django_reads_them(submit, people):
    """The sweeps read the rows their INSERT returns with psycopg's own timestamp loader (Django's
    Python subclass of it cost 15 us a proposal row): every value must be the one Django reads,
    of the same type, aware and in UTC, whole seconds included."""
    from approvals import sweeps

    proposal = submit(changes={"status": "refunded", "refund_amount": "120.00"})
    services.record_verdict(proposal.pk, people.finance1, "approve", "receipt checked")
    whole = timezone.now().replace(microsecond=0)
    Proposal.history.filter(history_id=proposal.history.earliest("history_id").history_id).update(history_date=whole)
    for history in (Proposal.history.model, ReviewTask.history.model):
        columns = ", ".join(connection.ops.quote_name(f.column) for f in history._meta.concrete_fields)
        select = f"SELECT {columns} FROM {connection.ops.quote_name(history._meta.db_table)} ORDER BY history_id"
        with connection.cursor() as cursor:
            cursor.execute(select)
            as_django_reads = cursor.fetchall()

        as_swept = sweeps._copied_rows(select, [])

        assert len(as_swept) >= 2 and as_swept == as_django_reads
        for ours, djangos in zip(as_swept, as_django_reads):
            assert [type(value) for value in ours] == [type(value) for value in djangos]
            assert all(value.utcoffset() == timedelta(0) for value in ours if isinstance(value, datetime))
        if history is Proposal.history.model:
            assert whole in as_swept[0]


def test_json_text_of_any_shape_digests_as_django_would_read_it(submit):
    """The sweeps read a JSON column's text with the decoder's scanner alone when the text is one
    JSON value end to end; text with spaces around it, a byte-order mark, several values or no
    JSON at all must still read as JSONField.from_db_value reads it (json.loads, else the text)."""
    proposal = submit(changes={"status": "refunded", "refund_amount": "120.00"})
    history = Proposal.history.model
    field = history._meta.get_field("changes")
    at = [f.column for f in history._meta.concrete_fields].index(field.column)
    row = next(r for r in returned_rows(history) if str(r[0]).replace("-", "") == proposal.pk.hex)
    stored = history.objects.get(history_id=row[[f.attname for f in history._meta.concrete_fields].index("history_id")])

    for text in (' {"a": [1, 2.5]}', '{"a": 1} ', "\ufeff{}", "not json", "[1, 2] [3]", '"\\u00e9\\ud800"', "1e400", "NaN",
                 '{"b": 1, "a": {"d": null, "c": true}}'):
        stored.changes = field.from_db_value(text, None, connection)
        returned = (*row[:at], text, *row[at + 1:])
        assert chain.history_entries_returned(history, [returned], connection) == [chain.history_entry(stored)], text
