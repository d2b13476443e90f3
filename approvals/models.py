"""Proposals (an AI agent's planned action), their review tiers and reviewers' decisions.

The proposal's `status` is a finite-state machine: every change goes through a transition
in `approvals.services`, inside one transaction with its audit row, so an action can never
reach a system of record without the path the policy demanded.
"""

from __future__ import annotations

import uuid
from functools import cache

from django.conf import settings
from django.contrib.auth.models import Group
from django.db import models
from django.utils import timezone
from django_fsm import ConcurrentTransitionMixin, FSMField, FSMFieldMixin, transition
from simple_history.models import HistoricalRecords

SCOPES = ("proposals:write", "proposals:read", "decisions:write", "killswitch:write", "audit:read")


class Integration(models.Model):
    """An agent identity that calls the API. `acts_for` is the user whose review rights its decisions use."""

    name = models.SlugField(max_length=100, unique=True)
    description = models.CharField(max_length=300, blank=True)
    acts_for = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT)
    signing_secret = models.CharField(max_length=100, blank=True, editable=False)
    active = models.BooleanField(default=True)
    history = HistoricalRecords(excluded_fields=["signing_secret"])  # a secret never lands in the audit trail

    def __str__(self) -> str:
        return self.name


class ApiKey(models.Model):
    """A bearer key of an integration: shown once at creation, stored as a SHA-256 hash."""

    integration = models.ForeignKey(Integration, on_delete=models.CASCADE, related_name="keys")
    prefix = models.CharField(max_length=12, editable=False, db_index=True)
    hashed_key = models.CharField(max_length=64, unique=True, editable=False)
    scopes = models.CharField(max_length=300, help_text="Comma-separated: " + ", ".join(SCOPES))
    created_at = models.DateTimeField(auto_now_add=True)
    revoked_at = models.DateTimeField(null=True, blank=True)
    last_used_at = models.DateTimeField(null=True, blank=True, editable=False)
    history = HistoricalRecords()

    def __str__(self) -> str:
        return f"{self.integration.name} {self.prefix}…"

    @property
    def scope_set(self) -> frozenset[str]:
        return frozenset(s.strip() for s in self.scopes.split(",") if s.strip())


class Status(models.TextChoices):
    NEW = "new"
    PENDING_REVIEW = "pending_review"
    INFO_REQUESTED = "info_requested"  # a reviewer asked the agent a question; review waits for the answer
    TRIAGE = "triage"
    BLOCKED = "blocked"
    APPROVED = "approved"
    REJECTED = "rejected"
    EXECUTING = "executing"
    EXECUTED = "executed"
    DRY_RUN = "dry_run"  # everything ran except the write: the connector is in dry-run mode
    HANDLED_MANUALLY = "handled_manually"  # an operator carried it out outside HITL Gov
    FAILED = "failed"
    STALE = "stale"
    ROLLED_BACK = "rolled_back"
    EXPIRED = "expired"
    CANCELLED = "cancelled"
    # AI-assisted (outcome "assisted"): a recommendation a person acts on elsewhere, dismisses or escalates.
    RECOMMENDED = "recommended"
    DISMISSED = "dismissed"
    DONE_ELSEWHERE = "done_elsewhere"


OPEN_STATUSES = (Status.PENDING_REVIEW, Status.INFO_REQUESTED, Status.TRIAGE, Status.APPROVED, Status.STALE, Status.RECOMMENDED)
# Work waiting for a person (or the agent's answer) that the expiry sweep ends at `expires_at`.
EXPIRABLE_STATUSES = (Status.PENDING_REVIEW, Status.INFO_REQUESTED, Status.TRIAGE)

# What people judged, for an agent's track record (approvals.facts): a reviewed proposal decided, an
# alert dismissed or acted on, on-the-loop work confirmed or rolled back after the fact (that last
# one is known from its oversight task, so every on-the-loop proposal may be judged).
DECIDED = (Status.APPROVED, Status.REJECTED, Status.EXECUTING, Status.EXECUTED, Status.DRY_RUN, Status.HANDLED_MANUALLY,
           Status.FAILED, Status.ROLLED_BACK)
