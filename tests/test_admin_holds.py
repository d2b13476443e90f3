"""The reproductions of issue 8's finding 1, each refused, and admin writes going through services."""

from __future__ import annotations

import pytest
from django.core.exceptions import PermissionDenied
from django.test import Client
from django.urls import reverse

from approvals import integrations, services
from approvals.models import Integration
from connectors.models import Connector
from policies import services as policy_services
from policies.models import ReviewTier, Rule
from tests.conftest import reload
from tests.test_matrix_admin import form_data


def logged_in(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def first_version_url(obj) -> str:
    version = type(obj).history.filter(id=obj.pk).order_by("history_id").first()
    opts = obj._meta
    return reverse(f"admin:{opts.app_label}_{opts.model_name}_simple_history", args=[obj.pk, version.history_id])


def versions(obj) -> int:
    return type(obj).history.filter(id=obj.pk).count()


# ---- the reproductions -------------------------------------------------------------------------

def test_reviewer_cannot_reassign_a_proposals_integration_through_history(governed, people):
    own_bot = Integration.objects.create(name="finance1-bot", acts_for=people.finance1)
    proposal = governed.finance_proposal
    client = logged_in(people.finance1)
    page = client.get(first_version_url(proposal))

    assert page.status_code == 200
    html = page.content.decode()
    assert 'name="integration"' not in html and "<textarea" not in html and 'name="_save"' not in html
    response = client.post(first_version_url(proposal), {"integration": own_bot.pk, "_save": "Save"})

    assert response.status_code == 405
    assert reload(proposal).integration_id == governed.integration.pk
    with pytest.raises(PermissionDenied):  # and so his own agent's refund stays out of his hands
        services.record_verdict(
            services.submit_proposal(own_bot, {**_body(proposal), "idempotency_key": "own-bot"})[0].pk,
            people.finance1, "approve")


def _body(proposal) -> dict:
    return {"agent": proposal.agent, "connector": proposal.connector.slug, "action": proposal.action,
            "target": {"type": proposal.target_type, "id": proposal.target_id}, "changes": proposal.changes,
            "amount": proposal.amount, "currency": proposal.currency, "confidence": proposal.confidence,
            "customer_impact": proposal.customer_impact, "rationale": proposal.rationale}


def test_reviewer_of_another_group_can_neither_read_nor_rewrite_a_finance_proposal(governed, people):
    proposal = governed.finance_proposal
    client = logged_in(people.sales1)
    pages = [reverse("admin:approvals_proposal_change", args=[proposal.pk]),
             reverse("admin:approvals_proposal_history", args=[proposal.pk]), first_version_url(proposal)]

    assert [client.get(url).status_code for url in pages] == [404, 404, 404]
    response = client.post(first_version_url(proposal), {"amount": "99999.00", "_save": "Save"})

    assert response.status_code in (404, 405)
    assert str(reload(proposal).amount) == "120.00"


def test_one_board_member_cannot_change_published_rules_through_history(governed, people):
    rule = governed.published_rule
    before = (rule.outcome, versions(rule))
    client = logged_in(people.board1)
    data = {"outcome": "auto", "name": rule.name, "position": rule.position, "_save": "Save"}

    assert client.post(first_version_url(rule), data).status_code == 405
    assert client.post(reverse("admin:policies_rule_change", args=[rule.pk]), data).status_code == 403
    assert (reload(rule).outcome, versions(rule)) == before


def test_operator_cannot_turn_a_connector_against_the_servers_secrets(governed, people, httpserver, monkeypatch):
    monkeypatch.setenv("HITL_TEST_SERVER_SECRET", "the-server-secret-value")
    connector = governed.connector
    client = logged_in(people.operator)
    rewrite = {"kind": "rest", "config": f'{{"base_url": "{httpserver.url_for("/")}"}}',
               "credentials": '{"token": "env:HITL_TEST_SERVER_SECRET"}', "reason": "mine now", "_save": "Save",
               "slug": connector.slug, "name": connector.name, "enabled": "on"}

    assert client.post(first_version_url(connector), rewrite).status_code == 405
    assert client.post(reverse("admin:connectors_connector_change", args=[connector.pk]), rewrite).status_code == 403
    check = client.post(reverse("admin:connectors_connector_changelist"),
                        {"action": "run_health_check", "_selected_action": [connector.pk]}, follow=True)

    assert (reload(connector).kind, reload(connector).credentials) == ("sandbox", {})
    assert check.status_code == 200 and "the-server-secret-value" not in check.content.decode()
    assert httpserver.log == []  # his server was never called


# ---- admin writes through services -------------------------------------------------------------

def test_a_connector_change_in_the_admin_records_who_and_why(governed):
    client = logged_in(governed.admin)
    url = reverse("admin:connectors_connector_change", args=[governed.connector.pk])
    data = {**form_data(client.get(url)), "dry_run": "on", "reason": "pause writes during the migration", "_save": "Save"}

    assert client.post(url, data).status_code == 302
    latest = governed.connector.history.latest("history_date")
    assert latest.dry_run is True and latest.history_user == governed.admin
    assert latest.history_change_reason == "pause writes during the migration"


def test_a_connector_refuses_a_pasted_secret_and_a_missing_reason_naming_the_field(governed):
    client = logged_in(governed.admin)
    url = reverse("admin:connectors_connector_change", args=[governed.connector.pk])
    data = {**form_data(client.get(url)), "credentials": '{"token": "sk-live-pasted-secret"}', "reason": "", "_save": "Save"}
    before = versions(governed.connector)

    response = client.post(url, data)

    assert response.status_code == 200
    errors = response.context["adminform"].form.errors
    assert set(errors) == {"credentials", "reason"} and "sk-live-pasted-secret" not in str(errors)
    assert reload(governed.connector).credentials == {} and versions(governed.connector) == before


def test_an_integrations_acts_for_and_key_revocation_go_through_the_service(governed, people):
    integration = governed.integration
    key = integration.keys.get()
    client = logged_in(governed.admin)
    url = reverse("admin:approvals_integration_change", args=[integration.pk])
    data = form_data(client.get(url))
    data.update({"acts_for": people.support1.pk, "reason": "support owns this bot now", "keys-0-revoke": "on",
                 "_save": "Save"})

    assert client.post(url, data).status_code == 302
    latest = integration.history.latest("history_date")
    assert (latest.acts_for_id, latest.history_user, latest.history_change_reason) == (
        people.support1.pk, governed.admin, "support owns this bot now")
    revoked = key.history.latest("history_date")
    assert reload(key).revoked_at is not None and revoked.history_user == governed.admin


def test_integration_services_check_the_permission_and_refuse_an_inactive_delegate(governed, people):
    with pytest.raises(PermissionDenied):
        integrations.update_integration(governed.integration.pk, people.operator, {"active": False}, "stop it")
    people.sales1.is_active = False
    people.sales1.save()
    with pytest.raises(Exception, match="not an active user"):
        integrations.update_integration(governed.integration.pk, governed.admin, {"acts_for": people.sales1}, "x")
    assert reload(governed.integration).active is True


def test_matrix_services_refuse_frozen_versions_and_rows_moved_between_versions(governed, people):
    with pytest.raises(policy_services.FrozenMatrix):
        policy_services.update_draft(governed.published.pk, people.board1, {"notes": "sneaky"}, "edit")
    rule = Rule.objects.get(pk=governed.published_rule.pk)
    rule.outcome = "auto"
    with pytest.raises(policy_services.FrozenMatrix):
        policy_services.save_draft_row(rule, people.board1, "edit")
    tier = ReviewTier.objects.filter(matrix=governed.published).first()
    tier.matrix = governed.draft  # take a live tier into a draft: no
    with pytest.raises(policy_services.FrozenMatrix):
        policy_services.save_draft_row(tier, people.board1, "move")
    with pytest.raises(PermissionDenied):
        policy_services.update_draft(governed.draft.pk, people.finance1, {"notes": "not a board member"}, "edit")
    assert reload(governed.published_rule).outcome != "auto"


def test_a_draft_rule_edited_in_the_admin_carries_the_editor_and_a_reason(governed, people):
    client = logged_in(people.board1)
    url = reverse("admin:policies_rule_change", args=[governed.draft_rule.pk])
    data = {**form_data(client.get(url)), "description": "clearer", "_save": "Save"}

    assert client.post(url, data).status_code == 302
    latest = governed.draft_rule.history.latest("history_date")
    assert (latest.description, latest.history_user) == ("clearer", people.board1)
    assert latest.history_change_reason == "rules edited in the admin"
