"""The board's admin: edit a draft, check it, compare, simulate, submit, publish; published versions stay frozen."""

from __future__ import annotations

from decimal import Decimal

import pytest
from django.contrib.auth.models import Group, Permission
from django.core.files.uploadedfile import SimpleUploadedFile
from django.forms.widgets import CheckboxInput, NullBooleanSelect
from django.test import Client

from approvals.models import Proposal
from policies import simulation
from policies.matrix_io import export_yaml, import_yaml
from policies.matrix_yaml import dump_matrix
from policies.models import ApprovalMatrix, CircuitBreaker, MatrixStatus, ReviewTier, Rule, SimulationRun
from policies.services import BOARD_GROUP, live_matrix, new_draft
from tests.test_matrix_yaml_commands import board_spec, deletes_allowed
from tests.test_simulation import stored_proposals

CHANGELIST = "/admin/policies/approvalmatrix/"


@pytest.fixture
def board(people):
    """Two logged-in board members. Simulation runs and breakers are board work too: grant them here."""
    extra = Permission.objects.filter(content_type__app_label="policies", codename__in=[
        "view_simulationrun", "add_simulationrun", "view_circuitbreaker", "add_circuitbreaker", "change_circuitbreaker",
    ])
    Group.objects.get(name=BOARD_GROUP).permissions.add(*extra)
    first, second = Client(), Client()
    first.force_login(people.board1)
    second.force_login(people.board2)
    return first, second


@pytest.fixture
def live(publish):
    return publish(board_spec())


def action(client: Client, name: str, *matrices: ApprovalMatrix, url: str = CHANGELIST):
    """Run an admin action as the changelist's form does, following the redirect back as a browser would."""
    return client.post(url, {"action": name, "_selected_action": [m.pk for m in matrices]}, follow=True)


def said(response) -> list[str]:
    """The messages shown on the page the action led to."""
    return [str(m) for m in response.context["messages"]]


def form_data(response) -> dict:
    """What the browser would post back for an admin change page as rendered: its form and inline formsets."""
    data: dict = {}
    forms = [response.context["adminform"].form]
    for inline in response.context["inline_admin_formsets"]:
        formset = inline.formset
        forms += [formset.management_form, *formset.forms]
    for form in forms:
        for name, field in form.fields.items():
            value = form[name].value()
            widget = field.widget
            if isinstance(widget, NullBooleanSelect):
                data[form.add_prefix(name)] = {None: "unknown", True: "true", False: "false"}[value]
            elif isinstance(widget, CheckboxInput):
                if value:
                    data[form.add_prefix(name)] = "on"
            elif value is not None:
                data[form.add_prefix(name)] = value
    return data


def rule_of(matrix: ApprovalMatrix, name: str) -> Rule:
    return Rule.objects.get(matrix=matrix, name=name)


def test_a_board_copies_the_live_version_edits_a_rule_submits_and_a_second_member_publishes(board, people, live):
    first, second = board

    copied = action(first, "new_draft", live)
    draft = ApprovalMatrix.objects.get(status=MatrixStatus.DRAFT)
    assert f"v{live.version} copied into" in said(copied)[0] and f"draft v{draft.version}" in said(copied)[0]

    finance = rule_of(draft, "finance-large-refunds")
    page = first.get(f"/admin/policies/rule/{finance.pk}/change/")
    assert page.status_code == 200
    data = form_data(page)
    data["amount_min"] = "800.00"
    tier_prefix = page.context["inline_admin_formsets"][0].formset.forms[0].prefix
    data[f"{tier_prefix}-required"] = "3"
    saved = first.post(f"/admin/policies/rule/{finance.pk}/change/", data)
    assert saved.status_code == 302, saved.context and saved.context["errors"]

    finance.refresh_from_db()
    assert finance.amount_min == Decimal("800.00")
    assert ReviewTier.objects.get(rule=finance).required == 3
    assert finance.history.first().history_user == people.board1

    checks = first.get(f"{CHANGELIST}{draft.pk}/change/")
    assert b"Valid. Embedded tests: 7 run, 0 failing." in checks.content

    submitted = action(first, "submit", draft)
    assert said(submitted) == [f"v{draft.version} submitted: it is valid and passes its tests. "
                               "A board member other than you must now publish it."]
    refused = action(first, "publish", draft)
    assert said(refused) == [f"v{draft.version} not published: a matrix must be published by a board member other than its author"]
    assert ApprovalMatrix.objects.get(pk=draft.pk).status == MatrixStatus.SUBMITTED

    published = action(second, "publish", draft)
    assert said(published)[0].startswith(f"v{draft.version} published: it decides every new proposal from now on")
    assert live_matrix().version == draft.version
    assert ApprovalMatrix.objects.get(pk=live.pk).status == MatrixStatus.RETIRED
    assert live_matrix().spec.rules[2].tiers[0].required == 3


