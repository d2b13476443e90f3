"""The audit trail for auditors: GET /api/v1/audit/ (scope audit:read) and `manage.py export_audit`."""

from __future__ import annotations

import csv
import io
import json
from collections import defaultdict
from datetime import timedelta

import pytest
from django.core.management import CommandError, call_command
from django.utils import timezone
from rest_framework.test import APIClient

from approvals import audit
from approvals.models import Proposal
from connectors.models import SandboxRecord
from policies import services as policy_services
from policies.models import ApprovalMatrix
from tests.conftest import matrix_spec, rule, tier

URL = "/api/v1/audit/"

# Refunds need one finance approval.
pytestmark = pytest.mark.matrix(matrix_spec(rule("refunds-finance", "review", actions=["refund"], tiers=(tier("finance"),))))


@pytest.fixture
def auditor(make_client):
    return make_client("auditors", scopes=["audit:read"])


@pytest.fixture
def executed_refund(executed, people) -> Proposal:
    """A refund approved by finance1 and executed on the sandbox."""
    return executed(approver=people.finance1, reason="receipt checked")


def fetch_all(client, **params) -> list[dict]:
    """Every row, following `next` page after page."""
    rows, url = [], URL
    while url:
        response = client.get(url, params if url == URL else None)
        assert response.status_code == 200, response.json()
        rows += response.json()["results"]
        url = response.json()["next"]
    return rows


def change(row: dict, field: str) -> tuple | None:
    found = [(c["old"], c["new"]) for c in row["changes"] if c["field"] == field]
    return found[0] if found else None


def export(*args: str) -> str:
    out = io.StringIO()
    call_command("export_audit", "--since", "2000-01-01", "--until", "2100-01-01T00:00:00Z", *args,
                 stdout=out, stderr=io.StringIO())
    return out.getvalue()


# ---- the API ------------------------------------------------------------------------------------

def test_a_proposal_from_submit_to_execution_reads_field_by_field(executed_refund, auditor):
    rows = [r for r in fetch_all(auditor, object="proposal") if r["id"] == str(executed_refund.pk)]

    assert [r["type"] for r in rows] == ["+", "~", "~", "~", "~"]
    assert [change(r, "status") for r in rows] == [
        (None, "new"), ("new", "pending_review"), ("pending_review", "approved"),
        ("approved", "executing"), ("executing", "executed"),
    ]
    submitted, decided, approved, started, finished = rows
    assert change(submitted, "agent") == (None, "refund-bot")
    assert change(submitted, "amount") == (None, "120.00")
    assert "id" not in {c["field"] for c in submitted["changes"]}
    assert submitted["reason"] == "submitted by integration refund-bot-integration"
    # editable=False fields are diffed too (simple-history's diff_against would skip them).
    assert change(decided, "outcome") == ("", "review")
    assert change(decided, "decision")[1]["rule"] == "refunds-finance"
    assert decided["reason"].startswith("decided review")
    assert approved["user"] == "finance1"
    assert approved["reason"] == "approve by finance1 via admin: receipt checked"
    assert change(approved, "approved_hash") == ("", executed_refund.change_hash)
    # The decided row records the tier's due time (it is stored with the row now, not updated behind
    # history's back), so the approval shows it ending.
    assert change(decided, "due_at")[0] is None and change(decided, "due_at")[1] is not None
    # Approved work no longer waits, so nothing about it can expire any more (expires_at ends too).
    assert {c["field"] for c in approved["changes"]} == {"status", "status_reason", "approved_hash", "due_at", "expires_at"}
    assert (started["user"], started["reason"]) == (None, "execution started")
    assert change(finished, "status_reason")[1] == "executed"
    assert all("updated_at" not in {c["field"] for c in r["changes"]} for r in rows), "not tracked"


def test_a_matrix_publication_shows_who_published_it(matrix, auditor, people):
    rows = fetch_all(auditor, object="matrix")

    mine = [r for r in rows if r["object"] == "matrix" and r["id"] == matrix.pk]
    assert [change(r, "status") for r in mine] == [(None, "draft"), ("draft", "submitted"), ("submitted", "published")]
    published = mine[-1]
    assert published["reason"] == "published"
    assert change(published, "published_by") == (None, people.board2.pk)
    assert change(published, "published_at")[1].endswith("Z")
    assert change(mine[1], "submitted_by") == (None, people.board1.pk)
    rules = [r for r in rows if r["object"] == "rule"]
    assert any(change(r, "name") == (None, "refunds-finance") and change(r, "matrix") == (None, matrix.pk) for r in rules)
    assert {r["object"] for r in rows} <= {"matrix", "rule", "review_tier", "budget"}


