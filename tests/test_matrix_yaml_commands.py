"""Matrices as code: export, import, check and diff from the command line, with exact round trips."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import replace
from decimal import Decimal
from io import StringIO
from pathlib import Path

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from hypothesis import HealthCheck, given, settings

from policies import engine
from policies.matrices import save_spec, storage_errors, stored_form, to_spec
from policies.matrix_yaml import dump_matrix, load_matrix
from policies.models import ApprovalMatrix, MatrixStatus
from policies.services import new_draft, next_version
from tests.conftest import ROOT, matrix_spec, rule, tier
from tests.test_policy_monotonic import specs

DEMO_FILE = ROOT / "policies" / "examples" / "demo_matrix.yaml"


def case(name: str, expect: str, rules: tuple[str, ...], **facts) -> engine.MatrixTest:
    return engine.MatrixTest(name=name, facts=facts, expect=expect, expect_rules=rules)


def board_spec() -> engine.MatrixSpec:
    """A small matrix these tests own, so edits to the shipped demo matrix do not move their answers."""
    money = {"actions": ["refund", "credit"], "currency": "USD"}
    return replace(matrix_spec(
        rule("block-deletes", "block", actions=["delete"]),
        rule("triage-low-confidence", "triage", confidence_max=0.7),
        rule("finance-large-refunds", "review", amount_min=Decimal("1000"), tiers=(tier("finance", 2),), **money),
        rule("support-emails", "review", actions=["send_email"], tiers=(tier("support"),)),
        rule("auto-small-refunds", "auto", amount_max=Decimal("100"), confidence_min=0.9, **money),
        rule("auto-confident-notes", "auto", actions=["add_note", "update"], confidence_min=0.9),
        tests=(
            case("delete-is-blocked", "block", ("block-deletes",), connector="crm", action="delete", agent="crm-bot", confidence=0.99),
            case("uncertain-delete-is-blocked", "block", ("block-deletes",), connector="crm", action="delete", agent="crm-bot",
                 confidence=0.3),
            case("large-refund-goes-to-finance", "review", ("finance-large-refunds",), connector="helpdesk", action="refund",
                 agent="refund-bot", amount="1500.00", currency="USD", confidence=0.95),
            case("small-refund-runs-alone", "auto", ("auto-small-refunds",), connector="helpdesk", action="refund",
                 agent="refund-bot", amount="45.00", currency="USD", confidence=0.95),
            case("email-goes-to-support", "review", ("support-emails",), connector="email", action="send_email", agent="mail-bot"),
            case("mid-size-refund-gets-the-default", "review", ("default",), connector="helpdesk", action="refund",
                 agent="refund-bot", amount="500.00", currency="USD", confidence=0.95),
            case("unsure-update-goes-to-triage", "triage", ("triage-low-confidence",), connector="crm", action="update",
                 agent="crm-bot", confidence=0.5),
        ),
    ), name="board", version=1)


def everything_spec() -> engine.MatrixSpec:
    """The board's matrix plus a rule, tiers and budgets using every field, so a round trip has something to lose."""
    spec = board_spec()
    budgets = (
        engine.Budget("refunds-per-day", "amount", Decimal("2500.50"), 1440, frozenset({"helpdesk"}), frozenset({"refund"}),
                      frozenset({"refund-bot"})),
        engine.Budget("emails-per-hour", "count", Decimal("40"), 60, actions=frozenset({"send_email"})),
    )
    odd = rule(
        "everything-set", "review", description="uses every condition", connectors=["helpdesk", "crm"],
        actions=["refund"], agents=["refund-bot"], target_types=["order"], currency="EUR",
        amount_min=Decimal("10.25"), amount_max=Decimal("99999.99"), confidence_min=0.125, confidence_max=0.875,
        impacts=["high", "medium"], fields_any=["iban"], touches_sensitive=True, missing_facts=False,
        override_rate_min=0.3, budget_exceeded="refunds-per-day",
        tiers=(tier("finance", 2, mode="all", sla_minutes=30, escalation_group="board", bulk_allowed=True), tier("support")),
    )
    return replace(spec, rules=(*spec.rules, odd), budgets=budgets, sensitive_fields=frozenset({"iban", "email"}),
                   required_facts=("target", "rationale"))


def deletes_allowed() -> str:
    """The board's matrix with block-deletes aimed at another action: its two delete tests fail."""
    spec = board_spec()
    return dump_matrix(replace(spec, rules=(replace(spec.rules[0], actions=frozenset({"remove"})), *spec.rules[1:])))