def test_a_published_version_and_its_rules_cannot_be_edited(board, live):
    first, _ = board
    finance = rule_of(live, "finance-large-refunds")

    page = first.get(f"{CHANGELIST}{live.pk}/change/")
    rule_page = first.get(f"/admin/policies/rule/{finance.pk}/change/")

    assert page.status_code == rule_page.status_code == 200  # to read
    assert page.context["has_change_permission"] is False
    assert all(not inline.has_change_permission and not inline.has_add_permission
               for inline in page.context["inline_admin_formsets"])
    assert rule_page.context["has_change_permission"] is False
    assert first.post(f"{CHANGELIST}{live.pk}/change/", {"name": "hacked", "default_outcome": "auto"}).status_code == 403
    assert first.post(f"/admin/policies/rule/{finance.pk}/change/", {"name": "x", "outcome": "auto"}).status_code == 403
    assert first.post(f"/admin/policies/rule/{finance.pk}/delete/", {"post": "yes"}).status_code == 403
    assert rule_of(live, "finance-large-refunds").outcome == "review"


def test_new_rules_can_only_be_added_to_drafts(board, people, live):
    first, _ = board
    draft = new_draft(live, people.board1)

    page = first.get("/admin/policies/rule/add/")

    choices = [pk for pk, _ in page.context["adminform"].form.fields["matrix"].choices if pk]
    assert [c.value for c in choices] == [draft.pk]
    refused = first.post("/admin/policies/rule/add/", {"matrix": live.pk, "name": "sneaky", "outcome": "auto", "position": 0,
                                                       "tiers-TOTAL_FORMS": 0, "tiers-INITIAL_FORMS": 0})
    assert refused.status_code == 200 and "matrix" in refused.context["adminform"].form.errors
    assert not Rule.objects.filter(name="sneaky").exists()


def test_editing_a_drafts_default_tiers_and_budgets_inline(board, people, live):
    first, _ = board
    draft = new_draft(live, people.board1)
    page = first.get(f"{CHANGELIST}{draft.pk}/change/")
    data = form_data(page)
    tiers, rules, budgets = (inline.formset for inline in page.context["inline_admin_formsets"])
    data[f"{tiers.forms[0].prefix}-sla_minutes"] = "60"
    data[f"{budgets.prefix}-TOTAL_FORMS"] = "1"
    data.update({f"{budgets.prefix}-0-name": "refunds-per-day", f"{budgets.prefix}-0-metric": "count",
                 f"{budgets.prefix}-0-cap": "50", f"{budgets.prefix}-0-window_minutes": "1440"})

    saved = first.post(f"{CHANGELIST}{draft.pk}/change/", data)

    assert saved.status_code == 302, saved.context and saved.context["errors"]
    assert ReviewTier.objects.get(matrix=draft, rule__isnull=True).sla_minutes == 60
    assert draft.budgets.get().cap == Decimal("50")


def test_the_change_page_names_the_rule_of_each_validation_error(board, people, live):
    first, _ = board
    draft = new_draft(live, people.board1)
    Rule.objects.filter(matrix=draft, name="finance-large-refunds").update(currency="")

    page = first.get(f"{CHANGELIST}{draft.pk}/change/")

    assert b"1 problem: this version cannot be submitted" in page.content
    assert (b"rule finance-large-refunds (rules[2]).currency: required with amount_min or amount_max" in page.content)


def test_the_change_page_shows_failing_embedded_tests_with_the_reasons(board, people, tmp_path):
    first, _ = board
    draft = import_yaml(deletes_allowed(), people.board1)

    page = first.get(f"{CHANGELIST}{draft.pk}/change/")
    refused = action(first, "submit", draft)

    assert b"Embedded tests: 7 run, 2 failing." in page.content
    assert b"no rule matched: default review" in page.content
    assert said(refused) == [f"v{draft.version} not submitted: embedded test delete-is-blocked fails; "
                             "embedded test uncertain-delete-is-blocked fails"]


def test_export_downloads_the_versions_yaml(board, live):
    first, _ = board

    response = action(first, "export_yaml", live)

    assert response["Content-Disposition"] == f'attachment; filename="matrix-v{live.version}.yaml"'
    assert response.content.decode() == export_yaml(live)


def test_export_asks_for_exactly_one_version(board, people, live):
    first, _ = board
    other = new_draft(live, people.board1)

    response = action(first, "export_yaml", live, other)

    assert response.redirect_chain == [(CHANGELIST, 302)]
    assert said(response) == ["Select exactly one version to export."]


def test_importing_a_file_in_the_admin_makes_a_new_draft(board, people, live):
    first, _ = board
    assert b"Import YAML as a new draft" in first.get(CHANGELIST).content
    upload = SimpleUploadedFile("board.yaml", dump_matrix(board_spec()).encode())

    response = first.post(f"{CHANGELIST}import/", {"file": upload, "notes": "from git main"})

    draft = ApprovalMatrix.objects.get(status=MatrixStatus.DRAFT)
    assert response.status_code == 302 and response["Location"].endswith(f"/{draft.pk}/change/")
    assert (draft.author, draft.notes, draft.version) == (people.board1, "from git main", live.version + 1)


