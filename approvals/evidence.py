"""The oversight evidence pack for a period: what ran automatically, what people decided, how fast,
what they overrode, when someone pulled a stop switch, what went wrong, under which matrix versions,
and the decision log's head hash. One printable HTML report plus the CSVs behind it.

Its sections map to EU AI Act Article 14(4) (a)-(e) (see ARTICLE_14 and docs/audit.md). Every
number is a plain count over the period's proposals (created in [since, until)), so an auditor
can recompute it from the audit export.
"""

from __future__ import annotations

import csv
import io
import statistics
import zipfile
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime

from django.db.models import Max
from django.template.loader import render_to_string

from approvals.models import BreakGlass, Proposal, Review, Status
from ledger import categories
from ledger.models import Event
from policies.models import ApprovalMatrix, KillSwitch

ARTICLE_14 = {
    "a": ("Understand capacities and limitations; monitor operation, detect anomalies",
          "Volumes and outcomes per connector and action; incidents; exception categories per agent and action."),
    "b": ("Remain aware of automation bias",
          "Who reviewed, time to decision, override and rejection rates per connector and action."),
    "c": ("Correctly interpret the output",
          "Each proposal is reviewed against a field-level preview of the live record, the agent's rationale and "
          "evidence, and the rule that routed it; the matrix versions in force and who approved them."),
    "d": ("Decide not to use, disregard, override or reverse the output",
          "Rejections, edits, rollbacks and work closed by hand (break glass), counted and listed."),
    "e": ("Intervene or interrupt (a stop button)",
          "Every kill switch engaged or released in the period: who, when, why."),
}
OUTCOMES = ("auto", "review", "triage", "block")


@dataclass
class Line:
    """One connector and action over the period."""

    connector: str
    action: str
    total: int = 0
    auto: int = 0
    review: int = 0
    triage: int = 0
    block: int = 0
    reviewed: int = 0
    rejected: int = 0
    edited: int = 0
    failed: int = 0
    rolled_back: int = 0
    minutes_to_decision: list[float] = field(default_factory=list)

    @property
    def override_rate(self) -> float | None:
        """Reviewed proposals whose change a person edited or rejected."""
        return round((self.edited + self.rejected) / self.reviewed, 3) if self.reviewed else None

    @property
    def rejection_rate(self) -> float | None:
        return round(self.rejected / self.reviewed, 3) if self.reviewed else None

    @property
    def median_minutes(self) -> float | None:
        return round(statistics.median(self.minutes_to_decision), 1) if self.minutes_to_decision else None


@dataclass
class Pack:
    since: datetime
    until: datetime
    lines: list[Line]
    reviewers: list[dict]
    switches: list[dict]
    incidents: list[dict]
    break_glass: list[dict]
    matrices: list[dict]
    exceptions: list[dict]
    head_position: int
    head_hash: str
    article_14: dict = field(default_factory=lambda: ARTICLE_14)


def build(since: datetime, until: datetime) -> Pack:
    proposals = Proposal.objects.filter(created_at__gte=since, created_at__lt=until).select_related("connector")
    decided_at = dict(Review.objects.filter(proposal__in=proposals).values_list("proposal_id").annotate(last=Max("created_at")))
    lines: dict[tuple[str, str], Line] = {}
    incidents = []
    for p in proposals.order_by("created_at"):
        line = lines.setdefault((p.connector.slug, p.action), Line(p.connector.slug, p.action))
        line.total += 1
        if p.outcome in OUTCOMES:
            setattr(line, p.outcome, getattr(line, p.outcome) + 1)
        if p.pk in decided_at:
            line.reviewed += 1
            line.minutes_to_decision.append((decided_at[p.pk] - p.created_at).total_seconds() / 60)
        line.rejected += p.status == Status.REJECTED
        line.edited += p.edited
        if p.status in (Status.FAILED, Status.ROLLED_BACK):
            line.failed += p.status == Status.FAILED
            line.rolled_back += p.status == Status.ROLLED_BACK
            incidents.append({"proposal": str(p.pk), "connector": p.connector.slug, "action": p.action,
                              "agent": p.agent, "status": p.status, "why": p.status_reason})
    head = Event.objects.order_by("-position").values_list("position", "hash").first() or (0, "")
    return Pack(
        since=since, until=until, lines=sorted(lines.values(), key=lambda l: (l.connector, l.action)),
        reviewers=_reviewers(proposals), switches=_switches(since, until), incidents=incidents,
        break_glass=[{"proposal": str(b.proposal_id), "requested_by": b.requested_by.get_username(),
                      "confirmed_by": b.confirmed_by.get_username(), "reason": b.reason, "at": b.created_at}
                     for b in BreakGlass.objects.filter(created_at__gte=since, created_at__lt=until)
                     .select_related("requested_by", "confirmed_by").order_by("created_at")],
        matrices=_matrices(since, until), exceptions=categories.by_agent_and_action(since, until),
        head_position=head[0], head_hash=head[1],
    )


