"""On-the-loop work and AI-assisted alerts through the services, and the risk facts a submission stores."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest
from django.core.exceptions import PermissionDenied, ValidationError
from django.utils import timezone

from approvals import execution, oversight, risk
from approvals.facts import track_record
from approvals.lifecycle import NotReviewable
from approvals.models import OutboxMessage, OversightTask, Proposal, Status
from policies import engine, simulation
from policies.services import new_draft
from tests.conftest import matrix_spec, reload, rule, sandbox_record, tier

REFUND = {"connectors": ["helpdesk"], "actions": ["refund"]}
ON_THE_LOOP = matrix_spec(
    rule("refunds-watched", "on_the_loop", tiers=(tier("support"),), **REFUND),
    rule("alerts", "assisted", tiers=(tier("sales", escalation_group="finance"),), actions=["flag_deal_risk"]),
    rule("quiet-alerts", "assisted", tiers=(tier("sales"),), actions=["update_account"]),
)
SAMPLED = matrix_spec(rule("refunds-sampled", "on_the_loop", tiers=(tier("support"),), sample_percent=10, **REFUND))
ALERT = {"connector": "crm", "action": "flag_deal_risk", "target": {"type": "opportunity", "id": "O-1"},
         "changes": {"risk": "high"}, "amount": None, "currency": None, "customer_impact": "none"}


def ran(proposal: Proposal) -> Proposal:
    execution.run(proposal.pk)
    return reload(proposal)


# ---- human-on-the-loop ----------------------------------------------------------------------

@pytest.mark.matrix(ON_THE_LOOP)
def test_on_the_loop_refund_runs_at_once_and_waits_in_supports_after_the_fact_queue(submit):
    proposal = submit()
    assert (proposal.status, proposal.outcome, proposal.decision["sampled"]) == (Status.APPROVED, "on_the_loop", True)
    assert OutboxMessage.objects.filter(proposal=proposal).exists()  # queued to run, nobody approved first
    proposal = ran(proposal)
    assert proposal.status == Status.EXECUTED
    assert sandbox_record("A-1001").data["refund_amount"] == "120.00"
    task = proposal.oversight
    assert (task.kind, task.group.name, task.state) == ("after_the_fact", "support", "open")


@pytest.mark.matrix(ON_THE_LOOP)
def test_one_click_rollback_restores_the_record_and_counts_against_the_agent(submit, people):
    proposal = ran(submit())
    result = oversight.roll_back(proposal.pk, people.support1, "refund was for the wrong order")
    assert result.outcome == "rolled_back"
    assert sandbox_record("A-1001").data["refund_amount"] == "0.00"
    assert reload(proposal).status == Status.ROLLED_BACK
    task = OversightTask.objects.get(proposal=proposal)
    assert (task.state, task.decided_by, task.reason) == ("rolled_back", people.support1, "refund was for the wrong order")
    record = track_record("refund-bot")
    assert (record.reviewed, record.rejected, record.overrides_on("refund")) == (1, 1, 1)


@pytest.mark.matrix(ON_THE_LOOP)
def test_confirming_on_the_loop_work_lets_it_stand_and_counts_as_reviewed(submit, people):
    proposal = ran(submit())
    oversight.confirm(proposal.pk, people.support1, "looks right")
    assert reload(proposal).status == Status.EXECUTED
    assert OversightTask.objects.get(proposal=proposal).state == "confirmed"
    assert (track_record("refund-bot").reviewed, track_record("refund-bot").rejected) == (1, 0)
    with pytest.raises(NotReviewable, match="already confirmed"):
        oversight.roll_back(proposal.pk, people.support1, "changed my mind")


@pytest.mark.matrix(ON_THE_LOOP)
def test_only_the_reviewing_group_may_roll_back_and_nothing_changes_when_refused(submit, people):
    proposal = ran(submit())
    with pytest.raises(PermissionDenied, match="only members of support"):
        oversight.roll_back(proposal.pk, people.sales1, "not mine to judge")
    assert sandbox_record("A-1001").data["refund_amount"] == "120.00"
    assert OversightTask.objects.get(proposal=proposal).state == "open"


@pytest.mark.matrix(ON_THE_LOOP)
def test_work_that_has_not_run_cannot_be_confirmed(submit, people):
    proposal = submit()
    with pytest.raises(NotReviewable, match="only work that ran"):
        oversight.confirm(proposal.pk, people.support1)


@pytest.mark.matrix(SAMPLED)
def test_a_ten_percent_sample_reviews_exactly_the_proposals_below_the_point_and_replays_identically(submit):
    proposals = [submit(f"sampled-{n}", target={"type": "order", "id": f"A-{1001 + n % 5}"}) for n in range(30)]
    for proposal in proposals:
        expected = risk.sample_point(proposal) < 0.10
        assert proposal.decision["sampled"] is expected
        assert OversightTask.objects.filter(proposal=proposal).exists() is expected
        assert proposal.status == Status.APPROVED  # sampled or not, it runs
    live = engine.compile_matrix(SAMPLED.__class__(**{**SAMPLED.__dict__, "version": proposals[0].matrix_version}))
    for proposal in proposals:
        replayed = engine.decide(engine.facts_from_dict(proposal.decision["facts"]), live)
        assert replayed.sampled is proposal.decision["sampled"]


@pytest.mark.matrix(matrix_spec(rule("refunds-reviewed", "review", tiers=(tier("support"),), **REFUND)))
def test_simulation_shows_the_review_workload_a_draft_moving_refunds_on_the_loop_saves(submit, people):
    for n in range(4):
        submit(f"refund-{n}", target={"type": "order", "id": f"A-{1001 + n}"})
    draft = new_draft(matrix_spec(rule("refunds-watched", "on_the_loop", tiers=(tier("support"),), **REFUND)), people.board1)
    result = simulation.simulate(simulation.to_spec(draft))
    assert result["moves"] == {"review->on_the_loop": 4}
    assert result["workload"] == {"before": {"support": 4}, "after": {"support": 0}}
    assert result["review_saved"] == 4
    assert result["oversight"] == {"before": {}, "after": {"support": 4}}
    assert "review approvals saved: +4" in simulation.summary_text(result)


# ---- AI-assisted alerts ---------------------------------------------------------------------

@pytest.mark.matrix(ON_THE_LOOP)
def test_a_deal_risk_alert_is_a_recommendation_that_writes_nothing(submit):
    proposal = submit(**ALERT)
    assert (proposal.status, proposal.outcome) == (Status.RECOMMENDED, "assisted")
    assert not OutboxMessage.objects.filter(proposal=proposal).exists()
    task = proposal.oversight
    assert (task.kind, task.group.name, task.escalation_group.name) == ("alert", "sales", "finance")


@pytest.mark.matrix(ON_THE_LOOP)
def test_dismissing_a_false_positive_needs_a_reason_and_counts_in_the_dismiss_rate(submit, people):
    proposal = submit(**ALERT)
    with pytest.raises(ValidationError):
        oversight.dismiss(proposal.pk, people.sales1, " ")
    oversight.dismiss(proposal.pk, people.sales1, "deal is healthy, champion replied yesterday")
    assert reload(proposal).status == Status.DISMISSED
    assert OversightTask.objects.get(proposal=proposal).state == "dismissed"
    record = track_record("refund-bot")
    assert (record.reviewed, record.rejected, record.override_rate) == (1, 1, 1.0)
    assert sandbox_record("O-1", type="opportunity").data.get("risk") is None


@pytest.mark.matrix(ON_THE_LOOP)
def test_an_escalated_alert_can_be_acted_on_by_the_escalation_group(submit, people):
    proposal = submit(**ALERT)
    with pytest.raises(PermissionDenied):
        oversight.mark_done(proposal.pk, people.finance1, "too early")
    oversight.escalate(proposal.pk, people.sales1, "champion left; needs a finance call")
    assert OversightTask.objects.get(proposal=proposal).state == "escalated"
    assert reload(proposal).status == Status.RECOMMENDED
    oversight.mark_done(proposal.pk, people.finance1, "called the CFO")
    assert reload(proposal).status == Status.DONE_ELSEWHERE
    task = OversightTask.objects.get(proposal=proposal)
    assert (task.state, task.decided_by) == ("done", people.finance1)
    assert (track_record("refund-bot").reviewed, track_record("refund-bot").rejected) == (1, 0)


@pytest.mark.matrix(ON_THE_LOOP)
def test_an_alert_without_an_escalation_group_cannot_be_escalated(submit, people):
    proposal = submit(**{**ALERT, "action": "update_account", "target": {"type": "opportunity", "id": "O-1"}})
    with pytest.raises(NotReviewable, match="no escalation group"):
        oversight.escalate(proposal.pk, people.sales1, "real problem")
    assert OversightTask.objects.get(proposal=proposal).state == "open"


# ---- risk facts -----------------------------------------------------------------------------

WATCH = matrix_spec(
    rule("conflicts", "triage", conflicting_record=True),
    rule("overridden", "triage", overrides_min=2),
    rule("unusual", "triage", unusual_amount=True),
    rule("new-agent", "review", tiers=(tier("support"),), first_actions=3),
    default="auto",
)


@pytest.mark.matrix(WATCH)
def test_a_second_open_proposal_on_the_same_order_is_a_conflict(submit):
    first, second = submit("first"), submit("second")
    assert first.decision["facts"]["open_on_record"] == 0
    assert (second.status, second.decision["rules"]) == (Status.TRIAGE, ["conflicts"])
    assert second.decision["facts"]["open_on_record"] == 1
    assert any(e["rule"] == "conflicts" and "1 other open proposal(s)" in e["reason"] for e in second.decision["trace"])


@pytest.mark.matrix(WATCH)
def test_a_record_that_changed_since_the_agent_read_it_is_a_conflict(submit):
    proposal = submit(observed={"refund_amount": "15.00", "status": "delivered"})
    assert proposal.decision["facts"]["record_changed"] == ["refund_amount"]
    assert proposal.status == Status.TRIAGE
    agreed = submit("agreed", target={"type": "order", "id": "A-1002"}, observed={"refund_amount": "0.00"})
    assert agreed.decision["facts"]["record_changed"] == []


@pytest.mark.matrix(WATCH)
def test_repeated_overrides_on_the_action_route_the_next_proposal(submit, people):
    for n in range(2):
        proposal = submit(f"r{n}", target={"type": "order", "id": f"A-{1001 + n}"}, confidence=0.5)
        Proposal.objects.filter(pk=proposal.pk).update(status=Status.REJECTED, outcome="review")
    nxt = submit("next", target={"type": "order", "id": "A-1004"})
    assert nxt.decision["facts"]["overrides"] == 2
    assert "overridden" in nxt.decision["rules"]


@pytest.mark.matrix(WATCH)
def test_a_new_agents_first_actions_are_counted_and_then_it_runs_alone(submit):
    outcomes = [submit(f"n{n}", target={"type": "order", "id": f"A-{1001 + n}"}, agent="fresh-bot").outcome
                for n in range(4)]
    Proposal.objects.update(status=Status.EXECUTED)  # no conflicts on the orders from here on
    assert outcomes == ["review", "review", "review", "auto"]


@pytest.mark.matrix(WATCH)
def test_an_amount_above_the_agents_99th_percentile_is_unusual(submit):
    template = submit("template")
    Proposal.objects.filter(pk=template.pk).update(status=Status.EXECUTED)
    old = timezone.now() - timedelta(days=2)
    rows = [Proposal(integration=template.integration, idempotency_key=f"hist-{n}", agent="refund-bot",
                     connector=template.connector, action="refund", amount=Decimal(10 + n), currency="USD",
                     confidence=0.9, status=Status.EXECUTED, outcome="auto") for n in range(120)]
    Proposal.objects.bulk_create(rows)
    Proposal.objects.filter(idempotency_key__startswith="hist-").update(created_at=old)
    usual = submit("usual", amount="100.00", changes={"status": "refunded", "refund_amount": "100.00"},
                   target={"type": "order", "id": "A-1002"})
    assert Decimal(usual.decision["facts"]["amount_p99"]) == Decimal("128.00")  # 121 amounts: the 120th smallest
    assert usual.outcome == "auto"
    big = submit("big", amount="500.00", changes={"status": "refunded", "refund_amount": "500.00"},
                 target={"type": "order", "id": "A-1003"})
    assert big.decision["rules"] == ["unusual"]


@pytest.mark.matrix(WATCH)
def test_a_burst_far_above_the_agents_usual_rate_is_measured(submit):
    template = submit("template")
    now = timezone.now()
    rows = [Proposal(integration=template.integration, idempotency_key=f"old-{n}", agent="refund-bot",
                     connector=template.connector, action="refund", confidence=0.9, status=Status.EXECUTED)
            for n in range(48)]
    Proposal.objects.bulk_create(rows)
    for n in range(48):  # two a day for 24 days: a usual rate of 1/12 an hour
        Proposal.objects.filter(idempotency_key=f"old-{n}").update(created_at=now - timedelta(hours=2 + 12 * n))
    seen = risk.behaviour(template, now=now)
    # the last hour holds no other proposal: this one makes 1, over a usual 48 in (2 + 12*47 - 1) hours
    assert seen.burst_ratio == round(1 / (48 / (2 + 12 * 47 - 1)), 2)
    assert seen.prior_actions == 48


@pytest.mark.matrix(WATCH)
def test_risk_facts_cost_at_most_three_queries(submit, django_assert_max_num_queries):
    proposal = submit(observed={"refund_amount": "0.00"})
    with django_assert_max_num_queries(3):
        risk.risk_facts(proposal)
