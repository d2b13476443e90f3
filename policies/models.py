"""Approval matrices as governance boards edit them in the admin.

The database holds matrices, rules, tiers, budgets and kill switches in a form a board can
edit; `policies.matrices` turns a version into the engine's immutable MatrixSpec, and the
engine (`policies.engine`) decides without touching the database.
"""

from __future__ import annotations

from django.conf import settings
from django.contrib.auth.models import Group
from django.core.exceptions import ValidationError
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models
from django_fsm import ConcurrentTransitionMixin, FSMField, transition
from simple_history.models import HistoricalRecords

from policies.matrix_spec import DEFAULT_INFO_WAIT_MINUTES, DEFAULT_MAX_AGE_MINUTES

OUTCOME_CHOICES = [
    ("auto", "run automatically (controlled autonomy)"), ("on_the_loop", "run, then people review (on the loop)"),
    ("review", "route to reviewers (in the loop)"), ("assisted", "recommend only: people act (AI-assisted)"),
    ("triage", "hold for triage"), ("block", "block"),
]
IMPACT_CHOICES = [("none", "none"), ("low", "low"), ("medium", "medium"), ("high", "high")]


class MatrixStatus(models.TextChoices):
    DRAFT = "draft"
    SUBMITTED = "submitted"
    PUBLISHED = "published"
    RETIRED = "retired"


class ApprovalMatrix(ConcurrentTransitionMixin, models.Model):
    """One version of the approval matrix. Only drafts can be edited; exactly one is published."""

    version = models.PositiveIntegerField(unique=True)
    name = models.CharField(max_length=100, default="default")
    notes = models.TextField(blank=True)
    status = FSMField(default=MatrixStatus.DRAFT, choices=MatrixStatus.choices, editable=False)
    default_outcome = models.CharField(max_length=20, choices=OUTCOME_CHOICES, default="review")
    sensitive_fields = models.CharField(max_length=500, blank=True, help_text="Comma-separated field names")
    required_facts = models.CharField(max_length=500, blank=True, help_text="Comma-separated fact names")
    tests = models.JSONField(default=list, blank=True, help_text="Embedded test cases: facts and expected outcome")
    default_max_age_minutes = models.PositiveIntegerField(
        default=DEFAULT_MAX_AGE_MINUTES, help_text="Work still waiting this long after it arrived expires (a rule may set its own)",
    )
    info_wait_minutes = models.PositiveIntegerField(
        default=DEFAULT_INFO_WAIT_MINUTES, help_text="How long a reviewer's question waits for the agent before the proposal expires",
    )
    author = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="+")
    submitted_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="+", editable=False)
    published_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="+", editable=False)
    published_at = models.DateTimeField(null=True, blank=True, editable=False)
    created_at = models.DateTimeField(auto_now_add=True)
    history = HistoricalRecords()

    class Meta:
        ordering = ["-version"]
        verbose_name_plural = "approval matrices"
        constraints = [
            models.UniqueConstraint(fields=["status"], condition=models.Q(status="published"), name="one_published_matrix"),
        ]

    def __str__(self) -> str:
        return f"v{self.version} {self.name} ({self.status})"

    @property
    def is_editable(self) -> bool:
        return self.status == MatrixStatus.DRAFT

    @transition(field=status, source=MatrixStatus.DRAFT, target=MatrixStatus.SUBMITTED)
    def submit(self) -> None:
        pass

    @transition(field=status, source=MatrixStatus.SUBMITTED, target=MatrixStatus.PUBLISHED)
    def publish(self) -> None:
        pass

    @transition(field=status, source=MatrixStatus.PUBLISHED, target=MatrixStatus.RETIRED)
    def retire(self) -> None:
        pass


