"""Nothing waits silently: review groups hear of their work on their own channels.

An event (a tier opens, its reminder falls due, it escalates, the proposal reaches an outcome)
writes one Notification per recipient in the transaction that made the event, plus one
outbox row (approvals.outbox) that publishes their delivery after the commit. Delivery
(approvals.notification_delivery) claims each row by a conditional update and retries with
backoff. A recipient hears of an event once: rows are unique per channel, recipient and event
key, and the sweeps that find events (reminders here, escalation in approvals.services) claim
what they announce under row locks.

The one function other operations call: `notify(proposal, event)`, inside their transaction,
e.g. `notify(proposal, "expired")` or `notify(proposal, "info_requested", note=question)`.
Assignment, reminders, escalation and status outcomes are announced from here already; a
set-based sweep announces many tiers at once with `notify_tasks(tasks, event, now=now)`.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from typing import Any, Iterable

from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.db import models, transaction
from django.urls import reverse
from django.utils import timezone
from simple_history.signals import post_create_historical_record
from simple_history.utils import bulk_update_with_history

from approvals import decision_links, outbox
from approvals.models import Notification, NotificationChannel, Proposal, ReviewTask, Status

logger = logging.getLogger(__name__)

DELIVER = "approvals.tasks.deliver_notifications"
ASSIGNED, REMINDER, ESCALATED = "assigned", "reminder", "escalated"
# Status changes the people who reviewed (or were asked to) hear of: the work is no longer theirs.
OUTCOMES = {
    Status.APPROVED: "approved", Status.REJECTED: "rejected", Status.FAILED: "failed", Status.STALE: "stale",
    Status.EXPIRED: "expired", Status.CANCELLED: "cancelled", Status.HANDLED_MANUALLY: "handled_manually",
}
SUBJECTS = {
    ASSIGNED: "Review needed", REMINDER: "Reminder: review due soon", ESCALATED: "Escalated: review overdue",
    "approved": "Approved", "rejected": "Rejected", "failed": "Execution failed", "stale": "Gone stale",
    "expired": "Expired", "cancelled": "Cancelled by the agent", "handled_manually": "Handled by hand",
}
BATCH = 500
CHANGES_SHOWN = 3


# ---- the public hook --------------------------------------------------------------------------

def notify(proposal: Proposal, event: str, *, task: ReviewTask | None = None, groups: Iterable[Group] | None = None,
           key: str = "", note: str = "") -> list[Notification]:
    """Announce `event` about `proposal`, inside the caller's transaction; delivered after it commits.

    Recipients: `groups` if given, else the task's group (and its escalation group once escalated),
    else every group the proposal's tiers named. `key` makes the call idempotent (one message per
    recipient per key); by default it is the event with the proposal's last history row.
    """
    task = task or _active_task(proposal)
    if groups is None:
        groups = _groups_of(proposal, task if event in (ASSIGNED, REMINDER, ESCALATED) else None)
    key = key or f"{event}:{proposal.pk}:{_last_history_id(proposal)}"
    rows = _build(proposal, task, event, key, list(groups), note)
    return _store(rows)


def _active_task(proposal: Proposal) -> ReviewTask | None:
    return proposal.review_tasks.filter(state=ReviewTask.State.ACTIVE).select_related("group").first()


def _groups_of(proposal: Proposal, task: ReviewTask | None) -> list[Group]:
    if task is not None:
        return [task.group] + ([task.escalation_group] if task.escalated_at and task.escalation_group_id else [])
    ids = proposal.review_tasks.exclude(state=ReviewTask.State.WAITING).values("group")
    return list(Group.objects.filter(pk__in=ids))


def _last_history_id(proposal: Proposal) -> int:
    return Proposal.history.filter(id=proposal.pk).order_by("-history_id").values_list("history_id", flat=True).first() or 0


# ---- assignment, escalation (one call each from the lifecycle and the escalation sweep) --------

def notify_task(task: ReviewTask, event: str, *, now: datetime | None = None, new: bool = False) -> list[Notification]:
    """A tier opened (ASSIGNED) or escalated (ESCALATED), inside the transaction that did it.
    `new`: the tier was created in this transaction, so nothing has announced it before."""
    return notify_tasks([task], event, now=now, new=new)


def notify_tasks(tasks: list[ReviewTask], event: str, *, now: datetime | None = None,
                 new: bool = False) -> list[Notification]:
    """The same event for many tiers at once (a set-based sweep), inside the caller's transaction:
    a few queries however many tiers. ESCALATED goes to each tier's escalation group (its own
    group if none); other events to the tier's group, and its escalation group once escalated."""
    def groups(task: ReviewTask) -> list[Group]:
        return [task.escalation_group or task.group] if event == ESCALATED else _groups_of(task.proposal, task)

    audience = _audience({group for task in tasks for group in groups(task)})
    return _store([row for task in tasks
                   for row in _build(task.proposal, task, event, f"{event}:task-{task.pk}", groups(task), "", now, audience)],
                  announced_before=not new)


