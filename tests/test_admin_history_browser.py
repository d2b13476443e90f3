"""A reviewer opens an old version of a proposal in a real Chromium: a record, not a form."""

from __future__ import annotations

import pytest
from django.urls import reverse

from approvals import services
from tests.conftest import log_in

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_a_reviewer_sees_a_proposals_history_version_read_only(page, submit, people):
    proposal = submit("history-in-browser")
    services.record_verdict(proposal.pk, people.finance1, "reject", "duplicate of A-1000")
    version = proposal.history.filter(status="rejected").get()
    violations: list[str] = []
    page.on("console", lambda message: violations.append(message.text) if "Content Security Policy" in message.text else None)
    log_in(page, "finance2")

    page.goto(reverse("admin:approvals_proposal_history", args=[proposal.pk]))
    page.locator(f'a[href$="/history/{version.history_id}/"]').first.click()

    table = page.locator("#history-version")
    assert "Rejected" in table.inner_text() and "120.00" in table.inner_text()
    assert "duplicate of A-1000" in page.locator("#history-version-who").inner_text()
    content = page.locator("#content")
    assert content.locator("input, textarea, select, button, form").count() == 0
    assert page.locator("input[name=_save], input[type=submit]").count() == 0
    assert violations == []