REVIEWED_OUTCOMES = ("review", "triage")
JUDGED_ALERT = (Status.DISMISSED, Status.DONE_ELSEWHERE)
MAY_BE_JUDGED = (models.Q(outcome__in=REVIEWED_OUTCOMES, status__in=DECIDED)
                 | models.Q(outcome="assisted", status__in=JUDGED_ALERT) | models.Q(outcome="on_the_loop"))


# Every proposal write (intake's INSERT, each status change: an UPDATE that rewrites every index,
# since indexed columns change) pays for every index on the table, and a history INSERT for every
# index on the history table: 27 and 18 of them once, several repeating another's first column. So
# a column is indexed once, where a query seeks it; the history table is read by the proposal's id
# and by history_date only (the admin's history pages, the ledger, board_days, retention).
# The nullable foreign keys of a proposal that a few rows set (the partial indexes' names after them).
SET_ON_FEW_ROWS = {"parent": "parent", "claimed_by": "claimed_by", "edited_by": "edited_by", "held_by": "held_by",
                   "info_requested_by": "info_asker", "manual_requested_by": "manual_asker"}

HISTORY_UNINDEXED = ["agent", "status", "due_at", "created_at", "expires_at", "connector", "integration", "parent",
                     "claimed_by", "edited_by", "manual_requested_by", "info_requested_by"]


@cache
def _state_fields(model: type[models.Model]) -> tuple[models.Field, ...]:
    return tuple(field for field in model._meta.fields if isinstance(field, FSMFieldMixin))


