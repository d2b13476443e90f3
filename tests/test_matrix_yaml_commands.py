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
from tests.conftest import ROOT, demo_spec, rule, tier
from tests.test_policy_monotonic import specs

DEMO_FILE = ROOT / "policies" / "examples" / "demo_matrix.yaml"


def everything_spec() -> engine.MatrixSpec:
    """The demo plus a rule, tiers and budgets using every field, so a round trip has something to lose."""
    spec = demo_spec()
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
    return replace(spec, rules=(*spec.rules, odd), budgets=budgets, sensitive_fields=frozenset({"iban", "email"}))


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


def test_export_to_stdout_is_the_canonical_yaml_of_the_version(demo_matrix):
    stdout, _ = run("export_matrix", "live")

    assert load_matrix(stdout) == to_spec(demo_matrix)
    assert stdout == dump_matrix(to_spec(demo_matrix))


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(spec=specs(with_tests=True))
def test_any_storable_spec_reads_back_from_the_database_as_stored(db, spec):
    assert storage_errors(spec) == []
    version = next_version()

    stored = to_spec(save_spec(spec, version=version))

    assert stored == stored_form(spec, version)
    assert engine.validate(stored) == []


def test_import_with_errors_names_each_path_exits_non_zero_and_stores_nothing(people, tmp_path):
    text = dump_matrix(demo_spec()).replace("outcome: block", "outcome: blok").replace("amount_min: '1000'", "amount_min: 'lots'")
    before = ApprovalMatrix.objects.count()

    with pytest.raises(CommandError, match="nothing was stored"):
        run("import_matrix", write(tmp_path, text), "--author", "board1")

    assert ApprovalMatrix.objects.count() == before


def test_import_lists_every_validation_error_with_its_path(people, tmp_path):
    spec = demo_spec()
    rules = (replace(spec.rules[0], outcome="blok"), replace(spec.rules[3], currency=None))
    broken = replace(spec, rules=rules, tests=())
    err = StringIO()

    with pytest.raises(CommandError, match="2 error"):
        call_command("import_matrix", write(tmp_path, dump_matrix(broken)), "--author", "board1", stderr=err, stdout=StringIO())

    assert "rules[0].outcome: must be one of auto, review, triage, block" in err.getvalue()
    assert "rules[1].currency: required with amount_min or amount_max" in err.getvalue()
    assert not ApprovalMatrix.objects.exists()


def test_import_refuses_a_value_the_database_would_round(people, tmp_path):
    text = dump_matrix(demo_spec()).replace("amount_min: '1000'", "amount_min: '999.995'")
    err = StringIO()

    with pytest.raises(CommandError):
        call_command("import_matrix", write(tmp_path, text), "--author", "board1", stderr=err, stdout=StringIO())

    assert "rules[3].amount_min: stored with 2 decimal places" in err.getvalue()
    assert not ApprovalMatrix.objects.exists()


def test_import_is_authored_by_a_board_member_only(people, tmp_path):
    path = write(tmp_path, DEMO_FILE.read_text())

    with pytest.raises(CommandError, match="not an active governance board member"):
        run("import_matrix", path, "--author", "finance1")
    with pytest.raises(CommandError, match="no user"):
        run("import_matrix", path, "--author", "nobody")
    assert not ApprovalMatrix.objects.exists()


def test_import_ignores_the_files_version_and_takes_the_next_number(demo_matrix, people, tmp_path):
    text = DEMO_FILE.read_text().replace("version: 1\n", "version: 40\n")

    run("import_matrix", write(tmp_path, text), "--author", "board1")

    assert ApprovalMatrix.objects.filter(status=MatrixStatus.DRAFT).get().version == demo_matrix.version + 1


def deletes_allowed() -> str:
    """The demo with its block-deletes rule aimed at another action: its two delete tests fail."""
    spec = demo_spec()
    return dump_matrix(replace(spec, rules=(replace(spec.rules[0], actions=frozenset({"remove"})), *spec.rules[1:])))