def test_kill_switches_and_deleted_records_are_on_the_trail(sandbox, auditor, people):
    policy_services.engage_switch(scope="connector", value="crm", mode="block", reason="incident 7", user=people.operator)
    record = SandboxRecord.objects.get(type="opportunity", record_id="O-1")
    record_pk = record.pk
    record.delete()

    (switch,) = fetch_all(auditor, object="killswitch")
    assert switch["reason"] == "engaged: incident 7"
    assert change(switch, "changed_by") == (None, people.operator.pk)
    (deleted,) = [r for r in fetch_all(auditor, object="connector") if r["type"] == "-"]
    assert (deleted["object"], deleted["id"]) == ("sandbox_record", record_pk)
    assert change(deleted, "record_id") == ("O-1", None)


def test_rows_come_oldest_first_across_kinds(executed_refund, auditor):
    rows = fetch_all(auditor)

    instants = [audit.parse_instant(r["at"]) for r in rows]
    assert instants == sorted(instants)
    assert {r["object"] for r in rows} >= {"proposal", "matrix", "rule", "connector", "sandbox_record"}


def test_cursor_pages_hold_every_row_once(executed_refund, auditor):
    whole = fetch_all(auditor, page_size="500")

    paged = fetch_all(auditor, page_size="3")

    assert len(whole) > 6
    assert paged == whole


def test_since_is_inclusive_and_until_exclusive(executed_refund, auditor):
    rows = fetch_all(auditor, object="proposal")
    middle = rows[2]["at"]

    later = fetch_all(auditor, object="proposal", since=middle)
    earlier = fetch_all(auditor, object="proposal", until=middle)

    assert later[0] == rows[2]
    assert earlier + later == rows
    assert fetch_all(auditor, object="proposal", since="2100-01-01") == []


def test_the_trail_needs_the_audit_scope(make_client, db):
    reader = make_client("proposal-reader", scopes=["proposals:read", "proposals:write"])

    assert reader.get(URL).status_code == 403
    assert APIClient().get(URL).status_code == 401


@pytest.mark.parametrize(("params", "field"), [
    ({"since": "yesterday"}, "since"),
    ({"until": "2026-13-01"}, "until"),
    ({"since": "2026-02-01", "until": "2026-01-01"}, "until"),
    ({"object": "nonsense"}, "object"),
    ({"cursor": "not-a-cursor"}, "cursor"),
])
def test_bad_filters_are_a_400_naming_the_parameter(auditor, params, field):
    response = auditor.get(URL, params)

    assert response.status_code == 400
    assert field in response.json()["errors"]


def test_rows_do_not_depend_on_the_chunk_size(executed_refund, auditor, monkeypatch):
    whole = fetch_all(auditor)
    monkeypatch.setattr(audit, "CHUNK", 2)

    assert fetch_all(auditor) == whole


# ---- the export command -------------------------------------------------------------------------

def test_jsonl_export_parses_back_to_the_api_rows(executed_refund, auditor):
    exported = [json.loads(line) for line in export().splitlines()]

    assert exported == fetch_all(auditor)


def test_csv_export_has_a_line_per_changed_field_and_parses_back(executed_refund, auditor, tmp_path):
    path = tmp_path / "audit.csv"
    export("--format", "csv", "--out", str(path), "--object", "proposal")

    with path.open(newline="", encoding="utf-8") as stream:
        lines = list(csv.DictReader(stream))
    assert list(lines[0]) == audit.CSV_COLUMNS
    rebuilt: dict[tuple, dict] = {}
    changes = defaultdict(list)
    for line in lines:
        key = (line["object"], line["id"], line["history_id"])  # history_id alone repeats across kinds
        head = {k: line[k] for k in ("object", "id", "at", "user", "reason", "type", "rule")}
        rebuilt[key] = {**head, "user": head["user"] or None, "reason": head["reason"] or None, "rule": head["rule"] or None}
        if line["field"]:
            changes[key].append({"field": line["field"], "old": json.loads(line["old"]), "new": json.loads(line["new"])})
    api_rows = fetch_all(auditor, object="proposal")
    keys = [(r["object"], str(r["id"]), "" if r["history_id"] is None else str(r["history_id"])) for r in api_rows]
    assert list(rebuilt) == keys
    for key, row in zip(keys, api_rows):
        assert changes[key] == row["changes"]
        assert rebuilt[key]["user"] == row["user"]
        assert rebuilt[key]["reason"] == row["reason"]
        assert rebuilt[key]["rule"] == row["rule"]


