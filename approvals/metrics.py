"""Prometheus metrics at `/metrics`, read from the database when scraped.

Every web process answers the same figures because they come from the shared database, not
from per-process counters (which gunicorn's several workers would each keep a part of). Each
query is bounded by an index: open review tasks by state, recent proposals and executions by
their time column, so a scrape stays cheap at any table size. Set METRICS_TOKEN to require
`Authorization: Bearer <token>`.

    hitlgov_review_queue_depth{group}           active review tiers waiting for a group
    hitlgov_sla_breached_tiers{group}           of those, past their due time
    hitlgov_decisions_recent{outcome}           proposals decided in the last METRICS_WINDOW_SECONDS
    hitlgov_execution_errors_recent             executions that failed in that window
    hitlgov_execution_seconds{quantile}         how long executions took in that window (0.5, 0.9, 0.99)
    hitlgov_execution_seconds_count             how many finished in that window
"""

from __future__ import annotations

import hmac
from datetime import timedelta

from django.conf import settings
from django.db.models import Count, Q
from django.http import HttpRequest, HttpResponse
from django.utils import timezone
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.core import CollectorRegistry, GaugeMetricFamily

from approvals.models import Proposal, ReviewTask
from connectors.models import Execution

LATENCY_SAMPLE = 10_000  # the most recent executions the quantiles are computed from


class HitlCollector:
    """Collects on every scrape; nothing is kept between scrapes."""

    def collect(self):
        now = timezone.now()
        since = now - timedelta(seconds=settings.METRICS_WINDOW_SECONDS)
        yield from self._queues(now)
        decisions = GaugeMetricFamily("hitlgov_decisions_recent", "Proposals decided in the recent window, by outcome",
                                      labels=["outcome"])
        counted = dict(Proposal.objects.filter(created_at__gte=since).exclude(outcome="")
                       .values_list("outcome").annotate(n=Count("pk")).order_by())
        for outcome in ("auto", "review", "triage", "block"):
            decisions.add_metric([outcome], counted.get(outcome, 0))
        yield decisions
        yield from self._executions(since)

    def _queues(self, now):
        depth = GaugeMetricFamily("hitlgov_review_queue_depth", "Active review tiers, by group", labels=["group"])
        breached = GaugeMetricFamily("hitlgov_sla_breached_tiers", "Active review tiers past their due time, by group",
                                     labels=["group"])
        rows = (ReviewTask.objects.filter(state=ReviewTask.State.ACTIVE).values_list("group__name")
                .annotate(n=Count("pk"), late=Count("pk", filter=Q(due_at__lt=now))).order_by())
        for group, n, late in rows:
            depth.add_metric([group], n)
            breached.add_metric([group], late)
        yield depth
        yield breached

    def _executions(self, since):
        recent = Execution.objects.filter(started_at__gte=since, kind=Execution.Kind.EXECUTE)
        errors = GaugeMetricFamily("hitlgov_execution_errors_recent", "Executions that failed in the recent window")
        errors.add_metric([], recent.filter(outcome=Execution.Outcome.FAILED).count())
        yield errors
        took = sorted(ms for ms in recent.filter(duration_ms__isnull=False).order_by("-started_at")
                      .values_list("duration_ms", flat=True)[:LATENCY_SAMPLE])
        latency = GaugeMetricFamily("hitlgov_execution_seconds", "Execution time in the recent window, by quantile",
                                    labels=["quantile"])
        for q in (0.5, 0.9, 0.99):
            latency.add_metric([str(q)], took[min(len(took) - 1, int(q * len(took)))] / 1000 if took else 0.0)
        yield latency
        count = GaugeMetricFamily("hitlgov_execution_seconds_count", "Executions finished in the recent window")
        count.add_metric([], len(took))
        yield count


def metrics(request: HttpRequest) -> HttpResponse:
    token = settings.METRICS_TOKEN
    if token:
        given = request.META.get("HTTP_AUTHORIZATION", "").removeprefix("Bearer ").strip()
        if not hmac.compare_digest(given.encode(), token.encode()):
            return HttpResponse("metrics need the METRICS_TOKEN bearer token\n", status=401, content_type="text/plain")
    registry = CollectorRegistry(auto_describe=False)
    registry.register(HitlCollector())
    return HttpResponse(generate_latest(registry), content_type=CONTENT_TYPE_LATEST)
