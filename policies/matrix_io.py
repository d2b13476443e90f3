"""Matrices as code: export a version as YAML, check a file, import it as a new draft.

A board keeps its matrix in version control and reviews changes as text; these functions
are what the management commands and the admin's export action and import form call.
An import stores the file exactly or not at all: every validation error is reported with
its path, and what the tables cannot hold exactly (a third decimal place, an over-long
description) is refused instead of being rounded or cut.
"""

from __future__ import annotations

from dataclasses import dataclass

from django.db import transaction

from policies import engine
from policies.matrices import storage_errors, stored_form, to_spec
from policies.matrix_yaml import dump_matrix, load_matrix
from policies.models import ApprovalMatrix
from policies.services import new_draft


class MatrixImportError(Exception):
    """The file cannot become a draft; `errors` says where and why, one MatrixError per problem."""

    def __init__(self, errors: list[engine.MatrixError]) -> None:
        self.errors = errors
        super().__init__("; ".join(str(e) for e in errors))


@dataclass(frozen=True)
class CaseResult:
    """One embedded test case as run: what it expected, what the matrix decided, and why."""

    name: str
    passed: bool
    expect: str
    expect_rules: tuple[str, ...] | None
    outcome: str
    rules: tuple[str, ...]
    reasons: tuple[str, ...]

    def describe(self) -> str:
        if self.passed:
            return f"PASS {self.name}: {self.outcome} ({', '.join(self.rules)})"
        wanted = self.expect + (f" ({', '.join(self.expect_rules)})" if self.expect_rules is not None else "")
        return (f"FAIL {self.name}: expected {wanted}, got {self.outcome} ({', '.join(self.rules)}); "
                f"reasons: {'; '.join(self.reasons)}")


@dataclass(frozen=True)
class CheckReport:
    """Everything wrong with a matrix (errors) and, if it is valid, how its embedded tests fared."""

    spec: engine.MatrixSpec | None
    errors: tuple[engine.MatrixError, ...]
    cases: tuple[CaseResult, ...]

    @property
    def ok(self) -> bool:
        return not self.errors and all(case.passed for case in self.cases)

    @property
    def failed(self) -> list[CaseResult]:
        return [case for case in self.cases if not case.passed]


def export_yaml(matrix: ApprovalMatrix) -> str:
    """The canonical YAML of a stored version (what `import_yaml` reads back exactly)."""
    return dump_matrix(to_spec(matrix))


def parse_yaml(text: str) -> tuple[engine.MatrixSpec | None, list[engine.MatrixError]]:
    """The spec in a file and every problem with it: structure first, then meaning, then fit in the tables."""
    try:
        spec = load_matrix(text, check=False)
    except engine.MatrixError as exc:
        return None, [exc]
    errors = engine.validate(spec)
    return spec, errors or storage_errors(spec)


def run_cases(spec: engine.MatrixSpec) -> tuple[CaseResult, ...]:
    """A valid spec's embedded tests, with the decision's reasons kept for the failures."""
    return tuple(
        CaseResult(case.name, passed, case.expect, case.expect_rules, decision.outcome, decision.rules, decision.reasons)
        for case, decision, passed in engine.run_tests(spec)
    )


def check_spec(spec: engine.MatrixSpec) -> CheckReport:
    errors = engine.validate(spec)
    return CheckReport(spec, tuple(errors), () if errors else run_cases(spec))


def check_yaml(text: str) -> CheckReport:
    spec, errors = parse_yaml(text)
    if spec is None or errors:
        return CheckReport(spec, tuple(errors), ())
    return CheckReport(spec, (), run_cases(spec))


@transaction.atomic
def import_yaml(text: str, author, notes: str = "") -> ApprovalMatrix:
    """Store a file as a new draft version (its own `version` is ignored: numbers are handed out in order).

    Raises MatrixImportError, storing nothing, when the file is invalid, or when what the
    database gave back differs from the file (the check that no value was rounded or cut).
    Failing embedded tests do not stop an import: a draft may be work in progress, and
    submitting it runs them.
    """
    spec, errors = parse_yaml(text)
    if spec is None or errors:
        raise MatrixImportError(errors)
    matrix = new_draft(spec, author, notes=notes)
    expected = stored_form(spec, matrix.version)
    stored = to_spec(matrix)
    if stored != expected:  # raising rolls the draft back
        changes = engine.diff_specs(expected, stored)
        raise MatrixImportError([
            engine.MatrixError(c.get("rule") or c.get("setting") or "", f"stored differently: {c['fields']}") for c in changes
        ] or [engine.MatrixError("", "stored differently from the file")])
    return matrix


def locate(spec: engine.MatrixSpec, error: engine.MatrixError) -> str:
    """An error with rules and budgets named, as the admin shows them: "rule refund-limit (rules[2]).amount_min: ..."."""
    path = error.path
    for prefix, items, label in (("rules[", spec.rules, "rule"), ("budgets[", spec.budgets, "budget")):
        if path.startswith(prefix):
            index, _, rest = path[len(prefix):].partition("]")
            if index.isdigit() and int(index) < len(items):
                path = f"{label} {items[int(index)].name} ({prefix}{index}]){rest}"
            break
    return f"{path}: {error.message}" if path else error.message
