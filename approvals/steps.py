"""The six steps of a governed change (seed 000's Salesforce flow), read off one proposal.

1 contextual data analysis (what the agent saw), 2 AI recommendation (what it proposes and why),
3 policy-based validation (the matrix's decision), 4 human review and approval (tiers and
verdicts, or the alert / after-the-fact review), 5 controlled execution (the exactly-once write),
6 centralised audit logging (the history rows). The admin shows them above the thread.
"""

from __future__ import annotations

from dataclasses import dataclass

from approvals.models import Proposal, Status


@dataclass(frozen=True)
class Step:
    number: int
    name: str
    state: str  # "done", "waiting", "not needed"
    detail: str


def six_steps(proposal: Proposal) -> list[Step]:
    return [_analysis(proposal), _recommendation(proposal), _validation(proposal), _review(proposal),
            _execution(proposal), _audit(proposal)]


def _analysis(proposal: Proposal) -> Step:
    seen = [f"{len(proposal.evidence)} evidence item(s)"] + ([f"observed {', '.join(sorted(proposal.observed))}"]
                                                            if proposal.observed else [])
    return Step(1, "Contextual data analysis", "done", "; ".join(seen))


def _recommendation(proposal: Proposal) -> Step:
    fields = ", ".join(sorted(proposal.changes)) or "no field"
    return Step(2, "AI recommendation", "done", f"{proposal.action} ({fields}) at confidence {proposal.confidence}: "
                f"{proposal.rationale or 'no rationale'}")


def _validation(proposal: Proposal) -> Step:
    decision = proposal.decision or {}
    if not decision:
        return Step(3, "Policy-based validation", "waiting", "not decided yet")
    rules = ", ".join(decision.get("rules") or []) or "-"
    return Step(3, "Policy-based validation", "done",
                f"matrix v{decision.get('matrix_version')}: {decision.get('outcome')} by {rules}")


def _review(proposal: Proposal) -> Step:
    tasks = list(proposal.review_tasks.all())  # the decision page read them with their groups
    task = getattr(proposal, "oversight", None)
    if tasks:
        parts = [f"{t.group.name} {t.state}" for t in tasks]
        waiting = proposal.status == Status.PENDING_REVIEW
        return Step(4, "Human review and approval", "waiting" if waiting else "done", " -> ".join(parts))
    if task is not None:
        return Step(4, "Human review and approval", "waiting" if task.is_open else "done",
                    f"{task.get_kind_display()} by {task.group.name}: {task.get_state_display()}")
    return Step(4, "Human review and approval", "not needed", f"the policy decided {proposal.outcome or '-'}")


def _execution(proposal: Proposal) -> Step:
    if proposal.outcome == "assisted":
        return Step(5, "Controlled execution", "not needed", "a recommendation: people act, nothing is written")
    ran = list(proposal.executions.all())  # in their model's order: started_at, id
    if not ran:
        return Step(5, "Controlled execution", "waiting", f"proposal {proposal.status}")
    last = ran[-1]
    return Step(5, "Controlled execution", "done", f"{last.kind} attempt {last.attempt}: {last.outcome}")


def _audit(proposal: Proposal) -> Step:
    return Step(6, "Centralised audit logging", "done", f"{proposal.history.count()} history record(s); see the thread")