def test_export_refuses_a_bad_window(db):
    with pytest.raises(CommandError, match="since"):
        call_command("export_audit", "--since", "soon", "--until", "2100-01-01", stdout=io.StringIO())


def test_published_matrix_is_in_the_jsonl_export(matrix):
    rows = [json.loads(line) for line in export("--object", "matrix").splitlines()]

    assert any(r["object"] == "matrix" and r["id"] == matrix.pk and change(r, "status") == ("submitted", "published")
               for r in rows)
    assert ApprovalMatrix.objects.get(pk=matrix.pk).status == "published"


# ---- the scripted story: submit, edit, approve, execute, roll back -----------------------------------

ROW_FIELDS = {"object", "id", "history_id", "at", "user", "reason", "type", "rule", "changes"}  # docs/audit.md


def test_the_story_exports_exactly_the_documented_fields_for_every_kind(story, auditor, people):
    from connectors.models import Execution
    from approvals.models import Review, ReviewTask

    rows = fetch_all(auditor, object="proposal")

    assert all(set(row) == ROW_FIELDS for row in rows)
    assert {r["object"] for r in rows} == {"proposal", "review_task", "review", "execution"}
    history_fields = {kind: {f.name for f in model.history.model.tracked_fields if not f.primary_key}
                      for kind, model in (("proposal", Proposal), ("review_task", ReviewTask))}
    snapshot_fields = {kind: {f.name for f in model._meta.concrete_fields if not f.primary_key}
                       for kind, model in (("review", Review), ("execution", Execution))}
    for row in rows:
        names = {c["field"] for c in row["changes"]}
        if row["object"] in snapshot_fields:
            assert names == snapshot_fields[row["object"]] and row["history_id"] is None
        else:
            assert names <= history_fields[row["object"]] and isinstance(row["history_id"], int)
    proposal_rows = [r for r in rows if r["object"] == "proposal"]
    assert [change(r, "status")[1] for r in proposal_rows if change(r, "status")] == [
        "new", "pending_review", "approved", "executing", "executed", "rolled_back"]
    edit = next(r for r in proposal_rows if change(r, "edited") == (False, True))
    assert edit["user"] == "finance1" and change(edit, "changes")[1]["refund_amount"] == "60.00"
    assert all(r["rule"] == "refunds-finance" for r in proposal_rows[1:])
    reviews = [r for r in rows if r["object"] == "review"]
    assert [(r["user"], r["reason"], r["rule"]) for r in reviews] == [("finance2", "half refund is right", "refunds-finance")]
    executions = [r for r in rows if r["object"] == "execution"]
    assert [change(r, "kind")[1] for r in executions] == ["execute", "compensate"]
    assert proposal_rows[-1]["user"] == "operator" and "customer returned the goods" in proposal_rows[-1]["reason"]


def test_the_story_in_csv_has_exactly_the_documented_columns(story, auditor, tmp_path):
    path = tmp_path / "audit.csv"
    export("--format", "csv", "--out", str(path))

    with path.open(newline="", encoding="utf-8") as stream:
        reader = csv.DictReader(stream)
        lines = list(reader)
    assert reader.fieldnames == ["object", "id", "history_id", "at", "user", "reason", "type", "rule", "field", "old", "new"]
    assert {line["object"] for line in lines} >= {"proposal", "review_task", "review", "execution", "matrix", "integration"}


def test_notification_deliveries_and_delegations_are_on_the_trail(submit, channel, people, auditor):
    from approvals import delegation
    from approvals.models import Notification

    channel("finance")
    proposal = submit()
    until = timezone.now() + timedelta(days=7)
    delegation.set_delegation(people.finance1, people.finance2, timezone.now(), until, "holiday", by=people.finance1)

    rows = fetch_all(auditor, object="proposal,people")

    notifications = [r for r in rows if r["object"] == "notification"]
    sent = Notification.objects.get(proposal=proposal, event="assigned")
    assert [(r["id"], r["history_id"], r["rule"]) for r in notifications] == [(sent.pk, None, proposal.decision["rule"])]
    assert all(set(r) == ROW_FIELDS for r in rows)
    assert change(notifications[0], "recipient") == (None, "finance@example.com")
    assert {r["object"] for r in rows} >= {"proposal", "review_task", "notification", "notification_channel", "delegation"}
