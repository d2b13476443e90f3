"""What would a matrix version have decided? Replays stored proposals against it, changing nothing.

Each proposal stores the facts its decision saw (`decision["facts"]`), so a draft can be
judged on real traffic before it is published: outcome counts before and after, review
workload per group before and after, and every proposal whose outcome would change.

"Before" is what was stored. "After" is the version's decision on the same facts, which
include the circumstances the matrix does not control (a failed preview, a person's edit, a
release to review), under the kill switches that applied then (named in the stored decision):
a difference is the matrix's doing, and replaying the live version reproduces production. Budget usage is what the stored facts say; a budget
the version adds has no recorded usage, and the result counts those proposals.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from typing import Any

from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from policies import engine
from policies.matrices import to_spec
from policies.models import ApprovalMatrix, SimulationRun

PROGRESS_EVERY = 200  # proposals between progress writes
CHANGED_LIMIT = 1000  # changed proposals listed in a result; all are counted
STALE_AFTER = timedelta(minutes=10)  # a running run without progress for this long lost its worker
_ROW_FIELDS = ("pk", "outcome", "preview_error", "facts", "tiers", "rules", "switches", "stored_outcome", "sampled")


class RunLost(Exception):
    """Another worker took the run over (this one was presumed dead): stop without writing."""


# ---------------------------------------------------------------------------- choosing proposals


RowSource = Callable[[datetime | None, datetime | None, int | None, int | None], tuple[int, Iterator[tuple]]]
_row_source: RowSource | None = None


def use_row_source(source: RowSource) -> None:
    """Where stored decisions come from: the approvals app registers its reader when Django starts,
    so this module replays rows without importing the app that stores them.

    A source takes (since, until, sample, seed) and returns (how many, an iterator of rows
    (pk, outcome, preview_error, facts, tiers, rules, switches, stored outcome[, stored sampled])).
    """
    global _row_source
    _row_source = source


def select_rows(
    since: datetime | None = None, until: datetime | None = None, sample: int | None = None, seed: int | None = None,
) -> tuple[int, Iterator[tuple]]:
    """How many stored decisions, and an iterator over their rows: all in the period, or a random sample."""
    if _row_source is None:
        raise RuntimeError("no stored decisions to replay: the approvals app registers them when it starts")
    return _row_source(since, until, sample, seed)


# ---------------------------------------------------------------------------- replaying


def _switch(text: str) -> engine.SwitchState | None:
    """A switch back from its stored description ("connector=helpdesk: block", "global: force_review")."""
    where, _, mode = text.rpartition(": ")
    scope, _, value = where.partition("=")
    try:
        return engine.SwitchState(scope=scope, value=value, mode=mode)
    except ValueError:
        return None


def _workload(tiers: list[dict[str, Any]] | tuple[engine.Tier, ...]) -> Counter:
    """Approvals a review asks of each group (for mode "all", its quorum stands in for every member)."""
    load: Counter = Counter()
    for tier in tiers:
        group, required = (tier["group"], tier["required"]) if isinstance(tier, dict) else (tier.group, tier.required)
        load[group] += required
    return load


def _watching(outcome: str, tiers: list[dict[str, Any]] | tuple[engine.Tier, ...], sampled: bool) -> Counter:
    """The people-work that is not an approval: an alert (assisted) or an after-the-fact review
    (on_the_loop work the rule sampled), for the first tier's group."""
    if not tiers or not (outcome == "assisted" or (outcome == "on_the_loop" and sampled)):
        return Counter()
    first = tiers[0]
    return Counter({first["group"] if isinstance(first, dict) else first.group: 1})


