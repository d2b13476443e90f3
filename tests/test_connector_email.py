"""Contract tests of the email adapter through Django's in-memory (locmem) email backend."""

from __future__ import annotations

import smtplib

import pytest

from connectors.adapters.base import AuthError, PermanentError, Target, TransientError, adapter_class
from connectors.adapters.email import EmailAdapter, message_id
from tests.connector_fakes import FailingEmailBackend

CHANGES = {"to": "ann@customer.test", "subject": "Your refund", "body": "We have refunded your order."}


@pytest.fixture
def locmem(settings):  # type: ignore[no-untyped-def]
    settings.EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
    settings.DEFAULT_FROM_EMAIL = "support@acme.test"
    return settings


def test_registered_as_send_only() -> None:
    assert adapter_class("email") is EmailAdapter
    assert EmailAdapter.actions == {"send_email": "send"} and EmailAdapter.capabilities == frozenset({"send"})


def test_read_has_nothing_to_read() -> None:
    adapter = EmailAdapter()
    assert adapter.read(None) == {}
    assert adapter.read(Target("customer", "42")) == {}


def test_preview_shows_whole_message_as_new_with_recipient_sensitive() -> None:
    preview = EmailAdapter().preview("send_email", Target("customer", "42"), CHANGES)
    assert [c.as_dict() for c in preview.changes] == [
        {"field": "to", "before": None, "after": "ann@customer.test", "sensitive": True},
        {"field": "subject", "before": None, "after": "Your refund", "sensitive": False},
        {"field": "body", "before": None, "after": "We have refunded your order.", "sensitive": False},
    ]


@pytest.mark.parametrize("missing", ["to", "subject", "body"])
def test_incomplete_message_is_refused(missing: str) -> None:
    changes = {k: v for k, v in CHANGES.items() if k != missing}
    with pytest.raises(PermanentError, match="send_email needs"):
        EmailAdapter().preview("send_email", None, changes)


def test_execute_sends_with_message_id_from_idempotency_key(locmem, mailoutbox) -> None:  # type: ignore[no-untyped-def]
    result = EmailAdapter().execute("send_email", None, CHANGES, "prop-7:exec-1")
    assert len(mailoutbox) == 1
    sent = mailoutbox[0]
    assert sent.to == ["ann@customer.test"] and sent.subject == "Your refund"
    assert sent.body == "We have refunded your order." and sent.from_email == "support@acme.test"
    assert sent.message()["Message-ID"] == "<hitlgov.prop-7-exec-1@acme.test>"
    assert result.after == {"message_id": "<hitlgov.prop-7-exec-1@acme.test>", "to": ["ann@customer.test"],
                            "subject": "Your refund"}


def test_resend_with_same_key_is_recognisable(locmem, mailoutbox) -> None:  # type: ignore[no-untyped-def]
    adapter = EmailAdapter({"from_email": "billing@acme.test"})
    adapter.execute("send_email", None, {**CHANGES, "to": ["a@x.test", "b@x.test"]}, "key-1")
    adapter.execute("send_email", None, {**CHANGES, "to": ["a@x.test", "b@x.test"]}, "key-1")
    assert len(mailoutbox) == 2
    assert {m.message()["Message-ID"] for m in mailoutbox} == {"<hitlgov.key-1@acme.test>"}
    assert mailoutbox[0].to == ["a@x.test", "b@x.test"] and mailoutbox[0].from_email == "billing@acme.test"


def test_message_id_is_a_valid_id_for_any_key() -> None:
    assert message_id("a b/<c>@d", "Support <help@acme.test>") == "<hitlgov.a-b--c--d@acme.test>"
    assert message_id("k", "") == "<hitlgov.k@localhost>"


def test_compensate_cannot_recall() -> None:
    with pytest.raises(PermanentError, match="cannot be recalled"):
        EmailAdapter().compensate("send_email", None, {})


@pytest.mark.parametrize(
    ("error", "cls"),
    [
        (smtplib.SMTPServerDisconnected("closed"), TransientError),
        (ConnectionRefusedError(111, "Connection refused"), TransientError),
        (smtplib.SMTPResponseException(451, b"try again later"), TransientError),
        (smtplib.SMTPResponseException(554, b"message rejected"), PermanentError),
        (smtplib.SMTPAuthenticationError(535, b"bad credentials"), AuthError),
        (smtplib.SMTPRecipientsRefused({"ann@customer.test": (550, b"no such user")}), PermanentError),
    ],
)
def test_smtp_failures_map_to_error_classes(  # type: ignore[no-untyped-def]
    settings, monkeypatch, error: Exception, cls: type
) -> None:
    settings.EMAIL_BACKEND = "tests.connector_fakes.FailingEmailBackend"
    monkeypatch.setattr(FailingEmailBackend, "error", error)
    with pytest.raises(cls) as info:
        EmailAdapter().execute("send_email", None, CHANGES, "k")
    assert type(info.value) is cls