class Rule(models.Model):
    """A row of the matrix: conditions (blank means any) and the outcome when they all hold."""

    matrix = models.ForeignKey(ApprovalMatrix, on_delete=models.CASCADE, related_name="rules")
    position = models.PositiveIntegerField(default=0)
    name = models.SlugField(max_length=100)
    description = models.CharField(max_length=300, blank=True)
    outcome = models.CharField(max_length=20, choices=OUTCOME_CHOICES)
    connectors = models.CharField(max_length=500, blank=True, help_text="Comma-separated; blank or * = any")
    actions = models.CharField(max_length=500, blank=True, help_text="Comma-separated; blank or * = any")
    agents = models.CharField(max_length=500, blank=True, help_text="Comma-separated; blank or * = any")
    target_types = models.CharField(max_length=500, blank=True, help_text="Comma-separated; blank = any")
    currency = models.CharField(max_length=3, blank=True, help_text="ISO 4217; the amount range applies in it")
    amount_min = models.DecimalField(max_digits=18, decimal_places=2, null=True, blank=True, help_text="inclusive")
    amount_max = models.DecimalField(max_digits=18, decimal_places=2, null=True, blank=True, help_text="exclusive")
    confidence_min = models.FloatField(null=True, blank=True, help_text="inclusive")
    confidence_max = models.FloatField(null=True, blank=True, help_text="exclusive")
    impacts = models.CharField(max_length=100, blank=True, help_text="Comma-separated of none, low, medium, high")
    fields_any = models.CharField(max_length=500, blank=True, help_text="Matches when the change touches any of these")
    touches_sensitive = models.BooleanField(null=True, blank=True, help_text="Matches when the change touches a sensitive field")
    missing_facts = models.BooleanField(null=True, blank=True, help_text="Matches when a required fact is missing")
    amount_mismatch = models.BooleanField(
        null=True, blank=True, help_text="Matches when the declared amount differs from the money the change carries",
    )
    override_rate_min = models.FloatField(null=True, blank=True, help_text="Matches when the agent's recent override rate is at least this")
    budget_exceeded = models.CharField(max_length=100, blank=True, help_text="Name of a budget of this matrix")
    max_age_minutes = models.PositiveIntegerField(
        null=True, blank=True, help_text="Work this rule decides expires if still waiting this long after it arrived; blank = the matrix default",
    )
    conflicting_record = models.BooleanField(
        null=True, blank=True, help_text="Matches when another open proposal touches the record, or it changed since the agent read it",
    )
    overrides_min = models.PositiveIntegerField(
        null=True, blank=True, help_text="Matches when people overrode the agent on this action at least this often recently",
    )
    burst_ratio_min = models.FloatField(null=True, blank=True, help_text="Matches when the agent proposes at least this many times its usual hourly rate")
    unusual_amount = models.BooleanField(null=True, blank=True, help_text="Matches when the amount is above the agent's 99th percentile for the action")
    first_actions = models.PositiveIntegerField(null=True, blank=True, help_text="Matches while the agent has made fewer proposals than this for the action")
    sample_percent = models.PositiveSmallIntegerField(
        null=True, blank=True, validators=[MinValueValidator(1), MaxValueValidator(100)],
        help_text="On the loop only: the share of its work people review after the fact (blank: all)",
    )
    history = HistoricalRecords()

    class Meta:
        ordering = ["matrix", "position", "id"]
        constraints = [models.UniqueConstraint(fields=["matrix", "name"], name="unique_rule_name_per_matrix")]

    def __str__(self) -> str:
        return f"{self.name} -> {self.outcome}"


class ReviewTier(models.Model):
    """A tier of review for a rule, or (rule empty) a default tier of the matrix."""

    matrix = models.ForeignKey(ApprovalMatrix, on_delete=models.CASCADE, related_name="tiers")
    rule = models.ForeignKey(Rule, null=True, blank=True, on_delete=models.CASCADE, related_name="tiers")
    position = models.PositiveIntegerField(default=0)
    group = models.ForeignKey(Group, on_delete=models.PROTECT, related_name="+")
    required = models.PositiveIntegerField(default=1, help_text="Approvals required (quorum)")
    mode = models.CharField(max_length=3, choices=[("any", "any members"), ("all", "all members")], default="any")
    sla_minutes = models.PositiveIntegerField(default=240)
    escalation_group = models.ForeignKey(Group, null=True, blank=True, on_delete=models.PROTECT, related_name="+")
    bulk_allowed = models.BooleanField(default=False)
    remind_at = models.FloatField(default=0.75, help_text="Remind the group at this fraction of the SLA (0: never)")
    signed_links = models.BooleanField(default=False, help_text="A signed email link may decide without a login")
    history = HistoricalRecords()

    class Meta:
        ordering = ["position", "id"]

    def __str__(self) -> str:
        return f"{self.group} x{self.required} ({self.sla_minutes} min)"


class Budget(models.Model):
    """A cap on what agents may do in a window, e.g. refunds per day; rules react when it is exceeded."""

    matrix = models.ForeignKey(ApprovalMatrix, on_delete=models.CASCADE, related_name="budgets")
    name = models.SlugField(max_length=100)
    metric = models.CharField(max_length=10, choices=[("amount", "sum of amounts"), ("count", "number of proposals")])
    cap = models.DecimalField(max_digits=18, decimal_places=2)
    window_minutes = models.PositiveIntegerField(default=1440)
    connectors = models.CharField(max_length=500, blank=True)
    actions = models.CharField(max_length=500, blank=True)
    agents = models.CharField(max_length=500, blank=True)
    history = HistoricalRecords()

    class Meta:
        constraints = [models.UniqueConstraint(fields=["matrix", "name"], name="unique_budget_name_per_matrix")]

    def __str__(self) -> str:
        return f"{self.name}: {self.metric} <= {self.cap} per {self.window_minutes} min"


