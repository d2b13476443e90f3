"""Out-of-office delegation: while a reviewer is away, their tiers route to a delegate.

Choices, and why:
- A delegate stands in only for a group they may decide for themselves (an active member with
  the review permission): delegation moves work between people, it never widens who may
  approve. A delegation to someone who may decide for none of the delegator's groups is
  refused when it is set; per tier, `stand_ins` ignores a delegate outside that tier's group.
- "Route to the delegate" means: `reviewers(task)` (who a tier waits for: the queue's "waiting
  for", notifications, an all-members quorum) names the delegate instead of the away member, so
  an all-members tier no longer waits for someone on holiday.
- A delegate's verdict records whom they stood in for (Review.on_behalf_of), so the thread says
  so. Four eyes stay per person: the delegate is a member in their own right, so the editor and
  "one person counts once across tiers" apply to them as to anyone; what changes is the
  all-members quorum (approvals.services), which waits for the delegate instead of the away member.
  `lifecycle.can_review` needs no widening for the same reason, and a delegate outside the group
  is refused there as anyone outside it is.
"""

from __future__ import annotations

from datetime import datetime

from django.contrib.auth import get_user_model
from django.core.exceptions import PermissionDenied, ValidationError
from django.db import transaction
from django.utils import timezone

from approvals.models import Delegation, ReviewTask

REVIEW_PERMISSION = "approvals.review_proposal"


def set_delegation(delegator, delegate, starts_at: datetime, ends_at: datetime, reason: str = "", *, by) -> Delegation:
    """`delegator` is away from `starts_at` to `ends_at`; `delegate` takes their tiers. `by` is the
    delegator themself, or an operator or superuser setting it for them."""
    shared = check_delegation(delegator, delegate, starts_at, ends_at, by=by)
    with transaction.atomic():  # not durable: the admin's add view already holds a transaction
        delegation = Delegation(delegator=delegator, delegate=delegate, starts_at=starts_at, ends_at=ends_at,
                                reason=reason, created_by=by)
        delegation._history_user = by
        delegation._change_reason = f"{delegator.get_username()} away: {', '.join(shared)} to {delegate.get_username()}"
        delegation.save()
    return delegation


def check_delegation(delegator, delegate, starts_at: datetime, ends_at: datetime, *, by) -> list[str]:
    """The groups the delegate would stand in for; raises when the delegation may not be set."""
    if by.pk != delegator.pk and not (by.is_superuser or by.has_perm("approvals.operate_proposal")):
        raise PermissionDenied("only the reviewer themself or an operator sets their out-of-office delegate")
    if ends_at <= starts_at:
        raise ValidationError({"ends_at": "must be after starts_at"})
    if delegate.pk == delegator.pk:
        raise ValidationError({"delegate": "delegate to someone else"})
    shared = [group.name for group in delegator.groups.all() if may_decide_for(delegate, group.pk)]
    if not shared:
        raise ValidationError({"delegate": f"{delegate.get_username()} may not decide for any review group of "
                                           f"{delegator.get_username()}: a delegate must be allowed to decide for that group"})
    return sorted(shared)


def may_decide_for(user, group_id: int) -> bool:
    return bool(user.is_active and user.has_perm(REVIEW_PERMISSION) and user.groups.filter(pk=group_id).exists())


def away(now: datetime | None = None) -> dict[int, int]:
    """Who is away now and their delegate: {delegator id: delegate id} (the latest delegation wins)."""
    now = now or timezone.now()
    current = Delegation.objects.filter(starts_at__lte=now, ends_at__gt=now).order_by("created_at", "pk")
    return dict(current.values_list("delegator_id", "delegate_id"))


def _deciders(task: ReviewTask) -> list[int]:
    groups = [task.group_id] + ([task.escalation_group_id] if task.escalated_at and task.escalation_group_id else [])
    members = get_user_model().objects.filter(is_active=True, groups__in=groups).distinct()
    return list(members.values_list("pk", flat=True))


def stand_ins(task: ReviewTask, now: datetime | None = None) -> dict[int, int]:
    """{away member id: delegate id} for this tier: only delegates who may decide for its groups."""
    deciders = set(_deciders(task))
    return {away_id: delegate_id for away_id, delegate_id in away(now).items()
            if away_id in deciders and delegate_id in deciders}


def reviewers(task: ReviewTask, now: datetime | None = None) -> list[int]:
    """Who the tier waits for: its deciders, an away member replaced by their delegate."""
    replaced = stand_ins(task, now)
    return sorted({replaced.get(member, member) for member in _deciders(task)})


def stood_in_for(task: ReviewTask, user, now: datetime | None = None) -> int | None:
    """The away member of this tier `user` stands in for, if any."""
    return next((away_id for away_id, delegate_id in stand_ins(task, now).items() if delegate_id == user.pk), None)