def test_importing_a_broken_file_in_the_admin_lists_errors_and_stores_nothing(board, live):
    first, _ = board
    text = dump_matrix(board_spec()).replace("outcome: block", "outcome: blok")

    response = first.post(f"{CHANGELIST}import/", {"file": SimpleUploadedFile("bad.yaml", text.encode())})

    assert response.status_code == 200
    assert response.context["errors"] == ["rules[0].outcome: must be one of auto, on_the_loop, review, assisted, triage, block"]
    assert ApprovalMatrix.objects.count() == 1


def test_comparing_a_draft_with_the_live_version_shows_a_rule_by_rule_table(board, people, live):
    first, _ = board
    draft = new_draft(live, people.board1)
    Rule.objects.filter(matrix=draft, name="support-emails").delete()
    Rule.objects.filter(matrix=draft, name="finance-large-refunds").update(amount_min=Decimal("800"))

    response = action(first, "compare_with_live", draft)

    rows = [(r.subject, r.change, r.field, r.before, r.after) for r in response.context["rows"]]
    assert ("rule finance-large-refunds", "changed", "amount_min", "1000.00", "800.00") in rows
    assert ("rule support-emails", "removed", "outcome", "review", "-") in rows
    assert f"v{draft.version} compared with the live v{live.version}".encode() in response.content


def test_simulating_from_the_admin_shows_progress_and_results(board, people, live, sandbox, django_capture_on_commit_callbacks):
    first, _ = board
    stored_proposals(sandbox, 250)
    draft = new_draft(live, people.board1)
    ReviewTier.objects.filter(matrix=draft, rule__name="support-emails").delete()
    Rule.objects.filter(matrix=draft, name="support-emails").update(outcome="block")
    emails = Proposal.objects.filter(action="send_email").count()

    with django_capture_on_commit_callbacks(execute=True):
        response = action(first, "simulate_last_30_days", draft)

    run = SimulationRun.objects.get()
    assert f"follow run {run.pk}" in said(response)[0]
    assert (run.status, run.processed, run.total, run.created_by) == ("done", 250, 250, people.board1)
    page = first.get(f"/admin/policies/simulationrun/{run.pk}/change/")
    assert page.status_code == 200
    assert b"250 of 250 (100%)" in page.content
    assert f"{emails} proposals change outcome".encode() in page.content
    assert b'http-equiv="refresh"' not in page.content  # finished: no more refreshing


def test_a_run_started_from_its_add_form_replays_a_random_sample(
    board, people, live, sandbox, django_capture_on_commit_callbacks,
):
    first, _ = board
    stored_proposals(sandbox, 120)

    with django_capture_on_commit_callbacks(execute=True):
        response = first.post("/admin/policies/simulationrun/add/", {"matrix": live.pk, "sample_size": 50})

    run = SimulationRun.objects.get()
    assert response["Location"].endswith(f"/simulationrun/{run.pk}/change/")
    assert (run.status, run.total, run.created_by) == ("done", 50, people.board1)
    assert run.result["changed_total"] == 0  # the live version against its own decisions


def test_a_failed_run_shows_why(board, people, live):
    first, _ = board
    draft = new_draft(live, people.board1)
    Rule.objects.filter(matrix=draft, name="finance-large-refunds").update(currency="")
    run = SimulationRun.objects.create(matrix=draft)
    simulation.execute(run.pk)

    page = first.get(f"/admin/policies/simulationrun/{run.pk}/change/")

    assert b"failed" in page.content and b"rules[2].currency: required with amount_min" in page.content


def test_a_queued_run_page_refreshes_itself(board, live):
    first, _ = board
    run = SimulationRun.objects.create(matrix=live)

    page = first.get(f"/admin/policies/simulationrun/{run.pk}/change/")

    assert b'http-equiv="refresh"' in page.content and b"Run %d: queued" % run.pk in page.content


def test_a_board_member_adds_a_circuit_breaker_in_the_admin_and_it_is_audited(board, people):
    first, _ = board

    response = first.post("/admin/policies/circuitbreaker/add/", {
        "name": "refund-quality", "agent": "", "connector": "", "window": 10, "min_sample": 5, "threshold": 0.6,
        "mode": "force_review", "enabled": "on",
    })

    assert response.status_code == 302
    made = CircuitBreaker.objects.get()
    assert made.history.get().history_user == people.board1


def test_a_breaker_whose_minimum_sample_exceeds_its_window_is_refused_in_the_admin(board):
    first, _ = board

    response = first.post("/admin/policies/circuitbreaker/add/", {
        "name": "impossible", "window": 5, "min_sample": 10, "threshold": 0.5, "mode": "block", "enabled": "on",
    })

    assert response.status_code == 200
    assert "min_sample" in response.context["adminform"].form.errors
    assert not CircuitBreaker.objects.exists()