def announce_in_bulk(event: str, *, task_ids: Iterable = (), proposal_ids: Iterable = (),
                     now: datetime | None = None) -> int:
    """The set-based sweeps' announcements, inside their batch's transaction, in a few queries however
    many: tiers that escalated (`task_ids`, told to their escalation group as notify_task does) or
    proposals that reached `event` (`proposal_ids`, told to every group their tiers named).
    simple-history sends no signal for the sweeps' bulk history rows, so they call this instead.
    Only the tiers and proposals of groups with an active channel are read in full (with their
    proposals' JSON): a batch of thousands that nobody is to be told costs two narrow queries."""
    task_ids, proposal_ids = _listened_to(list(task_ids), list(proposal_ids))
    if not task_ids and not proposal_ids:
        return 0
    tasks = list(ReviewTask.objects.filter(pk__any_of=task_ids).select_related("proposal", "group", "escalation_group"))
    named: dict[Any, dict[int, Group]] = {}
    if proposal_ids:
        for tier in ReviewTask.objects.filter(proposal_id__any_of=proposal_ids).select_related("proposal", "group"):
            named.setdefault(tier.proposal, {})[tier.group_id] = tier.group
    told = {task.pk: [task.escalation_group or task.group] for task in tasks}
    audience = _audience({g for groups in told.values() for g in groups} | {g for gs in named.values() for g in gs.values()})
    rows = [row for task in tasks
            for row in _build(task.proposal, task, event, f"{event}:task-{task.pk}", told[task.pk], "", now, audience)]
    rows += [row for proposal, groups in named.items()
             for row in _build(proposal, None, event, f"{event}:{proposal.pk}", list(groups.values()),
                               proposal.status_reason, now, audience)]
    return len(_store(rows))


def _listened_to(task_ids: list, proposal_ids: list) -> tuple[list, list]:
    """The tiers whose told group (escalation group, else group), and the proposals one of whose
    tiers' groups, has an active channel. Unordered: a tier's default order is its proposal's
    deadline, a join and a sort per batch (on SQLite 0.3-1.5 s a batch of 2,000) for rows used as a set."""
    tiers = ReviewTask.objects.order_by()
    told = {pk: escalation or group for pk, group, escalation in tiers.filter(
            pk__any_of=task_ids).values_list("pk", "group_id", "escalation_group_id")} if task_ids else {}
    named = list(tiers.filter(proposal_id__any_of=proposal_ids).values_list(
        "proposal_id", "group_id")) if proposal_ids else []
    listening = set(NotificationChannel.objects.filter(
        group__in={*told.values(), *(group for _, group in named)}, active=True).values_list("group_id", flat=True))
    return ([pk for pk, group in told.items() if group in listening],
            list({proposal for proposal, group in named if group in listening}))


# ---- reminders: a set-based sweep ---------------------------------------------------------------

