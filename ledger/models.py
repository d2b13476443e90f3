"""The decision log: one append-only, hash-chained event per transaction that changed governed data.

An event lists what its transaction wrote: every django-simple-history row (with a digest of the
row, so an edited history row no longer matches) and every other governed row created, changed or
deleted. `hash` covers the event and the previous event's hash, so editing, inserting or deleting
an event breaks the chain from there on (`ledger.verify`). Database triggers refuse UPDATE and
DELETE on this table (migration 0002): the application cannot change it, only append.
"""

from __future__ import annotations

from django.db import models


class Event(models.Model):
    position = models.PositiveBigIntegerField(unique=True, help_text="1, 2, 3, ... with no gaps")
    at = models.DateTimeField(db_index=True)
    user = models.CharField(max_length=150, blank=True, help_text="Who, as their login was at the time")
    reason = models.TextField(blank=True, help_text="Why: the history reasons of the transaction, in order")
    category = models.CharField(max_length=50, blank=True, db_index=True, help_text="Exception category, if any")
    subject = models.CharField(max_length=64, blank=True, db_index=True, help_text="The proposal it is about, if any")
    agent = models.CharField(max_length=100, blank=True, db_index=True)
    action = models.CharField(max_length=100, blank=True)
    records = models.JSONField(default=list, help_text="The rows the transaction wrote, with digests of history rows")
    prev_hash = models.CharField(max_length=64)
    hash = models.CharField(max_length=64, unique=True)

    class Meta:
        ordering = ["position"]
        verbose_name = "decision log event"

    def __str__(self) -> str:
        return f"#{self.position} {self.reason[:80]}"


class ExceptionCategory(models.Model):
    """A board's own addition to the built-in exception categories (`ledger.categories.BUILT_IN`)."""

    slug = models.SlugField(max_length=50, unique=True)
    label = models.CharField(max_length=100)
    description = models.TextField(blank=True)

    class Meta:
        ordering = ["slug"]
        verbose_name_plural = "exception categories"

    def __str__(self) -> str:
        return self.label
