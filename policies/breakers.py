"""Circuit breakers: an agent whose recent work humans keep rejecting is switched off automatically.

A matrix judges each proposal alone; a breaker watches the agent. After each rejection the
approvals side reads the agent's `TrackRecord` for each breaker covering it (the same
definition the `override_rate` fact uses) and hands it to `trip_if_needed`: at or above the
threshold it engages an agent kill switch that names the breaker and the figures, through
`policies.services.engage_switch`, so it is audited like any switch and a person releases it.

A breaker counts only proposals created after its last switch for the agent was released
(`last_reset`): the person who released it judged that history, and it must not trip again on it at once.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from types import MappingProxyType

from django.db import transaction
from django.db.models import Max, Q

from policies.models import CircuitBreaker, KillSwitch
from policies.services import engage_switch


@dataclass(frozen=True)
class TrackRecord:
    """How people judged an agent's recent reviewed proposals: rejected, and rejected or edited, of reviewed."""

    reviewed: int
    rejected: int
    overridden: int = 0
    # Overridden per action: the `overrides` fact (repeated overrides on one action) reads this same record.
    overridden_by_action: Mapping[str, int] = field(default_factory=lambda: MappingProxyType({}))

    def overrides_on(self, action: str) -> int | None:
        """How often people overrode the agent on this action in the record (None with no history)."""
        return self.overridden_by_action.get(action, 0) if self.reviewed else None

    @property
    def rate(self) -> float:
        """Share rejected: what breakers watch."""
        return self.rejected / self.reviewed if self.reviewed else 0.0

    @property
    def override_rate(self) -> float | None:
        """Share rejected or edited: the engine's `override_rate` fact (None with no history)."""
        return self.overridden / self.reviewed if self.reviewed else None

    def trips(self, breaker: CircuitBreaker) -> bool:
        return self.reviewed >= breaker.min_sample and self.rate >= breaker.threshold


def covering(agent: str) -> list[CircuitBreaker]:
    """The enabled breakers that watch this agent."""
    return list(CircuitBreaker.objects.filter(enabled=True).filter(Q(agent="") | Q(agent=agent)).order_by("pk"))


def last_reset(breaker: CircuitBreaker, agent: str) -> datetime | None:
    """When a person last released this breaker's switch for the agent: history before it is judged."""
    released = KillSwitch.objects.filter(breaker=breaker, scope="agent", value=agent, engaged=False)
    return released.aggregate(at=Max("changed_at"))["at"]


@transaction.atomic
def trip_if_needed(breaker: CircuitBreaker, agent: str, seen: TrackRecord) -> KillSwitch | None:
    """Engage the breaker's switch for the agent when its record trips it; the switch engaged now, or None."""
    # Lock the breaker: two rejections committed together must not engage two switches.
    breaker = CircuitBreaker.objects.select_for_update().get(pk=breaker.pk)
    if KillSwitch.objects.filter(breaker=breaker, scope="agent", value=agent, engaged=True).exists():
        return None
    if not seen.trips(breaker):
        return None
    return engage_switch(scope="agent", value=agent, mode=breaker.mode, reason=reason(breaker, seen), breaker=breaker)


def reason(breaker: CircuitBreaker, seen: TrackRecord) -> str:
    """E.g. 'circuit breaker refund-bot-quality: 6/10 recent proposals rejected (60% >= 50%)'."""
    where = f" on {breaker.connector}" if breaker.connector else ""
    return (f"circuit breaker {breaker.name}: {seen.rejected}/{seen.reviewed} recent proposals{where} rejected "
            f"({seen.rate:.0%} >= {breaker.threshold:.0%})")
