"""Every error under /api/ answers JSON in the contract's shape, whoever produced it, and the docs are served locally."""

from __future__ import annotations

import logging
import re
import uuid

import pytest

from approvals import services
from approvals.models import Proposal
from tests.conftest import proposal_body

pytestmark = pytest.mark.django_db


def error_of(response, status: int) -> dict:
    assert response.status_code == status, response.content[:300]
    assert response["Content-Type"].startswith("application/json")
    body = response.json()
    assert isinstance(body["errors"], dict) and body["errors"]
    assert body["detail"]
    return body


@pytest.fixture(params=[True, False], ids=["debug", "production"])
def debug(request, settings):
    """Django answers some errors with its own HTML pages, and differently with DEBUG on: try both."""
    settings.DEBUG = request.param
    return request.param


def test_unknown_path_is_a_json_404(api, debug):
    body = error_of(api.get("/api/v1/nothing-here/"), 404)
    assert "/api/v1/nothing-here/" in body["detail"]


def test_malformed_proposal_id_is_a_json_404(api, debug):
    error_of(api.get("/api/v1/proposals/not-a-uuid/"), 404)


def test_unknown_proposal_is_a_json_404(api):
    error_of(api.get(f"/api/v1/proposals/{uuid.uuid4()}/"), 404)


def test_method_not_allowed_is_a_json_405(api):
    body = error_of(api.delete("/api/v1/proposals/"), 405)
    assert "DELETE" in body["detail"]


def test_unsupported_media_type_is_a_json_415(api):
    error_of(api.post("/api/v1/proposals/", "refund please", content_type="text/plain"), 415)


def test_post_without_trailing_slash_is_a_json_404_that_names_the_path_and_stores_nothing(api, debug, sandbox):
    body = error_of(api.post("/api/v1/proposals", proposal_body(), format="json"), 404)
    assert body["errors"]["path"] == ["/api/v1/proposals needs its trailing slash: /api/v1/proposals/"]
    assert not Proposal.objects.exists()


def test_unexpected_error_is_a_json_500_with_an_id_that_the_log_carries(api, debug, sandbox, monkeypatch, caplog):
    def broken(*args, **kwargs):
        raise RuntimeError("the database fell over")

    monkeypatch.setattr(services, "submit_proposal", broken)
    with caplog.at_level(logging.ERROR, logger="approvals.api_errors"):
        body = error_of(api.post("/api/v1/proposals/", proposal_body(), format="json"), 500)
    assert re.fullmatch(r"[0-9a-f]{12}", body["id"])
    assert body["id"] in body["detail"]
    assert "fell over" not in str(body), "the cause stays in the log, not in the answer"
    logged = [r for r in caplog.records if body["id"] in r.getMessage()]
    assert logged and logged[0].exc_info[0] is RuntimeError


def test_an_admin_404_stays_html(admin_client):
    response = admin_client.get("/admin/no-such-page/")
    assert response.status_code == 404
    assert not response["Content-Type"].startswith("application/json")


def test_docs_page_is_served_from_the_app_without_a_key(client):
    page = client.get("/api/v1/docs/")
    assert page.status_code == 200
    html = page.content.decode()
    assets = re.findall(r'(?:src|href)="([^"]+)"', html)
    assert any("swagger-ui" in a for a in assets)
    assert all(a.startswith("/") for a in assets), f"every asset is served by the app: {assets}"
    schema = client.get("/api/v1/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json")
    assert schema.status_code == 200 and "/api/v1/proposals/" in schema.json()["paths"]


def test_the_admin_links_to_the_docs_page(admin_client):
    assert 'href="/api/v1/docs/">API docs</a>' in admin_client.get("/admin/").content.decode()


def test_nested_bad_input_names_the_nested_field_within_the_documented_error_shape(api, sandbox):
    import jsonschema

    from approvals.api_schema import ERROR

    response = api.post("/api/v1/proposals/", proposal_body(target={"type": "order"}, evidence=[{}]), format="json")
    assert response.status_code == 400
    body = response.json()
    assert body["errors"]["target"] == {"id": ["This field is required."]}
    assert body["errors"]["evidence"] == {"0": {"title": ["This field is required."]}}  # by item
    jsonschema.validate(body, ERROR)