def test_a_draft_whose_tests_fail_is_imported_with_a_warning(people, tmp_path):
    text = deletes_allowed()

    _, err = run("import_matrix", write(tmp_path, text), "--author", "board1")

    assert "warning: FAIL delete-is-blocked" in err
    assert "cannot be submitted" in err
    assert ApprovalMatrix.objects.get().status == MatrixStatus.DRAFT


def test_check_passes_a_valid_file_whose_tests_all_pass():
    stdout, _ = run("check_matrix", str(DEMO_FILE))

    assert stdout.count("PASS ") == len(demo_spec().tests)
    assert "valid; 15 embedded tests pass" in stdout


def test_check_prints_each_failing_case_with_the_decisions_reasons(tmp_path):
    err = StringIO()

    with pytest.raises(CommandError, match="2 of 15 embedded tests fail"):
        call_command("check_matrix", write(tmp_path, deletes_allowed()), stdout=StringIO(), stderr=err)

    failures = [line for line in err.getvalue().splitlines() if line.startswith("FAIL")]
    assert [line.split(":")[0] for line in failures] == ["FAIL delete-is-blocked", "FAIL uncertain-delete-is-still-blocked"]
    assert "expected block (block-deletes), got review (default)" in failures[0]
    assert "reasons: no rule matched: default review" in failures[0]
    assert "got triage (triage-low-confidence, triage-missing-facts)" in failures[1]


def test_check_reports_every_error_with_its_path_and_runs_no_tests(tmp_path):
    text = dump_matrix(demo_spec()).replace("outcome: block", "outcome: blok").replace("  confidence_max: 0.7\n", "  confidence_max: 7\n")
    out, err = StringIO(), StringIO()

    with pytest.raises(CommandError, match="2 error"):
        call_command("check_matrix", write(tmp_path, text), stdout=out, stderr=err)

    assert "rules[0].outcome: must be one of" in err.getvalue()
    assert "rules[1].confidence_max: must be a number between 0 and 1" in err.getvalue()
    assert "PASS" not in out.getvalue()


def test_check_reports_broken_yaml_with_its_line(tmp_path):
    with pytest.raises(CommandError, match="1 error"):
        run("check_matrix", write(tmp_path, "version: 1\nrules: [\n"))


@pytest.mark.parametrize("mutate, code", [(lambda text: text, 0), (lambda text: text.replace("actions: [delete]", "actions: [remove]"), 1)])
def test_check_exit_code_is_zero_only_when_valid_and_passing(tmp_path, mutate, code):
    path = write(tmp_path, mutate(DEMO_FILE.read_text()))

    done = subprocess.run([sys.executable, "manage.py", "check_matrix", path], cwd=ROOT, capture_output=True, text=True)

    assert done.returncode == code, done.stderr


def test_diff_shows_two_versions_rule_by_rule(people):
    spec = demo_spec()
    old = new_draft(spec, people.board1)
    finance = replace(spec.rules[3], tiers=(tier("finance", 3),), amount_min=Decimal("500"))
    new = new_draft(replace(spec, rules=(*spec.rules[:3], finance, *spec.rules[5:],
                                         rule("block-exports", "block", actions=["export"]))), people.board1)

    stdout, _ = run("diff_matrix", str(old.version), f"v{new.version}")

    lines = stdout.splitlines()
    assert lines[0] == f"v{old.version} (draft) -> v{new.version} (draft)"
    rows = [line.split() for line in lines[3:]]
    assert ["rule", "finance-large-money", "changed", "amount_min", "1000.00", "500.00"] in rows
    assert ["rule", "finance-large-money", "changed", "tiers", "finance", "x2,", "240", "min", "finance", "x3,", "240", "min"] in rows
    assert ["rule", "block-exports", "added", "outcome", "-", "block"] in rows
    assert ["rule", "support-outgoing-email", "removed", "outcome", "review", "-"] in rows


def test_diff_of_a_version_with_itself_says_so(demo_matrix):
    stdout, _ = run("diff_matrix", "live", str(demo_matrix.version))

    assert stdout.endswith("no differences\n")


def test_commands_name_a_missing_version(db):
    with pytest.raises(CommandError, match="no matrix version 9"):
        run("export_matrix", "9")
    with pytest.raises(CommandError, match="not a version number"):
        run("diff_matrix", "latest", "1")
