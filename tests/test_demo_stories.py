"""The demo's stories: what seeding loads, the queues they land in, and the trickle beat runs in `make run`."""

from __future__ import annotations

from collections import Counter
from datetime import datetime, timezone

from approvals import demo_stories
from approvals.demo import seed_demo
from approvals.models import Integration, OversightTask, Proposal, Status
from hitlgov.celery import schedule_sweeps


def test_the_demo_loads_every_story_into_its_queues(db):
    seed_demo(proposals=6)
    stories = {p.idempotency_key: p for p in Proposal.objects.filter(context__demo=True, context__has_key="story")}
    assert len(stories) == len(demo_stories.story_proposals())
    alerts = OversightTask.objects.filter(kind="alert")
    assert Counter(alerts.values_list("group__name", "escalation_group__name")) == {("sales", "sales-managers"): 5}
    watched = OversightTask.objects.filter(kind="after_the_fact")
    assert set(watched.values_list("group__name", flat=True)) == {"dispatch"}
    assert stories["logistics-status-again-S-1"].status == Status.TRIAGE  # S-1's first update is still open
    discount = stories[f"discount-{demo_stories.DISCOUNTED[1]}"]
    assert [t.group.name for t in discount.review_tasks.order_by("position")] == ["sales-managers", "finance"]
    destination = stories["logistics-destination-S-8"]
    assert [t.group.name for t in destination.review_tasks.order_by("position")] == ["dispatch", "management"]


def test_the_trickle_adds_new_work_each_time_and_repeats_nothing(db):
    seed_demo(proposals=6)
    agent = Integration.objects.get(name="demo-agent")
    before = Proposal.objects.count()
    first = demo_stories.trickle(agent, count=3, now=datetime(2026, 12, 2, 9, 0, tzinfo=timezone.utc))
    again = demo_stories.trickle(agent, count=3, now=datetime(2026, 12, 2, 9, 0, tzinfo=timezone.utc))
    later = demo_stories.trickle(agent, count=3, now=datetime(2026, 12, 2, 9, 1, tzinfo=timezone.utc))
    assert [p.pk for p in again] == [p.pk for p in first]
    assert Proposal.objects.count() == before + 6
    assert not {p.pk for p in later} & {p.pk for p in first}


class RecordingSender:
    def __init__(self) -> None:
        self.scheduled: list[tuple[float, str]] = []

    def signature(self, name: str) -> str:
        return name

    def add_periodic_task(self, interval: float, signature: str) -> None:
        self.scheduled.append((interval, signature))


def test_beat_schedules_the_trickle_only_when_the_demo_asks(settings):
    settings.DEMO_TRICKLE_SECONDS = 0
    off = RecordingSender()
    schedule_sweeps(off)
    assert "approvals.tasks.demo_trickle" not in [name for _, name in off.scheduled]
    assert "approvals.tasks.sweep_overdue_reviews" in [name for _, name in off.scheduled]
    settings.DEMO_TRICKLE_SECONDS = 60
    on = RecordingSender()
    schedule_sweeps(on)
    assert (60, "approvals.tasks.demo_trickle") in on.scheduled