class Proposal(ConcurrentTransitionMixin, models.Model):
    """An action an AI agent wants to take on a system of record, and everything decided about it."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    # Neither foreign key below has an index of its own: each is the first column of one that serves its
    # lookups (and PROTECT's check when its row is deleted): unique_idempotency_key, proposal_record.
    integration = models.ForeignKey(Integration, on_delete=models.PROTECT, related_name="proposals", db_index=False)
    idempotency_key = models.CharField(max_length=200)
    request_hash = models.CharField(max_length=64, editable=False)
    agent = models.CharField(max_length=100)  # indexed first in proposal_agent_recent, _judged and _action_recent
    connector = models.ForeignKey("connectors.Connector", on_delete=models.PROTECT, related_name="proposals", db_index=False)
    action = models.CharField(max_length=100)
    target_type = models.CharField(max_length=100, blank=True)
    target_id = models.CharField(max_length=200, blank=True)
    changes = models.JSONField(default=dict, blank=True)
    amount = models.DecimalField(max_digits=18, decimal_places=2, null=True, blank=True)
    currency = models.CharField(max_length=3, blank=True)
    confidence = models.FloatField()
    customer_impact = models.CharField(max_length=10, default="none")
    evidence = models.JSONField(default=list, blank=True)
    rationale = models.TextField(blank=True)
    context = models.JSONField(default=dict, blank=True)
    callback_url = models.URLField(max_length=500, blank=True)
    observed = models.JSONField(
        default=dict, blank=True, help_text="The record's values as the agent read them: a live value that differs is a conflict",
    )

    preview = models.JSONField(default=dict, blank=True, editable=False)
    preview_before = models.JSONField(default=dict, blank=True, editable=False)
    preview_error = models.TextField(blank=True, editable=False)
    change_hash = models.CharField(max_length=64, editable=False)
    approved_hash = models.CharField(max_length=64, blank=True, editable=False)
    decision = models.JSONField(default=dict, blank=True, editable=False)
    outcome = models.CharField(max_length=20, blank=True, editable=False)
    matrix_version = models.PositiveIntegerField(null=True, blank=True, editable=False)
    status = FSMField(default=Status.NEW, choices=Status.choices, editable=False)  # indexed first in proposal_status_created
    status_reason = models.TextField(blank=True, editable=False)
    edited = models.BooleanField(default=False, editable=False, help_text="A human changed the planned change")
    edited_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="+", editable=False, db_index=False,
        help_text="Who made the planned change what it is now: they may not approve it themselves",
    )
    manual_requested_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="+", editable=False, db_index=False,
        help_text="An operator who asked to close this by hand without the approvals the policy required",
    )
    manual_request_reason = models.TextField(blank=True, editable=False)
    parent = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.PROTECT, related_name="branches", editable=False, db_index=False,
        help_text="The proposal this one was branched from, keeping one thread",
    )
    claimed_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="+", editable=False,
                                   db_index=False)
    canary = models.BooleanField(
        default=False, editable=False,
        help_text="Planted by the board to test reviewers (approvals.canaries): never executed, never shown as such to reviewers",
    )
    # A whole index: "Everything open" walks it in due order, NULLs last (0.6 ms; 24 ms sorting without it).
    due_at = models.DateTimeField(null=True, blank=True, editable=False, db_index=True)
    expires_at = models.DateTimeField(  # indexed where set: proposal_expires_set
        null=True, blank=True, editable=False,
        help_text="Still waiting then, it expires and never executes (the matrix's max age; the agent's answer time)",
    )
    info_question = models.TextField(blank=True, editable=False, help_text="What a reviewer asked the agent")
    info_requested_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="+", editable=False, db_index=False,
    )
    info_requested_at = models.DateTimeField(null=True, blank=True, editable=False)
    # The inbox's copy of the active review tier (approvals.lifecycle.mark_active_tier keeps it):
    # who may decide it and by when, on the proposal's own indexed row, so "my work" needs no join.
    # No index of their own: each is the first column of an inbox index (see above class Proposal).
    active_group = models.ForeignKey(Group, null=True, blank=True, on_delete=models.PROTECT, related_name="+", editable=False,
                                     db_index=False)
    escalated_to = models.ForeignKey(
        Group, null=True, blank=True, on_delete=models.PROTECT, related_name="+", editable=False, db_index=False,
        help_text="The active tier's escalation group, once its SLA was missed",
    )
    # A reviewer's short hold while they work on it (approvals.inbox.hold): advisory, others see it.
    held_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+", editable=False,
                                db_index=False)
    held_until = models.DateTimeField(null=True, blank=True, editable=False)
    lease_token = models.CharField(max_length=32, blank=True, editable=False)
    lease_until = models.DateTimeField(null=True, blank=True, editable=False)
    created_at = models.DateTimeField(default=timezone.now, editable=False, db_index=True)  # set on arrival: expiry counts from it before the insert
    updated_at = models.DateTimeField(auto_now=True)
    # `canary` stays out of history: the history pages are open to reviewers, and a canary must not
    # be recognisable there; who planted it is kept in CanaryPlant, which only the board sees.
    # The inbox copies and the hold are derived or fleeting: the tiers' own history records them.
    history = HistoricalRecords(excluded_fields=[
        "updated_at", "lease_token", "lease_until", "canary", "active_group", "escalated_to", "held_by", "held_until",
    ], no_db_index=HISTORY_UNINDEXED)

    class Meta:
        ordering = ["due_at", "created_at"]
        permissions = [("review_proposal", "Can approve or reject proposals"), ("operate_proposal", "Can operate executions"),
                       ("see_sensitive", "Can see sensitive values")]
        constraints = [
            models.UniqueConstraint(fields=["integration", "idempotency_key"], name="unique_idempotency_key"),
        ]
        indexes = [
            # Every submission reads its agent's last 1,000 proposals (approvals.risk) from this index alone:
            # it holds every column that read needs, so the wide rows (their JSON) are never visited.
            models.Index(fields=["agent", "-created_at", "id", "action", "currency", "amount"], name="proposal_agent_recent"),
            # ... and the agent's last 50 judged ones (its track record): only the rows people may have
            # judged are in this one, so an agent whose work mostly runs alone is not read row by row
            # back to its last review. The columns are the track record's, as above.
            models.Index(fields=["agent", "-created_at", "id", "outcome", "status", "action", "edited"],
                         condition=MAY_BE_JUDGED, name="proposal_agent_judged"),
            # the risk facts read a record's open proposals (approvals.risk); the decision page reads them too
            models.Index(fields=["agent", "action", "created_at"], name="proposal_agent_action_recent"),
            models.Index(fields=["connector", "target_type", "target_id"], name="proposal_record"),
            # the inbox's lists (approvals.inbox)
            models.Index(fields=["active_group", "status", "due_at"], name="proposal_inbox_group_due"),
            models.Index(fields=["escalated_to", "status", "due_at"], name="proposal_inbox_escalated_due"),
            # My work's page, most urgent first: waiting rows in due order, the person's groups checked on each,
            # stopping at a page (about 150 rows for a group with a third of the work) instead of reading all of
            # the group's waiting rows and sorting them (33,000 at 1,000,000 proposals). Only waiting rows are in
            # it, so other writes do not touch it. Migration 0022 gives PostgreSQL's planner the statistics to
            # see how many rows a group's work is (it took the groups and the status for independent).
            models.Index(fields=["due_at"], condition=models.Q(status="pending_review"), name="proposal_waiting_due"),
            models.Index(fields=["status", "created_at"], name="proposal_status_created"),
            # The expiry sweep's seek (status, then due time): without it a planner may walk every open row.
            models.Index(fields=["status", "expires_at"], name="proposal_expiry"),
            # The sweeps' "is anything due?" walks this from its start in expiry order; only waiting work has an
            # expiry (Proposal.save), so an automatic proposal or a finished one is no entry in it.
            models.Index(fields=["expires_at"], condition=models.Q(expires_at__isnull=False), name="proposal_expires_set"),
            # The people and the parent a proposal points to are NULL on nearly every row: each is indexed only
            # where set, which still serves `col = X` and `col IN (...)` (the branches of a proposal; deleting a
            # user, which PROTECT or SET_NULL makes look its rows up), while a submission or a sweep's UPDATE of
            # a row where they are NULL writes no entry. (PostgreSQL proves `col = X` implies the condition;
            # SQLite documents the same for a partial index on `col IS NOT NULL`.)
            *(models.Index(fields=[column], condition=models.Q(**{f"{column}__isnull": False}), name=f"proposal_{name}_set")
              for column, name in SET_ON_FEW_ROWS.items()),
        ]

    @property
    def state_fields(self) -> tuple[models.Field, ...]:
        """The fields django-fsm guards against concurrent transitions: it filtered them out of all 67 fields for
        every proposal built (its __init__ records their first values), 25 µs of each of a list's rows."""
        return _state_fields(type(self))

    def save(self, *args, **kwargs) -> None:
        # Only waiting work expires: the expiry sweep's index then holds waiting rows alone, so a
        # sweep with nothing due reads nothing, however many proposals have ended.
        if self.status not in EXPIRABLE_STATUSES:
            self.expires_at = None
        super().save(*args, **kwargs)

    def __str__(self) -> str:
        target = f" {self.target_type}/{self.target_id}" if self.target_id else ""
        return f"{self.agent}: {self.action}{target} on {self.connector_id and self.connector.slug}"

    # Routing happens right after the proposal is stored, and again when a reviewer edits it.
    # An agent's revised change (answering a reviewer's question) is routed again like an edit.
    @transition(field=status, source=[Status.NEW, Status.PENDING_REVIEW, Status.INFO_REQUESTED], target=Status.PENDING_REVIEW)
    def route_to_review(self) -> None:
        pass

    @transition(field=status, source=[Status.NEW, Status.PENDING_REVIEW, Status.INFO_REQUESTED], target=Status.TRIAGE)
    def hold_for_triage(self) -> None:
        pass

    @transition(field=status, source=[Status.NEW, Status.PENDING_REVIEW, Status.INFO_REQUESTED], target=Status.BLOCKED)
    def block(self) -> None:
        pass

    @transition(field=status, source=Status.PENDING_REVIEW, target=Status.INFO_REQUESTED,
                permission="approvals.review_proposal")
    def request_info(self) -> None:
        """A reviewer sends the proposal back to its agent with a question; the tier's SLA pauses."""

    @transition(field=status, source=Status.INFO_REQUESTED, target=Status.PENDING_REVIEW)
    def resume_review(self) -> None:
        """The agent answered without changing the change: the same tier resumes where it paused."""

    def _no_review_pending(self) -> bool:
        if self._state.adding:  # not stored yet, so no tier can be waiting (and no query needed to say so)
            return True
        return not self.review_tasks.filter(state__in=[ReviewTask.State.WAITING, ReviewTask.State.ACTIVE]).exists()

    def _approval_matches_change(self) -> bool:
        from approvals.facts import change_hash

        return bool(self.approved_hash) and self.approved_hash == self.change_hash == change_hash(self)

    @transition(field=status, source=[Status.NEW, Status.PENDING_REVIEW], target=Status.APPROVED,
                conditions=[_no_review_pending])
    def approve(self) -> None:
        pass

    @transition(field=status, source=[Status.PENDING_REVIEW, Status.TRIAGE, Status.STALE], target=Status.REJECTED,
                permission="approvals.review_proposal")
    def reject(self) -> None:
        pass

    @transition(field=status, source=[Status.TRIAGE, Status.STALE], target=Status.PENDING_REVIEW,
                permission="approvals.operate_proposal")
    def send_to_review(self) -> None:
        pass

    @transition(field=status, source=Status.APPROVED, target=Status.PENDING_REVIEW)
    def hold_for_review(self) -> None:
        """A force_review kill switch caught policy-approved work before it started."""

    @transition(field=status, source=Status.APPROVED, target=Status.EXECUTING, conditions=[_approval_matches_change])
    def start_execution(self) -> None:
        pass

    @transition(field=status, source=Status.EXECUTING, target=Status.EXECUTED)
    def finish_execution(self) -> None:
        pass

    @transition(field=status, source=Status.EXECUTING, target=Status.DRY_RUN)
    def finish_dry_run(self) -> None:
        """Nothing was written: an agent must never be told it was."""

    @transition(field=status, source=[Status.EXECUTING, Status.APPROVED], target=Status.FAILED)
    def fail(self) -> None:
        pass

    @transition(field=status, source=[Status.EXECUTING, Status.APPROVED], target=Status.STALE)
    def mark_stale(self) -> None:
        pass

    @transition(field=status, source=Status.FAILED, target=Status.APPROVED, permission="approvals.operate_proposal")
    def retry(self) -> None:
        pass

    @transition(field=status, source=[Status.EXECUTED, Status.DRY_RUN], target=Status.ROLLED_BACK,
                permission="approvals.operate_proposal")
    def roll_back(self) -> None:
        pass

    # AI-assisted: the recommendation is routed to people; nothing is ever written for it.
    @transition(field=status, source=Status.NEW, target=Status.RECOMMENDED)
    def recommend(self) -> None:
        pass

    @transition(field=status, source=Status.RECOMMENDED, target=Status.DISMISSED, permission="approvals.review_proposal")
    def dismiss(self) -> None:
        """A person judged the recommendation wrong (a false positive): it counts against the agent."""

    @transition(field=status, source=Status.RECOMMENDED, target=Status.DONE_ELSEWHERE,
                permission="approvals.review_proposal")
    def mark_done(self) -> None:
        """A person acted on the recommendation in the system of record themselves."""

    @transition(
        field=status,
        source=[Status.PENDING_REVIEW, Status.INFO_REQUESTED, Status.TRIAGE, Status.APPROVED, Status.STALE,
                Status.BLOCKED, Status.FAILED, Status.RECOMMENDED],
        target=Status.CANCELLED,
    )
    def cancel(self) -> None:
        pass

    # Operator take-over (approvals.operations): an operator who holds the claim may put an
    # edited change back through the policy, or record that they did the work by hand.
    @transition(field=status, source=[Status.TRIAGE, Status.STALE, Status.FAILED], target=Status.PENDING_REVIEW)
    def reopen_for_operator(self) -> None:
        pass

    @transition(
        field=status, source=[Status.PENDING_REVIEW, Status.TRIAGE, Status.STALE, Status.FAILED],
        target=Status.HANDLED_MANUALLY,
    )
    def handle_manually(self) -> None:
        pass