class KillSwitch(models.Model):
    """Forces review of, or blocks, everything in a scope at once; engaged and released with a reason."""

    SCOPES = [("global", "everything"), ("connector", "a connector"), ("action", "an action"), ("agent", "an agent")]
    MODES = [("force_review", "force review"), ("block", "block")]

    scope = models.CharField(max_length=10, choices=SCOPES)
    value = models.CharField(max_length=200, blank=True, help_text="Connector slug, action or agent; blank for global")
    mode = models.CharField(max_length=12, choices=MODES, default="force_review")
    engaged = models.BooleanField(default=True)
    reason = models.TextField()
    changed_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="+")
    changed_at = models.DateTimeField(auto_now=True)
    breaker = models.ForeignKey(
        "CircuitBreaker", null=True, blank=True, on_delete=models.SET_NULL, related_name="switches", editable=False,
        help_text="The circuit breaker that engaged this switch, if one did",
    )
    history = HistoricalRecords()

    class Meta:
        ordering = ["-changed_at"]
        verbose_name_plural = "kill switches"

    def __str__(self) -> str:
        where = self.scope if self.scope == "global" else f"{self.scope}={self.value}"
        return f"{where}: {self.mode} ({'engaged' if self.engaged else 'released'})"


class CircuitBreaker(models.Model):
    """Switches an agent off when humans reject too much of its recent work, whatever the matrix says.

    Independent of matrix versions on purpose: it watches how an agent behaves, not what a
    version allows. Evaluated per agent after each rejection (`policies.breakers`); when it
    trips it engages an agent kill switch naming itself, which a person releases.
    """

    MODES = KillSwitch.MODES

    name = models.SlugField(max_length=100, unique=True)
    agent = models.CharField(max_length=100, blank=True, help_text="Blank: every agent, each judged on its own work")
    connector = models.CharField(max_length=100, blank=True, help_text="Count only proposals on this connector; blank = any")
    window = models.PositiveIntegerField(default=20, validators=[MinValueValidator(1)],
                                         help_text="How many of the agent's most recent reviewed proposals to look at")
    min_sample = models.PositiveIntegerField(default=10, validators=[MinValueValidator(1)],
                                             help_text="Never trip on fewer reviewed proposals than this")
    threshold = models.FloatField(validators=[MinValueValidator(0.0), MaxValueValidator(1.0)],
                                  help_text="Rejection rate (0-1) at or above which the breaker trips")
    mode = models.CharField(max_length=12, choices=MODES, default="force_review")
    enabled = models.BooleanField(default=True)
    history = HistoricalRecords()

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        who = self.agent or "any agent"
        return f"{self.name}: {who}, {self.threshold:.0%} of last {self.window} rejected -> {self.mode}"

    def clean(self) -> None:
        if self.min_sample and self.window and self.min_sample > self.window:
            raise ValidationError({"min_sample": f"cannot exceed the window ({self.window}): the breaker could never trip"})


class SimulationRun(models.Model):
    """A what-if run of one matrix version against stored proposals; it never changes a proposal.

    Progress (`processed` of `total`) is written every few hundred proposals so the admin can
    show a long run moving; `result` holds the summary once done.
    """

    class State(models.TextChoices):
        QUEUED = "queued"
        RUNNING = "running"
        DONE = "done"
        FAILED = "failed"

    matrix = models.ForeignKey(ApprovalMatrix, on_delete=models.CASCADE, related_name="simulations")
    since = models.DateTimeField(null=True, blank=True, help_text="Proposals created at or after this time")
    until = models.DateTimeField(null=True, blank=True, help_text="Proposals created before this time")
    sample_size = models.PositiveIntegerField(null=True, blank=True, help_text="A random sample of this many; blank = all")
    status = models.CharField(max_length=10, choices=State.choices, default=State.QUEUED, editable=False, db_index=True)
    processed = models.PositiveIntegerField(default=0, editable=False)
    total = models.PositiveIntegerField(default=0, editable=False)
    result = models.JSONField(default=dict, blank=True, editable=False)
    error = models.TextField(blank=True, editable=False)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="+", editable=False,
    )
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True, editable=False)
    heartbeat_at = models.DateTimeField(
        null=True, blank=True, editable=False,
        help_text="Last progress write; a running run silent for long was orphaned by a dead worker",
    )
    finished_at = models.DateTimeField(null=True, blank=True, editable=False)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"simulation of v{self.matrix.version} #{self.pk} ({self.status})"

    def clean(self) -> None:
        if self.since and self.until and self.since >= self.until:
            raise ValidationError({"until": "must be after since"})
        if self.sample_size == 0:
            raise ValidationError({"sample_size": "must be at least 1 (blank means every proposal)"})
