"""Circuit breakers: an agent whose recent work humans keep rejecting is switched off automatically.

A matrix judges each proposal alone; a breaker watches the agent. After each rejection
(`approvals.services` calls `evaluate_breakers` once the verdict is committed) every enabled
breaker covering the agent looks at its most recent reviewed proposals; at or above the
threshold it engages an agent kill switch that names the breaker and the figures, through
`policies.services.engage_switch`, so it is audited like any switch and a person releases it.

A breaker counts only proposals created after its last switch for the agent was released:
the person who released it judged that history, and it must not trip again on it at once.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from django.db import transaction
from django.db.models import Max, Q

from policies.models import CircuitBreaker, KillSwitch
from policies.services import engage_switch

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Reading:
    """A breaker's view of one agent: rejected of the reviewed proposals it looked at."""

    rejected: int
    reviewed: int

    @property
    def rate(self) -> float:
        return self.rejected / self.reviewed if self.reviewed else 0.0

    def trips(self, breaker: CircuitBreaker) -> bool:
        return self.reviewed >= breaker.min_sample and self.rate >= breaker.threshold


def evaluate_breakers(agent: str) -> list[KillSwitch]:
    """Engage the switches this agent's recent rejections call for; returns the ones engaged now.

    Runs after the reviewer's verdict is committed, so a failure here is logged rather than
    raised: the verdict stands either way, and the next rejection evaluates again.
    """
    if not agent:
        return []
    try:
        breakers = CircuitBreaker.objects.filter(enabled=True).filter(Q(agent="") | Q(agent=agent)).order_by("pk")
        return [switch for breaker in breakers if (switch := _evaluate(breaker, agent)) is not None]
    except Exception:
        log.exception("circuit breakers for agent %s could not be evaluated", agent)
        return []


def reading(breaker: CircuitBreaker, agent: str) -> Reading:
    """The agent's rejections among its last `window` reviewed proposals (since the breaker was last reset)."""
    from approvals.facts import DECIDED  # approvals imports policies: import lazily
    from approvals.models import Proposal, Status

    reviewed = Proposal.objects.filter(agent=agent, status__in=DECIDED, outcome__in=("review", "triage"))
    if breaker.connector:
        reviewed = reviewed.filter(connector__slug=breaker.connector)
    reset = _last_release(breaker, agent)
    if reset is not None:
        reviewed = reviewed.filter(created_at__gt=reset)
    statuses = list(reviewed.order_by("-created_at").values_list("status", flat=True)[: breaker.window])
    return Reading(rejected=sum(1 for s in statuses if s == Status.REJECTED), reviewed=len(statuses))


def _last_release(breaker: CircuitBreaker, agent: str):
    released = KillSwitch.objects.filter(breaker=breaker, scope="agent", value=agent, engaged=False)
    return released.aggregate(at=Max("changed_at"))["at"]


@transaction.atomic
def _evaluate(breaker: CircuitBreaker, agent: str) -> KillSwitch | None:
    # Lock the breaker: two rejections committed together must not engage two switches.
    breaker = CircuitBreaker.objects.select_for_update().get(pk=breaker.pk)
    if KillSwitch.objects.filter(breaker=breaker, scope="agent", value=agent, engaged=True).exists():
        return None
    seen = reading(breaker, agent)
    if not seen.trips(breaker):
        return None
    return engage_switch(scope="agent", value=agent, mode=breaker.mode, reason=reason(breaker, seen), breaker=breaker)


def reason(breaker: CircuitBreaker, seen: Reading) -> str:
    """E.g. 'circuit breaker refund-bot-quality: 6/10 recent proposals rejected (60% >= 50%)'."""
    where = f" on {breaker.connector}" if breaker.connector else ""
    return (f"circuit breaker {breaker.name}: {seen.rejected}/{seen.reviewed} recent proposals{where} rejected "
            f"({seen.rate:.0%} >= {breaker.threshold:.0%})")