def _reviewers(proposals) -> list[dict]:
    counts: dict[tuple[str, str], int] = defaultdict(int)
    for username, verdict in Review.objects.filter(proposal__in=proposals).values_list("reviewer__username", "verdict"):
        counts[(username, verdict)] += 1
    people = sorted({name for name, _ in counts})
    return [{"reviewer": name, "approved": counts[(name, "approve")], "rejected": counts[(name, "reject")]} for name in people]


def _switches(since: datetime, until: datetime) -> list[dict]:
    rows = KillSwitch.history.filter(history_date__gte=since, history_date__lt=until).select_related("history_user")
    return [{"at": r.history_date, "scope": r.scope, "value": r.value, "mode": r.mode, "engaged": r.engaged,
             "by": r.history_user.get_username() if r.history_user else "", "why": r.history_change_reason or ""}
            for r in rows.order_by("history_date", "history_id")]


def _matrices(since: datetime, until: datetime) -> list[dict]:
    """The version in force when the period began and every one published during it."""
    published = ApprovalMatrix.objects.filter(published_at__isnull=False, published_at__lt=until).order_by("published_at")
    at_start = published.filter(published_at__lte=since).last()
    chosen = ([at_start] if at_start else []) + list(published.filter(published_at__gt=since))
    name = lambda user: user.get_username() if user else ""  # noqa: E731
    return [{"version": m.version, "published_at": m.published_at, "author": name(m.author),
             "submitted_by": name(m.submitted_by), "published_by": name(m.published_by)} for m in chosen]


# ---- output ---------------------------------------------------------------------------------------

LINE_COLUMNS = ["connector", "action", "total", *OUTCOMES, "reviewed", "rejected", "edited", "override_rate",
                "rejection_rate", "median_minutes", "failed", "rolled_back"]


def line_row(line: Line) -> dict:
    return {name: getattr(line, name) for name in LINE_COLUMNS}


def csv_files(pack: Pack) -> dict[str, str]:
    """File name -> CSV text: the tables the HTML report shows."""
    tables = {
        "outcomes.csv": (LINE_COLUMNS, [line_row(line) for line in pack.lines]),
        "reviewers.csv": (["reviewer", "approved", "rejected"], pack.reviewers),
        "kill_switches.csv": (["at", "scope", "value", "mode", "engaged", "by", "why"], pack.switches),
        "incidents.csv": (["proposal", "connector", "action", "agent", "status", "why"], pack.incidents),
        "break_glass.csv": (["proposal", "requested_by", "confirmed_by", "reason", "at"], pack.break_glass),
        "matrices.csv": (["version", "published_at", "author", "submitted_by", "published_by"], pack.matrices),
        "exceptions.csv": (["agent", "action", "category", "count"], pack.exceptions),
    }
    files = {}
    for name, (columns, rows) in tables.items():
        out = io.StringIO()
        writer = csv.DictWriter(out, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
        files[name] = out.getvalue()
    return files


def html(pack: Pack) -> str:
    return render_to_string("approvals/evidence_pack.html", {"pack": pack, "lines": [line_row(l) for l in pack.lines],
                                                             "columns": LINE_COLUMNS})


def zipped(pack: Pack) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("evidence_pack.html", html(pack))
        for name, text in csv_files(pack).items():
            archive.writestr(name, text)
    return buffer.getvalue()