class ReviewTask(models.Model):
    """A tier of review a proposal must pass: which group, how many approvals, by when.

    Tiers are worked in order: only the lowest unsatisfied one is `active`.
    """

    class State(models.TextChoices):
        WAITING = "waiting"
        ACTIVE = "active"
        SATISFIED = "satisfied"
        REJECTED = "rejected"
        CLOSED = "closed"

    # Some columns below have no index of their own, so a tier's INSERT and each UPDATE write fewer:
    # `proposal` is the first column of unique_tier_position, `state` of tier_escalation and tier_queue,
    # `group` and `escalation_group` keep theirs: visible_q seeks a reviewer's tiers by them.
    proposal = models.ForeignKey(Proposal, on_delete=models.CASCADE, related_name="review_tasks", db_index=False)
    position = models.PositiveIntegerField()
    group = models.ForeignKey(Group, on_delete=models.PROTECT, related_name="+")
    required = models.PositiveIntegerField(default=1)
    mode = models.CharField(max_length=3, default="any")
    bulk_allowed = models.BooleanField(default=False)
    escalation_group = models.ForeignKey(Group, null=True, blank=True, on_delete=models.PROTECT, related_name="+")
    sla_minutes = models.PositiveIntegerField(default=240)
    # Its own index too: the escalation sweep asks for the first overdue tier in due order, which PostgreSQL
    # does not take from tier_escalation past its `escalated_at IS NULL` (a sort: 0.04 -> 0.8 ms, none due).
    due_at = models.DateTimeField(null=True, blank=True, db_index=True)
    escalated_at = models.DateTimeField(null=True, blank=True)
    # Reminders (approvals.notifications): the matrix's fraction of the SLA, when that falls, when sent.
    remind_fraction = models.FloatField(default=0.75)
    remind_at = models.DateTimeField(null=True, blank=True, db_index=True)  # the reminder sweep's seek, in its order
    reminded_at = models.DateTimeField(null=True, blank=True)
    signed_links = models.BooleanField(default=False, help_text="A signed email link may decide without a login")
    state = models.CharField(max_length=10, choices=State.choices, default=State.WAITING)
    history = HistoricalRecords()

    class Meta:
        ordering = ["proposal", "position"]
        constraints = [models.UniqueConstraint(fields=["proposal", "position"], name="unique_tier_position")]
        # The escalation sweep's seek: active, not yet escalated, by due time; the board's queues
        # count active tiers per group and due time from the index alone.
        indexes = [models.Index(fields=["state", "escalated_at", "due_at"], name="tier_escalation"),
                   models.Index(fields=["state", "group", "due_at"], name="tier_queue"),
                   # Whether any of a reviewer's active tiers allows bulk approval (approvals.inbox.bulk_possible,
                   # asked by every inbox page): read from the few tiers that allow it, not all of a group's active
                   # tiers (33,000 at 1,000,000 proposals, 14-49 ms to find none).
                   models.Index(fields=["group", "state"], condition=models.Q(bulk_allowed=True), name="tier_bulk")]

    def __str__(self) -> str:
        return f"tier {self.position + 1}: {self.group.name} x{self.required} ({self.state})"


