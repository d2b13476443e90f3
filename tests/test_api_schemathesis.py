"""Schemathesis fuzzes the API from its own OpenAPI document: no 5xx, every answer fits the schema, and a
rejected request leaves nothing behind.

Driven through Hypothesis directly: schemathesis's pytest plugin does not run under pytest 9.
"""

from __future__ import annotations

import pytest
import schemathesis
from django.core.signals import request_finished, request_started
from django.core.wsgi import get_wsgi_application
from django.db import close_old_connections
from hypothesis import HealthCheck, given, settings as hypothesis_settings
from schemathesis.checks import not_a_server_error
from schemathesis.generation.modes import GenerationMode
from schemathesis.specs.openapi.checks import content_type_conformance, response_schema_conformance

from approvals.models import Proposal, Review
from policies.models import KillSwitch

OPERATIONS = [
    "GET /api/v1/proposals/", "POST /api/v1/proposals/", "GET /api/v1/proposals/{id}/",
    "POST /api/v1/proposals/{id}/cancel/", "POST /api/v1/proposals/{id}/decisions/",
    "POST /api/v1/proposals/{id}/info/", "POST /api/v1/proposals/{id}/outcome/",
    "GET /api/v1/connectors/", "POST /api/v1/killswitches/", "GET /api/v1/audit/",
]
CHECKS = [not_a_server_error, response_schema_conformance, content_type_conformance]


@pytest.fixture
def api_schema(db, sandbox, demo_matrix):
    """The app called in-process through WSGI, inside the test's transaction.

    Django closes the database connection when a request finishes; its own test client stops
    that so a test's transaction survives, and so must a WSGI caller.
    """
    request_started.disconnect(close_old_connections)
    request_finished.disconnect(close_old_connections)
    yield schemathesis.openapi.from_wsgi("/api/v1/schema/", get_wsgi_application())
    request_started.connect(close_old_connections)
    request_finished.connect(close_old_connections)


def written() -> tuple[int, int, int]:
    return Proposal.objects.count(), Review.objects.count(), KillSwitch.objects.count()


def test_every_operation_is_fuzzed(api_schema):
    assert sorted(op.ok().label for op in api_schema.get_all_operations()) == sorted(OPERATIONS)


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE], ids=str)
@pytest.mark.parametrize("label", OPERATIONS)
def test_operation_answers_generated_requests_within_its_schema(api_schema, api, label, mode):
    operation = api_schema.find_operation_by_label(label)
    headers = {"Authorization": f"Bearer {api.raw_key}"}

    @given(case=operation.as_strategy(generation_mode=mode))
    @hypothesis_settings(max_examples=12, deadline=None, database=None,
                         suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
    def answers_within_schema(case):
        before = written()
        response = case.call(headers=headers)
        case.validate_response(response, checks=CHECKS)
        if response.status_code >= 400:
            assert written() == before, f"{case.method} {case.formatted_path} answered {response.status_code} but wrote"

    answers_within_schema()
