"""Verify the decision log: the chain, every history table against it, and the anchors.

Problems are reported in order with their position in the chain:

- an event whose content no longer matches its hash was edited;
- a position that repeats was inserted, a position that is skipped is missing, and an event whose
  `prev_hash` is not its predecessor's hash follows an edited-and-rehashed, inserted or removed one;
- a history row no event records was inserted, a recorded one that is gone is missing, one whose
  digest differs was edited (a purged payload is fine when a retention event recorded the purge);
- an anchor beyond the head means the tail was truncated; one whose hash differs, rewritten.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

from django.apps import apps
from django.db import models

from ledger import anchors as anchor_file
from ledger.chain import GENESIS, event_hash, history_digests
from ledger.models import Event

CHUNK = 2000


@dataclass(frozen=True)
class Problem:
    kind: str  # edited | inserted | missing | truncated
    what: str  # "event", or the history model's label
    position: int | None  # the chain position concerned
    detail: str

    def __str__(self) -> str:
        where = f" at position {self.position}" if self.position is not None else ""
        return f"{self.kind} {self.what}{where}: {self.detail}"


@dataclass
class Report:
    events: int = 0
    history_rows: int = 0
    head_position: int = 0
    head_hash: str = GENESIS
    problems: list[Problem] = field(default_factory=list)

    @property
    def intact(self) -> bool:
        return not self.problems


def verify() -> Report:
    report = Report()
    recorded: dict[tuple[str, int], tuple[dict, int]] = {}
    purged: dict[tuple[str, int], str] = {}
    for problem in _walk_chain(report, recorded, purged):
        report.problems.append(problem)
    for problem in _walk_history(report, recorded, purged):
        report.problems.append(problem)
    report.problems += _check_anchors(report)
    return report


def _walk_chain(report: Report, recorded: dict, purged: dict) -> Iterator[Problem]:
    expected, prev_hash, before_prev = 1, GENESIS, None
    for event in Event.objects.order_by("position", "id").iterator(chunk_size=CHUNK):
        report.events += 1
        if event.position < expected:
            yield Problem("inserted", "event", event.position, f"a second event (id {event.id}) at this position")
            continue
        if event.position > expected:
            span = f"{expected}" if event.position == expected + 1 else f"{expected}-{event.position - 1}"
            yield Problem("missing", "event", expected, f"position(s) {span} are absent")
        elif event.prev_hash != prev_hash:
            yield _broken_link(event, before_prev)
        if event_hash(event.prev_hash, event) != event.hash:
            yield Problem("edited", "event", event.position, "its content does not match its hash")
        for record in event.records:
            if "history_id" in record:
                recorded[(record["model"], record["history_id"])] = (record, event.position)
            for model, history_id, payload in record.get("purged", ()):
                purged[(model, history_id)] = payload
        expected, before_prev, prev_hash = event.position + 1, prev_hash, event.hash
        report.head_position, report.head_hash = event.position, event.hash


def _broken_link(event: Event, before_prev: str | None) -> Problem:
    """The event does not link to its predecessor: which one is the intruder, or what went missing."""
    if event.prev_hash == before_prev:
        return Problem("inserted", "event", event.position - 1, "the event after it links past it")
    return Problem("missing", "event", event.position,
                   "it does not link to the event before it: events were removed here, or the one before was rewritten")


def history_models() -> list[type[models.Model]]:
    return sorted((m for m in apps.get_models() if hasattr(m, "instance_type")), key=lambda m: m._meta.label_lower)


def _walk_history(report: Report, recorded: dict, purged: dict) -> Iterator[Problem]:
    for model in history_models():
        label = model._meta.label_lower
        for row in model.objects.order_by("pk").iterator(chunk_size=CHUNK):
            report.history_rows += 1
            entry = recorded.pop((label, row.pk), None)
            if entry is None:
                yield Problem("inserted", label, None, f"history row {row.pk} is recorded by no event")
                continue
            record, position = entry
            digests = history_digests(row)
            if digests["digest"] != record["digest"]:
                yield Problem("edited", label, position, f"history row {row.pk} differs from what the event recorded")
            elif digests.get("payload") not in (record.get("payload"), purged.get((label, row.pk))):
                yield Problem("edited", label, position, f"history row {row.pk}'s evidence differs from what was recorded")
    for (label, history_id), (_, position) in sorted(recorded.items(), key=lambda item: item[1][1]):
        yield Problem("missing", label, position, f"history row {history_id} is gone")


def _check_anchors(report: Report) -> list[Problem]:
    problems = []
    for anchor in anchor_file.read_anchors():
        if anchor.position > report.head_position:
            problems.append(Problem("truncated", "event", anchor.position,
                                    f"anchored at {anchor.at}, but the log ends at position {report.head_position}"))
            continue
        event = Event.objects.filter(position=anchor.position).values_list("hash", flat=True).first()
        if event is not None and event != anchor.hash:
            problems.append(Problem("edited", "event", anchor.position, f"its hash differs from the anchor of {anchor.at}"))
    return problems


def adopt_unrecorded() -> int:
    """Record, in one event, every history row no event records: rows written before the log existed.

    For a database that predates the decision log, once. The event says so, so adopting rows later
    (covering up an inserted one) stays visible in the log itself.
    """
    from django.db import transaction

    from ledger import capture
    from ledger.chain import history_entry

    recorded = {(r["model"], r["history_id"]) for event in Event.objects.only("records").iterator(chunk_size=CHUNK)
                for r in event.records if "history_id" in r}
    with transaction.atomic(durable=True):
        entries = [history_entry(row) for model in history_models()
                   for row in model.objects.order_by("pk").iterator(chunk_size=CHUNK)
                   if (model._meta.label_lower, row.pk) not in recorded]
        if entries:
            capture.add_records(entries, f"adopted {len(entries)} history rows written before the decision log")
    return len(entries)