def run(*args) -> tuple[str, str]:
    out, err = StringIO(), StringIO()
    call_command(*args, stdout=out, stderr=err)
    return out.getvalue(), err.getvalue()


def write(tmp_path: Path, text: str, name: str = "matrix.yaml") -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def test_a_stored_version_survives_export_and_import_exactly(people, tmp_path):
    original = new_draft(everything_spec(), people.board1)
    out_file = str(tmp_path / "exported.yaml")

    run("export_matrix", str(original.version), "--out", out_file)
    stdout, _ = run("import_matrix", out_file, "--author", "board2")

    copy = ApprovalMatrix.objects.get(version=original.version + 1)
    assert f"draft v{copy.version}" in stdout
    assert (copy.status, copy.author) == (MatrixStatus.DRAFT, people.board2)
    assert to_spec(copy) == replace(to_spec(original), version=copy.version)
    exported_again, _ = run("export_matrix", str(copy.version))
    first = Path(out_file).read_text()
    assert exported_again == first.replace(f"version: {original.version}\n", f"version: {copy.version}\n", 1)


def test_export_to_stdout_is_the_canonical_yaml_of_the_version(publish):
    live = publish(board_spec())

    stdout, _ = run("export_matrix", "live")

    assert stdout == dump_matrix(to_spec(live))
    assert load_matrix(stdout) == to_spec(live)


