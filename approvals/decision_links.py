"""Deciding from an email: a confirmation page behind a link signed for one reviewer, one proposal
and one change, expiring with the tier's SLA.

A GET only shows the change and a form (mail scanners follow links); a POST decides, through
the same `record_verdict` as the admin. The reviewer must be logged in as the person the link
was signed for, unless the tier allows signed-link decisions (the matrix's `signed_links`, for
low tiers), where the signature itself is the proof.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta, timezone as dt_timezone

from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.views import redirect_to_login
from django.core import signing
from django.core.exceptions import PermissionDenied, ValidationError
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.http import require_http_methods

SALT = "hitlgov.notifications.decision-link"


@dataclass(frozen=True)
class Link:
    reviewer_id: int
    proposal_id: str
    task_id: int
    change_hash: str
    expires_at: datetime


def expiry(task, now: datetime) -> datetime:
    """The tier's SLA; once that has passed (an escalation), the tier's SLA again from now."""
    if task.due_at and task.due_at > now:
        return task.due_at
    return now + timedelta(minutes=task.sla_minutes)


def url_for(reviewer, proposal, task, *, now: datetime) -> str:
    token = signing.dumps({"r": reviewer.pk, "p": str(proposal.pk), "t": task.pk, "h": proposal.change_hash,
                           "e": int(expiry(task, now).timestamp())}, salt=SALT, compress=True)
    return settings.SITE_ROOT.rstrip("/") + reverse("notification-decide", args=[token])


class BadLink(Exception):
    """The link is forged, expired or for another change; the message says which."""


def read(token: str, now: datetime | None = None) -> Link:
    try:
        data = signing.loads(token, salt=SALT)
    except signing.BadSignature:
        raise BadLink("this link is not valid (it was altered or is not ours)") from None
    link = Link(data["r"], data["p"], data["t"], data["h"], datetime.fromtimestamp(data["e"], tz=dt_timezone.utc))
    if (now or timezone.now()) > link.expires_at:
        raise BadLink(f"this link expired at {link.expires_at:%Y-%m-%d %H:%M} UTC; open the proposal in the admin")
    return link


@require_http_methods(["GET", "POST"])
def decide(request: HttpRequest, token: str) -> HttpResponse:
    from approvals import services
    from approvals.models import Proposal, ReviewTask
    from approvals.notifications import one_line, proposal_url

    try:
        link = read(token)
        proposal = Proposal.objects.select_related("integration").get(pk=link.proposal_id)
        task = ReviewTask.objects.select_related("group").get(pk=link.task_id, proposal=proposal)
        if proposal.change_hash != link.change_hash:
            raise BadLink("the change was edited since this email was sent; open the proposal to see the new one")
    except (BadLink, Proposal.DoesNotExist, ReviewTask.DoesNotExist) as exc:
        message = str(exc) if isinstance(exc, BadLink) else "this proposal no longer exists"
        return render(request, "approvals/decision_link.html", {"refusal": message}, status=403)
    reviewer = get_user_model().objects.get(pk=link.reviewer_id)
    if request.user.is_authenticated and request.user.pk != reviewer.pk:
        return render(request, "approvals/decision_link.html",
                      {"refusal": f"this link is for {reviewer.get_username()}, not you"}, status=403)
    if not request.user.is_authenticated and not task.signed_links:
        return redirect_to_login(request.get_full_path(), reverse("admin:login"))
    context = {"proposal": proposal, "task": task, "reviewer": reviewer, "summary": one_line(proposal),
               "open_url": proposal_url(proposal), "expires_at": link.expires_at}
    if request.method == "GET":
        return render(request, "approvals/decision_link.html", context)
    verdict, reason = request.POST.get("verdict", ""), request.POST.get("reason", "")
    try:
        services.record_verdict(proposal.pk, reviewer, verdict, reason, via="email", expected_hash=link.change_hash)
    except ValidationError as exc:
        return render(request, "approvals/decision_link.html", {**context, "error": "; ".join(exc.messages)}, status=400)
    except (PermissionDenied, services.NotReviewable) as exc:
        return render(request, "approvals/decision_link.html", {**context, "refusal": str(exc)}, status=403)
    proposal.refresh_from_db()
    return render(request, "approvals/decision_link.html", {**context, "decided": verdict, "proposal": proposal})