def send_reminders(now: datetime | None = None) -> int:
    """Remind every active tier whose reminder is due, in batches: one locking query, one bulk
    update (with its history rows) and one bulk insert a batch. Safe with two sweeps at once:
    rows another sweep holds are skipped, and a reminded tier is never due again. Returns how many."""
    now = now or timezone.now()
    reminded = 0
    while True:
        with transaction.atomic(durable=True):
            due = list(
                ReviewTask.objects.select_for_update(skip_locked=True, of=("self",))
                .filter(state=ReviewTask.State.ACTIVE, remind_at__lte=now, reminded_at__isnull=True)
                .select_related("proposal", "group", "escalation_group").order_by("remind_at")[:BATCH]
            )
            if not due:
                return reminded
            for task in due:
                task.reminded_at = now
            bulk_update_with_history(due, ReviewTask, ["reminded_at"], batch_size=BATCH,
                                     default_change_reason="reminder sent: the SLA is running out")
            notify_tasks(due, REMINDER, now=now)
        reminded += len(due)


def remind_at(task: ReviewTask) -> datetime | None:
    """When an activated tier's reminder falls: its fraction of the SLA after activation."""
    if not task.remind_fraction or task.due_at is None:
        return None
    return task.due_at - timedelta(minutes=task.sla_minutes * (1 - task.remind_fraction))


# ---- outcomes: seen in the proposal's history, as callback events are ----------------------------

def connect() -> None:
    """Called from AppConfig.ready()."""
    post_create_historical_record.connect(
        on_history_row, sender=Proposal.history.model, dispatch_uid="approvals.notifications.on_history_row",
    )


def on_history_row(sender, instance: Proposal, history_instance, **kwargs) -> None:
    """A proposal reached an outcome: tell the groups its tiers named, once per status change."""
    outcome = OUTCOMES.get(history_instance.status)
    if outcome is None or not (instance.decision or {}).get("tiers"):
        return  # no tier ever named a group (automatic work): nobody waits to hear
    previous = (Proposal.history.filter(id=instance.pk, history_id__lt=history_instance.history_id)
                .order_by("-history_id").values_list("status", flat=True).first())
    if previous == history_instance.status:
        return
    try:
        with transaction.atomic():  # a savepoint: a broken notification must never undo the decision it reports
            notify(instance, outcome, key=f"{outcome}:{instance.pk}:{history_instance.history_id}",
                   note=history_instance.status_reason)
    except Exception:
        logger.exception("could not record the %s notification of proposal %s", outcome, instance.pk)


# ---- building and storing ----------------------------------------------------------------------

def _build(proposal: Proposal, task: ReviewTask | None, event: str, key: str, groups: list[Group], note: str,
           now: datetime | None = None, audience: dict[int, list] | None = None) -> list[Notification]:
    audience = _audience(groups) if audience is None else audience
    reached = [entry for group in groups for entry in audience.get(group.pk, [])]
    if not reached:
        return []
    now = now or timezone.now()
    subject = f"[HITL Gov] {SUBJECTS.get(event, event.replace('_', ' ').capitalize())}: {one_line(proposal)}"
    text = message_text(proposal, task, event, note)
    return [
        Notification(
            proposal=proposal, task=task, channel=channel, event=event, key=key[:200], recipient=recipient,
            reviewer=reviewer, subject=subject[:300], text=text + _personal_link(proposal, task, reviewer, event, now),
            change_hash=proposal.change_hash, next_attempt_at=min(now, timezone.now()),  # due at once, whatever clock decided it
        )
        for channel, recipient, reviewer in reached
    ]


def _audience(groups: Iterable[Group]) -> dict[int, list[tuple[NotificationChannel, str, Any]]]:
    """Each group's active channels and their recipients (an email's reviewer, if a member has the
    address): two queries, however many groups."""
    group_ids = {group.pk for group in groups}
    channels = list(NotificationChannel.objects.filter(group__in=group_ids, active=True).select_related("group"))
    if not channels:
        return {}
    members: dict[tuple[int, str], Any] = {}
    if any(c.kind == NotificationChannel.Kind.EMAIL for c in channels):
        users = get_user_model().objects.filter(groups__in=group_ids, is_active=True).exclude(email="")
        for user, group_id in ((u, u.member_of) for u in users.annotate(member_of=models.F("groups"))):
            members[(group_id, user.email.lower())] = user
    audience: dict[int, list] = {}
    for channel in channels:
        if channel.kind == NotificationChannel.Kind.EMAIL:
            entries = [(channel, a, members.get((channel.group_id, a.lower()))) for a in channel.addresses]
        else:
            entries = [(channel, channel.slack_channel or "webhook", None)]
        audience.setdefault(channel.group_id, []).extend(entries)
    return audience


