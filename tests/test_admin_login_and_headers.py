"""The admin answers with a Content-Security-Policy, and refuses logins after too many failures."""

from __future__ import annotations

from datetime import timedelta

from axes.models import AccessAttempt
from django.test import Client
from django.utils import timezone

LOGIN = "/admin/login/?next=/admin/"


def attempt(client: Client, username: str, password: str):
    return client.post(LOGIN, {"username": username, "password": password, "next": "/admin/"})


def test_an_admin_page_carries_the_content_security_policy_and_safe_headers(people):
    client = Client()
    client.force_login(people.finance1)

    response = client.get("/admin/")

    assert response.status_code == 200
    policy = dict(part.strip().split(" ", 1) for part in response["Content-Security-Policy"].split(";"))
    assert policy["script-src"] == "'self'" and policy["object-src"] == "'none'"
    assert policy["frame-ancestors"] == "'none'" and policy["form-action"] == "'self'"
    assert response["X-Content-Type-Options"] == "nosniff"
    assert response["Referrer-Policy"] == "same-origin"
    assert response["X-Frame-Options"] == "DENY"


def test_the_login_after_too_many_failures_for_a_username_is_refused_even_with_the_right_password(people, settings):
    client = Client()
    limit = settings.AXES_FAILURE_LIMIT
    for _ in range(limit - 1):
        response = attempt(client, "finance1", "wrong")
        assert response.status_code == 200 and "correct username and password" in response.content.decode()
    assert attempt(client, "finance1", "wrong").status_code == 429  # the Nth failure locks

    refused = attempt(Client(REMOTE_ADDR="10.0.0.9"), "finance1", "pw")  # even from another address

    assert refused.status_code == 429
    assert "_auth_user_id" not in refused.wsgi_request.session


def test_the_login_after_too_many_failures_from_one_address_is_refused_for_every_username(people, settings):
    client = Client(REMOTE_ADDR="10.0.0.7")
    for n in range(settings.AXES_FAILURE_LIMIT):
        attempt(client, f"guess-{n}", "wrong")

    refused = attempt(client, "support1", "pw")

    assert refused.status_code == 429
    assert "_auth_user_id" not in refused.wsgi_request.session
    assert attempt(Client(REMOTE_ADDR="10.0.0.8"), "support1", "pw").status_code == 302  # others still get in


def test_the_lock_lifts_after_the_cool_off(people, settings):
    client = Client()
    for _ in range(settings.AXES_FAILURE_LIMIT):
        attempt(client, "sales1", "wrong")
    assert attempt(client, "sales1", "pw").status_code == 429

    AccessAttempt.objects.update(attempt_time=timezone.now() - settings.AXES_COOLOFF_TIME - timedelta(seconds=1))

    assert attempt(client, "sales1", "pw").status_code == 302