class Replay:
    """Accumulates a simulation: feed it stored rows, read the summary from `result()`."""

    def __init__(self, matrix: engine.CompiledMatrix) -> None:
        self.matrix = matrix
        self.started = time.monotonic()
        self.considered = self.simulated = self.no_facts = self.unreadable = self.changed_total = 0
        self.before, self.after, self.moves = Counter(), Counter(), Counter()
        self.load_before, self.load_after = Counter(), Counter()
        self.watch_before, self.watch_after = Counter(), Counter()  # alerts and after-the-fact reviews per group
        self.budgets_without_usage: Counter = Counter()
        self.changed: list[dict[str, Any]] = []
        self.switch_cache: dict[tuple[str, ...], tuple[engine.SwitchState, ...]] = {}

    def add(self, row: tuple) -> None:
        pk, outcome, preview_error, facts_data, tiers, rules, switches, stored_outcome, *more = row
        stored_sampled = more[0] if more else None
        self.considered += 1
        if not isinstance(facts_data, dict):
            self.no_facts += 1  # decided while no matrix was live, or before facts were stored
            return
        try:
            facts = engine.facts_from_dict(facts_data)
        except engine.MatrixError:
            self.unreadable += 1
            return
        before = stored_outcome or outcome
        decision = engine.decide(facts, self.matrix, self._switches(switches))
        after = decision.outcome
        self.simulated += 1
        self.before[before] += 1
        self.after[after] += 1
        if before == "review":
            self.load_before.update(_workload(tiers or []))
        if after == "review":
            self.load_after.update(_workload(decision.tiers))
        self.watch_before.update(_watching(before, tiers or [], stored_sampled is not False))
        self.watch_after.update(_watching(after, decision.tiers, bool(decision.sampled)))
        for budget in engine.applicable_budgets(facts, self.matrix):
            if budget.name not in facts.usage:
                self.budgets_without_usage[budget.name] += 1
        if after != before:
            self._changed(pk, before, after, rules, decision)

    def _switches(self, described: list[str] | None) -> tuple[engine.SwitchState, ...]:
        key = tuple(described or ())
        if key not in self.switch_cache:
            self.switch_cache[key] = tuple(s for s in map(_switch, key) if s is not None)
        return self.switch_cache[key]

    def _changed(self, pk: Any, before: str, after: str, rules: list[str] | None, decision: engine.Decision) -> None:
        self.changed_total += 1
        self.moves[f"{before}->{after}"] += 1
        if len(self.changed) < CHANGED_LIMIT:
            self.changed.append({
                "id": str(pk), "before": before, "after": after, "before_rules": list(rules or []),
                "rules": list(decision.rules), "switches": list(decision.switches),
            })

    def result(self) -> dict[str, Any]:
        def counts(counter: Counter) -> dict[str, int]:
            return {outcome: counter.get(outcome, 0) for outcome in engine.OUTCOMES}

        groups = sorted(set(self.load_before) | set(self.load_after))
        return {
            "matrix_version": self.matrix.version,
            "considered": self.considered,
            "simulated": self.simulated,
            "skipped_no_facts": self.no_facts,
            "skipped_unreadable_facts": self.unreadable,
            "outcomes": {"before": counts(self.before), "after": counts(self.after)},
            "moves": dict(sorted(self.moves.items())),
            "workload": {
                "before": {g: self.load_before.get(g, 0) for g in groups},
                "after": {g: self.load_after.get(g, 0) for g in groups},
            },
            # What moving work to on-the-loop or assisted saves: approvals before it runs, and what it costs instead.
            "review_saved": sum(self.load_before.values()) - sum(self.load_after.values()),
            "oversight": {
                "before": dict(sorted(self.watch_before.items())), "after": dict(sorted(self.watch_after.items())),
            },
            "budgets_without_usage": dict(sorted(self.budgets_without_usage.items())),
            "changed_total": self.changed_total,
            "changed": self.changed,
            "changed_listed": len(self.changed),
            "seconds": round(time.monotonic() - self.started, 3),
        }


def simulate(
    spec: engine.MatrixSpec, *, since: datetime | None = None, until: datetime | None = None,
    sample: int | None = None, seed: int | None = None, progress: Callable[[int, int], None] | None = None,
) -> dict[str, Any]:
    """Replay the chosen proposals against `spec`; `progress(processed, total)` is called every few hundred.

    Reads proposals and writes nothing. Raises MatrixError if the spec is not valid.
    """
    replay = Replay(engine.compile_matrix(spec))
    total, rows = select_rows(since, until, sample, seed)
    if progress:
        progress(0, total)
    for row in rows:
        replay.add(row)
        if progress and replay.considered % PROGRESS_EVERY == 0:
            progress(replay.considered, total)
    if progress:
        progress(replay.considered, total)
    return replay.result()


# ---------------------------------------------------------------------------- runs


def start_run(
    matrix: ApprovalMatrix, user=None, *, since: datetime | None = None, until: datetime | None = None,
    sample: int | None = None,
) -> SimulationRun:
    """Queue a run on the Celery workers once the surrounding transaction commits.

    The queued row is the durable record: a broker that refuses the message is logged, never an
    error for the board member, and the beat sweep sends every run still queued after a grace
    period again (`unstarted_runs`); the claim makes a second delivery harmless.
    """
    from policies.tasks import run_simulation

    run = SimulationRun(matrix=matrix, since=since, until=until, sample_size=sample, created_by=user)
    run.full_clean()
    run.save()
    transaction.on_commit(lambda: run_simulation.delay(run.pk), robust=True)  # logged, never raised
    return run