class Review(models.Model):
    """One reviewer's verdict on one tier. A reviewer counts once per tier."""

    class Verdict(models.TextChoices):
        APPROVE = "approve"
        REJECT = "reject"

    proposal = models.ForeignKey(Proposal, on_delete=models.CASCADE, related_name="reviews")
    task = models.ForeignKey(ReviewTask, on_delete=models.CASCADE, related_name="reviews")
    reviewer = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    verdict = models.CharField(max_length=7, choices=Verdict.choices)
    reason = models.TextField(blank=True)
    change_hash = models.CharField(max_length=64, help_text="The exact change this verdict was about")
    via = models.CharField(max_length=20, default="admin")
    on_behalf_of = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="+",
        help_text="The out-of-office member of the tier's group this reviewer stood in for",
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["created_at"]
        constraints = [models.UniqueConstraint(fields=["task", "reviewer"], name="one_verdict_per_reviewer_per_tier")]
        indexes = [models.Index(fields=["created_at"], name="review_created")]  # the board's verdicts of today

    def __str__(self) -> str:
        return f"{self.reviewer} {self.verdict}d tier {self.task.position + 1}"


class Delegation(models.Model):
    """A reviewer is out of office: from `starts_at` to `ends_at` their tiers route to `delegate`.

    Created through approvals.delegation.set_delegation; the delegate stands in only for groups
    they may decide for themselves (approvals.delegation). Never edited: end one early with a new row.
    """

    delegator = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="delegations")
    delegate = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    starts_at = models.DateTimeField()
    ends_at = models.DateTimeField()
    reason = models.CharField(max_length=300, blank=True)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, on_delete=models.PROTECT, related_name="+",
                                   editable=False)
    created_at = models.DateTimeField(auto_now_add=True)
    history = HistoricalRecords()

    class Meta:
        ordering = ["-starts_at"]
        indexes = [models.Index(fields=["delegator", "ends_at"], name="delegation_active")]

    def __str__(self) -> str:
        return f"{self.delegator} -> {self.delegate} ({self.starts_at:%Y-%m-%d} to {self.ends_at:%Y-%m-%d})"