def _personal_link(proposal: Proposal, task: ReviewTask | None, reviewer, event: str, now: datetime) -> str:
    """An email to a member of the tier's group carries a decision link signed for them."""
    if reviewer is None or task is None or event not in (ASSIGNED, REMINDER, ESCALATED):
        return ""
    url = decision_links.url_for(reviewer, proposal, task, now=now)
    return f"\nDecide (signed for {reviewer.get_username()}, until {decision_links.expiry(task, now):%Y-%m-%d %H:%M} UTC): {url}\n"


def _store(rows: list[Notification], *, announced_before: bool = True) -> list[Notification]:
    """Insert the rows not stored before and one outbox message that delivers them after the commit.
    `announced_before=False`: their events are new in this transaction (a submission's first tier), so
    there is nothing to look for (the unique constraint still holds)."""
    if not rows:
        return []
    if announced_before:
        sent = set(Notification.objects.filter(key__any_of={row.key for row in rows}).values_list("channel_id", "recipient", "key"))
        rows = [row for row in rows if (row.channel_id, row.recipient, row.key) not in sent]  # announced already: once
    if not rows:
        return []
    stored = Notification.objects.bulk_create(rows)  # PostgreSQL and SQLite >= 3.35 return the ids
    ids = [row.pk for row in stored]
    outbox.enqueue(DELIVER, [ids], proposal=rows[0].proposal if len({r.proposal_id for r in rows}) == 1 else None)
    return stored


# ---- what a message says -------------------------------------------------------------------------

def one_line(proposal: Proposal) -> str:
    """"refund-bot wants to refund order A-1001: refund_amount 0.00 -> 120.00" """
    target = f" {proposal.target_type} {proposal.target_id}".rstrip() if proposal.target_id else ""
    changed = [c for c in (proposal.preview or {}).get("changes", []) if c.get("before") != c.get("after")]
    if changed:
        shown = ", ".join(f"{c['field']} {_show(c.get('before'))} -> {_show(c.get('after'))}" for c in changed[:CHANGES_SHOWN])
    else:
        shown = ", ".join(f"{field} -> {_show(value)}" for field, value in list(proposal.changes.items())[:CHANGES_SHOWN])
    more = len(changed or proposal.changes) - CHANGES_SHOWN
    return f"{proposal.agent} wants to {proposal.action}{target}: {shown}" + (f" (+{more} more)" if more > 0 else "")


def _show(value: Any) -> str:
    text = "(empty)" if value in (None, "") else str(value)
    return text if len(text) <= 60 else text[:57] + "..."


def proposal_url(proposal: Proposal) -> str:
    return settings.SITE_ROOT.rstrip("/") + reverse("admin:approvals_proposal_change", args=[proposal.pk])


def message_text(proposal: Proposal, task: ReviewTask | None, event: str, note: str = "") -> str:
    lines = [one_line(proposal), f"Confidence: {proposal.confidence:.2f}",
             f"Rule: {', '.join(proposal.decision.get('rules', [])) or '(none)'}"]
    if task is not None and task.due_at and event in (ASSIGNED, REMINDER, ESCALATED):
        lines.append(f"Due: {task.due_at:%Y-%m-%d %H:%M} UTC ({task.group.name}, tier {task.position + 1})")
    if event not in (ASSIGNED, REMINDER, ESCALATED):
        lines.append(f"Now {proposal.status}" + (f": {note}" if note else ""))
    elif note:
        lines.append(note)
    lines.append(f"Open: {proposal_url(proposal)}")
    return "\n".join(lines) + "\n"
