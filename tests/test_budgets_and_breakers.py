"""Budgets cap what an agent does in a window; circuit breakers switch off an agent humans keep rejecting."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta
from decimal import Decimal
import pytest
from django.core.exceptions import ValidationError
from django.utils import timezone

from approvals import execution, services
from approvals.models import Proposal, Status
from policies import engine
from approvals.services import evaluate_breakers
from policies.models import CircuitBreaker, KillSwitch
from policies.services import release_switch
from tests.conftest import SMALL_REFUND, reload, rule, tier
from tests.test_matrix_yaml_commands import board_spec

# No matrix is published up front: each test publishes the one it is about before it submits.
# `submit` sends a small, confident refund unless the test says otherwise.
pytestmark = [pytest.mark.matrix(None), pytest.mark.proposal(**SMALL_REFUND)]

MID_REFUND = {"amount": "120.00", "confidence": 0.93, "changes": {"status": "refunded", "refund_amount": "120.00"}}


def budgeted_spec() -> engine.MatrixSpec:
    """The board's matrix with two caps on refund-bot: 3 refunds a day (then finance looks), 100 USD a day (then block)."""
    spec = board_spec()
    budgets = (
        engine.Budget("refund-bot-refunds-per-day", "count", Decimal("3"), 1440, actions=frozenset({"refund"}),
                      agents=frozenset({"refund-bot"})),
        engine.Budget("refund-bot-amount-per-day", "amount", Decimal("100.00"), 1440, actions=frozenset({"refund"}),
                      agents=frozenset({"refund-bot"})),
        engine.Budget("all-agents-refunds-per-day", "count", Decimal("5"), 1440, actions=frozenset({"refund"})),
    )
    rules = (
        rule("too-many-refunds", "review", budget_exceeded="refund-bot-refunds-per-day", tiers=(tier("finance"),)),
        rule("too-much-refunded", "block", budget_exceeded="refund-bot-amount-per-day"),
        rule("fleet-refund-cap", "review", budget_exceeded="all-agents-refunds-per-day", tiers=(tier("finance", 2),)),
    )
    return replace(spec, rules=(*spec.rules, *rules), budgets=budgets)


@pytest.fixture
def budgeted(publish, submit):
    publish(budgeted_spec())
    return submit


def small_refund_cap_only(publish) -> None:
    """Only the count cap: the amount cap would block before the count cap is reached."""
    spec = budgeted_spec()
    publish(replace(spec, rules=tuple(r for r in spec.rules if r.name not in ("too-much-refunded", "fleet-refund-cap"))))


# ---- budgets ---------------------------------------------------------------------------------


def test_refunds_over_the_daily_count_cap_go_to_finance(publish, submit):
    small_refund_cap_only(publish)
    first_three = [submit(amount="10.00") for _ in range(3)]

    fourth = submit(amount="10.00")

    assert [p.outcome for p in first_three] == ["auto", "auto", "auto"]
    assert (fourth.outcome, fourth.decision["rules"]) == ("review", ["too-many-refunds"])
    assert services.active_task(fourth).group.name == "finance"
    assert fourth.decision["facts"]["usage"]["refund-bot-refunds-per-day"] == "4"
    assert "budget refund-bot-refunds-per-day used 4 > cap 3" in fourth.status_reason


def test_refunds_over_the_daily_amount_cap_are_blocked(budgeted):
    first, second = budgeted(), budgeted()  # 45 + 45 = 90 USD

    third = budgeted()  # 135 USD > 100

    assert (first.outcome, second.outcome) == ("auto", "auto")
    assert (third.outcome, third.status) == ("block", Status.BLOCKED)
    assert third.decision["facts"]["usage"]["refund-bot-amount-per-day"] == "135.00"


def test_a_budget_scoped_to_one_agent_leaves_other_agents_alone(publish, submit):
    small_refund_cap_only(publish)
    for _ in range(4):
        submit(amount="10.00")

    other = submit(amount="10.00", agent="partner-refund-bot")

    assert other.outcome == "auto"
    assert "refund-bot-refunds-per-day" not in other.decision["facts"]["usage"]


def test_a_budget_naming_no_agent_is_shared_by_every_agent(budgeted):
    for n in range(5):
        assert budgeted(amount="1.00", agent=f"bot-{n}").outcome == "auto"

    sixth = budgeted(amount="1.00", agent="bot-5")

    assert (sixth.outcome, sixth.decision["rules"]) == ("review", ["fleet-refund-cap"])


def test_rejected_and_old_proposals_do_not_use_up_a_budget(publish, submit):
    small_refund_cap_only(publish)
    used = [submit(amount="10.00") for _ in range(3)]
    Proposal.objects.filter(pk=used[0].pk).update(status=Status.REJECTED)
    Proposal.objects.filter(pk=used[1].pk).update(created_at=timezone.now() - timedelta(days=2))

    fourth = submit(amount="10.00")

    assert fourth.outcome == "auto"
    assert fourth.decision["facts"]["usage"]["refund-bot-refunds-per-day"] == "2"


# ---- circuit breakers --------------------------------------------------------------------------


