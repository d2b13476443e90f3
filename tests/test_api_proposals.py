"""The integration contract (../shared/CONTRACT.md): submitting and reading proposals."""

from __future__ import annotations

import json

import pytest
from django.utils import timezone

from approvals.models import ApiKey, Proposal
from tests.conftest import demo_spec, proposal_body

URL = "/api/v1/proposals/"


def post(client, body, **extra):
    return client.post(URL, data=json.dumps(body), content_type="application/json", **extra)


def test_submitted_refund_over_100_waits_for_finance_with_the_contract_shape(api, demo_matrix):
    response = post(api, proposal_body())

    assert response.status_code == 201, response.json()
    body = response.json()
    assert body["status"] == "pending_review"
    assert body["target"] == {"type": "order", "id": "A-1001"}
    assert {"field": "status", "before": "delivered", "after": "refunded", "sensitive": False} in body["preview"]["changes"]
    assert body["decision"]["outcome"] == "review"
    assert body["decision"]["matrix_version"] == demo_matrix.version
    assert body["decision"]["rule"] and body["decision"]["reasons"]
    assert body["review"]["tiers"][0]["group"] == "finance"
    assert body["review"]["tiers"][0]["approved"] == 0
    assert body["review"]["tiers"][0]["due_at"]
    assert body["execution"] is None


def test_same_key_and_body_again_returns_the_first_proposal(api, demo_matrix):
    first = post(api, proposal_body())
    again = post(api, proposal_body())

    assert (first.status_code, again.status_code) == (201, 200)
    assert again.json()["id"] == first.json()["id"]
    assert Proposal.objects.count() == 1


def test_same_key_with_another_body_is_a_conflict(api, demo_matrix):
    post(api, proposal_body())
    response = post(api, proposal_body(amount="999.00"))

    assert response.status_code == 409
    assert "idempotency_key" in response.json()["errors"]
    assert Proposal.objects.count() == 1


def test_the_same_key_is_free_for_another_integration(api, make_client, demo_matrix):
    other = make_client("another-bot")
    assert post(api, proposal_body()).status_code == 201
    assert post(other, proposal_body()).status_code == 201


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"idempotency_key": ""}, "idempotency_key"),
        ({"idempotency_key": "k" * 201}, "idempotency_key"),
        ({"agent": None}, "agent"),
        ({"connector": "nowhere"}, "connector"),
        ({"action": "launch_rockets"}, "action"),
        ({"target": None}, "target"),
        ({"changes": None}, "changes"),
        ({"confidence": 1.5}, "confidence"),
        ({"confidence": "sure"}, "confidence"),
        ({"confidence": None}, "confidence"),
        ({"customer_impact": "catastrophic"}, "customer_impact"),
        ({"amount": "12.345"}, "amount"),
        ({"currency": None}, "currency"),
        ({"currency": "usd"}, "currency"),
        ({"evidence": [{"url": "https://x.example"}]}, "evidence"),
        ({"callback_url": "http://agent.example/hook"}, "callback_url"),
        ({"surprise": 1}, "surprise"),
    ],
)
def test_bad_input_is_a_400_naming_the_field_and_stores_nothing(api, demo_matrix, overrides, field):
    response = post(api, proposal_body(**overrides))

    assert response.status_code == 400, response.content
    assert field in response.json()["errors"]
    assert Proposal.objects.count() == 0


def test_a_disabled_connector_is_refused_by_name(api, demo_matrix, sandbox):
    sandbox.helpdesk.enabled = False
    sandbox.helpdesk.save()

    response = post(api, proposal_body())

    assert response.status_code == 400
    assert "helpdesk" in response.json()["errors"]["connector"][0]


def test_malformed_json_is_a_400_not_a_500(api, demo_matrix):
    response = api.post(URL, data="{not json", content_type="application/json")
    assert response.status_code == 400
    assert Proposal.objects.count() == 0


def test_a_body_over_the_limit_is_a_413(api, demo_matrix, settings):
    settings.API_MAX_BODY_BYTES = 2000
    response = post(api, proposal_body(rationale="x" * 5000))

    assert response.status_code == 413
    assert Proposal.objects.count() == 0


def test_no_key_is_a_401(client, demo_matrix):
    response = client.post(URL, data=json.dumps(proposal_body()), content_type="application/json")
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"].startswith("Bearer")