def unstarted_runs(older_than: datetime) -> list[int]:
    """Runs queued before `older_than` that no worker has claimed: their message was lost or never sent."""
    queued = SimulationRun.objects.filter(status=SimulationRun.State.QUEUED, created_at__lt=older_than)
    return list(queued.order_by("created_at").values_list("pk", flat=True)[:100])


def last_days(matrix: ApprovalMatrix, user, days: int = 30) -> SimulationRun:
    return start_run(matrix, user, since=timezone.now() - timedelta(days=days))


def claim(run_id: int) -> datetime | None:
    """Take a queued run (or one whose worker went silent) for this worker; the start time is the claim token.

    A conditional update, so a redelivered task finds the run taken and does nothing.
    """
    now = timezone.now()
    takeable = Q(status=SimulationRun.State.QUEUED) | Q(status=SimulationRun.State.RUNNING, heartbeat_at__lt=now - STALE_AFTER)
    claimed = SimulationRun.objects.filter(takeable, pk=run_id).update(
        status=SimulationRun.State.RUNNING, started_at=now, heartbeat_at=now, processed=0, error="",
    )
    return now if claimed else None


def execute(run_id: int) -> str:
    """Claim and carry out a run, recording progress, the result or the error. Returns the final status."""
    token = claim(run_id)
    if token is None:
        status = SimulationRun.objects.filter(pk=run_id).values_list("status", flat=True).first()
        return "busy" if status == SimulationRun.State.RUNNING else "nothing to do"
    run = SimulationRun.objects.select_related("matrix").get(pk=run_id)
    mine = SimulationRun.objects.filter(pk=run_id, status=SimulationRun.State.RUNNING, started_at=token)

    def progress(processed: int, total: int) -> None:
        if not mine.update(processed=processed, total=total, heartbeat_at=timezone.now()):
            raise RunLost(f"simulation run {run_id} was taken over by another worker")

    try:
        result = simulate(to_spec(run.matrix), since=run.since, until=run.until, sample=run.sample_size,
                          seed=run.pk, progress=progress)
    except RunLost:
        return "lost"
    except Exception as exc:  # an invalid draft or a database error: the board sees why on the run
        mine.update(status=SimulationRun.State.FAILED, error=f"{type(exc).__name__}: {exc}", finished_at=timezone.now())
        return SimulationRun.State.FAILED
    mine.update(status=SimulationRun.State.DONE, result=result, finished_at=timezone.now())
    return SimulationRun.State.DONE


def seconds_until_stale(run_id: int) -> float:
    """When a run another worker holds may be taken over, should that worker have died."""
    heartbeat = SimulationRun.objects.filter(pk=run_id).values_list("heartbeat_at", flat=True).first()
    if heartbeat is None:
        return 0.0
    return max(1.0, (heartbeat + STALE_AFTER - timezone.now()).total_seconds() + 1)


# ---------------------------------------------------------------------------- reading a result


def summary_text(result: dict[str, Any]) -> str:
    """The result as a terminal shows it."""
    lines = [
        f"matrix v{result['matrix_version']}: {result['simulated']} of {result['considered']} proposals replayed"
        f" ({result['skipped_no_facts']} without stored facts, {result['skipped_unreadable_facts']} unreadable)"
        f" in {result['seconds']}s",
        "",
        f"{'outcome':10}{'before':>10}{'after':>10}{'change':>10}",
    ]
    for outcome in engine.OUTCOMES:
        before, after = result["outcomes"]["before"][outcome], result["outcomes"]["after"][outcome]
        lines.append(f"{outcome:10}{before:>10}{after:>10}{after - before:>+10}")
    workload = result["workload"]
    if workload["before"]:
        lines += ["", f"{'review approvals':20}{'before':>10}{'after':>10}{'change':>10}"]
        for group in workload["before"]:
            before, after = workload["before"][group], workload["after"][group]
            lines.append(f"{group:20}{before:>10}{after:>10}{after - before:>+10}")
    if "review_saved" in result:
        before, after = sum(result["oversight"]["before"].values()), sum(result["oversight"]["after"].values())
        lines += ["", f"review approvals saved: {result['review_saved']:+d}; "
                      f"alerts and after-the-fact reviews: {before} before, {after} after"]
    for name, count in result["budgets_without_usage"].items():
        lines.append(f"warning: budget {name} has no recorded usage for {count} proposals (treated as not exceeded)")
    lines += ["", f"{result['changed_total']} proposals change outcome"]
    lines += [f"  {move}: {count}" for move, count in result["moves"].items()]
    for item in result["changed"][:50]:
        lines.append(f"  {item['id']}: {item['before']} -> {item['after']} ({', '.join(item['rules'])})")
    if result["changed_total"] > 50:
        lines.append(f"  ... and {result['changed_total'] - 50} more")
    return "\n".join(lines) + "\n"