@pytest.fixture
def reviewed(publish, submit, people, django_capture_on_commit_callbacks):
    """Submit a 120 USD refund (default review by triage) and decide it as a reviewer would, breakers included."""
    publish(board_spec())

    def _reviewed(verdict: str, **overrides) -> Proposal:
        proposal = submit(**{**MID_REFUND, **overrides})
        assert proposal.status == Status.PENDING_REVIEW
        with django_capture_on_commit_callbacks(execute=True):
            services.record_verdict(proposal.pk, people.triager, verdict, "wrong customer" if verdict == "reject" else "")
        return reload(proposal)

    _reviewed.submit = submit
    return _reviewed


def breaker(**overrides) -> CircuitBreaker:
    fields = {"name": "refund-quality", "window": 10, "min_sample": 5, "threshold": 0.6, "mode": "force_review", **overrides}
    made = CircuitBreaker(**fields)
    made.full_clean()
    made.save()
    return made


def agent_switches(agent: str = "refund-bot"):
    return KillSwitch.objects.filter(scope="agent", value=agent, engaged=True)


def test_six_rejections_in_the_last_ten_trip_the_breaker_and_force_review(reviewed):
    tripped = breaker()
    for _ in range(4):
        reviewed("approve")
    for _ in range(5):
        reviewed("reject")
    assert not agent_switches().exists()  # 5/9 = 56% < 60%

    reviewed("reject")  # 6/10

    switch = agent_switches().get()
    assert (switch.mode, switch.breaker) == ("force_review", tripped)
    assert switch.reason == "circuit breaker refund-quality: 6/10 recent proposals rejected (60% >= 60%)"
    assert switch.history.get().history_change_reason == f"engaged: {switch.reason}"
    small = reviewed.submit()
    assert (small.outcome, small.decision["switches"]) == ("review", ["agent=refund-bot: force_review"])


def test_a_breaker_does_not_trip_below_its_minimum_sample(reviewed):
    breaker(min_sample=5, threshold=0.5)

    for _ in range(4):
        reviewed("reject")  # 100%, but only 4 reviewed

    assert not agent_switches().exists()


def test_a_tripped_breaker_engages_one_switch_however_many_rejections_follow(reviewed):
    breaker(min_sample=2, threshold=0.5)

    for _ in range(5):
        reviewed("reject")

    assert KillSwitch.objects.count() == 1


def test_a_breaker_for_any_agent_judges_each_agent_on_its_own_work(reviewed):
    breaker(min_sample=3, threshold=0.5)
    for _ in range(3):
        reviewed("approve", agent="careful-bot")

    for _ in range(3):
        reviewed("reject", agent="sloppy-bot")

    assert [s.value for s in KillSwitch.objects.filter(engaged=True)] == ["sloppy-bot"]


def test_a_breaker_for_one_agent_or_connector_ignores_the_others(reviewed):
    breaker(name="partner-only", agent="partner-bot", min_sample=2, threshold=0.5)
    breaker(name="email-only", connector="email", min_sample=2, threshold=0.5)
    breaker(name="switched-off", min_sample=2, threshold=0.5, enabled=False)

    for _ in range(3):
        reviewed("reject")

    assert not KillSwitch.objects.exists()


def test_a_released_breaker_counts_only_what_happens_after_the_release(reviewed, people):
    breaker(min_sample=3, threshold=0.5)
    for _ in range(3):
        reviewed("reject")
    release_switch(agent_switches().get(), reason="agent fixed", user=people.board1)

    reviewed("reject")  # the three before the release are not counted again: 1 reviewed < 3

    assert not agent_switches().exists()
    reviewed("reject")
    reviewed("reject")
    assert agent_switches().get().reason.startswith("circuit breaker refund-quality: 3/3 recent proposals")


def test_a_block_breaker_also_stops_the_agents_approved_work(reviewed):
    breaker(min_sample=2, threshold=0.5, mode="block")
    waiting = reviewed.submit()  # auto-approved, not started yet
    assert waiting.status == Status.APPROVED

    reviewed("reject")
    reviewed("reject")
    execution.run(waiting.pk)

    assert agent_switches().get().mode == "block"
    assert reload(waiting).status == Status.FAILED
    assert "circuit breaker refund-quality: 2/2" in reload(waiting).status_reason


def test_evaluating_for_an_agent_with_no_history_engages_nothing(db):
    breaker(min_sample=1, threshold=0.0)

    assert evaluate_breakers("never-seen-bot") == []
    assert evaluate_breakers("") == []


def test_breaker_changes_are_audited(db):
    made = breaker()
    made.threshold = 0.8
    made._change_reason = "too jumpy"
    made.save()

    assert [h.threshold for h in made.history.order_by("history_date")] == [0.6, 0.8]
    assert made.history.first().history_change_reason == "too jumpy"


@pytest.mark.parametrize("overrides, field", [
    ({"threshold": 1.5}, "threshold"), ({"threshold": -0.1}, "threshold"), ({"min_sample": 20, "window": 10}, "min_sample"),
    ({"window": 0}, "window"), ({"mode": "pause"}, "mode"),
])
def test_a_breaker_that_could_not_work_is_refused_naming_the_field(db, overrides, field):
    with pytest.raises(ValidationError) as refused:
        breaker(**overrides)

    assert field in refused.value.message_dict