class BreakGlass(models.Model):
    """Work closed by hand without the approvals the policy required: one operator asked, a second
    confirmed. The board reviews these; nothing here is ever edited."""

    proposal = models.ForeignKey(Proposal, on_delete=models.PROTECT, related_name="break_glass")
    requested_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    confirmed_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    reason = models.TextField()
    confirmation = models.TextField()
    status_before = models.CharField(max_length=20)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        ordering = ["-created_at"]
        verbose_name = "break-glass event"

    def __str__(self) -> str:
        return f"{self.proposal_id}: asked by {self.requested_by}, confirmed by {self.confirmed_by}"


class CanaryPlant(models.Model):
    """Who planted a canary proposal and why: the board's record, never shown to reviewers."""

    proposal = models.OneToOneField(Proposal, on_delete=models.PROTECT, related_name="canary_plant")
    planted_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    note = models.TextField(blank=True, help_text="What makes it wrong: what a careful reviewer should notice")
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"canary {self.proposal_id} planted by {self.planted_by}"


class CallbackDelivery(models.Model):
    """One event for an integration's callback_url, and every attempt to deliver it."""

    class State(models.TextChoices):
        PENDING = "pending"
        DELIVERED = "delivered"
        FAILED = "failed"

    proposal = models.ForeignKey(Proposal, on_delete=models.CASCADE, related_name="deliveries")
    event = models.CharField(max_length=50)
    url = models.URLField(max_length=500)
    payload = models.JSONField()
    state = models.CharField(max_length=10, choices=State.choices, default=State.PENDING, db_index=True)
    attempts = models.PositiveIntegerField(default=0)
    last_status = models.PositiveIntegerField(null=True, blank=True)
    last_error = models.TextField(blank=True)
    next_attempt_at = models.DateTimeField(null=True, blank=True, db_index=True)
    created_at = models.DateTimeField(auto_now_add=True)
    delivered_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["created_at", "id"]
        verbose_name_plural = "callback deliveries"

    def __str__(self) -> str:
        return f"{self.event} for {self.proposal_id}: {self.state}"