# Each example stores a matrix, so a third of the profile's count. The examples share one `db` transaction:
# each stores its spec under the next free version number.
@settings(max_examples=settings().max_examples // 3,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(spec=specs(with_tests=True))
def test_any_storable_spec_reads_back_from_the_database_as_stored(db, spec):
    assert storage_errors(spec) == []
    version = next_version()

    stored = to_spec(save_spec(spec, version=version))

    assert stored == stored_form(spec, version)
    assert engine.validate(stored) == []


def test_import_with_errors_names_each_path_exits_non_zero_and_stores_nothing(people, tmp_path):
    text = dump_matrix(board_spec()).replace("outcome: block", "outcome: blok").replace("amount_min: '1000'", "amount_min: 'lots'")

    with pytest.raises(CommandError, match="nothing was stored"):
        run("import_matrix", write(tmp_path, text), "--author", "board1")

    assert not ApprovalMatrix.objects.exists()


def test_import_lists_every_validation_error_with_its_path(people, tmp_path):
    spec = board_spec()
    rules = (replace(spec.rules[0], outcome="blok"), replace(spec.rules[2], currency=None))
    broken = replace(spec, rules=rules, tests=())
    err = StringIO()

    with pytest.raises(CommandError, match="2 error"):
        call_command("import_matrix", write(tmp_path, dump_matrix(broken)), "--author", "board1", stderr=err, stdout=StringIO())

    assert "rules[0].outcome: must be one of auto, on_the_loop, review, assisted, triage, block" in err.getvalue()
    assert "rules[1].currency: required with amount_min or amount_max" in err.getvalue()
    assert not ApprovalMatrix.objects.exists()


def test_import_refuses_a_value_the_database_would_round(people, tmp_path):
    text = dump_matrix(board_spec()).replace("amount_min: '1000'", "amount_min: '999.995'")
    err = StringIO()

    with pytest.raises(CommandError):
        call_command("import_matrix", write(tmp_path, text), "--author", "board1", stderr=err, stdout=StringIO())

    assert "rules[2].amount_min: stored with 2 decimal places" in err.getvalue()
    assert not ApprovalMatrix.objects.exists()


def test_import_is_authored_by_a_board_member_only(people, tmp_path):
    path = write(tmp_path, dump_matrix(board_spec()))

    with pytest.raises(CommandError, match="not an active governance board member"):
        run("import_matrix", path, "--author", "finance1")
    with pytest.raises(CommandError, match="no user"):
        run("import_matrix", path, "--author", "nobody")
    assert not ApprovalMatrix.objects.exists()


def test_import_ignores_the_files_version_and_takes_the_next_number(publish, people, tmp_path):
    live = publish(board_spec())
    text = dump_matrix(replace(board_spec(), version=40))

    run("import_matrix", write(tmp_path, text), "--author", "board1")

    assert ApprovalMatrix.objects.filter(status=MatrixStatus.DRAFT).get().version == live.version + 1


def test_a_draft_whose_tests_fail_is_imported_with_a_warning(people, tmp_path):
    _, err = run("import_matrix", write(tmp_path, deletes_allowed()), "--author", "board1")

    assert "warning: FAIL delete-is-blocked" in err
    assert "cannot be submitted" in err
    assert ApprovalMatrix.objects.get().status == MatrixStatus.DRAFT


def test_check_passes_a_valid_file_whose_tests_all_pass(tmp_path):
    stdout, _ = run("check_matrix", write(tmp_path, dump_matrix(board_spec())))

    assert stdout.count("PASS ") == 7
    assert "valid; 7 embedded tests pass" in stdout


def test_the_shipped_demo_matrix_passes_its_check():
    stdout, _ = run("check_matrix", str(DEMO_FILE))

    assert "FAIL" not in stdout and "embedded tests pass" in stdout


def test_check_prints_each_failing_case_with_the_decisions_reasons(tmp_path):
    err = StringIO()

    with pytest.raises(CommandError, match="2 of 7 embedded tests fail"):
        call_command("check_matrix", write(tmp_path, deletes_allowed()), stdout=StringIO(), stderr=err)

    failures = [line for line in err.getvalue().splitlines() if line.startswith("FAIL")]
    assert [line.split(":")[0] for line in failures] == ["FAIL delete-is-blocked", "FAIL uncertain-delete-is-blocked"]
    assert "expected block (block-deletes), got review (default)" in failures[0]
    assert "reasons: no rule matched: default review" in failures[0]
    assert "got triage (triage-low-confidence)" in failures[1]


def test_check_reports_every_error_with_its_path_and_runs_no_tests(tmp_path):
    text = dump_matrix(board_spec()).replace("outcome: block", "outcome: blok").replace("confidence_max: 0.7\n", "confidence_max: 7\n")
    out, err = StringIO(), StringIO()

    with pytest.raises(CommandError, match="2 error"):
        call_command("check_matrix", write(tmp_path, text), stdout=out, stderr=err)

    assert "rules[0].outcome: must be one of" in err.getvalue()
    assert "rules[1].confidence_max: must be a number between 0 and 1" in err.getvalue()
    assert "PASS" not in out.getvalue()


def test_check_reports_broken_yaml_with_its_line(tmp_path):
    err = StringIO()

    with pytest.raises(CommandError, match="1 error"):
        call_command("check_matrix", write(tmp_path, "version: 1\nrules: [\n"), stdout=StringIO(), stderr=err)

    assert err.getvalue().startswith("line ")


@pytest.mark.parametrize("text, code", [(dump_matrix(board_spec()), 0), (deletes_allowed(), 1)])
def test_check_exit_code_is_zero_only_when_valid_and_passing(tmp_path, text, code):
    path = write(tmp_path, text)

    done = subprocess.run([sys.executable, "manage.py", "check_matrix", path], cwd=ROOT, capture_output=True, text=True)

    assert done.returncode == code, done.stderr


def test_diff_shows_two_versions_rule_by_rule(people):
    spec = board_spec()
    old = new_draft(spec, people.board1)
    finance = replace(spec.rules[2], tiers=(tier("finance", 3),), amount_min=Decimal("500"))
    new = new_draft(replace(spec, rules=(*spec.rules[:2], finance, *spec.rules[4:],
                                         rule("block-exports", "block", actions=["export"]))), people.board1)

    stdout, _ = run("diff_matrix", str(old.version), f"v{new.version}")

    lines = stdout.splitlines()
    assert lines[0] == f"v{old.version} (draft) -> v{new.version} (draft)"
    rows = [line.split() for line in lines[3:]]
    assert ["rule", "finance-large-refunds", "changed", "amount_min", "1000.00", "500.00"] in rows
    assert ["rule", "finance-large-refunds", "changed", "tiers", "finance", "x2,", "240", "min", "finance", "x3,", "240", "min"] in rows
    assert ["rule", "block-exports", "added", "outcome", "-", "block"] in rows
    assert ["rule", "support-emails", "removed", "outcome", "review", "-"] in rows


def test_diff_of_a_version_with_itself_says_so(publish):
    live = publish(board_spec())

    stdout, _ = run("diff_matrix", "live", str(live.version))

    assert stdout.endswith("no differences\n")


def test_commands_name_a_missing_version(db):
    with pytest.raises(CommandError, match="no matrix version 9"):
        run("export_matrix", "9")
    with pytest.raises(CommandError, match="not a version number"):
        run("diff_matrix", "latest", "1")
