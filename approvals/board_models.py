"""The board's daily rollup: what the dashboard shows for each finished UTC day, kept so the admin
index reads a few hundred rows instead of every proposal of the last weeks.

Derived from stored rows only (approvals.board_days writes it); deleting every row loses nothing,
the next dashboard or beat refresh rolls the days up again.
"""

from __future__ import annotations

from django.conf import settings
from django.db import models


class BoardDay(models.Model):
    """A finished day whose figures are rolled up, and when they were last checked against the record."""

    day = models.DateField(primary_key=True)
    checked_at = models.DateTimeField(help_text="The record's changes up to then are in this day's figures")
    failed_executions = models.PositiveIntegerField(default=0)

    class Meta:
        ordering = ["day"]

    def __str__(self) -> str:
        return f"board figures of {self.day}"


class BoardDayProposals(models.Model):
    """The agents' proposals created that day (canaries left out) per agent, action, connector and
    the policy's outcome; how many people decided, edited, rejected (unedited)."""

    day = models.DateField()
    agent = models.CharField(max_length=100)
    action = models.CharField(max_length=100)
    connector = models.ForeignKey("connectors.Connector", null=True, on_delete=models.CASCADE, related_name="+")
    outcome = models.CharField(max_length=10)
    proposals = models.PositiveIntegerField()
    decided = models.PositiveIntegerField()
    edited = models.PositiveIntegerField()
    rejected = models.PositiveIntegerField()

    class Meta:
        constraints = [models.UniqueConstraint(fields=["day", "agent", "action", "connector", "outcome"],
                                               name="board_day_proposals_once")]


class BoardDayReviewer(models.Model):
    """One reviewer's verdicts given that day: approvals, approvals later reversed, canaries seen and
    caught, and the sum of the waits from submission to verdict (for the mean)."""

    day = models.DateField()
    reviewer = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    decisions = models.PositiveIntegerField()
    approvals = models.PositiveIntegerField()
    reversed = models.PositiveIntegerField()
    canaries = models.PositiveIntegerField()
    caught = models.PositiveIntegerField()
    wait_seconds = models.FloatField()

    class Meta:
        constraints = [models.UniqueConstraint(fields=["day", "reviewer"], name="board_day_reviewer_once")]


class BoardDayWait(models.Model):
    """Histogram of the day's verdicts by whole seconds from submission: percentiles by nearest rank."""

    day = models.DateField()
    seconds = models.BigIntegerField()
    verdicts = models.PositiveIntegerField()

    class Meta:
        constraints = [models.UniqueConstraint(fields=["day", "seconds"], name="board_day_wait_once")]
