"""Email adapter: sends one message through Django's configured email backend.

There is no record to read, so the preview shows the whole message as new. SMTP cannot
de-duplicate, so the Message-ID is derived from the idempotency key: a resend after a lost
acknowledgement carries the same Message-ID, which mail clients and archives recognise as
the same message. Django is imported inside execute so the adapter module loads without
configured settings.
"""

from __future__ import annotations

import re
import smtplib
from collections.abc import Mapping
from typing import Any

from .base import (
    Adapter,
    AuthError,
    ConnectorError,
    PermanentError,
    Preview,
    Target,
    TransientError,
    WriteResult,
    register,
)


def recipients(value: Any) -> list[str]:
    if isinstance(value, str):
        return [a.strip() for a in value.split(",") if a.strip()]
    if isinstance(value, (list, tuple)):
        return [str(a).strip() for a in value if str(a).strip()]
    return []


def message_id(idempotency_key: str, from_email: str) -> str:
    domain = from_email.rpartition("@")[2].strip("> ") or "localhost"
    return f"<hitlgov.{re.sub(r'[^A-Za-z0-9._-]', '-', idempotency_key)}@{domain}>"


def smtp_error(exc: Exception) -> ConnectorError:
    """4xx SMTP replies and dropped connections are worth a retry; 5xx and refusals are not."""
    if isinstance(exc, smtplib.SMTPAuthenticationError):
        return AuthError(f"SMTP authentication failed ({exc.smtp_code})")
    if isinstance(exc, smtplib.SMTPRecipientsRefused):
        return PermanentError(f"recipients refused: {', '.join(sorted(exc.recipients))}")
    if isinstance(exc, smtplib.SMTPResponseException):
        error = TransientError if 400 <= exc.smtp_code < 500 else PermanentError
        return error(f"SMTP server answered {exc.smtp_code}: {exc.smtp_error!r}")
    return TransientError(f"could not send email: {exc.__class__.__name__}: {exc}")


@register
class EmailAdapter(Adapter):
    kind = "email"
    capabilities = frozenset({"send"})
    actions = {"send_email": "send"}
    sensitive_fields = frozenset({"to"})

    def read(self, target: Target | None) -> dict[str, Any]:
        """An email has no live record: there is nothing to read, diff or go stale."""
        return {}

    def preview(self, action: str, target: Target | None, changes: Mapping[str, Any]) -> Preview:
        self._message(action, changes)  # refuse an incomplete message before anyone reviews it
        return super().preview(action, target, changes)

    def _message(self, action: str, changes: Mapping[str, Any]) -> tuple[list[str], str, str]:
        if action != "send_email":
            raise PermanentError(f"the email connector does not support action {action!r}")
        to = recipients(changes.get("to"))
        subject, body = changes.get("subject"), changes.get("body")
        if not to or not isinstance(subject, str) or not subject or not isinstance(body, str) or not body:
            raise PermanentError("send_email needs changes {'to': ..., 'subject': ..., 'body': ...}")
        return to, subject, body

    def execute(
        self, action: str, target: Target | None, changes: Mapping[str, Any], idempotency_key: str
    ) -> WriteResult:
        to, subject, body = self._message(action, changes)
        from django.conf import settings
        from django.core.mail import EmailMessage

        from_email = str(self.config.get("from_email") or settings.DEFAULT_FROM_EMAIL)
        msg_id = message_id(idempotency_key, from_email)
        message = EmailMessage(subject, body, from_email, to, headers={"Message-ID": msg_id})
        try:
            message.send(fail_silently=False)
        except (smtplib.SMTPException, OSError) as exc:
            raise smtp_error(exc) from None
        return WriteResult(
            after={"message_id": msg_id, "to": to, "subject": subject},
            request={"method": "SEND", "to": to, "subject": subject},
            response={"sent": True, "message_id": msg_id},
        )

    def compensate(self, action: str, target: Target | None, before: Mapping[str, Any]) -> WriteResult:
        raise PermanentError("a sent email cannot be recalled")