def test_a_revoked_key_is_a_401(api, demo_matrix):
    ApiKey.objects.filter(pk=api.key.pk).update(revoked_at=timezone.now())
    assert post(api, proposal_body()).status_code == 401


def test_a_key_without_the_scope_is_a_403(make_client, demo_matrix):
    reader = make_client("reader-bot", scopes=["proposals:read"])
    response = post(reader, proposal_body())
    assert response.status_code == 403
    assert "proposals:write" in response.json()["detail"]


def test_too_many_calls_get_a_429_with_retry_after(api, demo_matrix, settings):
    from django.core.cache import cache
    from rest_framework.settings import api_settings

    cache.clear()
    original = api_settings.DEFAULT_THROTTLE_RATES
    api_settings.DEFAULT_THROTTLE_RATES = {"integration": "3/min"}
    try:
        from approvals.api_auth import IntegrationRateThrottle
        IntegrationRateThrottle.THROTTLE_RATES = api_settings.DEFAULT_THROTTLE_RATES
        codes = [api.get(URL).status_code for _ in range(4)]
        assert codes == [200, 200, 200, 429]
        assert int(api.get(URL).headers["Retry-After"]) > 0
    finally:
        api_settings.DEFAULT_THROTTLE_RATES = original
        IntegrationRateThrottle.THROTTLE_RATES = original
        cache.clear()


def test_an_integration_sees_only_its_own_proposals(api, make_client, demo_matrix):
    mine = post(api, proposal_body()).json()
    other = make_client("another-bot")

    assert other.get(f"{URL}{mine['id']}/").status_code == 404
    assert other.get(URL).json()["results"] == []
    assert api.get(f"{URL}{mine['id']}/").json()["id"] == mine["id"]


def test_list_filters_and_cursor_pages(api, demo_matrix):
    for n in range(3):
        post(api, proposal_body(idempotency_key=f"refund-{n}", target={"type": "order", "id": f"A-100{n + 1}"}))
    post(api, proposal_body(idempotency_key="crm-1", connector="crm", action="update_opportunity", amount=None,
                            currency=None, target={"type": "opportunity", "id": "O-1"}, changes={"stage": "Closed Won"}))

    assert len(api.get(URL, {"connector": "crm"}).json()["results"]) == 1
    assert len(api.get(URL, {"action": "refund", "status": "pending_review"}).json()["results"]) == 3
    first = api.get(URL, {"page_size": 2}).json()
    second = api.get(first["next"]).json()
    assert len(first["results"]) == 2 and len(second["results"]) == 2
    assert not {p["id"] for p in first["results"]} & {p["id"] for p in second["results"]}
    assert api.get(URL, {"created_after": "2999-01-01T00:00:00Z"}).json()["results"] == []


def test_connectors_lists_enabled_connectors_and_their_actions(api, demo_matrix):
    connectors = {c["slug"]: c for c in api.get("/api/v1/connectors/").json()}
    assert set(connectors) == {"crm", "helpdesk", "email"}
    assert "refund" in connectors["helpdesk"]["actions"]
    assert connectors["helpdesk"]["dry_run"] is False


def test_the_schema_describes_the_api(api):
    response = api.get("/api/v1/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json")
    assert response.status_code == 200
    paths = json.loads(response.content)["paths"]
    assert "/api/v1/proposals/" in paths and "/api/v1/proposals/{id}/decisions/" in paths


def test_the_submitter_can_cancel_a_waiting_proposal(api, demo_matrix):
    created = post(api, proposal_body()).json()

    response = api.post(f"{URL}{created['id']}/cancel/", data={"reason": "customer withdrew"}, format="json")

    assert response.status_code == 200
    assert response.json()["status"] == "cancelled"
    assert api.post(f"{URL}{created['id']}/cancel/").status_code == 409


def test_the_api_says_how_many_rules_the_stored_trace_counts_instead_of_listing(api, demo_matrix):
    answered = post(api, proposal_body()).json()

    stored = Proposal.objects.get(pk=answered["id"]).decision
    listed = [entry for entry in stored["trace"] if "rule" in entry]
    counted = [entry for entry in stored["trace"] if "skipped" in entry]
    assert counted and answered["decision"]["trace_omitted"] == sum(entry["skipped"] for entry in counted)
    assert len(listed) + answered["decision"]["trace_omitted"] == len(demo_spec().rules)