class RateWindow(models.Model):
    """How many API calls one caller made in one fixed window: the rate limit's shared, atomic counter.

    Counted with a single UPDATE ... SET count = count + 1 ... RETURNING (approvals.rate_limit),
    so concurrent requests on any number of web servers never lose a hit.
    """

    key = models.CharField(max_length=100, help_text="Who is counted, e.g. integration:7")
    window_start = models.DateTimeField()
    count = models.PositiveIntegerField(default=0)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["key", "window_start"], name="unique_rate_window")]

    def __str__(self) -> str:
        return f"{self.key} @ {self.window_start:%Y-%m-%d %H:%M:%S}: {self.count}"


class OutboxMessage(models.Model):
    """A task to publish to the broker, stored in the transaction that decided it must run.

    It exists exactly when that decision committed; approvals.outbox publishes it after the
    commit, and the beat sweep publishes what is due and still unsent (the broker was down,
    or the process died before publishing), so approved work is never only in memory.
    """

    task = models.CharField(max_length=200)
    args = models.JSONField(default=list)
    proposal = models.ForeignKey(Proposal, null=True, blank=True, on_delete=models.CASCADE, related_name="outbox_messages")
    created_at = models.DateTimeField(auto_now_add=True)
    due_at = models.DateTimeField(db_index=True, help_text="Not published before; a publisher claims it by moving this on")
    sent_at = models.DateTimeField(null=True, blank=True, db_index=True)
    attempts = models.PositiveIntegerField(default=0, help_text="Publish attempts, failed or not")
    last_error = models.TextField(blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        verbose_name = "outbox message"

    def __str__(self) -> str:
        return f"{self.task}{tuple(self.args)}: {'sent' if self.sent_at else 'unsent'}"


class OversightTask(models.Model):
    """People's part in the two models where no approval comes first.

    kind "alert": an AI-assisted recommendation in a group's inbox; a member marks it done
    (they acted elsewhere), dismisses it (a false positive) or escalates it to the escalation group.
    kind "after_the_fact": on-the-loop work that already ran; a member confirms it or rolls it
    back in one click. Decided through `approvals.oversight`, never edited here.
    """

    class Kind(models.TextChoices):
        ALERT = "alert"
        AFTER_THE_FACT = "after_the_fact", "after-the-fact review"

    class State(models.TextChoices):
        OPEN = "open"
        ESCALATED = "escalated"
        DONE = "done", "acted on"
        DISMISSED = "dismissed"
        CONFIRMED = "confirmed"
        ROLLED_BACK = "rolled_back", "rolled back"
        CLOSED = "closed", "closed (went to review)"

    proposal = models.OneToOneField(Proposal, on_delete=models.CASCADE, related_name="oversight")
    kind = models.CharField(max_length=20, choices=Kind.choices)
    group = models.ForeignKey(Group, on_delete=models.PROTECT, related_name="+")
    escalation_group = models.ForeignKey(Group, null=True, blank=True, on_delete=models.PROTECT, related_name="+")
    state = models.CharField(max_length=20, choices=State.choices, default=State.OPEN, db_index=True)
    decided_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="+")
    decided_at = models.DateTimeField(null=True, blank=True)
    reason = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    history = HistoricalRecords()

    class Meta:
        ordering = ["created_at", "id"]
        verbose_name = "oversight task"

    def __str__(self) -> str:
        return f"{self.get_kind_display()} for {self.proposal_id}: {self.state}"

    @property
    def is_open(self) -> bool:
        return self.state in (self.State.OPEN, self.State.ESCALATED)


from approvals.notification_models import NotificationChannel, Notification, SlackIdentity  # noqa: E402,F401  (registered here)
from approvals.board_models import BoardDay, BoardDayProposals, BoardDayReviewer, BoardDayWait  # noqa: E402,F401  (registered here)
